"""IO managers: where each asset's output is stored and how its inputs are read. Asset code never reads or
writes storage itself; it returns DataFrames (or a trained model) and these put them in the warehouse."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from batch_scoring.defs.metadata import dagster_metadata, spark_schema
from batch_scoring.defs.partitions import MISSING_DAYS_KEY, MissingDays
from batch_scoring.defs.resources import Warehouse
from batch_scoring.lib.model import TrainedModel
from batch_scoring.lib.steps import COLUMN_SCHEMA_KEY, REPLACED_PARTITIONS_KEY, gaps_message, table_summary
from batch_scoring.storage.files import WORKLIST_FILE_STEM, WORKLIST_FOLDER, daily_csv_location, write_daily_csv_files
from batch_scoring.storage.models import ModelStore


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
                **dagster_metadata(table_summary(obj)),
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
            gaps = tables.gaps(name, schema, partitions, version)
            if gaps:
                raise dg.Failure(description=gaps_message(context.op_def.name, name, partitions, gaps))
        return rows


def _versions_metadata(versions_read: dict[str, int | str]) -> dict[str, dg.MetadataValue]:
    return {"delta_versions_read": dg.MetadataValue.json(versions_read)} if versions_read else {}


class WorklistFiles(dg.ConfigurableIOManager):
    """Each day of a daily table as a CSV file a person can open, `<warehouse>/<folder>/<file_stem>_YYYY-MM-DD.csv`,
    written even when the day has no rows, on whatever storage the warehouse is."""

    warehouse: Warehouse
    folder: str = Field(default=WORKLIST_FOLDER, description="Folder of the files, inside the warehouse.")
    file_stem: str = Field(default=WORKLIST_FILE_STEM, description="Start of each file's name.")

    def location(self, day: str) -> str:
        return daily_csv_location(self.warehouse.tables().root, self.folder, self.file_stem, day)

    def handle_output(self, context: dg.OutputContext, obj: DataFrame) -> None:
        files = write_daily_csv_files(obj, context.asset_partition_keys, self.location, order_by="rank")
        context.add_output_metadata(
            {"csv_file": dg.MetadataValue.path(files[context.asset_partition_keys[-1]]), "csv_files": files}
        )

    def load_input(self, context: dg.InputContext) -> DataFrame:
        schema = spark_schema(context.upstream_output.definition_metadata[COLUMN_SCHEMA_KEY])
        paths = [self.location(day) for day in context.asset_partition_keys]
        return self.warehouse.tables().spark.read.csv(paths, header=True, schema=schema)
