"""Materialization metadata computed from Spark DataFrames: schemas, counts, time ranges, previews."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

COLUMN_SCHEMA_KEY = "dagster/column_schema"
PREVIEW_ROWS = 5


def column_schema(schema: T.StructType) -> dg.TableSchema:
    """A Spark schema as Dagster's column schema (shown in the UI, read back by the IO manager)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f.name,
                type=f.dataType.simpleString(),
                constraints=dg.TableColumnConstraints(nullable=f.nullable),
            )
            for f in schema.fields
        ]
    )


_SIMPLE_TYPES = {
    t.simpleString(): t
    for t in (
        T.IntegerType(),
        T.LongType(),
        T.DoubleType(),
        T.FloatType(),
        T.StringType(),
        T.BooleanType(),
        T.TimestampType(),
        T.DateType(),
    )
}


def spark_schema(table_schema: dg.TableSchema) -> T.StructType:
    """The Spark schema behind a column schema made by `column_schema` (no Spark session needed)."""
    return T.StructType(
        [T.StructField(c.name, _SIMPLE_TYPES[c.type], nullable=c.constraints.nullable) for c in table_schema.columns]
    )


def _plain(value: object) -> object:
    """A value TableRecord accepts: str, int, float, bool or None."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def records_table(rows: list[dict[str, object]], schema: dg.TableSchema) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({k: _plain(v) for k, v in row.items()}) for row in rows], schema=schema
    )


def preview(df: DataFrame, rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first rows of a DataFrame as a table; `limit` keeps the collected rows bounded."""
    return records_table([row.asDict() for row in df.limit(rows).collect()], column_schema(df.schema))


def table_metadata(df: DataFrame) -> dict[str, object]:
    """Row count, time range, machines, schema and a preview of a table, from one aggregation."""
    aggregates = [F.count(F.lit(1)).alias("rows")]
    if "datetime" in df.columns:
        aggregates += [F.min("datetime").alias("first"), F.max("datetime").alias("last")]
    if "machine_id" in df.columns:
        aggregates.append(F.count_distinct("machine_id").alias("machines"))
    summary = df.agg(*aggregates).first().asDict()
    metadata: dict[str, object] = {
        "dagster/row_count": dg.MetadataValue.int(summary["rows"]),
        COLUMN_SCHEMA_KEY: column_schema(df.schema),
        "preview": preview(df),
    }
    if "machines" in summary:
        metadata["machines"] = dg.MetadataValue.int(summary["machines"])
    if "first" in summary:
        metadata["first_timestamp"] = dg.MetadataValue.text(str(summary["first"]))
        metadata["last_timestamp"] = dg.MetadataValue.text(str(summary["last"]))
    return metadata


def days_without_rows(df: DataFrame, partition_keys: list[str]) -> dg.MetadataValue:
    """The partitions of a run that got no rows (distinct days only are collected)."""
    days = {row["date"].isoformat() for row in df.select("date").distinct().collect()}
    return dg.MetadataValue.json([key for key in partition_keys if key not in days])


def materialized_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """Per asset (`quarantine/raw_telemetry`, ...), the metadata values of its last materialization in a run.
    A run over a range of days records one materialization per day, each with the run's figures."""
    latest = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        latest[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    return latest
