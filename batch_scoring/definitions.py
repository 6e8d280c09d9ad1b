"""The project's one Definitions object: every asset, resource, job, schedule and sensor."""

import os

import dagster as dg

from batch_scoring.assets.features import features
from batch_scoring.assets.model import failure_model
from batch_scoring.assets.raw import RAW_ASSETS
from batch_scoring.assets.scoring import daily_predictions, maintenance_worklist
from batch_scoring.partitions import DAILY_PARTITIONS
from batch_scoring.resources import InputFiles, ModelIOManager, ParquetIOManager, SparkResource, Warehouse

INPUT_DIR_ENV = "BATCH_SCORING_INPUT_DIR"
WAREHOUSE_DIR_ENV = "BATCH_SCORING_WAREHOUSE_DIR"
DEFAULT_INPUT_DIR = "data/input"
DEFAULT_WAREHOUSE_DIR = "data/warehouse"


def setting(env_name: str, default: str) -> str | dg.EnvVar:
    """The environment variable when it is set (read at run time, shown by name in the UI), else the default."""
    return dg.EnvVar(env_name) if env_name in os.environ else default


def build_resources() -> dict[str, object]:
    spark = SparkResource()
    warehouse = Warehouse(root=setting(WAREHOUSE_DIR_ENV, DEFAULT_WAREHOUSE_DIR), spark=spark)
    return {
        "spark": spark,
        "input_files": InputFiles(input_dir=setting(INPUT_DIR_ENV, DEFAULT_INPUT_DIR)),
        "warehouse": warehouse,
        "io_manager": ParquetIOManager(warehouse=warehouse),
        "model_io_manager": ModelIOManager(warehouse=warehouse),
    }


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("raw"),
    description="Read the five input tables into the warehouse; for telemetry, the selected days.",
)


training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("raw", "features", "model"),
    description="Ingest the selected days, build their features and train failure_model on them.",
)


daily_scoring_job = dg.define_asset_job(
    "daily_scoring_job",
    selection=dg.AssetSelection.groups("raw", "features", "scoring"),
    partitions_def=DAILY_PARTITIONS,
    description="Ingest a day, build its features, score it with the newest usable model, list machines for the crews.",
)

# Every day at 06:00 UTC, score the day that ended at midnight UTC (the newest complete partition).
daily_scoring_schedule = dg.build_schedule_from_partitioned_job(
    daily_scoring_job,
    hour_of_day=6,
    minute_of_hour=0,
    name="daily_scoring_schedule",
    description="At 06:00 UTC, runs daily_scoring_job for the previous day (UTC).",
)


def build_definitions() -> dg.Definitions:
    """The code location, configured from the environment as it is now."""
    return dg.Definitions(
        assets=[*RAW_ASSETS, features, failure_model, daily_predictions, maintenance_worklist],
        jobs=[ingest_job, training_job, daily_scoring_job],
        schedules=[daily_scoring_schedule],
        resources=build_resources(),
        # one process per run, so one SparkSession serves every step of a run
        executor=dg.in_process_executor,
    )


defs = build_definitions()
