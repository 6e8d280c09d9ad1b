"""Ingest assets: the five input tables, typed and checked, each with its quarantine of rejected rows."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from batch_scoring.defs.assets.common import table_spec
from batch_scoring.defs.metadata import days_without_rows, records_table
from batch_scoring.defs.partitions import REPLACED_PARTITIONS_KEY, SPARK_BACKFILL_POLICY, day_span
from batch_scoring.defs.resources import InputFiles, SparkResource
from batch_scoring.lib.ingest import IngestCounts, SourceFile, check_files, count_outcomes, kept_rows, quarantined_rows
from batch_scoring.lib.tables import (
    ERRORS,
    FAILURES,
    MACHINES,
    MAINTENANCE,
    QUARANTINE_SCHEMA,
    TELEMETRY,
    UNDATED,
    SourceTable,
)

GROUP = "raw"
QUARANTINE_COUNTS_SCHEMA = dg.TableSchema(columns=[dg.TableColumn("reason", "string"), dg.TableColumn("rows", "int")])
QUARANTINE_CHECK = "quarantined_share_within_limit"


class IngestConfig(dg.Config):
    max_quarantined_share: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description=(
            f"Largest share of the rows read that may be quarantined; above it the blocking check "
            f"{QUARANTINE_CHECK} fails and nothing downstream runs on the table."
        ),
    )


def quarantine_key(table: SourceTable) -> dg.AssetKey:
    """A table's quarantine asset, stored at `<warehouse>/quarantine/<raw asset>/`."""
    return dg.AssetKey(["quarantine", table.asset])


def _days_read(context: dg.AssetExecutionContext, table: SourceTable) -> list[date] | None:
    return [date.fromisoformat(key) for key in context.partition_keys] if table.daily_partitioned else None


def _quarantine_output(context: dg.AssetExecutionContext, table: SourceTable, checked: DataFrame, sources) -> dg.Output:
    """The rejected rows. A daily table's quarantine replaces the run's days, and the undated rows of the
    bulk file when the run read it (each run reading it finds the same ones)."""
    metadata = {}
    if table.daily_partitioned:
        reads_bulk_file = any(source.day is None for source in sources)
        replaced = [*context.partition_keys, *([UNDATED] if reads_bulk_file else [])]
        metadata[REPLACED_PARTITIONS_KEY] = dg.MetadataValue.json(replaced)
    return dg.Output(quarantined_rows(checked), output_name=_output_name(quarantine_key(table)), metadata=metadata)


def _ingest_metadata(sources: list[SourceFile], counts: IngestCounts) -> dict[str, dg.MetadataValue]:
    return {
        "source_files": dg.MetadataValue.json([str(source.path) for source in sources]),
        "rows_read": dg.MetadataValue.int(counts.read),
        "rows_kept": dg.MetadataValue.int(counts.kept),
        "rows_quarantined": dg.MetadataValue.int(counts.quarantined),
        "quarantined_by_reason": records_table(
            [{"reason": r, "rows": n} for r, n in counts.quarantined_by_reason.items()], QUARANTINE_COUNTS_SCHEMA
        ),
    }


def _quarantine_check(table: SourceTable, counts: IngestCounts, config: IngestConfig) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        asset_key=table.asset,
        passed=counts.quarantined_share <= config.max_quarantined_share,
        metadata={
            "quarantined_share": dg.MetadataValue.float(round(counts.quarantined_share, 6)),
            "max_quarantined_share": dg.MetadataValue.float(config.max_quarantined_share),
            "rows_quarantined": dg.MetadataValue.int(counts.quarantined),
        },
        description=(
            f"{counts.quarantined} of {counts.read} {table.name} rows quarantined ({counts.quarantined_share:.2%}; "
            f"limit {config.max_quarantined_share:.2%}); reasons and lines in {quarantine_key(table).to_user_string()}"
        ),
    )


