"""Databricks mode against a local double of the Databricks REST API: the assets are submitted as job runs by
PipesDatabricksClient, the double runs the project's entry point from the built wheel, and the metadata and
check results come back through Pipes messages on (the double's) DBFS."""

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from batch_scoring.defs.assets.scoring import daily_predictions
from batch_scoring.defs.definitions import build_definitions
from batch_scoring.deploy.databricks import TASK_ENTRY_POINT
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA, WORKLIST_SCHEMA
from batch_scoring.settings import (
    DATABRICKS_CLUSTER_ENV,
    DATABRICKS_HOST_ENV,
    DATABRICKS_TOKEN_ENV,
    DATABRICKS_WHEEL_ENV,
    ENGINE_ENV,
    INPUT_DIR_ENV,
    SPARK_CONF_ENV,
    SPARK_MASTER_ENV,
    WAREHOUSE_DIR_ENV,
)
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import REPO_ROOT, copy_warehouse, materialize, model_store
from batch_scoring_tests.databricks_double import DatabricksDouble, load_contract, shape_errors

DAY = "2015-04-28"
DAY_WITHOUT_FEATURES = "2015-06-01"
TOKEN = "dapi-fake-token-for-the-double-0123456789"
WHEEL_DBFS_FOLDER = "dbfs:/FileStore/wheels"
CLUSTER = {"spark_version": "17.3.x-scala2.13", "node_type_id": "i3.xlarge", "num_workers": 1}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built as the README's deploy steps build it."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("batch_scoring-*.whl")
    return built


@pytest.fixture
def workspace(tmp_path, wheel, trained_fleet, monkeypatch):
    """The double with the wheel uploaded to its DBFS, a copy of the trained fleet, and the orchestrator's
    environment in Databricks mode. Yields the double, the warehouse copy and the definitions."""
    input_dir, trained_warehouse = trained_fleet
    warehouse = copy_warehouse(trained_warehouse, tmp_path / "warehouse")
    task_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **{name: os.environ[name] for name in ("JAVA_HOME", "LANG") if name in os.environ},
        SPARK_MASTER_ENV: "local[2]",
        SPARK_CONF_ENV: json.dumps({"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"}),
    }
    with DatabricksDouble(tmp_path / "workspace", TOKEN, task_env) as double:
        uploaded = double.dbfs_path(f"{WHEEL_DBFS_FOLDER}/{wheel.name}")
        uploaded.parent.mkdir(parents=True)
        shutil.copy(wheel, uploaded)
        for name, value in {
            ENGINE_ENV: "databricks",
            DATABRICKS_HOST_ENV: double.url,
            DATABRICKS_TOKEN_ENV: TOKEN,
            DATABRICKS_WHEEL_ENV: f"{WHEEL_DBFS_FOLDER}/{wheel.name}",
            DATABRICKS_CLUSTER_ENV: json.dumps(CLUSTER),
            INPUT_DIR_ENV: str(input_dir),
            WAREHOUSE_DIR_ENV: str(warehouse),
        }.items():
            monkeypatch.setenv(name, value)
        yield double, warehouse, build_definitions()


