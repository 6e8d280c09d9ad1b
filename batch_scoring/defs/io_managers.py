"""IO managers: where each asset's output is stored and how its inputs are read. Asset code never reads or
writes storage itself; it returns DataFrames (or a trained model) and these put them in the warehouse."""

from __future__ import annotations

import csv
import io
from datetime import date

import dagster as dg
from pydantic import Field, PrivateAttr
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.defs.metadata import COLUMN_SCHEMA_KEY, spark_schema, table_metadata
from batch_scoring.defs.partitions import MISSING_DAYS_KEY, REPLACED_PARTITIONS_KEY, MissingDays, day_span
from batch_scoring.defs.resources import Warehouse
from batch_scoring.storage.delta import PARTITION_COLUMN
from batch_scoring.storage.files import write_text_file
from batch_scoring.storage.models import ModelStore, TrainedModel


def table_name(key: dg.AssetKey) -> str:
    """An asset's table in the warehouse: its key's parts as folders (`quarantine/raw_telemetry`)."""
    return "/".join(key.path)


def commit_note(run_id: str, asset_name: str) -> str:
    """What a table's Delta history says of a commit: which Dagster run wrote which asset."""
    return f"dagster run {run_id} asset {asset_name}"


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores Spark DataFrames as Delta tables in the warehouse, some days at a time, and trained models
    as versions in the model store.

    A table's Spark schema comes from its asset's `dagster/column_schema` metadata, so tables are read
    and written against the declared columns. Inputs are read at one Delta version each; the versions a
    step read are recorded with what it writes (`delta_versions_read`), and a model's manifest keeps them.
    A daily input that declares a lookback (`defs.partitions.lookback`) is checked for missing days.
    """

    warehouse: Warehouse
    # per step: the Delta version of each table (or model version) its inputs were loaded at
    _versions_read: dict[str, dict[str, int | str]] = PrivateAttr(default_factory=dict)

    def handle_output(self, context: dg.OutputContext, obj: DataFrame | TrainedModel) -> None:
        name = table_name(context.asset_key)
        tables = self.warehouse.tables()
        versions_read = self._versions_read.pop(context.step_key, {})
        note = commit_note(context.run_id, name)
        if isinstance(obj, TrainedModel):
            path = ModelStore(tables, name).save(
                TrainedModel(obj.pipeline, {**obj.manifest, "read": versions_read}), note
            )
            context.add_output_metadata({"path": dg.MetadataValue.path(path), **_versions_metadata(versions_read)})
            return
        declared = spark_schema(context.definition_metadata[COLUMN_SCHEMA_KEY])
        partitions = None
        if context.has_asset_partitions:
            replaced = context.output_metadata.get(REPLACED_PARTITIONS_KEY)
            partitions = replaced.value if replaced is not None else context.asset_partition_keys
        version = tables.write(name, obj, declared, partitions, note)
        # the rows written are exactly `obj`'s (assets persist what they return), so the metadata comes
        # from them rather than from reading the table back
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(tables.location(name)),
                "delta_version": dg.MetadataValue.int(version),
                **_versions_metadata(versions_read),
                **table_metadata(obj),
            }
        )

    def load_input(self, context: dg.InputContext) -> DataFrame | TrainedModel:
        upstream = context.upstream_output
        name = table_name(upstream.asset_key)
        tables = self.warehouse.tables()
        read = self._versions_read.setdefault(context.step_context.step.key, {})
        if COLUMN_SCHEMA_KEY not in upstream.definition_metadata:
            model = ModelStore(tables, name).load_latest_usable()
            read[name] = model.version
            return model
        schema: T.StructType = spark_schema(upstream.definition_metadata[COLUMN_SCHEMA_KEY])
        partitions = context.asset_partition_keys if context.has_asset_partitions else None
        missing_days = context.definition_metadata.get(MISSING_DAYS_KEY)
        if missing_days == MissingDays.ALLOWED and not tables.exists(name):
            return tables.spark.createDataFrame([], schema)
        # one version for the whole step: other runs may commit to the table while it runs
        version = tables.version(name)
        read[name] = version
        rows = tables.read(name, schema, partitions, version)
        if missing_days == MissingDays.FAIL and partitions:
            _fail_on_gaps(context, tables.read(name, schema, None, version), name, partitions)
        return rows


def _fail_on_gaps(context: dg.InputContext, table: DataFrame, name: str, days: list[str]) -> None:
    """A day missing between the table's first day and the last day read would thin the windows that
    reach over it: that fails the step, naming the days. Days before the table's first day are where the
    data begin, days after the last one read where they end (those days have no rows to compute)."""
    wanted = table.where(F.col(PARTITION_COLUMN).isin([date.fromisoformat(day) for day in days]))
    present = {row[0] for row in wanted.select(PARTITION_COLUMN).distinct().collect()}  # <= len(days)
    missing = [date.fromisoformat(day) for day in days if date.fromisoformat(day) not in present]
    if not missing or not present:
        return
    first = table.agg(F.min(PARTITION_COLUMN)).first()[0]
    gaps = [day.isoformat() for day in missing if first < day < max(present)]
    if gaps:
        raise dg.Failure(
            description=f"{context.op_def.name} reads {name} for {day_span(days)}, but {name} has no rows for "
            f"{', '.join(gaps)}: materialize {name} for those days first (a backfill of the range does)."
        )
    if missing[0] < first:
        context.log.info(f"{name} begins on {first}: the lookback of the first days is shorter")


def _versions_metadata(versions_read: dict[str, int | str]) -> dict[str, dg.MetadataValue]:
    return {"delta_versions_read": dg.MetadataValue.json(versions_read)} if versions_read else {}


class WorklistFiles(dg.ConfigurableIOManager):
    """Each day of a daily table as a CSV file a person can open, `<warehouse>/<folder>/<file_stem>_YYYY-MM-DD.csv`,
    written even when the day has no rows, on whatever storage the warehouse is."""

    warehouse: Warehouse
    folder: str = Field(default="worklists", description="Folder of the files, inside the warehouse.")
    file_stem: str = Field(default="maintenance_worklist", description="Start of each file's name.")

    def location(self, day: str) -> str:
        return f"{self.warehouse.tables().root.rstrip('/')}/{self.folder}/{self.file_stem}_{day}.csv"

    def handle_output(self, context: dg.OutputContext, obj: DataFrame) -> None:
        files = {}
        for day in context.asset_partition_keys:
            # a day's rows are bounded by the fleet's size
            rows = obj.where(F.col(PARTITION_COLUMN) == F.lit(date.fromisoformat(day))).orderBy("rank").collect()
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=obj.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(row.asDict() for row in rows)
            files[day] = write_text_file(obj.sparkSession, self.location(day), text.getvalue())
        context.add_output_metadata(
            {"csv_file": dg.MetadataValue.path(files[context.asset_partition_keys[-1]]), "csv_files": files}
        )

    def load_input(self, context: dg.InputContext) -> DataFrame:
        schema = spark_schema(context.upstream_output.definition_metadata[COLUMN_SCHEMA_KEY])
        paths = [self.location(day) for day in context.asset_partition_keys]
        return self.warehouse.tables().spark.read.csv(paths, header=True, schema=schema)
