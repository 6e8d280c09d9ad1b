"""IO managers: where each asset's output is stored and how its inputs are read. Asset code never reads or
writes storage itself; it returns DataFrames (or a trained model) and these put them in the warehouse."""

from __future__ import annotations

import datetime as dt
import functools

import dagster as dg
from pydantic import PrivateAttr
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.defs.metadata import (
    REPLACED_PARTITIONS_KEY,
    WITH_PIPELINE_KEY,
    dagster_metadata,
    naming_damaged_files,
    spark_schema,
)
from batch_scoring.defs.partitions import MISSING_DAYS_KEY, MissingDays
from batch_scoring.defs.resources import Warehouse
from batch_scoring.lib.model import TrainedModel
from batch_scoring.lib.steps import COLUMN_SCHEMA_KEY, COUNTED_KEYS, ROW_COUNT_KEY, day_span, gaps_message
from batch_scoring.lib.tables import UNDATED
from batch_scoring.storage.models import ModelStore
from batch_scoring.storage.outputs import (
    commit_note,
    store_crew_pages,
    store_model,
    store_table,
    store_worklist_files,
    worklist_file,
)


def table_name(key: dg.AssetKey) -> str:
    """An asset's table in the warehouse: its key's parts as folders (`quarantine/raw_telemetry`)."""
    return "/".join(key.path)


