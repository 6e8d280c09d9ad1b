"""The code location: one Definitions object that loads cleanly and is configured from the environment."""

import os
import subprocess
import sys
import warnings
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from dagster_pyspark import LazyPySparkResource

from batch_scoring import settings
from batch_scoring.cli import open_instance, ui_command
from batch_scoring.defs.definitions import build_definitions, resources_from_env
from batch_scoring.lib.spark import build_spark_session

pytestmark = pytest.mark.unit  # tiny frames in one process: part of the fast loop

PURE_PACKAGES_IMPORTED = """
import importlib, pkgutil, sys
import batch_scoring.lib, batch_scoring.settings, batch_scoring.storage
for package in (batch_scoring.lib, batch_scoring.storage):
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
print(sorted(name for name in sys.modules if name.split(".")[0].startswith("dagster")))
"""
REMOTE_TASK_IMPORTED = """
import sys, batch_scoring.deploy.databricks_task
print(sorted({name.split(".")[0] for name in sys.modules if name.split(".")[0].startswith("dagster")}))
"""
DEFINITIONS_IMPORTED = """
import dagster, batch_scoring.defs.definitions as module
print(isinstance(module.defs, dagster.Definitions))
"""


FIRST_PARTITION = """
from batch_scoring.defs.partitions import DAILY_PARTITIONS
print(DAILY_PARTITIONS.get_first_partition_key())
"""


def python_prints(code: str, **env: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_the_daily_partitions_start_on_the_configured_first_day():
    assert python_prints(FIRST_PARTITION) == "2015-01-01"  # the public data set's first day
    assert python_prints(FIRST_PARTITION, BATCH_SCORING_FIRST_DAY="2026-07-01") == "2026-07-01"
    with pytest.raises(subprocess.CalledProcessError) as failed:
        python_prints(FIRST_PARTITION, BATCH_SCORING_FIRST_DAY="July")
    assert "BATCH_SCORING_FIRST_DAY is 'July': it must be a day, YYYY-MM-DD" in failed.value.stderr


def test_the_pure_modules_import_no_dagster_and_importing_the_code_location_builds_nothing():
    assert python_prints(PURE_PACKAGES_IMPORTED) == "[]"
    # what Databricks compute runs: the steps, storage and dagster-pipes, no Dagster
    assert python_prints(REMOTE_TASK_IMPORTED) == "['dagster_pipes']"
    assert python_prints(DEFINITIONS_IMPORTED) == "False"  # built when Dagster loads it


def test_definitions_load_without_warnings_and_hold_every_asset_job_schedule_and_sensor():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_machines": "raw",
        "raw_telemetry": "raw",
        "raw_errors": "raw",
        "raw_maintenance": "raw",
        "raw_failures": "raw",
        **{f"quarantine/{name}": "raw" for name in ("raw_machines", "raw_telemetry", "raw_errors")},
        **{f"quarantine/{name}": "raw" for name in ("raw_maintenance", "raw_failures")},
        "features": "features",
        "failure_model": "model",
        "daily_predictions": "scoring",
        "maintenance_worklist": "scoring",
        "maintenance_worklist_csv": "scoring",
        "maintenance_worklist_page": "scoring",
        "prediction_outcomes": "outcomes",
    }
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key} has no description"
        columns = graph.get(key).metadata.get("dagster/column_schema")
        for column in columns.columns if columns else []:
            assert column.description, f"{key}: column {column.name} has no description"
    telemetry_columns = graph.get(dg.AssetKey("raw_telemetry")).metadata["dagster/column_schema"].columns
    assert {c.name: c.description for c in telemetry_columns}["volt"] == "hourly voltage (V)"
    assert graph.get(dg.AssetKey("raw_telemetry")).partitions_def == graph.get(dg.AssetKey("features")).partitions_def
    # the lookbacks are declared: three days of telemetry per day of features, and the week before each day
    # of predictions (a self-dependency)
    predictions = defs.resolve_assets_def("daily_predictions")
    own_past = predictions.get_partition_mapping_for_dep(dg.AssetKey("daily_predictions"))
    assert (own_past.start_offset, own_past.end_offset) == (-7, -1)
    telemetry = defs.resolve_assets_def("features").get_partition_mapping_for_dep(dg.AssetKey("raw_telemetry"))
    assert (telemetry.start_offset, telemetry.end_offset) == (-19, 0)
    # a day's outcomes: the predictions and list of 7 days before, the failures of the 7 days up to it
    outcomes = defs.resolve_assets_def("prediction_outcomes")
    mappings = {
        name: outcomes.get_partition_mapping_for_dep(dg.AssetKey(name))
        for name in ("daily_predictions", "maintenance_worklist", "raw_failures", "prediction_outcomes")
    }
    assert {name: (m.start_offset, m.end_offset) for name, m in mappings.items()} == {
        "daily_predictions": (-7, -7),
        "maintenance_worklist": (-7, -7),
        "raw_failures": (-6, 0),
        "prediction_outcomes": (-27, -1),
    }
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert set(jobs) >= {"ingest_job", "training_job", "daily_scoring_job", "outcomes_job"}
    assert {key.to_user_string() for key in jobs["outcomes_job"].asset_layer.executable_asset_keys} == {
        "raw_failures",
        "quarantine/raw_failures",
        "prediction_outcomes",
    }
    assert [s.name for s in defs.schedules] == ["daily_scoring_schedule", "prediction_outcomes_schedule"]
    assert [s.name for s in defs.sensors] == ["new_data_sensor"]


