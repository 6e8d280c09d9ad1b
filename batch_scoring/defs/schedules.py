"""The daily schedule."""

import datetime as dt

import dagster as dg

from batch_scoring.defs.jobs import daily_scoring_job, daily_scoring_request, machines_changed
from batch_scoring.defs.resources import InputFiles


@dg.schedule(
    job=daily_scoring_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    description="At 06:00 UTC, runs daily_scoring_job for the previous day (UTC); raw_machines only when its files "
    "changed.",
)
def daily_scoring_schedule(context: dg.ScheduleEvaluationContext, input_files: InputFiles) -> dg.RunRequest:
    # the UTC day that ended at the midnight before the tick
    day = (context.scheduled_execution_time.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    return daily_scoring_request(day, machines_changed(context.instance, input_files), run_key=day)
