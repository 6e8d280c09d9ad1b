"""The daily feature table: the same feature function feeds training and scoring."""

import dagster as dg
from pyspark.sql import DataFrame

from batch_scoring.defs.assets.common import run_days, table_asset_args
from batch_scoring.defs.metadata import step_results
from batch_scoring.defs.partitions import MissingDays, lookback
from batch_scoring.lib import steps
from batch_scoring.lib.features import (
    ERROR_LOOKBACK_DAYS,
    FEATURES_SCHEMA,
    REPLACEMENT_LOOKBACK_DAYS,
    TELEMETRY_LOOKBACK_DAYS,
)


@dg.asset(
    group_name="features",
    description=(
        "One row per machine with telemetry that day, observed at the day's end (midnight UTC): rolling sensor "
        "statistics over 3 h, 24 h, 72 h and 240 h, each sensor's shift against the machine's own baseline (over the "
        "day, and since its last replacement), error counts over 24 h and 72 h, days since each error and each "
        f"component's replacement (up to {REPLACEMENT_LOOKBACK_DAYS}), machine model and age. Reads bounded "
        "lookbacks (telemetry "
        f"{TELEMETRY_LOOKBACK_DAYS} days, errors {ERROR_LOOKBACK_DAYS}, replacements {REPLACEMENT_LOOKBACK_DAYS}), "
        "never the whole history."
    ),
    **table_asset_args(FEATURES_SCHEMA, daily=True),
    # a day's features read that day's telemetry and the days its longest window and the baseline reach back to (a
    # day missing there would thin the windows, so it fails the step instead), and the errors and replacements
    # as far back as their windows reach
    ins={
        "raw_telemetry": lookback(TELEMETRY_LOOKBACK_DAYS, missing=MissingDays.FAIL),
        "raw_errors": lookback(ERROR_LOOKBACK_DAYS, missing=MissingDays.QUIET),
        "raw_maintenance": lookback(REPLACEMENT_LOOKBACK_DAYS, missing=MissingDays.QUIET),
    },
)
def features(
    context: dg.AssetExecutionContext,
    raw_telemetry: DataFrame,
    raw_errors: DataFrame,
    raw_maintenance: DataFrame,
    raw_machines: DataFrame,
):
    days = run_days(context)
    yield from step_results(
        context, lambda: steps.features(raw_telemetry, raw_errors, raw_maintenance, raw_machines, days)
    )
