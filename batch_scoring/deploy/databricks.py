"""Databricks mode: each asset runs as a Databricks job run on a new job cluster, through dagster-databricks Pipes.

The asset graph keeps its keys, lineage, partitions, backfill policy, config and checks; only where the
code runs changes. An asset's step submits a `python_wheel_task` that starts the project's entry point
(`batch_scoring.deploy.databricks_task`) from the project's wheel; that runs the very same asset code on the
cluster and sends the materialization's metadata and the checks' results back through Pipes.
"""

import dagster as dg
from pydantic import Field

from batch_scoring import settings
from batch_scoring.defs.resources import env_var_or_default

PACKAGE_NAME = "batch_scoring"
TASK_ENTRY_POINT = "batch-scoring-databricks-task"  # console script of the wheel, see pyproject.toml


class DatabricksJobs(dg.ConfigurableResource):
    """Runs an asset's own code as a Databricks job run, on a new job cluster started from `cluster`."""

    host: str = Field(description="Workspace URL, https://<workspace>.cloud.databricks.com (DATABRICKS_HOST).")
    token: str = Field(description="Access token of a user or service principal (DATABRICKS_TOKEN, an EnvVar).")
    wheel: str = Field(
        description="Where the project's wheel lies for clusters to install (BATCH_SCORING_DATABRICKS_WHEEL), "
        "e.g. /Volumes/main/pdm/artifacts/batch_scoring-0.1.0-py3-none-any.whl or dbfs:/FileStore/wheels/...."
    )
    cluster: str = Field(
        description="The job cluster: the JSON of a Databricks new_cluster object (BATCH_SCORING_DATABRICKS_CLUSTER)."
    )
    input_dir: str = Field(description="The input folder as the cluster sees it (BATCH_SCORING_INPUT_DIR).")
    warehouse_dir: str = Field(description="The warehouse folder as the cluster sees it (BATCH_SCORING_WAREHOUSE_DIR).")
    poll_interval_seconds: float = Field(default=10.0, description="How often the run's state is asked for.")
    message_interval_seconds: float = Field(default=10.0, description="How often the run's Pipes messages are read.")

    def submit_task(self, asset_name: str) -> dict:
        return {
            "task_key": asset_name,
            "new_cluster": settings.parse_cluster_spec(self.cluster, settings.DATABRICKS_CLUSTER_ENV),
            "libraries": [{"whl": self.wheel}],
            "python_wheel_task": {"package_name": PACKAGE_NAME, "entry_point": TASK_ENTRY_POINT},
        }

    def materialize(self, context: dg.AssetExecutionContext) -> dg.PipesClientCompletedInvocation:
        """Run the step's asset on Databricks and wait for it; its run config goes along as a Pipes extra."""
        # imported here: the job cluster runs this module's neighbours without dagster-databricks installed
        from dagster_databricks import PipesDatabricksClient
        from dagster_databricks.pipes import PipesDbfsMessageReader
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.service import jobs

        client = WorkspaceClient(host=self.host, token=self.token)
        pipes = PipesDatabricksClient(
            client,
            # only the folders go to the cluster; the token stays with the orchestrator
            env={settings.INPUT_DIR_ENV: self.input_dir, settings.WAREHOUSE_DIR_ENV: self.warehouse_dir},
            message_reader=PipesDbfsMessageReader(client=client, interval=self.message_interval_seconds),
            poll_interval_seconds=self.poll_interval_seconds,
        )
        name = context.assets_def.node_def.name  # the step: an asset, or a table with its quarantine
        days = (
            f" {context.partition_key_range.start}..{context.partition_key_range.end}"
            if context.has_partition_key_range
            else ""
        )
        return pipes.run(
            context=context,
            task=jobs.SubmitTask.from_dict(self.submit_task(name)),
            extras={"op_config": context.op_execution_context.op_config},
            submit_args={"run_name": f"batch_scoring {name}{days}"},
        )


def on_databricks(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The same assets (keys, lineage, partitions, backfill policy, config, checks) run by DatabricksJobs."""
    # the run config the asset's function takes (a dg.Config's fields), if any: it goes along to the cluster
    config_fields = getattr(asset.op.config_field and asset.op.config_field.config_type, "fields", None)

    @dg.multi_asset(
        name=asset.op.name,
        specs=list(asset.specs),
        check_specs=list(asset.check_specs),
        backfill_policy=asset.backfill_policy,
        config_schema=dict(config_fields) if config_fields else None,
    )
    def asset_on_databricks(context: dg.AssetExecutionContext, databricks: DatabricksJobs):
        return databricks.materialize(context).get_results()

    return asset_on_databricks


def databricks_jobs_from_env() -> DatabricksJobs:
    """Databricks mode's resource; host and token only ever as EnvVars, so no secret is in config or the UI."""
    missing = settings.databricks_settings_missing()
    if missing:
        raise ValueError(f"{settings.ENGINE_ENV}=databricks needs {' and '.join(missing)} (see the README, Databricks)")
    # fail when the code location loads, not when a run starts
    settings.parse_cluster_spec(settings.from_env(settings.DATABRICKS_CLUSTER_ENV, ""), settings.DATABRICKS_CLUSTER_ENV)
    return DatabricksJobs(
        host=dg.EnvVar(settings.DATABRICKS_HOST_ENV),
        token=dg.EnvVar(settings.DATABRICKS_TOKEN_ENV),
        wheel=dg.EnvVar(settings.DATABRICKS_WHEEL_ENV),
        cluster=dg.EnvVar(settings.DATABRICKS_CLUSTER_ENV),
        input_dir=env_var_or_default(settings.INPUT_DIR_ENV, settings.DEFAULT_INPUT_DIR),
        warehouse_dir=env_var_or_default(settings.WAREHOUSE_DIR_ENV, settings.DEFAULT_WAREHOUSE_DIR),
    )
