"""What every asset stored as a Spark table in the warehouse declares."""

from pyspark.sql import types as T

from batch_scoring.metadata import COLUMN_SCHEMA_KEY, column_schema
from batch_scoring.partitions import DAILY_PARTITIONS, SPARK_BACKFILL_POLICY


def table_asset_args(schema: T.StructType, daily: bool, **more: object) -> dict[str, object]:
    """Decorator arguments of a Delta table asset: its column schema (which the IO manager reads
    with), and for a daily table the daily partitions and single-run backfills."""
    args: dict[str, object] = {
        "kinds": {"spark", "delta"},
        "metadata": {COLUMN_SCHEMA_KEY: column_schema(schema)},
    }
    if daily:
        args.update(partitions_def=DAILY_PARTITIONS, backfill_policy=SPARK_BACKFILL_POLICY)
    return {**args, **more}
