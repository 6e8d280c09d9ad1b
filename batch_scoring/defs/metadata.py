"""Metadata as Dagster shows it: column schemas, and the plain metadata and check verdicts of `lib.steps` as
Dagster's metadata values, outputs and check results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import dagster as dg
from pyspark.sql import types as T

from batch_scoring.lib.columns import column_description
from batch_scoring.lib.progress import progress_logged_to
from batch_scoring.lib.steps import CheckOutcome, Location, Records, StepFailed, StepOutcome
from batch_scoring.storage.delta import unreadable_file_message

# an output's metadata: the partitions its write replaces, when they are not the run's days
REPLACED_PARTITIONS_KEY = "partitions_replaced"
# an input's metadata: of a model asset, the fitted pipeline is loaded too, not only the manifest
WITH_PIPELINE_KEY = "batch_scoring/with_pipeline"


def column_schema(schema: T.StructType) -> dg.TableSchema:
    """A Spark schema as Dagster's column schema (shown in the UI, read back by the IO manager)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f.name,
                type=f.dataType.simpleString(),
                description=column_description(f.name) or None,
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


def metadata_value(value: object) -> dg.MetadataValue:
    """A step's plain metadata value as Dagster's: numbers chart in the Plots tab, tables and schemas render."""
    if isinstance(value, dg.MetadataValue):
        return value
    if value is None:  # a figure that cannot be given (no rows to give it)
        return dg.MetadataValue.null()
    if isinstance(value, Records):
        return dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in value.rows],
            schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in value.columns]),
        )
    if isinstance(value, T.StructType):
        return dg.MetadataValue.table_schema(column_schema(value))
    if isinstance(value, Location):
        return dg.MetadataValue.path(value.path)
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, (dict, list)):
        return dg.MetadataValue.json(value)
    return dg.MetadataValue.text(str(value))


def dagster_metadata(values: Mapping[str, object]) -> dict[str, dg.MetadataValue]:
    return {key: metadata_value(value) for key, value in values.items()}


def check_result(check: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey.from_user_string(check.asset),
        check_name=check.name,
        passed=check.passed,
        severity=dg.AssetCheckSeverity.WARN if check.warn_only else dg.AssetCheckSeverity.ERROR,
        description=check.description,
        metadata=dagster_metadata(check.metadata),
    )


@contextmanager
def naming_damaged_files() -> Iterator[None]:
    """A damaged data file of a table fails the step naming the table, the partition and the file first."""
    try:
        yield
    except Exception as error:
        damaged = unreadable_file_message(error)
        if damaged is None:
            raise
        raise dg.Failure(description=damaged) from error


def step_results(
    context: dg.AssetExecutionContext, step: Callable[[], StepOutcome]
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Run a step (`lib.steps`): its tables as the asset's outputs (the IO managers store them), its checks'
    verdicts as check results; a StepFailed fails the step with its message."""
    try:
        with naming_damaged_files(), progress_logged_to(context.log):
            outcome = step()
    except StepFailed as failure:
        raise dg.Failure(description=str(failure), metadata=dagster_metadata(failure.metadata)) from failure
    for produced in outcome.produced:
        asset_key = dg.AssetKey.from_user_string(produced.asset)
        output_name = context.assets_def.get_output_name_for_asset_key(asset_key)
        metadata = dagster_metadata(produced.metadata)
        if produced.partitions is not None and produced.partitions != list(context.partition_keys):
            metadata[REPLACED_PARTITIONS_KEY] = dg.MetadataValue.json(produced.partitions)  # for the IO manager
        metadata.update(dagster_metadata(produced.counted))  # the IO manager then counts no more
        for day, figures in produced.per_day.items():  # each partition's own, for the Plots tab
            if day in context.partition_keys:  # not a quarantine's `undated` rows, which no partition holds
                context.add_asset_metadata(dagster_metadata(figures), asset_key=asset_key, partition_key=day)
        version = dg.DataVersion(produced.data_version) if produced.data_version else None
        yield dg.Output(produced.value, output_name=output_name, metadata=metadata, data_version=version)
    for check in outcome.checks:
        yield check_result(check)


def materialized_metadata(events: Iterable[dg.DagsterEvent]) -> dict[str, dict[str, object]]:
    """Per asset (`quarantine/raw_telemetry`, ...), the metadata values of its last materialization among a run's
    events (an in-process result's `all_events`, or the instance's). A run over a range of days records one
    materialization per day, each with the run's figures."""
    latest = {}
    for event in events:
        if event.event_type != dg.DagsterEventType.ASSET_MATERIALIZATION:
            continue
        materialization = event.step_materialization_data.materialization
        latest[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    return latest
