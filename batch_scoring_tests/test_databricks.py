"""Databricks mode against a local double of the Databricks REST API: a Dagster run is one Databricks job run
submitted by dagster-databricks' Pipes clients, on a new job cluster, an existing cluster or serverless compute;
the double runs the project's entry point from the built wheel (without Dagster), and the metadata and check
results come back through Pipes messages on (the double's) DBFS or volumes. The daily job runs from the `dagster`
command line, started with the session (separate_processes.py); its test runs last."""

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from batch_scoring.defs.definitions import build_definitions
from batch_scoring.defs.metadata import materialized_metadata
from batch_scoring.deploy.databricks import TASK_ENTRY_POINT
from batch_scoring.lib.features import FEATURES_SCHEMA
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA, WORKLIST_SCHEMA
from batch_scoring.lib.tables import MACHINES, QUARANTINE_SCHEMA, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    REPO_ROOT,
    create_instance,
    dagster_command,
    model_manifests,
)
from batch_scoring_tests.databricks_double import DatabricksDouble, load_contract, shape_errors
from batch_scoring_tests.separate_processes import (
    ARTIFACTS_VOLUME,
    COMPUTE,
    DAY,
    PIPES_VOLUME,
    TOKEN,
    databricks_workspace,
)

DAY_WITHOUT_FEATURES = "2015-06-01"
DAILY_TABLES = ["raw_machines", "raw_telemetry", "quarantine/raw_telemetry", "features"]


@contextmanager
def workspace(tmp_path: Path, wheel: Path, trained_fleet, monkeypatch, compute: str):
    """`databricks_workspace`, with this process's environment in Databricks mode on `compute` for the test."""
    with databricks_workspace(tmp_path, wheel, trained_fleet, compute) as (double, warehouse, environment):
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield double, warehouse


def test_the_wheel_leaves_dagster_and_spark_to_the_orchestrator(wheel):
    with zipfile.ZipFile(wheel) as archive:
        modules = {name for name in archive.namelist() if name.endswith(".py")}
        metadata = archive.read("batch_scoring-0.1.0.dist-info/METADATA").decode()
        entry_points = archive.read("batch_scoring-0.1.0.dist-info/entry_points.txt").decode()
    assert modules == {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "batch_scoring").rglob("*.py")}
    requires = [
        line.removeprefix("Requires-Dist: ") for line in metadata.splitlines() if line.startswith("Requires-Dist")
    ]
    # what pip installs on Databricks compute beside the wheel: dagster-pipes, never Dagster, Spark or Delta
    assert [r for r in requires if "extra ==" not in r] == ["dagster-pipes==1.13.27"]
    local = [r.split(";")[0].strip() for r in requires if 'extra == "local"' in r]
    assert {"dagster==1.13.27", "pyspark[ml]==4.2.0", "delta-spark==4.4.1"} <= set(local)
    assert f"{TASK_ENTRY_POINT} = batch_scoring.deploy.databricks_task:main" in entry_points


def read_day(spark, warehouse: Path, table: str, schema):
    partitions = None if table == "raw_machines" else [DAY]
    return DeltaTables(spark, str(warehouse)).read(table, schema, partitions)


def assert_one_run_of_the_wheel(double: DatabricksDouble, compute: str, wheel: Path) -> None:
    """One Databricks run for the Dagster run, on `compute`, running the project's wheel; the job clusters it
    started; only recorded endpoints called, in their shapes, with the token only in the Authorization header;
    the Pipes folders cleaned up."""
    (submit,) = [r["body"] for r in double.requests if r["endpoint"].endswith("/runs/submit")]
    (task,) = submit["tasks"]
    _, clusters_per_run = COMPUTE[compute]
    assert len(double.clusters_started) == clusters_per_run
    assert task["python_wheel_task"]["package_name"] == "batch_scoring"
    assert task["python_wheel_task"]["entry_point"] == TASK_ENTRY_POINT
    wheel_path = f"{ARTIFACTS_VOLUME}/{wheel.name}"
    if compute == "serverless":
        (environment,) = submit["environments"]
        assert (
            environment["spec"]["dependencies"] == [wheel_path]
            and task["environment_key"] == environment["environment_key"]
        )
    else:
        assert task["libraries"] == [{"whl": wheel_path}]
        assert ("existing_cluster_id" in task) == (compute == "existing_cluster")
    (task_run,) = double.runs.values()
    log = task_run.log.read_text()
    assert "code from" in log and "site-packages/batch_scoring/deploy/databricks_task.py" in log

    contract = load_contract()
    assert {r["endpoint"] for r in double.requests} <= set(contract)
    for request in double.requests:
        assert request["status"] in (200, 404), request
        example = contract["error responses" if request["status"] != 200 else request["endpoint"]]["response"]
        assert not shape_errors(request["response"], example)
        assert TOKEN not in json.dumps([request["query"], request["body"], request["response"]])
        assert request["authorization"] == f"Bearer {TOKEN}"
    assert not any(double.dbfs_path("/tmp").iterdir()) if double.dbfs_path("/tmp").exists() else True
    assert not any((double.workspace_file(PIPES_VOLUME) / "tmp").glob("*"))


