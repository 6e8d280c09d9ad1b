"""The runs the tests start in processes of their own, as production runs them: the webserver and the daemon with
three runs (test_deployment), a range scored from the `dagster` command line on a standalone Spark cluster
(test_cluster), a command-line run killed mid-write (test_faults), and the daily job on the Databricks double
(test_databricks).

Each takes a minute or more of one core and a half, mostly a new JVM compiling Spark's code, while the test process
would wait. So they start with the session, once the quick start's fleet is ready, and run one after another on a
thread of their own beside the tests in this process (about 1.2 cores): both cores stay busy, neither side starves.
Their environments are taken when their fixtures are set up, before any test runs: tests change this process's
environment meanwhile (test_databricks switches to Databricks).
The tests that check them run last (`pytest_collection_modifyitems`). A pytest plugin of the test package
(`conftest.py` loads it), so its session fixtures are the test modules' too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import DataFrame

from batch_scoring.deploy.databricks import NODE_NAME
from batch_scoring.lib.ingest import DROP_READY_MARKER, DROPS_FOLDER
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA
from batch_scoring.lib.tables import TELEMETRY
from batch_scoring.settings import (
    DATABRICKS_CLUSTER_ENV,
    DATABRICKS_CLUSTER_ID_ENV,
    DATABRICKS_COMPUTE_ENV,
    DATABRICKS_HOST_ENV,
    DATABRICKS_POLL_ENV,
    DATABRICKS_TOKEN_ENV,
    DATABRICKS_VOLUME_ENV,
    DATABRICKS_WHEEL_ENV,
    ENGINE_ENV,
    INPUT_DIR_ENV,
    SPARK_CONF_ENV,
    SPARK_MASTER_ENV,
    WAREHOUSE_DIR_ENV,
)
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    REPO_ROOT,
    SHORT_RUN_SPARK_CONFIG,
    copy_warehouse,
    dagster_command,
    deployment_env,
    free_port,
    start_process,
    stop_process,
)
from batch_scoring_tests.databricks_double import DatabricksDouble

# the session fixtures that queue processes, in the order they run; the tests using them run after all others
STARTED_EARLY = ("cluster_started", "deployment_started", "killed_run_started", "databricks_daily_started")


@pytest.hookimpl(trylast=True)  # after pytest's own reordering
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not set(STARTED_EARLY).isdisjoint(item.fixturenames))  # stable otherwise


@pytest.fixture(scope="session")
def separate_processes() -> Iterator[ThreadPoolExecutor]:
    """The thread that runs the separate processes, each job once the one before has ended."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="separate-processes") as thread:
        yield thread
        thread.shutdown(cancel_futures=True)


@pytest.fixture(scope="session", autouse=True)
def separate_processes_started_early(request: pytest.FixtureRequest) -> None:
    """Queue the processes the session's selected tests check (none for `pytest -m unit`)."""
    needed = {name for item in request.session.items for name in item.fixturenames}
    for name in STARTED_EARLY:
        if name in needed:
            request.getfixturevalue(name)


RUN_TIMEOUT = 900  # a run's longest wait: the runs share two cores with the other tests' work


def wait_for(condition: Callable[[], object], what: str, timeout: float = RUN_TIMEOUT, logs: tuple[Path, ...] = ()):
    """Poll `condition` until it returns something truthy; on timeout, fail with the logs' last lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {log}:\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


# ---- the webserver and the daemon (test_deployment) ----

LOCATION = {"repositoryLocationName": "batch_scoring", "repositoryName": "__repository__"}
FAKE_TOKEN = f"dapi{uuid.uuid4().hex}"  # a made-up Databricks token in every process's environment: never written
GRAPHQL_DAY = "2015-04-29"  # one partition, launched as the UI's Materialize button does
BACKFILL_DAYS = ["2015-04-20", "2015-04-21", "2015-04-22"]  # a backfill, as the UI's partitions dialog does
DROP_DAY = "2015-04-30"  # a daily drop, for the sensor

RUN_QUERY = """query Run($runId: ID!) { runOrError(runId: $runId) {
  __typename ... on Run { runId status tags { key value } assetSelection { path } } } }"""
LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
LAUNCH_RUN = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
LAUNCH_BACKFILL = """mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on InvalidSubsetError { message } } }"""
SENSOR_SELECTOR = {**LOCATION, "sensorName": "new_data_sensor"}
START_SENSOR = """mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""


