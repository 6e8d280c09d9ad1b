"""Jobs and the daily schedule."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("raw"),
    description="Read the five input tables into the warehouse; for telemetry, the selected days.",
)


training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("raw", "features", "model"),
    description="Ingest the selected days, build their features and train failure_model on them.",
)


daily_scoring_job = dg.define_asset_job(
    "daily_scoring_job",
    selection=dg.AssetSelection.groups("raw", "features", "scoring"),
    description="Ingest a day, build its features, score it with the newest usable model, list machines for the crews.",
)

# Every day at 06:00 UTC, score the day that ended at midnight UTC (the newest complete partition).
daily_scoring_schedule = dg.build_schedule_from_partitioned_job(
    daily_scoring_job,
    hour_of_day=6,
    minute_of_hour=0,
    name="daily_scoring_schedule",
    description="At 06:00 UTC, runs daily_scoring_job for the previous day (UTC).",
)