def test_the_daily_job_is_one_databricks_run_that_writes_what_a_local_run_writes(
    spark, databricks_daily, trained_fleet, wheel
):
    double, warehouse, local = databricks_daily.double, databricks_daily.warehouse, trained_fleet[1]
    assert databricks_daily.process.returncode == 0, databricks_daily.output[-5000:]
    with dg.DagsterInstance.from_config(str(databricks_daily.home)) as instance:
        (run,) = instance.get_runs()
        events = [entry.dagster_event for entry in instance.all_logs(run.run_id) if entry.dagster_event]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    # the compute wrote what the quick start's local run wrote, with the project's own steps
    schemas = {MACHINES.asset: MACHINES.schema, TELEMETRY.asset: TELEMETRY.schema} | {
        "quarantine/raw_telemetry": QUARANTINE_SCHEMA,
        "features": FEATURES_SCHEMA,
    }
    for table in DAILY_TABLES:
        remote, local_rows = (read_day(spark, w, table, schemas[table]) for w in (warehouse, local))
        assert remote.count() == local_rows.count() > 0 or table.startswith("quarantine"), table
        assert remote.exceptAll(local_rows).isEmpty() and local_rows.exceptAll(remote).isEmpty(), table
    predictions = [
        read_day(spark, w, "daily_predictions", PREDICTIONS_SCHEMA).drop("scored_at") for w in (warehouse, local)
    ]
    assert predictions[0].count() == 30 and predictions[0].exceptAll(predictions[1]).isEmpty()
    # the run config reached the compute: every machine is listed, the quick start's (from the model's threshold)
    # first
    worklists = [read_day(spark, w, "maintenance_worklist", WORKLIST_SCHEMA) for w in (warehouse, local)]
    listed_locally = worklists[1].count()
    assert worklists[0].count() == 30 and 0 < listed_locally < 30
    threshold = model_manifests(spark, local)[-1]["worklist"]["threshold"]
    from_threshold = worklists[0].where(F.col("failure_probability") >= threshold)
    assert from_threshold.exceptAll(worklists[1]).isEmpty() and worklists[1].exceptAll(from_threshold).isEmpty()
    csv_files = [w / "worklists" / f"maintenance_worklist_{DAY}.csv" for w in (warehouse, local)]
    remote_csv, local_csv = (path.read_text().splitlines() for path in csv_files)
    assert len(remote_csv) == 31 and remote_csv[: 1 + listed_locally] == local_csv
    for table in [*DAILY_TABLES[:2], "features", "daily_predictions", "maintenance_worklist"]:
        assert last_commit_note(spark, warehouse, table) == f"dagster run {run.run_id} asset {table}"
    assert_one_run_of_the_wheel(double, "job_cluster", wheel)

    # metadata and check results made the round trip through Pipes
    by_asset = materialized_metadata(events)
    assert set(by_asset) == {
        *DAILY_TABLES,
        "daily_predictions",
        "maintenance_worklist",
        "maintenance_worklist_csv",
        "maintenance_worklist_page",
        "quarantine/raw_machines",
        "raw_errors",
        "quarantine/raw_errors",
        "raw_maintenance",
        "quarantine/raw_maintenance",
    }
    assert by_asset["daily_predictions"]["dagster/row_count"] == 30
    assert by_asset["daily_predictions"]["dagster/column_schema"].columns[0].name == "machine_id"
    assert by_asset["maintenance_worklist"]["machines_listed"] == 30  # the day's own figure, as a local run has it
    assert by_asset["maintenance_worklist_csv"]["csv_file"] == str(csv_files[0])
    page = warehouse / "worklists" / f"maintenance_worklist_{DAY}.html"
    assert by_asset["maintenance_worklist_page"]["page_file"] == str(page) and page.read_text().count("<svg") == 30
    assert by_asset["raw_telemetry"]["rows_read"] == 30 * 24
    evaluations = [
        e.asset_check_evaluation_data for e in events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in evaluations}
    assert (
        checks[("daily_predictions", "one_row_per_active_machine")]
        and checks[("raw_telemetry", "quarantined_share_within_limit")]
    )
    assert len(checks) == 4 + 3