@dataclass
class Deployment:
    url: str
    home: Path
    input_dir: Path
    warehouse: Path
    logs: tuple[Path, ...]
    env: dict[str, str]  # of the deployment's processes: a secret among them, which must never be written

    def graphql(self, query: str, **variables) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            pytest.fail(f"GraphQL request failed: {error}: {error.read().decode()[:2000]}")
        assert "errors" not in body, body["errors"]
        return body["data"]

    def run(self, run_id: str) -> dict:
        return self.graphql(RUN_QUERY, runId=run_id)["runOrError"]

    def wait_for_run(self, run_id: str) -> dict:
        run = wait_for(
            lambda: (r := self.run(run_id))["status"] in ("SUCCESS", "FAILURE", "CANCELED") and r,
            f"run {run_id} to finish",
            logs=self.logs,
        )
        assert run["status"] == "SUCCESS", f"run {run_id} ended {run['status']}: see the run in {self.home}"
        return run

    def predictions(self, spark, days: list[str]):
        return DeltaTables(spark, str(self.warehouse)).read("daily_predictions", PREDICTIONS_SCHEMA, days)


@dataclass
class Launched:
    run_id: str
    backfill_id: str


def run_to_the_end(
    command: list[str], env: dict[str, str], log: Path, processes: list[subprocess.Popen]
) -> tuple[subprocess.Popen, str]:
    """Run `command` with its output in `log`; the ended process and what it printed."""
    process = start_process(command, env, output=log.open("w"))
    processes.append(process)
    process.wait(timeout=RUN_TIMEOUT)
    return process, log.read_text()


@contextmanager
def stopped_at_the_end() -> Iterator[list[subprocess.Popen]]:
    """A list to put started processes in: they are stopped, the last started first, when the block ends."""
    processes: list[subprocess.Popen] = []
    try:
        yield processes
    finally:
        for process in reversed(processes):
            stop_process(process)


@pytest.fixture(scope="session")
def deployment_started(quickstart, tmp_path_factory, separate_processes) -> Iterator[Future]:
    """The webserver, as in production, on a copy of what the quick start left: its folders and its instance, with
    the runs that trained the model and scored the last day, as the UI opens after it; then the daemon and the runs
    it is given (`launch_and_run`). The future's result: the deployment and what was launched."""
    root = tmp_path_factory.mktemp("deployment")
    input_dir = root / "input"
    shutil.copytree(quickstart.input_dir, input_dir)
    warehouse = copy_warehouse(quickstart.warehouse, root / "warehouse")
    home = shutil.copytree(quickstart.dagster_home, root / "dagster_home")
    logs = (root / "webserver.log", root / "daemon.log")
    env = deployment_env(input_dir, warehouse, home, DATABRICKS_TOKEN=FAKE_TOKEN)
    deployment = Deployment(f"http://127.0.0.1:{free_port()}", home, input_dir, warehouse, logs, env)
    with stopped_at_the_end() as processes:
        yield separate_processes.submit(launch_and_run, deployment, processes)


@pytest.fixture
def deployment(deployment_started) -> Deployment:
    return deployment_started.result()[0]


@pytest.fixture
def launched(deployment_started) -> Launched:
    return deployment_started.result()[1]


def asset_keys(*names: str) -> list[dict]:
    return [{"path": name.split("/")} for name in names]


RUNS_QUERY = "{ runsOrError { ... on Runs { results { status } } } }"
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}


