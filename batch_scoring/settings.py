"""Every setting the project takes from the environment: the variables' names, their defaults and their
parsing, in one place. No Dagster and no Spark here: the Dagster layer, the command line and the
deployment adapters all read their settings through this module."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import date

INPUT_DIR_ENV = "BATCH_SCORING_INPUT_DIR"
WAREHOUSE_DIR_ENV = "BATCH_SCORING_WAREHOUSE_DIR"
SPARK_MASTER_ENV = "BATCH_SCORING_SPARK_MASTER"
SPARK_CONF_ENV = "BATCH_SCORING_SPARK_CONF"
CATALOG_ENV = "BATCH_SCORING_CATALOG"
SCHEMA_ENV = "BATCH_SCORING_SCHEMA"
ENGINE_ENV = "BATCH_SCORING_ENGINE"
DATABRICKS_HOST_ENV = "DATABRICKS_HOST"
DATABRICKS_TOKEN_ENV = "DATABRICKS_TOKEN"
DATABRICKS_WHEEL_ENV = "BATCH_SCORING_DATABRICKS_WHEEL"
DATABRICKS_COMPUTE_ENV = "BATCH_SCORING_DATABRICKS_COMPUTE"
DATABRICKS_CLUSTER_ENV = "BATCH_SCORING_DATABRICKS_CLUSTER"
DATABRICKS_CLUSTER_ID_ENV = "BATCH_SCORING_DATABRICKS_CLUSTER_ID"
DATABRICKS_VOLUME_ENV = "BATCH_SCORING_DATABRICKS_VOLUME"
DATABRICKS_POLL_ENV = "BATCH_SCORING_DATABRICKS_POLL_SECONDS"
WORKSPACE_MOUNT_ENV = "BATCH_SCORING_WORKSPACE_MOUNT"
DATABRICKS_RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"  # set by Databricks on every cluster
DAGSTER_HOME_ENV = "DAGSTER_HOME"  # Dagster's own: the folder of its instance (runs, events, schedules)
FIRST_DAY_ENV = "BATCH_SCORING_FIRST_DAY"
# Dagster's opt-in: a run over many days records its plan as one event per asset, not one per asset and day
PLANNED_DAYS_AS_RANGE_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"

DEFAULT_INPUT_DIR = "data/input"
DEFAULT_WAREHOUSE_DIR = "data/warehouse"
DEFAULT_FIRST_DAY = "2015-01-01"  # the public data set's first day
DEFAULT_DAGSTER_HOME = ".dagster_home"  # the project's own commands only: Dagster's tools need DAGSTER_HOME set
DEFAULT_WORKSPACE_MOUNT = "/"  # a cluster's driver sees DBFS at /dbfs and Unity Catalog volumes at /Volumes
DEFAULT_DATABRICKS_POLL_SECONDS = "10"
ENGINES = ("spark", "databricks")
# Where a Databricks run computes, and the setting each way needs: a new job cluster for the run (its
# new_cluster JSON), an all-purpose cluster that is already running (its id), or serverless compute (a
# Unity Catalog volume for the run's Pipes files, since serverless has no DBFS root).
DATABRICKS_COMPUTE_NEEDS = {
    "job_cluster": DATABRICKS_CLUSTER_ENV,
    "existing_cluster": DATABRICKS_CLUSTER_ID_ENV,
    "serverless": DATABRICKS_VOLUME_ENV,
}

# The Spark session's defaults, for a session this project builds (a platform's own session, such as
# Databricks', keeps its own). BATCH_SCORING_SPARK_MASTER and BATCH_SCORING_SPARK_CONF win over them.
SPARK_DEFAULTS = {
    "spark.master": "local[*]",
    "spark.sql.shuffle.partitions": "8",  # a few per core of a small machine; raise it on a cluster
    "spark.driver.memory": "4g",  # takes effect only when the JVM starts
    "spark.ui.enabled": "false",
}


def from_env(name: str, default: str) -> str:
    """A variable's value, or the default when it is unset or empty."""
    return os.environ.get(name) or default


def input_dir() -> str:
    return from_env(INPUT_DIR_ENV, DEFAULT_INPUT_DIR)


def warehouse_dir() -> str:
    return from_env(WAREHOUSE_DIR_ENV, DEFAULT_WAREHOUSE_DIR)


def first_day() -> date:
    """The first day of the daily partitions (UTC): no partition, schedule or drop before it is run."""
    value = from_env(FIRST_DAY_ENV, DEFAULT_FIRST_DAY)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{FIRST_DAY_ENV} is {value!r}: it must be a day, YYYY-MM-DD") from None


def dagster_home() -> str:
    """The absolute folder of the Dagster instance the project's own commands record their runs in."""
    return os.path.abspath(from_env(DAGSTER_HOME_ENV, DEFAULT_DAGSTER_HOME))


