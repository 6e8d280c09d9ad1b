"""The pipeline on a real Spark standalone cluster (a master and a worker started from the installed
pyspark, on loopback), run from the `dagster` command line over a range of days, gives the same rows as on
local Spark."""

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest

from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA
from batch_scoring.lib.tables import TELEMETRY
from batch_scoring.settings import SPARK_MASTER_ENV
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    copy_warehouse,
    dagster_command,
    deployment_env,
    free_port,
    start_process,
    stop_process,
)

DAY = "2015-04-30"  # the quick start scored it locally: its warehouse is the local run to compare with
DAYS = ("2015-04-29", DAY)  # one run for the range
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
ON_CLUSTER = (
    "raw_telemetry",
    "quarantine/raw_telemetry",
    "daily_predictions",
    "maintenance_worklist",
    "maintenance_worklist_csv",
)
LOOPBACK = {"SPARK_LOCAL_IP": "127.0.0.1"}  # the machine's name may resolve to an address Spark should not use


def master_state(web_port: int) -> dict | None:
    """The master's state from its web UI, or None while it is not up (no answer, or an empty page yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/json/", timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone master and one worker (1 core, 1 GiB), stopped at the end with all they started."""
    root = tmp_path_factory.mktemp("cluster")
    port, web_port = free_port(), free_port()
    env = {**os.environ, **LOOPBACK}
    master_url = f"spark://127.0.0.1:{port}"
    master = start_process(
        [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port)]
        + ["--webui-port", str(web_port)],
        env,
        output=(root / "master.log").open("w"),
    )
    worker = start_process(
        [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1"]
        + ["--cores", "1", "--memory", "1g", "--webui-port", str(free_port()), "--work-dir", str(root / "work")],
        env,
        output=(root / "worker.log").open("w"),
    )
    try:
        deadline = time.monotonic() + 120
        while not ((state := master_state(web_port)) and state.get("aliveworkers") == 1):
            if time.monotonic() > deadline:
                logs = "\n".join((root / name).read_text()[-2000:] for name in ("master.log", "worker.log"))
                pytest.fail(f"the standalone cluster did not come up with one worker:\n{logs}")
            time.sleep(1)
        yield master_url, web_port
    finally:
        for process in (worker, master):
            stop_process(process)


def test_a_range_scored_from_the_command_line_on_a_standalone_cluster_equals_the_local_run(
    spark, standalone_cluster, trained_fleet, tmp_path
):
    master_url, web_port = standalone_cluster
    input_dir = tmp_path / "input"
    shutil.copytree(trained_fleet[0], input_dir)
    on_cluster, local = copy_warehouse(trained_fleet[1], tmp_path / "cluster"), trained_fleet[1]

    env = deployment_env(input_dir, on_cluster, tmp_path / "home", **LOOPBACK, **{SPARK_MASTER_ENV: master_url})
    # two days' telemetry, predictions and worklists in one run: an input file parsed and a model applied to a
    # table read, on the cluster's executors
    command = ["asset", "materialize", "-m", "batch_scoring.defs.definitions", "--partition-range", "...".join(DAYS)]
    (on_cluster / "worklists" / f"maintenance_worklist_{DAY}.csv").unlink()  # the quick start's: written again
    run = start_process(dagster_command("dagster", *command, "--select", ",".join(ON_CLUSTER)), env)
    output = run.communicate(timeout=600)[0]
    assert run.returncode == 0, output[-5000:]

    state = master_state(web_port)
    applications = [app["name"] for app in state["completedapps"] + state["activeapps"]]
    assert applications == ["batch_scoring"], "the run's Spark application ran on the cluster"

    cluster_rows, local_rows = (
        DeltaTables(spark, str(w)).read("raw_telemetry", TELEMETRY.schema, [DAY]) for w in (on_cluster, local)
    )
    assert cluster_rows.count() == local_rows.count() == 30 * 24
    assert cluster_rows.exceptAll(local_rows).isEmpty()
    predictions = [
        DeltaTables(spark, str(warehouse)).read("daily_predictions", PREDICTIONS_SCHEMA, [DAY]).drop("scored_at")
        for warehouse in (on_cluster, local)
    ]
    assert predictions[0].count() == predictions[1].count() == 30
    assert predictions[0].exceptAll(predictions[1]).isEmpty()
    scored = DeltaTables(spark, str(on_cluster)).read("daily_predictions", PREDICTIONS_SCHEMA, list(DAYS))
    assert sorted(str(r.date) for r in scored.select("date").distinct().collect()) == list(DAYS)
    assert scored.count() == 30 * len(DAYS)
    csv_files = [w / "worklists" / f"maintenance_worklist_{DAY}.csv" for w in (on_cluster, local)]
    assert csv_files[0].read_text() == csv_files[1].read_text()
    assert (on_cluster / "worklists" / f"maintenance_worklist_{DAYS[0]}.csv").read_text().startswith("rank,machine_id,")
    # the rows compared are the cluster run's: it committed once more to each table
    for table in ("raw_telemetry", "daily_predictions"):
        versions = [DeltaTables(spark, str(w)).version(table) for w in (on_cluster, local)]
        assert versions[0] == versions[1] + 1, table
