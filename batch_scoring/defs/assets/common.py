"""What every asset stored as a Spark table in the warehouse declares, and the days a run covers."""

from datetime import date

import dagster as dg
from pyspark.sql import types as T

from batch_scoring.defs.metadata import WITH_PIPELINE_KEY, column_schema
from batch_scoring.defs.partitions import DAILY_PARTITIONS, SPARK_BACKFILL_POLICY
from batch_scoring.lib.steps import COLUMN_SCHEMA_KEY

TABLE_KINDS = {"spark", "delta"}


def table_metadata_args(schema: T.StructType) -> dict[str, object]:
    """A table's column schema as asset metadata: the UI shows it, the IO manager reads and writes with it."""
    return {"metadata": {COLUMN_SCHEMA_KEY: column_schema(schema)}}


def daily_args(daily: bool) -> dict[str, object]:
    """Daily partitions with single-run backfills (a range of days is one run and one Spark session)."""
    return {"partitions_def": DAILY_PARTITIONS, "backfill_policy": SPARK_BACKFILL_POLICY} if daily else {}


def table_asset_args(schema: T.StructType, daily: bool, **more: object) -> dict[str, object]:
    """Decorator arguments of a Delta table asset: its column schema, and for a daily table the daily
    partitions and single-run backfills."""
    return {"kinds": TABLE_KINDS, **table_metadata_args(schema), **daily_args(daily), **more}


def table_spec(key: dg.AssetKey | str, schema: T.StructType, daily: bool, **more: object) -> dg.AssetSpec:
    """The spec of a Delta table that a multi-asset writes (through the warehouse's IO manager)."""
    partitions = {"partitions_def": DAILY_PARTITIONS} if daily else {}
    spec = dg.AssetSpec(key, kinds=TABLE_KINDS, **table_metadata_args(schema), **partitions, **more)
    return spec.with_io_manager_key("io_manager")


def scoring_model_input() -> dg.AssetIn:
    """An input of failure_model's newest usable version with its fitted pipeline, for an asset that scores. Other
    inputs of the model get its manifest only (the threshold it chose, its hold-out figures): loading the pipeline
    costs about a dozen small Spark jobs."""
    return dg.AssetIn(key="failure_model", metadata={WITH_PIPELINE_KEY: True})


def run_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days (partitions) the run materializes, in order."""
    return [date.fromisoformat(key) for key in context.partition_keys]
