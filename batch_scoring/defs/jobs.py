"""The jobs: ingest, train, and score a day."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("raw"),
    description="Read the five input tables and their quarantines into the warehouse; telemetry for the chosen days.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("raw", "features", "model"),
    description="Ingest the selected days, build their features and train failure_model on them.",
)

# scoring never reads failures: they only label training rows
daily_scoring_job = dg.define_asset_job(
    "daily_scoring_job",
    selection=dg.AssetSelection.groups("raw", "features", "scoring")
    - dg.AssetSelection.assets("raw_failures", ["quarantine", "raw_failures"]),
    description="Ingest a day, build its features, score it with the newest usable model, list machines for the crews.",
)

JOBS = [ingest_job, training_job, daily_scoring_job]
