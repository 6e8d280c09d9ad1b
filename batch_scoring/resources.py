"""Dagster resources: the Spark session, the input folder and the warehouse, and the Parquet IO manager."""

from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from batch_scoring.ingest import DROP_READY_MARKER, DROPS_FOLDER, SourceFile, plan_sources
from batch_scoring.metadata import COLUMN_SCHEMA_KEY, spark_schema, table_metadata
from batch_scoring.model_store import ModelStore, TrainedModel
from batch_scoring.spark import build_spark_session
from batch_scoring.storage import TableStore
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
    """Where every table is written: `<root>/<asset name>/`, daily partitions under `date=YYYY-MM-DD/`."""

    root: str = Field(description="Warehouse folder (BATCH_SCORING_WAREHOUSE_DIR).")
    spark: SparkResource

    def store(self) -> TableStore:
        return TableStore(self.spark.get_session(), Path(self.root))


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores Spark DataFrames as Parquet tables in the warehouse, one partition replaced at a time.

    An asset's Spark schema comes from its `dagster/column_schema` metadata, so tables are read
    with an explicit schema and a write whose columns differ from the declared ones fails.
    """

    warehouse: Warehouse

    def handle_output(self, context: dg.OutputContext, obj: DataFrame) -> None:
        name = context.asset_key.path[-1]
        declared = spark_schema(context.definition_metadata[COLUMN_SCHEMA_KEY])
        if obj.columns != declared.fieldNames():
            raise ValueError(f"{name}: columns {obj.columns} differ from the declared {declared.fieldNames()}")
        partitions = context.asset_partition_keys if context.has_asset_partitions else None
        store = self.warehouse.store()
        store.write(name, obj, partitions)
        # the rows written are exactly `obj`'s (assets persist what they return), so the metadata comes
        # from them rather than from reading the files back, which a concurrent run may replace meanwhile
        metadata = table_metadata(obj)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(store.path(name))), **metadata})

    def load_input(self, context: dg.InputContext) -> DataFrame:
        upstream = context.upstream_output
        name = upstream.asset_key.path[-1]
        schema: T.StructType = spark_schema(upstream.definition_metadata[COLUMN_SCHEMA_KEY])
        partitions = context.asset_partition_keys if context.has_asset_partitions else None
        # a snapshot: another run (the schedule beside a backfill) may replace the table while this step runs
        return self.warehouse.store().snapshot(name, schema, partitions)


class ModelIOManager(dg.ConfigurableIOManager):
    """Keeps every trained model as a version under `<warehouse>/<asset name>/versions/`.

    Loading gives the newest version, and fails, saying what to materialize, when there is none or
    when the newest one failed its check.
    """

    warehouse: Warehouse

    def _store(self, asset_key: dg.AssetKey) -> ModelStore:
        self.warehouse.spark.get_session()  # saving and loading a PipelineModel need the session
        return ModelStore(Path(self.warehouse.root) / asset_key.path[-1])

    def handle_output(self, context: dg.OutputContext, obj: TrainedModel) -> None:
        path = self._store(context.asset_key).save(obj)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> TrainedModel:
        return self._store(context.upstream_output.asset_key).load_latest_usable()


def pipeline_resources(spark: SparkResource, input_dir: str, warehouse_dir: str) -> dict[str, object]:
    """Every resource the assets use, around one Spark resource and the two folders (str or EnvVar)."""
    warehouse = Warehouse(root=warehouse_dir, spark=spark)
    return {
        "spark": spark,
        "input_files": InputFiles(input_dir=input_dir),
        "warehouse": warehouse,
        "io_manager": ParquetIOManager(warehouse=warehouse),
        "model_io_manager": ModelIOManager(warehouse=warehouse),
    }