def run(defs: dg.Definitions, selection: list[str], partition: str, **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize through the definitions' Databricks resource, polling the double every second."""
    resources = dict(defs.resources)
    resources["databricks"] = resources["databricks"].model_copy(
        update={"poll_interval_seconds": 1.0, "message_interval_seconds": 1.0}
    )
    return dg.materialize(
        list(defs.assets), selection=selection, resources=resources, partition_key=partition, **kwargs
    )


def test_the_wheel_leaves_spark_to_the_cluster_and_names_the_task_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read("batch_scoring-0.1.0.dist-info/METADATA").decode()
        entry_points = archive.read("batch_scoring-0.1.0.dist-info/entry_points.txt").decode()
    requires = [
        line.removeprefix("Requires-Dist: ") for line in metadata.splitlines() if line.startswith("Requires-Dist")
    ]
    # what pip installs on the cluster beside the wheel: Dagster, never a Spark or Delta of its own
    assert [r for r in requires if "extra ==" not in r] == ["dagster==1.13.27"]
    local = [r.split(";")[0].strip() for r in requires if 'extra == "local"' in r]
    assert {"pyspark[ml]==4.2.0", "delta-spark==4.4.1"} <= set(local)
    assert f"{TASK_ENTRY_POINT} = batch_scoring.deploy.databricks_task:main" in entry_points


def test_assets_run_as_databricks_job_runs_and_report_through_pipes(spark, workspace, trained_fleet, tmp_path):
    double, warehouse, defs = workspace
    input_dir, trained_warehouse = trained_fleet
    local = copy_warehouse(trained_warehouse, tmp_path / "local")
    assert materialize(input_dir, local, [daily_predictions], partition_key=DAY).success

    result = run(
        defs,
        ["daily_predictions", "maintenance_worklist", "maintenance_worklist_csv"],
        DAY,
        run_config={"ops": {"maintenance_worklist": {"config": {"min_failure_probability": 0.0}}}},
    )

    assert result.success
    # the job cluster wrote the storage contract's tables with the project's own code, as a local run does
    predictions = [
        DeltaTables(spark, str(w)).read("daily_predictions", PREDICTIONS_SCHEMA, [DAY]).drop("scored_at")
        for w in (warehouse, local)
    ]
    assert predictions[0].count() == predictions[1].count() == 30
    assert predictions[0].exceptAll(predictions[1]).isEmpty()
    latest = model_store(spark, warehouse).load_latest_usable().version
    assert {r["model_version"] for r in predictions[0].select("model_version").distinct().collect()} == {latest}
    worklist = DeltaTables(spark, str(warehouse)).read("maintenance_worklist", WORKLIST_SCHEMA, [DAY])
    assert worklist.count() == 30  # run config went to the cluster: a threshold of 0 lists every machine

    # metadata and check results made the round trip through Pipes
    by_asset = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    assert by_asset["daily_predictions"]["dagster/row_count"].value == 30
    assert isinstance(by_asset["daily_predictions"]["preview"], dg.TableMetadataValue)
    assert by_asset["daily_predictions"]["dagster/column_schema"].value.columns[0].name == "machine_id"
    assert by_asset["daily_predictions"]["model_version"].value == latest
    assert by_asset["maintenance_worklist"]["machines_listed"].value == {DAY: 30}
    assert by_asset["maintenance_worklist_csv"]["csv_file"].value == str(
        warehouse / "worklists" / f"maintenance_worklist_{DAY}.csv"
    )
    run_ids = {int(m["Databricks Job Run ID"].value) for m in by_asset.values()}
    assert run_ids == set(double.runs)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"one_row_per_active_machine": True, "probabilities_valid": True, "failure_share_stable": True}

    # each asset was a job run on a new cluster, started from the wheel's entry point
    submits = [r["body"] for r in double.requests if r["endpoint"].endswith("/runs/submit")]
    assert [s["tasks"][0]["task_key"] for s in submits] == ["daily_predictions", "maintenance_worklist"]
    for submit in submits:
        (task,) = submit["tasks"]
        assert task["python_wheel_task"] == {"package_name": "batch_scoring", "entry_point": TASK_ENTRY_POINT}
        assert task["libraries"] == [{"whl": os.environ[DATABRICKS_WHEEL_ENV]}]
        env = task["new_cluster"]["spark_env_vars"]
        assert env[WAREHOUSE_DIR_ENV] == str(warehouse) and "DAGSTER_PIPES_CONTEXT" in env
    for task_run in double.runs.values():
        assert (
            f"code from {task_run.log.parent / 'site-packages' / 'batch_scoring' / 'deploy' / 'databricks_task.py'}"
            in task_run.log.read_text()
        )

    # the contract: only recorded endpoints, in their shapes; the token only in the Authorization header
    contract = load_contract()
    assert {r["endpoint"] for r in double.requests} <= set(contract)
    assert {"POST /api/2.2/jobs/runs/submit", "GET /api/2.2/jobs/runs/get", "POST /api/2.0/dbfs/put"} <= {
        r["endpoint"] for r in double.requests
    }
    for request in double.requests:
        assert request["status"] in (200, 404), request
        example = contract["error responses" if request["status"] != 200 else request["endpoint"]]["response"]
        assert not shape_errors(request["response"], example)
        assert TOKEN not in json.dumps([request["query"], request["body"], request["response"]])
        assert request["authorization"] == f"Bearer {TOKEN}"
    missing_chunks = [r for r in double.requests if r["status"] == 404]
    assert all(r["endpoint"] in ("GET /api/2.0/dbfs/read", "GET /api/2.0/dbfs/get-status") for r in missing_chunks)
    # the Pipes folders on DBFS are cleaned up
    assert not any(double.dbfs_path("/tmp").iterdir())


def test_a_failure_on_databricks_fails_the_step_with_the_remote_reason(workspace):
    double, _, defs = workspace
    instance = dg.DagsterInstance.ephemeral()

    result = run(defs, ["daily_predictions"], DAY_WITHOUT_FEATURES, raise_on_error=False, instance=instance)

    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "Error running Databricks job: Workload failed" in failure.step_failure_data.error.to_string()
    (task_run,) = double.runs.values()
    assert task_run.state()["result_state"] == "FAILED"
    # the remote exception came back through Pipes and is in the run's event log
    (closed,) = [e for e in instance.all_logs(result.run_id) if "pipes closed with exception" in e.message]
    assert "Nothing to score for 2015-06-01" in closed.dagster_event.engine_event_data.error.to_string()


def test_the_double_refuses_what_the_api_refuses(tmp_path):
    """The double answers like the API where a client goes wrong, so a changed client cannot pass by accident."""

    def call(double, method, path, body=None, token=TOKEN):
        request = urllib.request.Request(
            double.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    with DatabricksDouble(tmp_path, TOKEN, task_env={}) as double:
        assert call(double, "POST", "/api/2.0/dbfs/mkdirs", {"path": "/tmp/x"}, token="wrong")[0] == 401
        status, error = call(double, "POST", "/api/2.0/dbfs/mkdirs", {"path": "/tmp/x", "mode": "0700"})
        assert (status, error["error_code"]) == (400, "INVALID_PARAMETER_VALUE") and ".mode" in error["message"]
        too_big = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
        status, error = call(double, "POST", "/api/2.0/dbfs/put", {"path": "/tmp/x/big", "contents": too_big})
        assert (status, error["error_code"]) == (400, "MAX_BLOCK_SIZE_EXCEEDED")
        status, error = call(double, "GET", "/api/2.0/dbfs/read?path=/tmp/none")
        assert (status, error["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
        assert call(double, "GET", "/api/2.1/jobs/list")[0] == 404  # not an endpoint the client calls