def test_the_project_s_commands_keep_their_runs_in_dot_dagster_home_unless_dagster_home_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert settings.dagster_home() == str(tmp_path / ".dagster_home")
    with open_instance(Path(settings.dagster_home())) as instance:
        assert instance.get_runs() == [] and not instance.is_ephemeral
    assert (tmp_path / ".dagster_home" / "dagster.yaml").read_text().startswith("# the Dagster instance")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    with open_instance(Path(settings.dagster_home())):
        pass
    assert (tmp_path / "elsewhere" / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"  # kept
    command = ui_command(settings.dagster_home(), date(2026, 7, 1))
    assert command.startswith(f"DAGSTER_HOME={tmp_path / 'elsewhere'} ")
    assert " BATCH_SCORING_FIRST_DAY=2026-07-01 " in command  # the UI's calendar starts where the data do


def test_folders_come_from_the_environment_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("BATCH_SCORING_INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("BATCH_SCORING_WAREHOUSE_DIR", str(tmp_path / "wh"))
    resources = resources_from_env()
    assert resources["input_files"].input_dir == dg.EnvVar("BATCH_SCORING_INPUT_DIR")
    assert resources["warehouse"].root == dg.EnvVar("BATCH_SCORING_WAREHOUSE_DIR")
    assert resources["spark"].spark_config["spark.master"] == "local[*]"
    assert isinstance(resources["spark"], LazyPySparkResource)  # dagster-pyspark's, with the project's builder
    monkeypatch.setenv("BATCH_SCORING_SPARK_MASTER", "spark://spark-master:7077")
    assert resources_from_env()["spark"].spark_config["spark.master"] == "spark://spark-master:7077"
    monkeypatch.delenv("BATCH_SCORING_SPARK_MASTER")
    monkeypatch.delenv("BATCH_SCORING_INPUT_DIR")
    monkeypatch.delenv("BATCH_SCORING_WAREHOUSE_DIR")
    resources = resources_from_env()
    assert resources["input_files"].input_dir == "data/input"
    assert resources["warehouse"].root == "data/warehouse"
    assert resources["warehouse"].catalog_schema == ""  # path-based tables
    monkeypatch.setenv("BATCH_SCORING_CATALOG", "main")
    with pytest.raises(ValueError, match="Set both BATCH_SCORING_CATALOG and BATCH_SCORING_SCHEMA"):
        resources_from_env()
    monkeypatch.setenv("BATCH_SCORING_SCHEMA", "pdm; DROP TABLE x")
    with pytest.raises(ValueError, match="BATCH_SCORING_SCHEMA is .*: it must be a plain name"):
        resources_from_env()
    monkeypatch.setenv("BATCH_SCORING_SCHEMA", "pdm")
    assert resources_from_env()["warehouse"].catalog_schema == "main.pdm"


def test_spark_settings_come_from_the_environment_over_the_defaults_and_bad_ones_are_named(monkeypatch):
    monkeypatch.setenv("BATCH_SCORING_SPARK_CONF", '{"spark.executor.memory": "2g", "spark.driver.memory": "8g"}')
    assert resources_from_env()["spark"].spark_config == {
        **settings.SPARK_DEFAULTS,
        "spark.executor.memory": "2g",
        "spark.driver.memory": "8g",
    }
    monkeypatch.setenv("BATCH_SCORING_SPARK_CONF", "spark.hadoop.fs.s3a.secret.key=s3cr3t")
    with pytest.raises(ValueError, match="BATCH_SCORING_SPARK_CONF is not JSON") as error:
        build_definitions()
    assert "s3cr3t" not in str(error.value), "the variable's value may hold secrets: it is not echoed"
    with pytest.raises(ValueError, match=r"Spark Connect \(sc://host:15002\) is not supported"):
        build_spark_session({"spark.master": "sc://host:15002"})


def asset_graph_summary(defs: dg.Definitions) -> dict[str, tuple]:
    """What users see of each asset: its group, description, lineage, partitions and checks."""
    graph = defs.resolve_asset_graph()
    summary = {}
    for key in graph.get_all_asset_keys():
        node, asset = graph.get(key), defs.resolve_assets_def(key)
        summary[key.to_user_string()] = (
            node.group_name,
            node.description,
            sorted(k.to_user_string() for k in node.parent_keys),
            node.partitions_def,
            sorted((c.name, c.blocking) for c in asset.check_specs if c.asset_key == key),
        )
    return summary


def config_fields(asset: dg.AssetsDefinition) -> dict[str, list[str]]:
    fields = asset.op.config_field.config_type.fields if asset.op.config_field else {}
    return {name: sorted(getattr(field.config_type, "fields", {})) for name, field in fields.items()}


def test_databricks_mode_keeps_the_asset_graph_and_takes_its_secrets_only_from_env_vars(monkeypatch):
    local_defs = build_definitions()
    local = asset_graph_summary(local_defs)
    monkeypatch.setenv("BATCH_SCORING_ENGINE", "databricks")
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_WHEEL", "/Volumes/main/pdm/artifacts/batch_scoring-0.1.0.whl")
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_CLUSTER", '{"spark_version": "17.3.x", "node_type_id": "i3.xlarge"}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    assert asset_graph_summary(defs) == local
    # one node runs whatever a run selects (one Databricks run per Dagster run), with single-run backfills
    (node,) = {defs.resolve_assets_def(key) for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert node.can_subset and node.backfill_policy == dg.BackfillPolicy.single_run()
    # each asset's run config goes along to the compute, under its step's name
    local_config = {
        asset.op.name: sorted(getattr(asset.op.config_field.config_type, "fields", {}))
        for asset in {local_defs.resolve_assets_def(k) for k in local_defs.resolve_asset_graph().get_all_asset_keys()}
        if asset.op.config_field and getattr(asset.op.config_field.config_type, "fields", {})
    }
    assert config_fields(node) == local_config and local_config["raw_telemetry"] == [
        "max_quarantined_share",
        "plausible_ranges",
    ]
    databricks = defs.resources["databricks"]
    assert databricks.host == dg.EnvVar("DATABRICKS_HOST") and databricks.token == dg.EnvVar("DATABRICKS_TOKEN")
    assert databricks.compute == "job_cluster"

    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_CLUSTER", '{"num_workers": 2}')
    with pytest.raises(ValueError, match=r"BATCH_SCORING_DATABRICKS_CLUSTER must be .* spark_version and node_type_id"):
        build_definitions()
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_CLUSTER", "spark_conf=fs.azure.account.key:s3cr3t")
    with pytest.raises(ValueError, match="BATCH_SCORING_DATABRICKS_CLUSTER is not JSON") as error:
        build_definitions()
    assert "s3cr3t" not in str(error.value), "the variable's value may hold secrets: it is not echoed"
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_COMPUTE", "existing_cluster")
    with pytest.raises(ValueError, match="existing_cluster needs BATCH_SCORING_DATABRICKS_CLUSTER_ID"):
        build_definitions()
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_COMPUTE", "serverless")
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_VOLUME", "dbfs:/tmp/pipes")
    with pytest.raises(ValueError, match="BATCH_SCORING_DATABRICKS_VOLUME must be a Unity Catalog volume path"):
        build_definitions()
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_COMPUTE", "gpu")
    with pytest.raises(ValueError, match="BATCH_SCORING_DATABRICKS_COMPUTE is 'gpu': it must be one of job_cluster"):
        build_definitions()
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_COMPUTE", "job_cluster")
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_CLUSTER", '{"spark_version": "17.3.x", "node_type_id": "i3.xlarge"}')
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_POLL_SECONDS", "0")
    with pytest.raises(ValueError, match="BATCH_SCORING_DATABRICKS_POLL_SECONDS must be a number of seconds above 0"):
        build_definitions()
    monkeypatch.delenv("BATCH_SCORING_DATABRICKS_WHEEL")
    with pytest.raises(ValueError, match="job_cluster needs BATCH_SCORING_DATABRICKS_WHEEL"):
        build_definitions()
    monkeypatch.setenv("BATCH_SCORING_ENGINE", "emr")
    with pytest.raises(ValueError, match="BATCH_SCORING_ENGINE is 'emr': it must be one of spark, databricks"):
        build_definitions()
