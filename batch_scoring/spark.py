"""The one place a SparkSession is built, so the CLI, Dagster runs and tests share the same settings."""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import SparkSession

# Settings every session gets. Timestamps in the data set carry no zone: they are read and written as
# UTC whatever the machine's zone, so a day partition means the same hours everywhere.
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.ui.showConsoleProgress": "false",
    # no _SUCCESS markers inside table folders: other engines read the folders as they are
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
}


def build_spark_session(
    master: str = "local[*]",
    shuffle_partitions: int = 8,
    driver_memory: str = "4g",
    ui_enabled: bool = False,
    conf: Mapping[str, str] | None = None,
    app_name: str = "batch_scoring",
) -> SparkSession:
    """Return the process's SparkSession, creating it with these settings if there is none yet.

    Spark allows one active session per process; settings that only take effect when the JVM
    starts (driver memory) apply to the first call only. `master` is `local[N]`/`local[*]` or a
    standalone cluster's `spark://host:port` (any master URL spark-submit takes, e.g. `yarn`).
    """
    if master.startswith("sc://"):
        raise ValueError(
            f"Spark Connect ({master}) is not supported: its client needs pandas and pyarrow, which this "
            "project does not install. Use a cluster's master URL (spark://host:7077) or Databricks."
        )
    builder = SparkSession.builder.appName(app_name).master(master)
    settings = {
        **BASE_CONF,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.driver.memory": driver_memory,
        "spark.ui.enabled": str(ui_enabled).lower(),
        **(conf or {}),
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    apply_runtime_settings(spark, settings)  # they also apply to a session that existed
    return spark


def apply_runtime_settings(spark: SparkSession, settings: Mapping[str, str] = BASE_CONF) -> SparkSession:
    """Set the SQL settings a running session accepts (all but those fixed when the JVM starts): on a
    cluster whose session the platform built (Databricks), the project's base settings come in this way."""
    for key, value in settings.items():
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    return spark
