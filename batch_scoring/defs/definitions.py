"""The code location: one Definitions object, built when Dagster loads it (not when this module is
imported), from the environment as it is then."""

import dagster as dg

from batch_scoring import settings
from batch_scoring.defs.assets import SPARK_ASSETS
from batch_scoring.defs.assets.scoring import CREW_PAGES_KEY, WORKLIST_FILES_KEY
from batch_scoring.defs.io_managers import CrewPages, WarehouseIOManager, WorklistFiles
from batch_scoring.defs.jobs import JOBS
from batch_scoring.defs.resources import InputFiles, SparkResource, Warehouse, env_var_or_default
from batch_scoring.defs.schedules import daily_scoring_schedule, prediction_outcomes_schedule
from batch_scoring.defs.sensors import new_data_sensor


def pipeline_resources(
    spark: SparkResource, input_dir: str | dg.EnvVar, warehouse_dir: str | dg.EnvVar, catalog_schema: str = ""
) -> dict:
    """Every resource the assets use, around one Spark resource, the two folders and the tables' catalog."""
    warehouse = Warehouse(root=warehouse_dir, catalog_schema=catalog_schema, spark=spark)
    return {
        "spark": spark,
        "input_files": InputFiles(input_dir=input_dir),
        "warehouse": warehouse,
        "io_manager": WarehouseIOManager(warehouse=warehouse),
        WORKLIST_FILES_KEY: WorklistFiles(warehouse=warehouse),
        CREW_PAGES_KEY: CrewPages(warehouse=warehouse),
    }


def resources_from_env() -> dict:
    return pipeline_resources(
        SparkResource(spark_config=settings.spark_config()),
        env_var_or_default(settings.INPUT_DIR_ENV, settings.DEFAULT_INPUT_DIR),
        env_var_or_default(settings.WAREHOUSE_DIR_ENV, settings.DEFAULT_WAREHOUSE_DIR),
        settings.catalog_schema(),
    )


def build_definitions() -> dg.Definitions:
    """The code location, configured from the environment as it is now."""
    resources = resources_from_env()
    assets = SPARK_ASSETS
    if settings.engine() == "databricks":
        from batch_scoring.deploy.databricks import databricks_runs_from_env, on_databricks

        assets = [on_databricks(SPARK_ASSETS)]
        resources["databricks"] = databricks_runs_from_env()
    return dg.Definitions(
        assets=assets,
        jobs=JOBS,
        schedules=[daily_scoring_schedule, prediction_outcomes_schedule],
        sensors=[new_data_sensor],
        resources=resources,
        # one process per run, so one SparkSession serves every step of a run
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
