"""The project's one Definitions object: every asset, resource, job, schedule and sensor."""

import json
import os

import dagster as dg

from batch_scoring.assets.features import features
from batch_scoring.assets.model import failure_model
from batch_scoring.assets.raw import RAW_ASSETS
from batch_scoring.assets.scoring import daily_predictions, maintenance_worklist
from batch_scoring.jobs import daily_scoring_job, daily_scoring_schedule, ingest_job, training_job
from batch_scoring.resources import InputFiles, ModelIOManager, ParquetIOManager, SparkResource, Warehouse
from batch_scoring.sensors import new_data_sensor

INPUT_DIR_ENV = "BATCH_SCORING_INPUT_DIR"
WAREHOUSE_DIR_ENV = "BATCH_SCORING_WAREHOUSE_DIR"
SPARK_MASTER_ENV = "BATCH_SCORING_SPARK_MASTER"
SPARK_CONF_ENV = "BATCH_SCORING_SPARK_CONF"
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
        raise ValueError(f"{SPARK_CONF_ENV} is not JSON ({error}): {text!r}") from error
    if not isinstance(conf, dict):
        raise ValueError(f'{SPARK_CONF_ENV} must be a JSON object such as {{"spark.executor.memory": "8g"}}')
    return {str(key): str(value) for key, value in conf.items()}


def build_resources() -> dict[str, object]:
    spark = SparkResource(master=setting(SPARK_MASTER_ENV, DEFAULT_SPARK_MASTER), conf=spark_conf_from_env())
    warehouse = Warehouse(root=setting(WAREHOUSE_DIR_ENV, DEFAULT_WAREHOUSE_DIR), spark=spark)
    return {
        "spark": spark,
        "input_files": InputFiles(input_dir=setting(INPUT_DIR_ENV, DEFAULT_INPUT_DIR)),
        "warehouse": warehouse,
        "io_manager": ParquetIOManager(warehouse=warehouse),
        "model_io_manager": ModelIOManager(warehouse=warehouse),
    }


def build_definitions() -> dg.Definitions:
    """The code location, configured from the environment as it is now."""
    return dg.Definitions(
        assets=[*RAW_ASSETS, features, failure_model, daily_predictions, maintenance_worklist],
        jobs=[ingest_job, training_job, daily_scoring_job],
        schedules=[daily_scoring_schedule],
        sensors=[new_data_sensor],
        resources=build_resources(),
        # one process per run, so one SparkSession serves every step of a run
        executor=dg.in_process_executor,
    )


defs = build_definitions()
