"""The Databricks side of an asset run: the entry point a Databricks job run starts from the project's wheel.

It materializes the one asset Dagster asked for with the project's own asset code (the same function,
IO manager and checks as a local run), in the job cluster's Spark session, reading and writing the
storage contract's paths, and reports the materialization's metadata and the checks' results back to
the orchestrating Dagster run through Pipes (messages in a DBFS folder).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg
from dagster_pipes import (
    PipesBufferedFilesystemMessageWriterChannel,
    PipesContext,
    PipesContextLoader,
    PipesDbfsMessageWriter,
    PipesParams,
    open_dagster_pipes,
)

from batch_scoring import settings

LOG_DELIVERY_SETTING = "spark.databricks.clusterUsageTags.clusterLogDeliveryEnabled"


def mounted(dbfs_path: str) -> str:
    """The local path of a DBFS path on the driver (BATCH_SCORING_DBFS_MOUNT, /dbfs by default)."""
    return os.path.join(settings.dbfs_mount(), dbfs_path.lstrip("/"))


class MountedDbfsContextLoader(PipesContextLoader):
    """dagster-pipes' DBFS context loader, with the mount point as a setting rather than fixed at /dbfs."""

    @contextmanager
    def load_context(self, params: PipesParams) -> Iterator[Mapping]:
        with open(mounted(params["path"]), encoding="utf-8") as handle:
            yield json.load(handle)


class MountedDbfsMessageWriter(PipesDbfsMessageWriter):
    """dagster-pipes' DBFS message writer, with the mount point as a setting rather than fixed at /dbfs."""

    def make_channel(self, params: PipesParams) -> PipesBufferedFilesystemMessageWriterChannel:
        return PipesBufferedFilesystemMessageWriterChannel(path=mounted(params["path"]), interval=self.interval)

    def get_opened_extras(self) -> Mapping:
        """Cluster log locations, where the cluster delivers logs; outside Databricks there are none."""
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None or spark.conf.get(LOG_DELIVERY_SETTING, "false") != "true":
            return {}
        return super().get_opened_extras()


def _columns(schema: dg.TableSchema) -> list[dict]:
    return [
        {"name": c.name, "type": c.type, "constraints": {"nullable": c.constraints.nullable}} for c in schema.columns
    ]


def pipes_metadata(value: dg.MetadataValue) -> dict:
    """A metadata value as Pipes carries it: its type and a JSON value."""
    if isinstance(value, dg.TableMetadataValue):
        records = [r.data for r in value.records]
        return {"type": "table", "raw_value": {"records": records, "schema": _columns(value.schema)}}
    if isinstance(value, dg.TableSchemaMetadataValue):
        return {"type": "table_schema", "raw_value": {"columns": _columns(value.schema)}}
    kinds = {
        dg.IntMetadataValue: "int",
        dg.FloatMetadataValue: "float",
        dg.BoolMetadataValue: "bool",
        dg.JsonMetadataValue: "json",
        dg.PathMetadataValue: "path",
        dg.UrlMetadataValue: "url",
        dg.TextMetadataValue: "text",
        dg.MarkdownMetadataValue: "md",
    }
    for kind_class, kind in kinds.items():
        if isinstance(value, kind_class):
            return {"type": kind, "raw_value": value.value}
    return {"type": "text", "raw_value": str(value.value)}


def _metadata(values: Mapping[str, dg.MetadataValue]) -> dict[str, dict]:
    return {key: pipes_metadata(value) for key, value in values.items()}


def materialize_and_report(pipes: PipesContext) -> None:
    """Materialize the asset of this Pipes session locally on the cluster, then report what came of it.

    A materialization whose blocking check failed is reported with the failed check (the orchestrating
    run then stops downstream assets, as a local run does); a run that materialized nothing raises."""
    from batch_scoring.defs.assets import SPARK_ASSETS
    from batch_scoring.defs.definitions import resources_from_env
    from batch_scoring.defs.partitions import partition_range_tags

    keys = [dg.AssetKey.from_user_string(key) for key in pipes.asset_keys]
    asset = next(a for a in SPARK_ASSETS if keys[0] in a.keys)
    op_config = pipes.extras.get("op_config")
    partition_key, tags = None, {}
    if pipes.is_partition_step:
        first, last = pipes.partition_key_range["start"], pipes.partition_key_range["end"]
        if first == last:
            partition_key = first
        else:
            tags = partition_range_tags(first, last)
    result = dg.materialize(
        SPARK_ASSETS,
        selection=keys,
        resources=resources_from_env(),
        partition_key=partition_key,
        tags=tags,
        run_config={"ops": {asset.op.name: {"config": op_config}}} if op_config else None,
        raise_on_error=False,
    )
    # a range run materializes each day with the same metadata: one report per asset covers the step
    materialized = {}
    for event in result.get_asset_materialization_events():
        materialized.setdefault(event.asset_key.to_user_string(), event.materialization.metadata)
    if not materialized:
        failures = [event.step_failure_data.error for event in result.get_step_failure_events()]
        raise RuntimeError("; ".join(error.message.strip() for error in failures if error) or "nothing materialized")
    for key, metadata in materialized.items():
        pipes.report_asset_materialization(metadata=_metadata(metadata), asset_key=key)
    for check in result.get_asset_check_evaluations():
        metadata = dict(check.metadata)
        if check.description:
            metadata["description"] = dg.MetadataValue.text(check.description)
        pipes.report_asset_check(
            check_name=check.check_name,
            asset_key=check.asset_key.to_user_string(),
            passed=check.passed,
            severity=check.severity.value,
            metadata=_metadata(metadata),
        )


def main() -> int:
    """Console script `batch-scoring-databricks-task`, which a Databricks python_wheel_task runs."""
    if settings.DATABRICKS_RUNTIME_ENV in os.environ:
        from pyspark.sql import SparkSession

        from batch_scoring.lib.spark import apply_runtime_settings

        # the cluster's own session, as Databricks configured it, plus the project's SQL settings
        apply_runtime_settings(SparkSession.builder.getOrCreate())
    with open_dagster_pipes(
        context_loader=MountedDbfsContextLoader(), message_writer=MountedDbfsMessageWriter()
    ) as pipes:
        materialize_and_report(pipes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
