"""Databricks mode: each asset runs as a Databricks job run on a new job cluster, through dagster-databricks Pipes.

The asset graph keeps its keys, lineage, partitions, backfill policy, config and checks; only where the
code runs changes. An asset's step submits a `python_wheel_task` that starts the project's entry point
(`batch_scoring.databricks_task`) from the project's wheel; that runs the very same asset code on the
cluster and sends the materialization's metadata and the checks' results back through Pipes.
"""

import json

import dagster as dg
from pydantic import Field

PACKAGE_NAME = "batch_scoring"
TASK_ENTRY_POINT = "batch-scoring-databricks-task"  # console script of the wheel, see pyproject.toml


def parse_cluster_spec(text: str, source: str) -> dict:
    """A Databricks `new_cluster` specification from JSON; the error names where the JSON came from."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not JSON ({error})") from error  # not echoed: it may hold settings
    missing = [key for key in ("spark_version", "node_type_id") if key not in spec] if isinstance(spec, dict) else []
    if not isinstance(spec, dict) or missing:
        raise ValueError(
            f"{source} must be a Databricks new_cluster object with spark_version and node_type_id "
            f"(missing: {missing or 'not an object'})"
        )
    return spec


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
            "new_cluster": parse_cluster_spec(self.cluster, "BATCH_SCORING_DATABRICKS_CLUSTER"),
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

        from batch_scoring.definitions import INPUT_DIR_ENV, WAREHOUSE_DIR_ENV

        client = WorkspaceClient(host=self.host, token=self.token)
        pipes = PipesDatabricksClient(
            client,
            # only the folders go to the cluster; the token stays with the orchestrator
            env={INPUT_DIR_ENV: self.input_dir, WAREHOUSE_DIR_ENV: self.warehouse_dir},
            message_reader=PipesDbfsMessageReader(client=client, interval=self.message_interval_seconds),
            poll_interval_seconds=self.poll_interval_seconds,
        )
        name = context.asset_key.to_user_string()
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
    """The same asset (key, lineage, partitions, backfill policy, config, checks) run by DatabricksJobs."""
    (spec,) = asset.specs
    # the run config the asset's function takes (a dg.Config's fields), if any: it goes along to the cluster
    config_fields = getattr(asset.op.config_field and asset.op.config_field.config_type, "fields", None)

    @dg.multi_asset(
        name=asset.op.name,
        specs=[spec],
        check_specs=list(asset.check_specs),
        backfill_policy=asset.backfill_policy,
        config_schema=dict(config_fields) if config_fields else None,
    )
    def asset_on_databricks(context: dg.AssetExecutionContext, databricks: DatabricksJobs):
        return databricks.materialize(context).get_results()

    return asset_on_databricks
