"""The daily schedule."""

import dagster as dg

from batch_scoring.defs.jobs import daily_scoring_job

# Every day at 06:00 UTC, score the day that ended at midnight UTC (the newest complete partition).
daily_scoring_schedule = dg.build_schedule_from_partitioned_job(
    daily_scoring_job,
    hour_of_day=6,
    minute_of_hour=0,
    name="daily_scoring_schedule",
    description="At 06:00 UTC, runs daily_scoring_job for the previous day (UTC).",
)
