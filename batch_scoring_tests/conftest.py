"""Shared fixtures: one local Spark session for the whole test run, sized for a 2-core machine."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from batch_scoring.assets.features import features
from batch_scoring.assets.model import failure_model
from batch_scoring.assets.raw import RAW_ASSETS
from batch_scoring.definitions import INPUT_DIR_ENV, SPARK_ASSETS, SPARK_CONF_ENV, WAREHOUSE_DIR_ENV
from batch_scoring.model_store import ModelStore
from batch_scoring.partitions import partition_range_tags
from batch_scoring.resources import SparkResource, pipeline_resources
from batch_scoring.simulator import simulate_fleet, write_fleet
from batch_scoring.spark import build_spark_session
from batch_scoring.storage import DeltaTables

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "pdm-2015"

TEST_SPARK = SparkResource(master="local[2]", shuffle_partitions=2, driver_memory="2g")
SMALL_FLEET = dict(machines=6, start=date(2015, 1, 1), days=12, seed=7)


@pytest.fixture(scope="session")
def spark():
    return build_spark_session(master="local[2]", shuffle_partitions=2, driver_memory="2g")


@pytest.fixture(scope="session")
def small_fleet_dir(spark, tmp_path_factory) -> Path:
    """The five CSV files of a small simulated fleet (6 machines, 12 days from 2015-01-01)."""
    out = tmp_path_factory.mktemp("small_fleet")
    write_fleet(simulate_fleet(spark, **SMALL_FLEET), out)
    return out


@pytest.fixture
def real_data_dir() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data set not available: {REAL_DATA} is absent (it lives in ../shared beside the repo)")
    return REAL_DATA


def dagster_resources(input_dir: Path, warehouse_dir: Path) -> dict[str, object]:
    """The production resources, pointed at test folders and sized for tests."""
    return pipeline_resources(TEST_SPARK, str(input_dir), str(warehouse_dir))


FLEET_DAYS = ("2015-01-01", "2015-04-30")
SMALL_FOREST = {"num_trees": 15, "max_depth": 8, "holdout_days": 30}


def all_assets():
    """Every asset as its code runs in a Spark session (in Databricks mode too, whatever the environment)."""
    return list(SPARK_ASSETS)


def materialize(input_dir, warehouse, selection, model_config=None, run_config=None, raise_on_error=True, **kwargs):
    """Materialize `selection` of the project's assets with the test resources (and a small forest)."""
    ops = dict((run_config or {}).get("ops", {}))
    if "failure_model" in {key.to_user_string() for a in selection for key in a.keys}:
        ops["failure_model"] = {"config": {**SMALL_FOREST, **(model_config or {})}}
    return dg.materialize(
        all_assets(),
        selection=selection,
        resources=dagster_resources(input_dir, warehouse),
        run_config={"ops": ops} if ops else None,
        raise_on_error=raise_on_error,
        **kwargs,
    )


@pytest.fixture(scope="session")
def fleet_with_features(spark, tmp_path_factory):
    """30 machines over 120 days (about 75 failures), ingested and turned into features.

    Read-only: tests that write copy its warehouse first (`copy_warehouse`)."""
    root = tmp_path_factory.mktemp("fleet")
    write_fleet(simulate_fleet(spark, machines=30, start=date(2015, 1, 1), days=120, seed=5), root / "input")
    materialize(root / "input", root / "warehouse", [*RAW_ASSETS, features], tags=partition_range_tags(*FLEET_DAYS))
    return root / "input", root / "warehouse"


@pytest.fixture(scope="session")
def trained_fleet(fleet_with_features, tmp_path_factory):
    """`fleet_with_features` with a failure model trained on it. Read-only, like it."""
    input_dir, warehouse = fleet_with_features
    trained_warehouse = copy_warehouse(warehouse, tmp_path_factory.mktemp("trained") / "warehouse")
    materialize(input_dir, trained_warehouse, [failure_model])
    return input_dir, trained_warehouse


def copy_warehouse(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def dagster_command(executable: str, *args: str) -> list[str]:
    """A Dagster command-line tool of the environment the tests run in (dagster, dagster-webserver, ...)."""
    return [str(Path(sys.executable).parent / executable), *args]


def deployment_env(input_dir: Path, warehouse: Path, dagster_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a deployment's processes: the project's folders, the instance at
    `dagster_home`, and Spark sized for tests."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        INPUT_DIR_ENV: str(input_dir),
        WAREHOUSE_DIR_ENV: str(warehouse),
        SPARK_CONF_ENV: json.dumps({"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"}),
        "DAGSTER_HOME": str(dagster_home),
        **extra,
    }


def start_process(command: list[str], env: dict[str, str], output=subprocess.PIPE) -> subprocess.Popen:
    """`command` from the repository root in its own process group, so `stop_process` ends its children too."""
    return subprocess.Popen(
        command,
        env=env,
        cwd=REPO_ROOT,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def days_with_rows(tables: DeltaTables, name: str) -> list[str]:
    """The days of a daily table that hold rows, in its newest version."""
    if not tables.exists(name):
        return []
    days = tables.spark.read.format("delta").load(tables.location(name)).select("date").distinct()
    return sorted(str(row[0]) for row in days.collect())


def model_store(spark, warehouse: Path) -> ModelStore:
    return ModelStore(DeltaTables(spark, str(warehouse)), "failure_model")


def model_versions(store: ModelStore) -> list[str]:
    return [manifest["version"] for manifest in store.manifests()]


def materialization_metadata(result: dg.ExecuteInProcessResult, asset_name: str) -> dict[str, object]:
    """The metadata values of an asset's last materialization in a run."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset_name]
    return {k: v.value for k, v in events[-1].step_materialization_data.materialization.metadata.items()}
