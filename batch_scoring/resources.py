"""Dagster resources: the Spark session, the input folder, the warehouse and its IO manager (Delta tables, models)."""

from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from batch_scoring.ingest import DROP_READY_MARKER, DROPS_FOLDER, SourceFile, plan_sources
from batch_scoring.metadata import COLUMN_SCHEMA_KEY, spark_schema, table_metadata
from batch_scoring.model_store import ModelStore, TrainedModel
from batch_scoring.spark import build_spark_session
from batch_scoring.storage import DeltaTables
from batch_scoring.tables import SourceTable


class SparkResource(dg.ConfigurableResource):
    """The process's SparkSession. Local by default; point `master` at a cluster to scale out (the
    input and warehouse folders must then be one shared file system path on the driver and every worker)."""

    master: str = Field(
        default="local[*]",
        description="Spark master URL (BATCH_SCORING_SPARK_MASTER): local[*], or a cluster's spark://host:7077.",
    )
    shuffle_partitions: int = Field(default=8, description="spark.sql.shuffle.partitions; a few per core.")
    driver_memory: str = Field(default="4g", description="Driver JVM heap; applies when the JVM starts.")
    ui_enabled: bool = Field(default=False, description="Serve the Spark UI while a run is going.")
    conf: dict[str, str] = Field(
        default_factory=dict, description="Further Spark settings (BATCH_SCORING_SPARK_CONF, a JSON object)."
    )

    def get_session(self) -> SparkSession:
        """The process's session. The first caller creates it with these settings and later callers get
        it as it is, so copies of this resource (nested in the warehouse) cannot undo its settings."""
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        return build_spark_session(
            master=self.master,
            shuffle_partitions=self.shuffle_partitions,
            driver_memory=self.driver_memory,
            ui_enabled=self.ui_enabled,
            conf=self.conf,
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        active = SparkSession.getActiveSession()
        if active is not None:
            active.catalog.clearCache()  # what a run cached does not outlive it


class InputFiles(dg.ConfigurableResource):
    """The input folder: the five tables (`PdM_<name>.csv` or `<name>.csv`, maybe gzipped), and
    daily drops in `daily/YYYY-MM-DD/` (the same file names, plus a `_SUCCESS` marker written last)."""

    input_dir: str = Field(description="Folder of the input CSV files (BATCH_SCORING_INPUT_DIR).")

    @property
    def drops_dir(self) -> Path:
        return Path(self.input_dir) / DROPS_FOLDER

    def drop_folders(self) -> dict[date, Path]:
        """Every folder in the drops folder named by a day, ready or not."""
        if not self.drops_dir.is_dir():
            return {}
        folders = {}
        for folder in self.drops_dir.iterdir():
            try:
                folders[date.fromisoformat(folder.name)] = folder
            except ValueError:
                continue  # not a drop: the sensor's skip reason does not count it either
        return dict(sorted(folders.items()))

    def ready_drops(self) -> dict[date, Path]:
        return {day: f for day, f in self.drop_folders().items() if (f / DROP_READY_MARKER).exists()}

    def sources(self, table: SourceTable, days: list[date] | None = None) -> list[SourceFile]:
        return plan_sources(Path(self.input_dir), self.ready_drops(), table, days)


class Warehouse(dg.ConfigurableResource):
    """Where every table is kept: the Delta table `<root>/<asset name>/`, daily ones partitioned by `date`."""

    root: str = Field(description="Warehouse folder or URI (BATCH_SCORING_WAREHOUSE_DIR).")
    spark: SparkResource

    def tables(self) -> DeltaTables:
        return DeltaTables(self.spark.get_session(), self.root)


def commit_note(run_id: str, asset_name: str) -> str:
    """What a table's Delta history says of a commit: which Dagster run wrote which asset."""
    return f"dagster run {run_id} asset {asset_name}"


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores Spark DataFrames as Delta tables in the warehouse, some days at a time, and trained models
    as versions in the model store.

    A table's Spark schema comes from its asset's `dagster/column_schema` metadata, so tables are read
    and written against the declared columns. Inputs are read at one Delta version each; the versions a
    step read are recorded with what it writes (`delta_versions_read`), and a model's manifest keeps them.
    """

    warehouse: Warehouse
    # per step: the Delta version of each table (or model version) its inputs were loaded at
    _versions_read: dict[str, dict[str, int | str]] = PrivateAttr(default_factory=dict)

    def handle_output(self, context: dg.OutputContext, obj: DataFrame | TrainedModel) -> None:
        name = context.asset_key.path[-1]
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
        partitions = context.asset_partition_keys if context.has_asset_partitions else None
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
        name = upstream.asset_key.path[-1]
        tables = self.warehouse.tables()
        read = self._versions_read.setdefault(context.step_context.step.key, {})
        if COLUMN_SCHEMA_KEY not in upstream.definition_metadata:
            model = ModelStore(tables, name).load_latest_usable()
            read[name] = model.version
            return model
        schema: T.StructType = spark_schema(upstream.definition_metadata[COLUMN_SCHEMA_KEY])
        partitions = context.asset_partition_keys if context.has_asset_partitions else None
        # one version for the whole step: other runs may commit to the table while it runs
        version = tables.version(name)
        read[name] = version
        return tables.read(name, schema, partitions, version)


def _versions_metadata(versions_read: dict[str, int | str]) -> dict[str, dg.MetadataValue]:
    return {"delta_versions_read": dg.MetadataValue.json(versions_read)} if versions_read else {}


def pipeline_resources(spark: SparkResource, input_dir: str, warehouse_dir: str) -> dict[str, object]:
    """Every resource the assets use, around one Spark resource and the two folders (str or EnvVar)."""
    warehouse = Warehouse(root=warehouse_dir, spark=spark)
    return {
        "spark": spark,
        "input_files": InputFiles(input_dir=input_dir),
        "warehouse": warehouse,
        "io_manager": WarehouseIOManager(warehouse=warehouse),
    }
