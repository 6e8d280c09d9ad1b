"""The code location: one Definitions object that loads cleanly and is configured from the environment."""

import subprocess
import sys
import warnings

import dagster as dg
import pytest

from batch_scoring import settings
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
DEFINITIONS_IMPORTED = """
import dagster, batch_scoring.defs.definitions as module
print(isinstance(module.defs, dagster.Definitions))
"""


def python_prints(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_the_pure_modules_import_no_dagster_and_importing_the_code_location_builds_nothing():
    assert python_prints(PURE_PACKAGES_IMPORTED) == "[]"
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
    }
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key} has no description"
    assert graph.get(dg.AssetKey("raw_telemetry")).partitions_def == graph.get(dg.AssetKey("features")).partitions_def
    # the lookbacks are declared: three days of telemetry per day of features, and the week before each day
    # of predictions (a self-dependency)
    predictions = defs.resolve_assets_def("daily_predictions")
    own_past = predictions.get_partition_mapping_for_dep(dg.AssetKey("daily_predictions"))
    assert (own_past.start_offset, own_past.end_offset) == (-7, -1)
    telemetry = defs.resolve_assets_def("features").get_partition_mapping_for_dep(dg.AssetKey("raw_telemetry"))
    assert (telemetry.start_offset, telemetry.end_offset) == (-2, 0)
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"ingest_job", "training_job", "daily_scoring_job"}
    assert [s.name for s in defs.schedules] == ["daily_scoring_schedule"]
    assert [s.name for s in defs.sensors] == ["new_data_sensor"]


def test_folders_come_from_the_environment_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("BATCH_SCORING_INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("BATCH_SCORING_WAREHOUSE_DIR", str(tmp_path / "wh"))
    resources = resources_from_env()
    assert resources["input_files"].input_dir == dg.EnvVar("BATCH_SCORING_INPUT_DIR")
    assert resources["warehouse"].root == dg.EnvVar("BATCH_SCORING_WAREHOUSE_DIR")
    assert resources["spark"].spark_config["spark.master"] == "local[*]"
    monkeypatch.setenv("BATCH_SCORING_SPARK_MASTER", "spark://spark-master:7077")
    assert resources_from_env()["spark"].spark_config["spark.master"] == "spark://spark-master:7077"
    monkeypatch.delenv("BATCH_SCORING_SPARK_MASTER")
    monkeypatch.delenv("BATCH_SCORING_INPUT_DIR")
    monkeypatch.delenv("BATCH_SCORING_WAREHOUSE_DIR")
    resources = resources_from_env()
    assert resources["input_files"].input_dir == "data/input"
    assert resources["warehouse"].root == "data/warehouse"


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
    """What users see of each asset: its lineage, partitions, backfill policy, checks and config."""
    graph = defs.resolve_asset_graph()
    summary = {}
    for key in graph.get_all_asset_keys():
        node, asset = graph.get(key), defs.resolve_assets_def(key)
        config = asset.op.config_field and getattr(asset.op.config_field.config_type, "fields", None)
        summary[key.to_user_string()] = (
            node.group_name,
            node.description,
            sorted(k.to_user_string() for k in node.parent_keys),
            node.partitions_def,
            asset.backfill_policy,
            sorted((c.name, c.blocking) for c in asset.check_specs),
            sorted(config or {}),
        )
    return summary


def test_databricks_mode_keeps_the_asset_graph_and_takes_its_secrets_only_from_env_vars(monkeypatch):
    local = asset_graph_summary(build_definitions())
    monkeypatch.setenv("BATCH_SCORING_ENGINE", "databricks")
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_WHEEL", "/Volumes/main/pdm/artifacts/batch_scoring-0.1.0.whl")
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_CLUSTER", '{"spark_version": "17.3.x", "node_type_id": "i3.xlarge"}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    assert asset_graph_summary(defs) == local
    assert local["raw_telemetry"][-1] == ["max_quarantined_share"]  # run config goes along to the cluster
    databricks = defs.resources["databricks"]
    assert databricks.host == dg.EnvVar("DATABRICKS_HOST") and databricks.token == dg.EnvVar("DATABRICKS_TOKEN")

    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_CLUSTER", '{"num_workers": 2}')
    with pytest.raises(ValueError, match=r"BATCH_SCORING_DATABRICKS_CLUSTER must be .* spark_version and node_type_id"):
        build_definitions()
    monkeypatch.setenv("BATCH_SCORING_DATABRICKS_CLUSTER", "spark_conf=fs.azure.account.key:s3cr3t")
    with pytest.raises(ValueError, match="BATCH_SCORING_DATABRICKS_CLUSTER is not JSON") as error:
        build_definitions()
    assert "s3cr3t" not in str(error.value), "the variable's value may hold secrets: it is not echoed"
    monkeypatch.delenv("BATCH_SCORING_DATABRICKS_WHEEL")
    with pytest.raises(ValueError, match="BATCH_SCORING_ENGINE=databricks needs BATCH_SCORING_DATABRICKS_WHEEL"):
        build_definitions()
    monkeypatch.setenv("BATCH_SCORING_ENGINE", "emr")
    with pytest.raises(ValueError, match="BATCH_SCORING_ENGINE is 'emr': it must be one of spark, databricks"):
        build_definitions()