def launch_and_run(deployment: Deployment, processes: list[subprocess.Popen]) -> tuple[Deployment, Launched]:
    """Start the webserver; launch a run, a backfill and a drop for the sensor, all at once; then start the daemon,
    which runs them side by side (its first iterations find the backfill and the sensor waiting, where a running
    daemon would look for backfills only every 30 s). Return once the three runs have ended, whatever became of
    them: the tests say."""
    port = deployment.url.rsplit(":", 1)[1]
    command = dagster_command("dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", port)
    processes.append(start_process(command, deployment.env, output=deployment.logs[0].open("w")))

    def location_loaded():
        try:
            (entry,) = deployment.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError):
            return None
        return entry["loadStatus"] == "LOADED" and entry

    entry = wait_for(location_loaded, "the webserver to load the code location", 300, deployment.logs)
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    runs_before = len(deployment.graphql(RUNS_QUERY)["runsOrError"]["results"])

    drop = deployment.input_dir / DROPS_FOLDER / DROP_DAY
    drop.mkdir(parents=True)
    with (deployment.input_dir / "PdM_telemetry.csv").open() as bulk:
        header = next(bulk)
        (drop / "PdM_telemetry.csv").write_text(header + "".join(line for line in bulk if line.startswith(DROP_DAY)))
    (drop / DROP_READY_MARKER).touch()
    started = deployment.graphql(START_SENSOR, selector=SENSOR_SELECTOR)["startSensor"]
    assert started["sensorState"]["status"] == "RUNNING", started

    # one asset's partition, as its page's Materialize button launches it (the sensor's run makes the whole chain)
    run_params = {
        "selector": {**LOCATION, "jobName": "__ASSET_JOB", "assetSelection": asset_keys("daily_predictions")},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": GRAPHQL_DAY}]},
        "runConfigData": {},
    }
    run = deployment.graphql(LAUNCH_RUN, params=run_params)["launchRun"]
    assert run["__typename"] == "LaunchRunSuccess", run

    backfill_params = {"partitionNames": BACKFILL_DAYS, "assetSelection": asset_keys("daily_predictions")}
    backfill = deployment.graphql(LAUNCH_BACKFILL, params=backfill_params)["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill

    command = dagster_command("dagster-daemon", "run", "-w", "workspace.yaml")
    processes.append(start_process(command, deployment.env, output=deployment.logs[1].open("w")))

    def three_runs_ended():
        statuses = [r["status"] for r in deployment.graphql(RUNS_QUERY)["runsOrError"]["results"]]
        return len(statuses) >= runs_before + 3 and IN_PROGRESS.isdisjoint(statuses)

    wait_for(three_runs_ended, "the daemon's three runs to end", logs=deployment.logs)
    return deployment, Launched(run["run"]["runId"], backfill["backfillId"])


# ---- a standalone Spark cluster (test_cluster) ----

CLUSTER_DAYS = ("2015-04-29", "2015-04-30")  # one run for the range; the quick start scored the last one locally
ON_CLUSTER = (
    "raw_telemetry",
    "quarantine/raw_telemetry",
    "daily_predictions",
    "maintenance_worklist",
    "maintenance_worklist_csv",
)
SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
LOOPBACK = {"SPARK_LOCAL_IP": "127.0.0.1"}  # the machine's name may resolve to an address Spark should not use


def master_state(web_port: int) -> dict | None:
    """The master's state from its web UI, or None while it is not up (no answer, or an empty page yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/json/", timeout=5) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


@dataclass
class StandaloneCluster:
    """A master and one worker, started by `run_on_a_cluster`."""

    root: Path  # its logs and the worker's folder
    port: int
    web_port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"


@dataclass
class ClusterRun:
    """A `dagster asset materialize` of two days on a standalone cluster, into a copy of the quick start's
    warehouse, ended."""

    process: subprocess.Popen
    output: str
    warehouse: Path
    web_port: int


@pytest.fixture(scope="session")
def cluster_started(trained_fleet, tmp_path_factory, separate_processes) -> Iterator[Future]:
    """A Spark standalone master and one worker (1 core, 1 GiB), and the run on them (`run_on_a_cluster`); the
    cluster stopped at the end."""
    root = tmp_path_factory.mktemp("cluster")
    input_dir = shutil.copytree(trained_fleet[0], root / "input")
    warehouse = copy_warehouse(trained_fleet[1], root / "warehouse")
    (warehouse / "worklists" / f"maintenance_worklist_{CLUSTER_DAYS[-1]}.csv").unlink()  # the quick start's
    cluster = StandaloneCluster(root, free_port(), free_port(), {**os.environ, **LOOPBACK})
    run_env = deployment_env(input_dir, warehouse, root / "home", **LOOPBACK, **{SPARK_MASTER_ENV: cluster.url})
    with stopped_at_the_end() as processes:
        yield separate_processes.submit(run_on_a_cluster, cluster, run_env, warehouse, processes)


@pytest.fixture
def cluster_run(cluster_started) -> ClusterRun:
    return cluster_started.result()


def run_on_a_cluster(
    cluster: StandaloneCluster, run_env: dict[str, str], warehouse: Path, processes: list[subprocess.Popen]
) -> ClusterRun:
    root, web_port = cluster.root, cluster.web_port
    logs = (root / "master.log", root / "worker.log", root / "run.log")
    master = [str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"]
    master += ["--port", str(cluster.port), "--webui-port", str(web_port)]
    processes.append(start_process(master, cluster.env, output=logs[0].open("w")))
    worker = [str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", cluster.url, "--host", "127.0.0.1"]
    worker += ["--cores", "1", "--memory", "1g", "--webui-port", "0", "--work-dir", str(root / "work")]
    processes.append(start_process(worker, cluster.env, output=logs[1].open("w")))
    wait_for(lambda: (master_state(web_port) or {}).get("aliveworkers") == 1, "a master with a worker", 180, logs)

    command = ["asset", "materialize", "-m", "batch_scoring.defs.definitions", "--select", ",".join(ON_CLUSTER)]
    command += ["--partition-range", "...".join(CLUSTER_DAYS)]
    return ClusterRun(
        *run_to_the_end(dagster_command("dagster", *command), run_env, logs[2], processes), warehouse, web_port
    )


# ---- a command-line run killed mid-write (test_faults) ----

TELEMETRY_STEP = "raw_telemetry,quarantine/raw_telemetry"  # one step writes both
RERUN_DAYS = ("2015-01-25", "2015-02-10")  # a range holding the bad rows of 2015-02-01 and 2015-02-02


def telemetry_files(warehouse: Path) -> set[Path]:
    return set((warehouse / "raw_telemetry").rglob("date=*/*.parquet"))


@dataclass
class KilledRun:
    """A command-line run ingesting a range of telemetry into a copy of the trained fleet, killed (SIGKILL) as
    soon as it had written a data file."""

    input_dir: Path  # the fleet's input, with one bad telemetry row on each of two days and one undated
    warehouse: Path
    rows_before: DataFrame  # cached
    files_before: set[Path]
    process: subprocess.Popen
    output: str


@pytest.fixture(scope="session")
def killed_run_started(spark, trained_fleet, tmp_path_factory, separate_processes) -> Iterator[Future]:
    root = tmp_path_factory.mktemp("killed_run")
    input_dir = shutil.copytree(trained_fleet[0], root / "input")
    with open(input_dir / "PdM_telemetry.csv", "a") as telemetry:
        telemetry.write("2015-02-01 05:00:00,1,x,450,100,40\n2015-02-02 05:00:00,1,x,450,100,40\nsoon,1,1,1,1,1\n")
    warehouse = copy_warehouse(trained_fleet[1], root / "warehouse")
    before = DeltaTables(spark, str(warehouse)).read("raw_telemetry", TELEMETRY.schema).cache()
    before.count()
    env = deployment_env(input_dir, warehouse, root / "home")
    with stopped_at_the_end() as processes:
        yield separate_processes.submit(run_and_kill, root, env, input_dir, warehouse, before, processes)


@pytest.fixture
def killed_run(killed_run_started) -> KilledRun:
    return killed_run_started.result()


def run_and_kill(
    root: Path, env: dict[str, str], input_dir: Path, warehouse: Path, before: DataFrame, processes: list
) -> KilledRun:
    files_before = telemetry_files(warehouse)
    command = ["asset", "materialize", "-m", "batch_scoring.defs.definitions", "--select", TELEMETRY_STEP]
    command += ["--partition-range", "...".join(RERUN_DAYS)]
    log = root / "run.log"
    process = start_process(dagster_command("dagster", *command), env, log.open("w"))
    processes.append(process)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not telemetry_files(warehouse) - files_before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return KilledRun(input_dir, warehouse, before, files_before, process, log.read_text())


# ---- the daily job on the Databricks double (test_databricks) ----

DAY = "2015-04-30"  # the quick start scored it locally: its warehouse is the local run to compare with
TOKEN = "dapi-fake-token-for-the-double-0123456789"
CLUSTER = {"spark_version": "17.3.x-scala2.13", "node_type_id": "i3.xlarge", "num_workers": 1}
CLUSTER_ID = "1126-040000-brick123"  # an all-purpose cluster the double keeps running
PIPES_VOLUME = "/Volumes/main/pdm/pipes"
ARTIFACTS_VOLUME = "/Volumes/main/pdm/artifacts"
# what each compute needs besides the wheel, and the new job clusters a run starts there
COMPUTE = {
    "job_cluster": ({DATABRICKS_CLUSTER_ENV: json.dumps(CLUSTER)}, 1),
    "existing_cluster": ({DATABRICKS_CLUSTER_ID_ENV: CLUSTER_ID}, 0),
    "serverless": ({DATABRICKS_VOLUME_ENV: PIPES_VOLUME}, 0),
}
EVERY_MACHINE = {"min_failure_probability": 0.0}  # the worklist's run config: list every machine


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built as docs/deployment.md's deploy steps build it, from a copy of the sources (a
    `build/` folder left in the working copy would carry stale modules into the wheel)."""
    out, source = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "batch_scoring", source / "batch_scoring", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("batch_scoring-*.whl")
    return built


def task_env(home: Path) -> dict[str, str]:
    """What a Databricks driver has in its environment here: a local[2] Spark of the test's size."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        **{name: os.environ[name] for name in ("JAVA_HOME", "LANG") if name in os.environ},
        SPARK_MASTER_ENV: "local[2]",
        SPARK_CONF_ENV: json.dumps(SHORT_RUN_SPARK_CONFIG),
    }


@contextmanager
def databricks_workspace(
    root: Path, wheel: Path, trained_fleet, compute: str
) -> Iterator[tuple[DatabricksDouble, Path, dict[str, str]]]:
    """The double with the wheel uploaded to a volume and a copy of the trained fleet's warehouse. Yields the double,
    the warehouse copy and the orchestrator's settings in Databricks mode on `compute`."""
    input_dir, trained_warehouse = trained_fleet
    warehouse = copy_warehouse(trained_warehouse, root / "warehouse")
    with DatabricksDouble(root / "workspace", TOKEN, task_env(root), running_clusters=(CLUSTER_ID,)) as double:
        uploaded = double.workspace_file(f"{ARTIFACTS_VOLUME}/{wheel.name}")
        uploaded.parent.mkdir(parents=True)
        shutil.copy(wheel, uploaded)
        double.workspace_file(PIPES_VOLUME).mkdir(parents=True)
        compute_settings, _ = COMPUTE[compute]
        environment = {
            ENGINE_ENV: "databricks",
            DATABRICKS_HOST_ENV: double.url,
            DATABRICKS_TOKEN_ENV: TOKEN,
            DATABRICKS_WHEEL_ENV: f"{ARTIFACTS_VOLUME}/{wheel.name}",
            DATABRICKS_COMPUTE_ENV: compute,
            DATABRICKS_POLL_ENV: "1",
            INPUT_DIR_ENV: str(input_dir),
            WAREHOUSE_DIR_ENV: str(warehouse),
            **compute_settings,
        }
        yield double, warehouse, environment


@dataclass
class DatabricksDailyRun:
    """`dagster job execute` of daily_scoring_job for a day, in Databricks mode on a new job cluster of the double
    (every machine listed), into a copy of the quick start's warehouse; ended."""

    double: DatabricksDouble
    warehouse: Path
    home: Path  # the run's Dagster instance
    process: subprocess.Popen
    output: str


@pytest.fixture(scope="session")
def databricks_daily_started(trained_fleet, wheel, tmp_path_factory, separate_processes) -> Iterator[Future]:
    root = tmp_path_factory.mktemp("databricks_daily")
    with databricks_workspace(root, wheel, trained_fleet, "job_cluster") as (double, warehouse, environment):
        for suffix in ("csv", "html"):  # the quick start's files: written again
            (warehouse / "worklists" / f"maintenance_worklist_{DAY}.{suffix}").unlink()
        home = root / "dagster_home"
        env = deployment_env(trained_fleet[0], warehouse, home, **environment)
        run_config = root / "run_config.json"  # YAML, as JSON is
        run_config.write_text(json.dumps({"ops": {NODE_NAME: {"config": {"maintenance_worklist": EVERY_MACHINE}}}}))
        command = dagster_command("dagster", "job", "execute", "-m", "batch_scoring.defs.definitions")
        command += ["-j", "daily_scoring_job", "--tags", json.dumps({"dagster/partition": DAY}), "-c", str(run_config)]
        log = root / "run.log"
        with stopped_at_the_end() as processes:
            yield separate_processes.submit(
                lambda: DatabricksDailyRun(double, warehouse, home, *run_to_the_end(command, env, log, processes))
            )


@pytest.fixture
def databricks_daily(databricks_daily_started) -> DatabricksDailyRun:
    return databricks_daily_started.result()