def partitions_text(partitions: list[str]) -> str:
    """Partitions as people read them: `2015-04-01 .. 2015-04-07 and the undated rows`."""
    days = [key for key in partitions if key != UNDATED]
    text = day_span(days) if days else ""
    return " and ".join(filter(None, [text, "the undated rows" if UNDATED in partitions else ""]))


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores Spark DataFrames as Delta tables in the warehouse, some days at a time, and trained models
    as versions in the model store.

    A table's Spark schema comes from its asset's `dagster/column_schema` metadata, so tables are read
    and written against the declared columns. Inputs are read at one Delta version each; the versions a
    step read are recorded with what it writes (`delta_versions_read`), and a model's manifest keeps them.
    A daily input that declares a lookback (`defs.partitions.lookback`) is checked for missing days. An input of
    the model gives its newest usable version's manifest, and the fitted pipeline too where the asset scores
    (`scoring_model_input`).
    """

    warehouse: Warehouse
    # per step: the Delta version of each table (or model version) its inputs were loaded at
    _versions_read: dict[str, dict[str, int | str]] = PrivateAttr(default_factory=dict)

    def handle_output(self, context: dg.OutputContext, obj: DataFrame | TrainedModel) -> None:
        with naming_damaged_files():  # a write computes what the step returned, reading its inputs
            self._store(context, obj)

    def _store(self, context: dg.OutputContext, obj: DataFrame | TrainedModel) -> None:
        name = table_name(context.asset_key)
        tables = self.warehouse.tables()
        versions_read = self._versions_read.pop(context.step_key, {})
        note = commit_note(context.run_id, name)
        if isinstance(obj, TrainedModel):
            stored = store_model(tables, name, obj, note, versions_read)
            context.log.info(f"{name}: saved version {obj.version} at {stored['path'].path}")
            context.add_output_metadata(dagster_metadata(stored))
            return
        declared = spark_schema(context.definition_metadata[COLUMN_SCHEMA_KEY])
        partitions = None
        if context.has_asset_partitions:
            replaced = context.output_metadata.get(REPLACED_PARTITIONS_KEY)
            partitions = replaced.value if replaced is not None else context.asset_partition_keys
        # what the step counted of its rows already
        counted = {key: context.output_metadata[key].value for key in COUNTED_KEYS if key in context.output_metadata}
        stored = store_table(tables, name, obj, declared, partitions, note, versions_read, counted)
        days = f" for {partitions_text(partitions)}" if partitions else ""
        context.log.info(f"{name}: wrote {stored[ROW_COUNT_KEY]:,} rows{days}, Delta version {stored['delta_version']}")
        context.add_output_metadata(dagster_metadata(stored))

    def load_input(self, context: dg.InputContext) -> DataFrame | TrainedModel | dict:
        with naming_damaged_files():
            return self._load(context)

    def _load(self, context: dg.InputContext) -> DataFrame | TrainedModel | dict:
        upstream = context.upstream_output
        name = table_name(upstream.asset_key)
        tables = self.warehouse.tables()
        read = self._versions_read.setdefault(context.step_context.step.key, {})
        if COLUMN_SCHEMA_KEY not in upstream.definition_metadata:
            if context.definition_metadata.get(WITH_PIPELINE_KEY):
                model = ModelStore(tables, name).load_latest_usable()
                read[name] = model.version
                return model
            manifest = ModelStore(tables, name).latest_usable_manifest()
            read[name] = manifest["version"]
            return manifest
        schema: T.StructType = spark_schema(upstream.definition_metadata[COLUMN_SCHEMA_KEY])
        partitions = context.asset_partition_keys if context.has_asset_partitions else None
        missing_days = context.definition_metadata.get(MISSING_DAYS_KEY)
        if missing_days == MissingDays.ALLOWED and not tables.exists(name):
            return tables.spark.createDataFrame([], schema)
        # one version for the whole step: other runs may commit to the table while it runs
        version = tables.version(name)
        read[name] = version
        rows = tables.read(name, schema, partitions, version)
        days = f" for {day_span(partitions)}" if partitions else ""
        context.log.info(f"{context.op_def.name}: reading {name}{days} at Delta version {version}")
        if missing_days == MissingDays.FAIL and partitions:
            gaps = tables.gaps(name, schema, partitions, version)
            if gaps:
                raise dg.Failure(description=gaps_message(context.op_def.name, name, partitions, gaps))
        return rows


def record_files_written(context: dg.OutputContext, files: dict[str, str], file_key: str, kind: str) -> None:
    """Log the files a run wrote, and give each day's materialization its own file (`file_key`), not the run's last."""
    context.log.info(
        f"{table_name(context.asset_key)}: wrote {len(files)} {kind} file(s), the last {files[max(files)]}"
    )
    for day, path in files.items():
        context.step_context.add_asset_metadata(
            {file_key: dg.MetadataValue.path(path)}, asset_key=context.asset_key, partition_key=day
        )


class WorklistFiles(dg.ConfigurableIOManager):
    """Each day of the worklist as a CSV file a person can open (`storage.outputs.worklist_file`), written
    even when the day has no rows, on whatever storage the warehouse is."""

    warehouse: Warehouse

    def handle_output(self, context: dg.OutputContext, obj: DataFrame) -> None:
        files = store_worklist_files(self.warehouse.tables(), obj, context.asset_partition_keys)
        record_files_written(context, files, "csv_file", "CSV")

    def load_input(self, context: dg.InputContext) -> DataFrame:
        """The days' files, each with its day as `date` (the files leave it to their names)."""
        schema = spark_schema(context.upstream_output.definition_metadata[COLUMN_SCHEMA_KEY])
        tables = self.warehouse.tables()
        file_schema = T.StructType([f for f in schema.fields if f.name != "date"])
        days = [
            tables.spark.read.csv(worklist_file(tables, day), header=True, schema=file_schema).withColumn(
                "date", F.lit(dt.date.fromisoformat(day))
            )
            for day in context.asset_partition_keys
        ]
        return functools.reduce(DataFrame.unionByName, days)


class CrewPages(dg.ConfigurableIOManager):
    """Each day's page for the crews as one self-contained HTML file beside the day's CSV file, on whatever storage
    the warehouse is; read back as the pages' text by day."""

    warehouse: Warehouse

    def handle_output(self, context: dg.OutputContext, obj: DataFrame) -> None:
        files = store_crew_pages(self.warehouse.tables(), obj, context.asset_partition_keys)
        record_files_written(context, files, "page_file", "HTML")

    def load_input(self, context: dg.InputContext) -> dict[str, str]:
        tables = self.warehouse.tables()
        return {
            day: tables.spark.read.text(worklist_file(tables, day, "html"), wholetext=True).first()[0]
            for day in context.asset_partition_keys
        }
