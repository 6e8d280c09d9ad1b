"""The daily schedules: scoring at 06:00 UTC, outcomes at 07:00."""

import datetime as dt

import dagster as dg

from batch_scoring.defs.jobs import daily_scoring_job, daily_scoring_request, machines_changed, outcomes_job
from batch_scoring.defs.resources import InputFiles


@dg.schedule(
    job=daily_scoring_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    description="At 06:00 UTC, runs daily_scoring_job for the previous day (UTC); raw_machines only when its files "
    "changed.",
)
def daily_scoring_schedule(context: dg.ScheduleEvaluationContext, input_files: InputFiles) -> dg.RunRequest:
    day = day_before_tick(context)
    return daily_scoring_request(day, machines_changed(context.instance, input_files), run_key=day)


def day_before_tick(context: dg.ScheduleEvaluationContext) -> str:
    """The UTC day that ended at the midnight before the tick."""
    return (context.scheduled_execution_time.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()


@dg.schedule(
    job=outcomes_job,
    cron_schedule="0 7 * * *",
    execution_timezone="UTC",
    description="At 07:00 UTC, runs outcomes_job for the previous day (UTC): its failures, and the outcomes of the "
    "predictions of 7 days before, whose 168 hours ended with it.",
)
def prediction_outcomes_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = day_before_tick(context)
    return dg.RunRequest(run_key=day, partition_key=day)
