"""The code location: one Definitions object that loads cleanly and is configured from the environment."""

import importlib
import warnings

import dagster as dg
import pytest

import batch_scoring.definitions
from batch_scoring.spark import build_spark_session


def test_definitions_load_without_warnings_and_hold_every_asset_job_schedule_and_sensor():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = importlib.reload(batch_scoring.definitions)
    defs = module.defs
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_machines": "raw",
        "raw_telemetry": "raw",
        "raw_errors": "raw",
        "raw_maintenance": "raw",
        "raw_failures": "raw",
        "features": "features",
        "failure_model": "model",
        "daily_predictions": "scoring",
        "maintenance_worklist": "scoring",
    }
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key} has no description"
    assert graph.get(dg.AssetKey("raw_telemetry")).partitions_def == graph.get(dg.AssetKey("features")).partitions_def
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"ingest_job", "training_job", "daily_scoring_job"}
    assert [s.name for s in defs.schedules] == ["daily_scoring_schedule"]
    assert [s.name for s in defs.sensors] == ["new_data_sensor"]


def test_folders_come_from_the_environment_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("BATCH_SCORING_INPUT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("BATCH_SCORING_WAREHOUSE_DIR", str(tmp_path / "wh"))
    resources = importlib.reload(batch_scoring.definitions).build_resources()
    assert resources["input_files"].input_dir == dg.EnvVar("BATCH_SCORING_INPUT_DIR")
    assert resources["warehouse"].root == dg.EnvVar("BATCH_SCORING_WAREHOUSE_DIR")
    assert resources["spark"].master == "local[*]"
    monkeypatch.setenv("BATCH_SCORING_SPARK_MASTER", "spark://spark-master:7077")
    assert importlib.reload(batch_scoring.definitions).build_resources()["spark"].master == dg.EnvVar(
        "BATCH_SCORING_SPARK_MASTER"
    )
    monkeypatch.delenv("BATCH_SCORING_SPARK_MASTER")
    monkeypatch.delenv("BATCH_SCORING_INPUT_DIR")
    monkeypatch.delenv("BATCH_SCORING_WAREHOUSE_DIR")
    resources = importlib.reload(batch_scoring.definitions).build_resources()
    assert resources["input_files"].input_dir == "data/input"
    assert resources["warehouse"].root == "data/warehouse"


def test_spark_settings_come_from_the_environment_and_bad_ones_are_named(monkeypatch):
    monkeypatch.setenv("BATCH_SCORING_SPARK_CONF", '{"spark.executor.memory": "2g", "spark.executor.cores": 2}')
    spark = importlib.reload(batch_scoring.definitions).build_resources()["spark"]
    assert spark.conf == {"spark.executor.memory": "2g", "spark.executor.cores": "2"}
    monkeypatch.setenv("BATCH_SCORING_SPARK_CONF", "spark.executor.memory=2g")
    with pytest.raises(ValueError, match="BATCH_SCORING_SPARK_CONF is not JSON"):
        importlib.reload(batch_scoring.definitions)
    monkeypatch.delenv("BATCH_SCORING_SPARK_CONF")
    importlib.reload(batch_scoring.definitions)
    with pytest.raises(ValueError, match=r"Spark Connect \(sc://host:15002\) is not supported"):
        build_spark_session(master="sc://host:15002")
