"""The daily feature table: the same feature function feeds training and scoring."""

import dagster as dg
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from batch_scoring.defs.assets.common import table_asset_args
from batch_scoring.defs.metadata import days_without_rows
from batch_scoring.defs.partitions import MissingDays, day_span, lookback
from batch_scoring.lib.features import FEATURES_SCHEMA, TELEMETRY_LOOKBACK_DAYS, build_features


@dg.asset(
    group_name="features",
    description=(
        "One row per machine with telemetry that day, observed at the day's end (midnight UTC): rolling sensor "
        "statistics over 3 h, 24 h and 72 h, error counts over 24 h, days since each component's replacement, "
        "machine model and age. Reads a bounded lookback of raw telemetry, never the whole history."
    ),
    **table_asset_args(FEATURES_SCHEMA, daily=True),
    # a day's features read that day's telemetry and the days its longest window reaches back to; a day
    # missing there would thin the windows, so it fails the step instead
    ins={"raw_telemetry": lookback(TELEMETRY_LOOKBACK_DAYS, missing=MissingDays.FAIL)},
)
def features(
    context: dg.AssetExecutionContext,
    raw_telemetry: DataFrame,
    raw_errors: DataFrame,
    raw_maintenance: DataFrame,
    raw_machines: DataFrame,
) -> dg.Output[DataFrame]:
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    rows = build_features(raw_telemetry, raw_errors, raw_maintenance, raw_machines, first, end).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    if rows.isEmpty():
        raise dg.Failure(
            description=(
                f"No features for {day_span(context.partition_keys)}: no machine has telemetry in those days. "
                "Materialize raw_telemetry for them first, or check the input files cover them."
            )
        )
    return dg.Output(rows, metadata={"days_without_rows": days_without_rows(rows, context.partition_keys)})