def last_commit_note(spark, warehouse: Path, table: str) -> str:
    (commit,) = DeltaTable.forPath(spark, str(warehouse / table)).history(1).collect()
    return commit.userMetadata


# The compute changes only the submitted run's payload: the daily job runs on a new job cluster, a failing step on
# an existing cluster, and a run cancelled on serverless compute, each one run of the same wheel.


def test_a_failure_on_databricks_fails_the_step_with_the_remote_reason(wheel, trained_fleet, tmp_path, monkeypatch):
    with workspace(tmp_path, wheel, trained_fleet, monkeypatch, "existing_cluster") as (double, _):
        defs = build_definitions()
        result = dg.materialize(
            list(defs.assets),
            selection=["daily_predictions"],
            resources=defs.resources,
            partition_key=DAY_WITHOUT_FEATURES,
            raise_on_error=False,
        )

    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "Nothing to score for 2015-06-01" in failure.step_failure_data.user_failure_data.description
    (task_run,) = double.runs.values()
    assert task_run.state()["result_state"] == "SUCCESS"  # the task stopped itself, saying why
    assert_one_run_of_the_wheel(double, "existing_cluster", wheel)


def test_terminating_the_dagster_run_cancels_the_databricks_run(wheel, trained_fleet, tmp_path, monkeypatch):
    with workspace(tmp_path, wheel, trained_fleet, monkeypatch, "serverless") as (double, _):
        dagster_home = tmp_path / "dagster_home"
        create_instance(dagster_home)
        run = subprocess.Popen(
            dagster_command(
                "dagster",
                "job",
                "execute",
                "-m",
                "batch_scoring.defs.definitions",
                "-j",
                "daily_scoring_job",
                "--tags",
                json.dumps({"dagster/partition": DAY}),
            ),
            env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not any("code from" in r.log.read_text() for r in double.runs.values() if r.log.exists()):
            assert time.monotonic() < deadline and run.poll() is None, (
                run.stdout.read() if run.poll() is not None else "no task"
            )
            time.sleep(0.5)
        run.send_signal(signal.SIGINT)  # what Ctrl-C, or the run's termination, does
        output, _ = run.communicate(timeout=120)

        (task_run,) = double.runs.values()
        cancels = [r for r in double.requests if r["endpoint"] == "POST /api/2.2/jobs/runs/cancel"]
        assert [r["body"]["run_id"] for r in cancels] == [task_run.run_id], output
        assert task_run.state()["result_state"] == "CANCELED" and task_run.process.poll() is not None
        assert "canceling Databricks job" in output
        assert_one_run_of_the_wheel(double, "serverless", wheel)


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
        # the Files API: volumes only, missing files and non-empty directories as the API answers them
        status, error = call(double, "GET", f"/api/2.0/fs/files{PIPES_VOLUME}/none.json")
        assert (status, error["error_code"]) == (404, "NOT_FOUND")
        status, error = call(double, "PUT", "/api/2.0/fs/directories/tmp/pipes")
        assert (status, error["error_code"]) == (400, "INVALID_PARAMETER_VALUE") and "not in a volume" in error[
            "message"
        ]
        assert call(double, "PUT", f"/api/2.0/fs/directories{PIPES_VOLUME}/tmp/run")[0] == 200
        assert call(double, "PUT", f"/api/2.0/fs/files{PIPES_VOLUME}/tmp/run/1.json?overwrite=true", {})[0] == 200
        status, error = call(double, "DELETE", f"/api/2.0/fs/directories{PIPES_VOLUME}/tmp/run")
        assert (status, error["error_code"]) == (400, "DIRECTORY_NOT_EMPTY")
        status, error = call(double, "PUT", f"/api/2.0/fs/files{PIPES_VOLUME}/tmp/run/1.json?mode=append", {})
        assert status == 400 and ".mode" in error["message"]
