"""The one place a SparkSession is built, so the CLI, Dagster runs and tests share the same settings."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from pyspark import SparkConf, SparkContext, StorageLevel
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

# Delta Lake's jars, which Spark resolves from Maven Central (or ~/.m2) when the JVM starts. The
# Python package is delta-spark 4.4.1, whose jars were never published; 4.4.0 is the newest Delta
# release for Spark 4.2 there. Path-based tables need only delta-spark and delta-storage: the Delta
# kernel modules bring their own Hadoop, Parquet and Jackson, and the rest Spark ships itself.
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"
DELTA_EXCLUDED_PACKAGES = (
    "io.delta:delta-kernel-api",
    "io.delta:delta-kernel-defaults",
    "io.delta:delta-kernel-unitycatalog",
    "org.slf4j:slf4j-api",
    "org.apache.logging.log4j:log4j-api",
    "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-slf4j2-impl",
    "com.google.code.findbugs:jsr305",
)

# Settings every session gets. Timestamps in the data set carry no zone: they are read and written as
# UTC whatever the machine's zone, so a day partition means the same hours everywhere.
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Delta for a warehouse of small daily commits (a platform's own session, such as Databricks',
    # keeps its settings): a table's log is replayed in one task (the default, 50, is for large logs on
    # clusters), and no checksum file is written beside each commit (it costs a pass over the table's state)
    "spark.databricks.delta.snapshotPartitions": "1",
    "spark.databricks.delta.writeChecksumFile.enabled": "false",
    # PySpark otherwise walks the Python stack and makes four more JVM calls for every column function
    # (F.col, F.when, ...) to name the call site in errors: building a step's plan took about five times as long
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}
# what a session the project builds itself adds: on Databricks the runtime brings Delta
# where a step keeps the rows it reads several times (a bulk file's parsed rows, a range's features): the
# executors' local disks, not the heap. At 10,000 machines x 365 days Spark's memory cache ran a 4 GiB driver out
# of heap instead of spilling, both while caching the parsed telemetry and while reading spilled features back
STEP_CACHE = StorageLevel.DISK_ONLY
JAR_CONF = {"spark.jars.packages": DELTA_PACKAGE, "spark.jars.excludes": ",".join(DELTA_EXCLUDED_PACKAGES)}


def build_spark_session(config: Mapping[str, str], app_name: str = "batch_scoring") -> SparkSession:
    """Return the process's SparkSession, creating it with `config` (`batch_scoring.settings.spark_config()`,
    which holds `spark.master`) if there is none yet.

    Spark allows one active session per process; settings that only take effect when the JVM starts
    (driver memory) apply to the first call only. The master is `local[N]`/`local[*]` or a cluster's
    master URL (`spark://host:port`, `yarn`, any URL spark-submit takes).
    """
    master = config.get("spark.master", "")
    if master.startswith("sc://"):
        raise ValueError(
            f"Spark Connect ({master}) is not supported: its client needs pandas and pyarrow, which this "
            "project does not install. Use a cluster's master URL (spark://host:7077) or Databricks."
        )
    settings = {"spark.app.name": app_name, **BASE_CONF, **JAR_CONF, **config}
    if SparkContext._active_spark_context is None:  # the process's first session starts the JVM
        _start_quietly(SparkConf().setAll(settings.items()))
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    apply_runtime_settings(spark, settings)  # they also apply to a session that existed
    return spark


class _JvmErrors:
    """The JVM's stderr, read on a thread: held back while Spark starts (spark-submit's report on Delta's jars,
    log4j's and the JVM's start-up notices, a screenful on every start), passed on to this process's stderr once
    it is up, and shown after all if the start fails, since it then says why."""

    def __init__(self) -> None:
        self._read_end, self.write_end = os.pipe()
        self._held: list[bytes] | None = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._pass_on, name="spark-jvm-stderr", daemon=True)
        self._reader.start()

    def _pass_on(self) -> None:
        with os.fdopen(self._read_end, "rb") as lines:
            for line in lines:
                with self._lock:
                    if self._held is not None:
                        self._held.append(line)
                        continue
                os.write(2, line)

    def release(self, show_held: bool) -> None:
        """Stop holding lines back; write out those held if `show_held`, else drop them."""
        os.close(self.write_end)  # the JVM keeps its own copy
        if show_held:
            self._reader.join(timeout=5)  # the JVM has exited: read what it wrote
        with self._lock:
            held, self._held = self._held or [], None
        if show_held:
            os.write(2, b"".join(held))


def _start_quietly(conf: SparkConf) -> None:
    """Start the JVM and the SparkContext with `conf`, without its start-up chatter."""
    errors = _JvmErrors()
    try:
        SparkContext(conf=conf, gateway=launch_gateway(conf, popen_kwargs={"stderr": errors.write_end}))
    except BaseException:
        errors.release(show_held=True)
        raise
    errors.release(show_held=False)


# set only when the JVM starts
STATIC_SQL_CONF = ("spark.sql.extensions", "spark.sql.catalog.spark_catalog")


def apply_runtime_settings(spark: SparkSession, settings: Mapping[str, str] = BASE_CONF) -> SparkSession:
    """Set the SQL settings a running session accepts (all but those fixed when the JVM starts): on a
    cluster whose session the platform built (Databricks), the project's base settings come in this way."""
    for key, value in settings.items():
        if key.startswith("spark.sql.") and key not in STATIC_SQL_CONF:
            spark.conf.set(key, value)
    return spark
