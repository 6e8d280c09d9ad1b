"""The project's one Definitions object: every asset, resource, job, schedule and sensor."""

import json
import os

import dagster as dg

from batch_scoring.assets.features import features
from batch_scoring.assets.model import failure_model
from batch_scoring.assets.raw import RAW_ASSETS
from batch_scoring.assets.scoring import daily_predictions, maintenance_worklist
from batch_scoring.databricks import DatabricksJobs, on_databricks, parse_cluster_spec
from batch_scoring.jobs import daily_scoring_job, daily_scoring_schedule, ingest_job, training_job
from batch_scoring.resources import SparkResource, pipeline_resources
from batch_scoring.sensors import new_data_sensor

INPUT_DIR_ENV = "BATCH_SCORING_INPUT_DIR"
WAREHOUSE_DIR_ENV = "BATCH_SCORING_WAREHOUSE_DIR"
SPARK_MASTER_ENV = "BATCH_SCORING_SPARK_MASTER"
SPARK_CONF_ENV = "BATCH_SCORING_SPARK_CONF"
ENGINE_ENV = "BATCH_SCORING_ENGINE"
DATABRICKS_HOST_ENV = "DATABRICKS_HOST"
DATABRICKS_TOKEN_ENV = "DATABRICKS_TOKEN"
DATABRICKS_WHEEL_ENV = "BATCH_SCORING_DATABRICKS_WHEEL"
DATABRICKS_CLUSTER_ENV = "BATCH_SCORING_DATABRICKS_CLUSTER"
ENGINES = ("spark", "databricks")
DEFAULT_INPUT_DIR = "data/input"
DEFAULT_WAREHOUSE_DIR = "data/warehouse"
DEFAULT_SPARK_MASTER = "local[*]"


def setting(env_name: str, default: str) -> str | dg.EnvVar:
    """The environment variable when it is set (read at run time, shown by name in the UI), else the default."""
    return dg.EnvVar(env_name) if env_name in os.environ else default


def spark_conf_from_env() -> dict[str, str]:
    """Further Spark settings from BATCH_SCORING_SPARK_CONF, a JSON object of setting names to values."""
    text = os.environ.get(SPARK_CONF_ENV, "{}")
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{SPARK_CONF_ENV} is not JSON ({error})") from error  # not echoed: it may hold keys
    if not isinstance(conf, dict):
        raise ValueError(f'{SPARK_CONF_ENV} must be a JSON object such as {{"spark.executor.memory": "8g"}}')
    return {str(key): str(value) for key, value in conf.items()}


# Every asset, as its code runs in a Spark session: in this process (local Spark or a cluster's driver)
# or, in Databricks mode, on the job cluster a Databricks job run starts.
SPARK_ASSETS = [*RAW_ASSETS, features, failure_model, daily_predictions, maintenance_worklist]


def engine_from_env() -> str:
    engine = os.environ.get(ENGINE_ENV, "spark")
    if engine not in ENGINES:
        raise ValueError(f"{ENGINE_ENV} is {engine!r}: it must be one of {', '.join(ENGINES)}")
    return engine


def databricks_jobs_from_env() -> DatabricksJobs:
    """Databricks mode's resource; host and token only ever as EnvVars, so no secret is in config or the UI."""
    missing = [name for name in (DATABRICKS_WHEEL_ENV, DATABRICKS_CLUSTER_ENV) if not os.environ.get(name)]
    if missing:
        raise ValueError(f"{ENGINE_ENV}=databricks needs {' and '.join(missing)} (see the README, Databricks)")
    parse_cluster_spec(os.environ[DATABRICKS_CLUSTER_ENV], DATABRICKS_CLUSTER_ENV)  # fail when loading, not later
    return DatabricksJobs(
        host=dg.EnvVar(DATABRICKS_HOST_ENV),
        token=dg.EnvVar(DATABRICKS_TOKEN_ENV),
        wheel=dg.EnvVar(DATABRICKS_WHEEL_ENV),
        cluster=dg.EnvVar(DATABRICKS_CLUSTER_ENV),
        input_dir=setting(INPUT_DIR_ENV, DEFAULT_INPUT_DIR),
        warehouse_dir=setting(WAREHOUSE_DIR_ENV, DEFAULT_WAREHOUSE_DIR),
    )


def build_resources() -> dict[str, object]:
    spark = SparkResource(master=setting(SPARK_MASTER_ENV, DEFAULT_SPARK_MASTER), conf=spark_conf_from_env())
    return pipeline_resources(
        spark, setting(INPUT_DIR_ENV, DEFAULT_INPUT_DIR), setting(WAREHOUSE_DIR_ENV, DEFAULT_WAREHOUSE_DIR)
    )


def build_definitions() -> dg.Definitions:
    """The code location, configured from the environment as it is now."""
    resources = build_resources()
    assets = SPARK_ASSETS
    if engine_from_env() == "databricks":
        assets = [on_databricks(asset) for asset in SPARK_ASSETS]
        resources["databricks"] = databricks_jobs_from_env()
    return dg.Definitions(
        assets=assets,
        jobs=[ingest_job, training_job, daily_scoring_job],
        schedules=[daily_scoring_schedule],
        sensors=[new_data_sensor],
        resources=resources,
        # one process per run, so one SparkSession serves every step of a run
        executor=dg.in_process_executor,
    )


defs = build_definitions()