def catalog_schema() -> str:
    """`<catalog>.<schema>` when the tables are to be catalog tables (Unity Catalog), else "" (path-based tables
    under the warehouse folder). Both variables or neither; each a plain identifier."""
    catalog, schema = from_env(CATALOG_ENV, ""), from_env(SCHEMA_ENV, "")
    if bool(catalog) != bool(schema):
        raise ValueError(f"Set both {CATALOG_ENV} and {SCHEMA_ENV} (tables <catalog>.<schema>.<asset>), or neither")
    for name, value in ((CATALOG_ENV, catalog), (SCHEMA_ENV, schema)):
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{name} is {value!r}: it must be a plain name (letters, digits, _)")
    return f"{catalog}.{schema}" if catalog else ""


def engine() -> str:
    value = from_env(ENGINE_ENV, ENGINES[0])
    if value not in ENGINES:
        raise ValueError(f"{ENGINE_ENV} is {value!r}: it must be one of {', '.join(ENGINES)}")
    return value


def parse_json_object(text: str, source: str, example: str) -> dict:
    """A JSON object from a setting; the error names the setting but never echoes it (it may hold keys)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not JSON ({error})") from error
    if not isinstance(value, dict):
        raise ValueError(f"{source} must be a JSON object such as {example}")
    return value


def spark_config(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark settings of a session this project builds: the defaults, then the master and further
    settings from the environment, then `overrides` (tests size their session this way)."""
    conf = parse_json_object(from_env(SPARK_CONF_ENV, "{}"), SPARK_CONF_ENV, '{"spark.executor.memory": "8g"}')
    return {
        **SPARK_DEFAULTS,
        "spark.master": from_env(SPARK_MASTER_ENV, SPARK_DEFAULTS["spark.master"]),
        **{str(key): str(value) for key, value in conf.items()},
        **(overrides or {}),
    }


def parse_cluster_spec(text: str, source: str) -> dict:
    """A Databricks `new_cluster` specification from JSON; the error names where the JSON came from."""
    spec = parse_json_object(text, source, '{"spark_version": "...", "node_type_id": "..."}')
    missing = [key for key in ("spark_version", "node_type_id") if key not in spec]
    if missing:
        raise ValueError(
            f"{source} must be a Databricks new_cluster object with spark_version and node_type_id (missing: {missing})"
        )
    return spec


def databricks_compute() -> str:
    value = from_env(DATABRICKS_COMPUTE_ENV, "job_cluster")
    if value not in DATABRICKS_COMPUTE_NEEDS:
        raise ValueError(
            f"{DATABRICKS_COMPUTE_ENV} is {value!r}: it must be one of {', '.join(DATABRICKS_COMPUTE_NEEDS)}"
        )
    return value


def check_databricks_settings() -> str:
    """The compute of Databricks mode, once every setting it needs is set and well formed (else an error
    naming what to set), so a code location fails when it loads rather than when a run starts."""
    compute = databricks_compute()
    # host and token are read when a run starts (EnvVars), where the runs are: not needed to load the code
    needed = (DATABRICKS_WHEEL_ENV, DATABRICKS_COMPUTE_NEEDS[compute])
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"{ENGINE_ENV}=databricks with {DATABRICKS_COMPUTE_ENV}={compute} needs {' and '.join(missing)} "
            "(see docs/deployment.md, Databricks)"
        )
    if compute == "job_cluster":
        parse_cluster_spec(os.environ[DATABRICKS_CLUSTER_ENV], DATABRICKS_CLUSTER_ENV)
    if compute == "serverless" and not os.environ[DATABRICKS_VOLUME_ENV].startswith("/Volumes/"):
        raise ValueError(
            f"{DATABRICKS_VOLUME_ENV} must be a Unity Catalog volume path, /Volumes/<catalog>/<schema>/<volume>"
        )
    poll = from_env(DATABRICKS_POLL_ENV, DEFAULT_DATABRICKS_POLL_SECONDS)
    try:
        if float(poll) <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{DATABRICKS_POLL_ENV} must be a number of seconds above 0, not {poll!r}") from None
    return compute


def databricks_poll_seconds() -> float:
    return float(from_env(DATABRICKS_POLL_ENV, DEFAULT_DATABRICKS_POLL_SECONDS))


def workspace_path(path: str) -> str:
    """Where a workspace path (a DBFS path, `dbfs:/...` or `/tmp/...`, or a volume path `/Volumes/...`) is on a
    cluster's driver: under BATCH_SCORING_WORKSPACE_MOUNT (`/`: `/dbfs/...` and `/Volumes/...`, as Databricks
    mounts them)."""
    mount = from_env(WORKSPACE_MOUNT_ENV, DEFAULT_WORKSPACE_MOUNT)
    if path.startswith("/Volumes/"):
        return os.path.join(mount, path.lstrip("/"))
    return os.path.join(mount, "dbfs", path.removeprefix("dbfs:").lstrip("/"))
