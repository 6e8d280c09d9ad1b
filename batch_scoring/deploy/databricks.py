"""Databricks mode: each Dagster run is one Databricks job run, started through dagster-databricks Pipes.

The asset graph keeps its keys, groups, lineage, partitions, backfill policy and checks, but all of it becomes
one subsettable multi-asset: whatever a run selects (a day's ingest, features, scores and worklist) goes to
Databricks as one task, which runs the project's steps for those assets in one Spark session
(`batch_scoring.deploy.databricks_task`) and reports each materialization and check back through Pipes.
The compute (BATCH_SCORING_DATABRICKS_COMPUTE) is a new job cluster for the run, an all-purpose cluster
that is already running, or serverless compute.
"""

import dagster as dg
from pydantic import Field

from batch_scoring import settings
from batch_scoring.defs.partitions import SPARK_BACKFILL_POLICY, calendar
from batch_scoring.defs.resources import env_var_or_default
from batch_scoring.deploy import STOPPED_MESSAGE

PACKAGE_NAME = "batch_scoring"
TASK_ENTRY_POINT = "batch-scoring-databricks-task"  # console script of the wheel, see pyproject.toml
TASK_KEY = "batch_scoring"
ENVIRONMENT_KEY = "batch_scoring"  # serverless: the task's environment, which installs the wheel
SERVERLESS_ENVIRONMENT_VERSION = "3"
NODE_NAME = "databricks_run"


class DatabricksRuns(dg.ConfigurableResource):
    """Runs a Dagster run's selected assets as one Databricks job run, on the configured compute."""

    host: str = Field(description="Workspace URL, https://<workspace>.cloud.databricks.com (DATABRICKS_HOST).")
    token: str = Field(description="Access token of a user or service principal (DATABRICKS_TOKEN, an EnvVar).")
    wheel: str = Field(
        description="Where the project's wheel lies for the compute to install (BATCH_SCORING_DATABRICKS_WHEEL), "
        "e.g. /Volumes/main/pdm/artifacts/batch_scoring-0.1.0-py3-none-any.whl."
    )
    compute: str = Field(
        description="job_cluster, existing_cluster or serverless (BATCH_SCORING_DATABRICKS_COMPUTE).",
    )
    cluster: str = Field(
        default="",
        description="job_cluster: the JSON of a Databricks new_cluster object (BATCH_SCORING_DATABRICKS_CLUSTER).",
    )
    cluster_id: str = Field(
        default="", description="existing_cluster: the all-purpose cluster's id (BATCH_SCORING_DATABRICKS_CLUSTER_ID)."
    )
    volume: str = Field(
        default="",
        description="serverless: a Unity Catalog volume path for the run's Pipes files "
        "(BATCH_SCORING_DATABRICKS_VOLUME).",
    )
    input_dir: str = Field(description="The input folder as the compute sees it (BATCH_SCORING_INPUT_DIR).")
    warehouse_dir: str = Field(description="The warehouse as the compute sees it (BATCH_SCORING_WAREHOUSE_DIR).")
    catalog_schema: str = Field(
        default="", description="<catalog>.<schema> of the tables (BATCH_SCORING_CATALOG, BATCH_SCORING_SCHEMA)."
    )
    poll_interval_seconds: float = Field(
        default=10.0,
        description="How often the run's state and its Pipes messages are read "
        "(BATCH_SCORING_DATABRICKS_POLL_SECONDS).",
    )

    def submit_task(self) -> dict:
        """The run's one task: the wheel's entry point, on the configured compute."""
        task = {
            "task_key": TASK_KEY,
            "python_wheel_task": {"package_name": PACKAGE_NAME, "entry_point": TASK_ENTRY_POINT},
        }
        if self.compute == "serverless":
            return {**task, "environment_key": ENVIRONMENT_KEY}
        task["libraries"] = [{"whl": self.wheel}]
        if self.compute == "existing_cluster":
            return {**task, "existing_cluster_id": self.cluster_id}
        return {**task, "new_cluster": settings.parse_cluster_spec(self.cluster, settings.DATABRICKS_CLUSTER_ENV)}

    def _submit_args(self, run_name: str) -> dict:
        from databricks.sdk.service import jobs

        args: dict = {"run_name": run_name}
        if self.compute == "serverless":
            spec = {"environment_version": SERVERLESS_ENVIRONMENT_VERSION, "dependencies": [self.wheel]}
            args["environments"] = [jobs.JobEnvironment.from_dict({"environment_key": ENVIRONMENT_KEY, "spec": spec})]
        return args

    def _pipes_client(self):
        # imported here: this module is imported in local mode too, where dagster-databricks is not needed
        from dagster_databricks.pipes import (
            PipesDatabricksClient,
            PipesDatabricksServerlessClient,
            PipesDbfsMessageReader,
            PipesUnityCatalogVolumesMessageReader,
        )
        from databricks.sdk import WorkspaceClient

        client = WorkspaceClient(host=self.host, token=self.token)
        interval = self.poll_interval_seconds
        if self.compute == "serverless":
            reader = PipesUnityCatalogVolumesMessageReader(client=client, volume_path=self.volume, interval=interval)
            return PipesDatabricksServerlessClient(
                client, volume_path=self.volume, message_reader=reader, poll_interval_seconds=interval
            )
        reader = PipesDbfsMessageReader(client=client, interval=interval)
        return PipesDatabricksClient(client, message_reader=reader, poll_interval_seconds=interval)

    def run(self, context: dg.AssetExecutionContext, config: dict) -> dg.PipesClientCompletedInvocation:
        """Run the selected assets on Databricks and wait; the folders and the run config go along as Pipes extras
        (the token stays with the orchestrator)."""
        from databricks.sdk.service import jobs

        days = (
            f" {context.partition_key_range.start}..{context.partition_key_range.end}"
            if context.has_partition_key_range
            else ""
        )
        extras = {
            "input_dir": self.input_dir,
            "warehouse_dir": self.warehouse_dir,
            "catalog_schema": self.catalog_schema,
            "calendar": [day.isoformat() for day in calendar()],
            "config": config,
        }
        return self._pipes_client().run(
            context=context,
            task=jobs.SubmitTask.from_dict(self.submit_task()),
            extras=extras,
            submit_args=self._submit_args(f"batch_scoring {context.run.job_name}{days}"),
        )


