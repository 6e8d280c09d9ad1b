"""Ingest assets: the five input tables, typed and checked, with rejected rows quarantined."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from batch_scoring.assets.common import table_asset_args
from batch_scoring.ingest import check_files, kept_rows, quarantined_rows
from batch_scoring.metadata import days_without_rows, table_value
from batch_scoring.resources import InputFiles, SparkResource, Warehouse, commit_note
from batch_scoring.tables import (
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


def quarantine_table(table: SourceTable) -> str:
    """Warehouse name of a table's quarantine: `quarantine/<asset name>`."""
    return f"quarantine/{table.asset}"


def ingest(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    table: SourceTable,
    spark: SparkResource,
    input_files: InputFiles,
    warehouse: Warehouse,
    known_machine_ids: DataFrame | None,
) -> Iterator[dg.Output[DataFrame] | dg.AssetCheckResult]:
    """Read one input table; write its rejected rows to quarantine, yield the kept rows and the
    quarantine check.

    A daily-partitioned table keeps the rows dated in the run's partitions (one run can cover a
    range); its quarantine is partitioned alike. A drop's rows belong to the drop's day; rows of the
    bulk file without a readable date go under `date=undated`, which only runs reading the bulk
    file rewrite (each of them finds the same rows there).
    """
    dates, partitions, days = None, None, None
    if table.daily_partitioned:
        window = context.partition_time_window
        dates = (window.start.date(), window.end.date())
        days = [date.fromisoformat(key) for key in context.partition_keys]
    sources = input_files.sources(table, days)
    if table.daily_partitioned:
        reads_bulk_file = any(source.day is None for source in sources)
        partitions = [*context.partition_keys, *([UNDATED] if reads_bulk_file else [])]
    checked = check_files(spark.get_session(), table, sources, known_machine_ids, dates).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    by_reason = {row["reason"]: row["count"] for row in checked.groupBy("reason").count().collect()}
    kept = by_reason.pop(None, 0)
    quarantined = sum(by_reason.values())
    tables = warehouse.tables()
    quarantine = quarantine_table(table)
    quarantine_version = tables.write(
        quarantine,
        quarantined_rows(checked),
        QUARANTINE_SCHEMA,
        partitions,
        commit_note(context.run.run_id, quarantine),
    )
    metadata: dict[str, object] = {
        "source_files": dg.MetadataValue.json([str(source.path) for source in sources]),
        "rows_read": dg.MetadataValue.int(kept + quarantined),
        "rows_kept": dg.MetadataValue.int(kept),
        "rows_quarantined": dg.MetadataValue.int(quarantined),
        "quarantined_by_reason": table_value(
            [{"reason": r, "rows": n} for r, n in sorted(by_reason.items())], QUARANTINE_COUNTS_SCHEMA
        ),
        "quarantine_path": dg.MetadataValue.path(tables.location(quarantine)),
        "quarantine_delta_version": dg.MetadataValue.int(quarantine_version),
    }
    if dates is not None:
        if kept == 0:
            raise dg.Failure(
                description=(
                    f"No {table.name} rows dated {dates[0]} to {dates[1]} (exclusive) in "
                    f"{', '.join(str(source.path) for source in sources)}: "
                    f"{quarantined} rows of those days or undated were quarantined; nothing to ingest"
                ),
                metadata=metadata,
            )
        metadata["days_without_rows"] = days_without_rows(kept_rows(checked, table), context.partition_keys)
    yield dg.Output(kept_rows(checked, table), metadata=metadata)
    share = quarantined / (kept + quarantined) if kept + quarantined else 0.0
    yield dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=share <= config.max_quarantined_share,
        metadata={
            "quarantined_share": dg.MetadataValue.float(share),
            "max_quarantined_share": dg.MetadataValue.float(config.max_quarantined_share),
            "rows_quarantined": dg.MetadataValue.int(quarantined),
            "quarantine_path": metadata["quarantine_path"],
        },
        description=(
            f"{quarantined} of {kept + quarantined} {table.name} rows quarantined ({share:.2%}; "
            f"limit {config.max_quarantined_share:.2%}); reasons and lines in {metadata['quarantine_path'].value}"
        ),
    )


def _asset_args(table: SourceTable, description: str) -> dict[str, object]:
    quarantine_check = dg.AssetCheckSpec(
        QUARANTINE_CHECK,
        asset=table.asset,
        blocking=True,
        description="The share of rows read that were quarantined is at most max_quarantined_share.",
    )
    return table_asset_args(
        table.schema,
        table.daily_partitioned,
        name=table.asset,
        group_name=GROUP,
        description=description,
        check_specs=[quarantine_check],
    )


@dg.asset(**_asset_args(MACHINES, "Machines of the fleet: model and age in years. Other tables may only name these."))
def raw_machines(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    spark: SparkResource,
    input_files: InputFiles,
    warehouse: Warehouse,
) -> Iterator[dg.Output[DataFrame] | dg.AssetCheckResult]:
    yield from ingest(context, config, MACHINES, spark, input_files, warehouse, known_machine_ids=None)


def _machine_event_asset(table: SourceTable, description: str) -> dg.AssetsDefinition:
    @dg.asset(**_asset_args(table, description))
    def machine_events(
        context: dg.AssetExecutionContext,
        config: IngestConfig,
        spark: SparkResource,
        input_files: InputFiles,
        warehouse: Warehouse,
        raw_machines: DataFrame,
    ) -> Iterator[dg.Output[DataFrame] | dg.AssetCheckResult]:
        known = raw_machines.select("machine_id")
        yield from ingest(context, config, table, spark, input_files, warehouse, known)

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