def ingest_table(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    table: SourceTable,
    spark: SparkResource,
    input_files: InputFiles,
    known_machine_ids: DataFrame | None,
) -> Iterator[dg.Output[DataFrame] | dg.AssetCheckResult]:
    """Read one input table: yield its quarantined rows, its kept rows and the quarantine check.

    A daily-partitioned table keeps the rows dated in the run's partitions (one run can cover a range)."""
    days = _days_read(context, table)
    sources = input_files.sources(table, days)
    dates = (days[0], context.partition_time_window.end.date()) if days else None
    checked = check_files(spark.spark_session, table, sources, known_machine_ids, dates)
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    counts = count_outcomes(checked)
    yield _quarantine_output(context, table, checked, sources)
    metadata = _ingest_metadata(sources, counts)
    if days and counts.kept == 0:
        raise dg.Failure(
            description=(
                f"No {table.name} rows dated {day_span(days)} in "
                f"{', '.join(str(source.path) for source in sources)}: "
                f"{counts.quarantined} rows of those days or undated were quarantined; nothing to ingest"
            ),
            metadata=metadata,
        )
    kept = kept_rows(checked, table)
    if days:
        metadata["days_without_rows"] = days_without_rows(kept, context.partition_keys)
    yield dg.Output(kept, output_name=table.asset, metadata=metadata)
    yield _quarantine_check(table, counts, config)


def _output_name(key: dg.AssetKey) -> str:
    return key.to_python_identifier()


def _raw_asset_args(table: SourceTable, description: str, reads_machines: bool) -> dict[str, object]:
    """A raw table and its quarantine, written by one step: one read of the input files gives both. The
    machine event tables check machine ids against raw_machines."""
    deps = ["raw_machines"] if reads_machines else []
    return dict(
        name=table.asset,
        specs=[
            table_spec(
                table.asset,
                table.schema,
                table.daily_partitioned,
                group_name=GROUP,
                description=description,
                deps=deps,
            ),
            table_spec(
                quarantine_key(table),
                QUARANTINE_SCHEMA,
                table.daily_partitioned,
                group_name=GROUP,
                deps=deps,
                description=f"Rows of the {table.name} input files that {table.asset} rejected: file, line number, "
                "field, reason and the line itself. A daily table's quarantine is partitioned alike, with the "
                "bulk file's rows whose time could not be read under date=undated.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=table.asset,
                blocking=True,
                description="The share of rows read that were quarantined is at most max_quarantined_share.",
            )
        ],
        backfill_policy=SPARK_BACKFILL_POLICY if table.daily_partitioned else None,
        ins={"raw_machines": dg.AssetIn()} if reads_machines else {},
    )


@dg.multi_asset(
    **_raw_asset_args(
        MACHINES, "Machines of the fleet: model and age in years. Other tables may only name these.", False
    )
)
def raw_machines(
    context: dg.AssetExecutionContext, config: IngestConfig, spark: SparkResource, input_files: InputFiles
) -> Iterator[dg.Output[DataFrame] | dg.AssetCheckResult]:
    yield from ingest_table(context, config, MACHINES, spark, input_files, known_machine_ids=None)


def _machine_event_asset(table: SourceTable, description: str) -> dg.AssetsDefinition:
    @dg.multi_asset(**_raw_asset_args(table, description, reads_machines=True))
    def machine_events(
        context: dg.AssetExecutionContext,
        config: IngestConfig,
        spark: SparkResource,
        input_files: InputFiles,
        raw_machines: DataFrame,
    ) -> Iterator[dg.Output[DataFrame] | dg.AssetCheckResult]:
        yield from ingest_table(context, config, table, spark, input_files, raw_machines.select("machine_id"))

    return machine_events


raw_telemetry = _machine_event_asset(
    TELEMETRY, "Hourly sensor readings (volt, rotate, pressure, vibration) per machine, one partition a day."
)
raw_errors = _machine_event_asset(ERRORS, "Error events logged by the machines (error1..error5).")
raw_maintenance = _machine_event_asset(
    MAINTENANCE, "Component replacements (comp1..comp4), scheduled or after a failure, with their history."
)
raw_failures = _machine_event_asset(FAILURES, "Component failures (comp1..comp4): the labels' source.")

RAW_ASSETS = [raw_machines, raw_telemetry, raw_errors, raw_maintenance, raw_failures]
