"""Ingest assets: the five input tables, typed and checked, each with its quarantine of rejected rows."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field
from pyspark.sql import DataFrame

from batch_scoring.defs.assets.common import run_days, table_spec
from batch_scoring.defs.metadata import step_results
from batch_scoring.defs.partitions import SPARK_BACKFILL_POLICY, calendar
from batch_scoring.defs.resources import InputFiles, SparkResource
from batch_scoring.lib import steps
from batch_scoring.lib.steps import QUARANTINE_CHECK, quarantine_table
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, QUARANTINE_SCHEMA, TELEMETRY, SourceTable

GROUP = "raw"


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
    plausible_ranges: dict[str, list[float]] = Field(
        default_factory=dict,
        description=(
            'Other plausible ranges for numeric fields, by column: {"volt": [0, 400]}. Values outside are '
            "quarantined as out_of_range. Defaults: volt 0-1000 V, rotate 0-10000 rpm, pressure 0-1000, "
            "vibration 0-1000, age 0-100 years."
        ),
    )


def quarantine_key(table: SourceTable) -> dg.AssetKey:
    """A table's quarantine asset, stored at `<warehouse>/quarantine/<raw asset>/`."""
    return dg.AssetKey.from_user_string(quarantine_table(table))


def ingest_table(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    table: SourceTable,
    spark: SparkResource,
    input_files: InputFiles,
    known_machine_ids: DataFrame | None,
) -> Iterator[dg.Output[DataFrame] | dg.AssetCheckResult]:
    """Read one input table: its quarantined rows, its kept rows and the quarantine check. A daily table
    keeps the rows dated in the run's partitions (one run can cover a range)."""
    days = run_days(context) if table.daily_partitioned else None
    settings = steps.IngestSettings.from_config(config.model_dump())
    yield from step_results(
        context,
        lambda: steps.ingest(
            spark.spark_session, table, Path(input_files.input_dir), days, calendar(), known_machine_ids, settings
        ),
    )


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