def _inside_one_run(spec: dg.AssetSpec, keys: set[dg.AssetKey]) -> dg.AssetSpec:
    """A spec whose dependencies on the other assets of the run are plain: a multi-asset takes one partition mapping
    per upstream key, and those lookbacks are steps inside the one Databricks run (the task reads them). A
    self-dependency keeps its mapping: it is what orders days across runs."""
    deps = [
        dep if dep.asset_key == spec.key or dep.asset_key not in keys else dg.AssetDep(dep.asset_key)
        for dep in spec.deps
    ]
    return spec.replace_attributes(deps=deps)


def on_databricks(assets: list[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    """The same assets (keys, groups, lineage, partitions, checks) as one subsettable multi-asset that
    DatabricksRuns runs: one Databricks job run per Dagster run. Run config goes under the multi-asset,
    by the asset's step name: `ops: {databricks_run: {config: {maintenance_worklist: {...}}}}`."""
    specs = [spec for asset in assets for spec in asset.specs]
    keys = {spec.key for spec in specs}
    config_schema = {
        asset.op.name: dg.Field(asset.op.config_field.config_type, default_value={})
        for asset in assets
        if asset.op.config_field is not None and getattr(asset.op.config_field.config_type, "fields", None)
    }

    @dg.multi_asset(
        name=NODE_NAME,
        specs=[_inside_one_run(spec, keys) for spec in specs],
        check_specs=[check for asset in assets for check in asset.check_specs],
        can_subset=True,
        backfill_policy=SPARK_BACKFILL_POLICY,
        config_schema=config_schema,
    )
    def databricks_run(context: dg.AssetExecutionContext, databricks: DatabricksRuns):
        invocation = databricks.run(context, dict(context.op_execution_context.op_config or {}))
        yield from invocation.get_results()
        for message in invocation.get_custom_messages():
            if STOPPED_MESSAGE in message:
                raise dg.Failure(description=message[STOPPED_MESSAGE])

    return databricks_run


def databricks_runs_from_env() -> DatabricksRuns:
    """Databricks mode's resource; host and token only ever as EnvVars, so no secret is in config or the UI."""
    compute = settings.check_databricks_settings()
    return DatabricksRuns(
        host=dg.EnvVar(settings.DATABRICKS_HOST_ENV),
        token=dg.EnvVar(settings.DATABRICKS_TOKEN_ENV),
        wheel=dg.EnvVar(settings.DATABRICKS_WHEEL_ENV),
        compute=compute,
        cluster=env_var_or_default(settings.DATABRICKS_CLUSTER_ENV, ""),
        cluster_id=env_var_or_default(settings.DATABRICKS_CLUSTER_ID_ENV, ""),
        volume=env_var_or_default(settings.DATABRICKS_VOLUME_ENV, ""),
        input_dir=env_var_or_default(settings.INPUT_DIR_ENV, settings.DEFAULT_INPUT_DIR),
        warehouse_dir=env_var_or_default(settings.WAREHOUSE_DIR_ENV, settings.DEFAULT_WAREHOUSE_DIR),
        catalog_schema=settings.catalog_schema(),
        poll_interval_seconds=settings.databricks_poll_seconds(),
    )
