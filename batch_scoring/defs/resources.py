"""Dagster resources: the Spark session, the input folder and the warehouse."""

import os
from datetime import date
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import SparkSession

from batch_scoring.lib.ingest import (
    DROPS_FOLDER,
    drop_folders,
    ready_drops,
    source_files,
    sources_fingerprint,
)
from batch_scoring.lib.spark import build_spark_session
from batch_scoring.lib.tables import SourceTable
from batch_scoring.storage.delta import DeltaTables


def env_var_or_default(env_name: str, default: str) -> str | dg.EnvVar:
    """The environment variable when it is set (read at run time, shown by name in the UI), else the default."""
    return dg.EnvVar(env_name) if os.environ.get(env_name) else default


class SparkResource(LazyPySparkResource):
    """dagster-pyspark's lazily created SparkSession, built by the project's one session builder
    (`lib.spark.build_spark_session`: Delta's package and SQL extensions) from `spark_config`
    (`batch_scoring.settings.spark_config()`: local by default; set `spark.master` to a cluster's URL to
    scale out, with the input and warehouse folders on one file system the driver and every worker see)."""

    spark_config: dict[str, str] = Field(
        description="Spark settings, spark.master included (BATCH_SCORING_SPARK_MASTER, BATCH_SCORING_SPARK_CONF)."
    )

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def _init_session(self) -> None:
        """The process's session: the first caller creates it and later callers get it as it is, so copies of
        this resource (nested in the warehouse) cannot undo its settings."""
        if self._spark_session is None:
            self._spark_session = SparkSession.getActiveSession() or build_spark_session(self.spark_config)

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
        return drop_folders(Path(self.input_dir))

    def ready_drops(self) -> dict[date, Path]:
        return ready_drops(Path(self.input_dir))

    def fingerprint(self, table: SourceTable) -> str:
        """The fingerprint of a whole table's files: the data version its raw asset records."""
        return sources_fingerprint(source_files(Path(self.input_dir), table))


class Warehouse(dg.ConfigurableResource):
    """Where every table is kept: the Delta table `<root>/<asset name>/`, or `<catalog>.<schema>.<asset name>`
    in a catalog; daily ones partitioned by `date`. Models and the crews' files are under `root` either way."""

    root: str = Field(description="Warehouse folder or URI (BATCH_SCORING_WAREHOUSE_DIR).")
    catalog_schema: str = Field(
        default="",
        description="<catalog>.<schema> of the tables (BATCH_SCORING_CATALOG, BATCH_SCORING_SCHEMA); "
        "empty: path-based tables under root.",
    )
    spark: SparkResource

    def tables(self) -> DeltaTables:
        return DeltaTables(self.spark.spark_session, self.root, self.catalog_schema)
