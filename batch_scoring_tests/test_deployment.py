"""The project as users run it: `dagster-webserver` and `dagster-daemon` on a temporary DAGSTER_HOME,
runs launched through the webserver's GraphQL API, the sensor ticking in the daemon, the UI in headless
Chromium; the runs side by side, with a secret in their environment (the `dagster` command line: test_cluster)."""

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from batch_scoring.lib.ingest import DROP_READY_MARKER, DROPS_FOLDER
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    ARTIFACTS,
    REPO_ROOT,
    copy_warehouse,
    dagster_command,
    deployment_env,
    free_port,
    model_versions,
    open_in_chromium,
    start_process,
    stop_process,
    text_of,
)

LOCATION = {"repositoryLocationName": "batch_scoring", "repositoryName": "__repository__"}
ASSETS = [
    "raw_machines",
    "raw_telemetry",
    "raw_errors",
    "raw_maintenance",
    "raw_failures",
    "features",
    "failure_model",
    "daily_predictions",
    "maintenance_worklist",
    "maintenance_worklist_csv",
    "maintenance_worklist_page",
]
QUARANTINES = [f"quarantine/{name}" for name in ASSETS[:5]]
MACHINES = 30  # of the shared test fleet, 2015-01-01 to 2015-04-30
RUN_TIMEOUT = 600
FAKE_TOKEN = f"dapi{uuid.uuid4().hex}"  # a made-up Databricks token in every process's environment: never written


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


@dataclass
class Deployment:
    url: str
    home: Path
    input_dir: Path
    warehouse: Path
    logs: tuple[Path, ...]

    def env(self) -> dict[str, str]:
        """The environment of the deployment's processes: a secret among them, which must never be written."""
        return deployment_env(self.input_dir, self.warehouse, self.home, DATABRICKS_TOKEN=FAKE_TOKEN)

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


RUN_QUERY = """query Run($runId: ID!) { runOrError(runId: $runId) {
  __typename ... on Run { runId status tags { key value } assetSelection { path } } } }"""
MODEL_METADATA_QUERY = """{ assetOrError(assetKey: {path: ["failure_model"]}) { ... on Asset {
  assetMaterializations(limit: 1) { metadataEntries { label ... on FloatMetadataEntry { floatValue } } } } } }"""
LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


@pytest.fixture(scope="module")
def deployment(quickstart, tmp_path_factory):
    """The webserver, as in production, on a copy of what the quick start left: its folders and its instance, with
    the runs that trained the model and scored the last day, as the UI opens after it (the daemon: `launched`)."""
    root = tmp_path_factory.mktemp("deployment")
    input_dir = root / "input"
    shutil.copytree(quickstart.input_dir, input_dir)
    warehouse = copy_warehouse(quickstart.warehouse, root / "warehouse")
    home = shutil.copytree(quickstart.dagster_home, root / "dagster_home")
    port = free_port()
    logs = (root / "webserver.log", root / "daemon.log")
    deployment = Deployment(f"http://127.0.0.1:{port}", home, input_dir, warehouse, logs)
    command = dagster_command("dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port))
    webserver = start_process(command, deployment.env(), output=logs[0].open("w"))

    def location_loaded():
        try:
            (entry,) = deployment.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError):
            return None
        return entry["loadStatus"] == "LOADED" and entry

    try:
        entry = wait_for(location_loaded, "the webserver to load the code location", timeout=180, logs=logs)
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
        yield deployment
    finally:
        stop_process(webserver)


def warnings_in(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if re.search(r"\w+Warning\b|Traceback|\bERROR\b", line)]


def test_the_code_location_loads_without_errors_or_warnings(deployment):
    validate = subprocess.run(
        dagster_command("dagster", "definitions", "validate", "-w", "workspace.yaml"),
        cwd=REPO_ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "Validation successful" in validate.stdout + validate.stderr
    assert warnings_in(deployment.logs[0]) == []  # the daemon's log: at the end, after its runs
    nodes = deployment.graphql("{ assetNodes { assetKey { path } groupName description } }")["assetNodes"]
    groups = {"/".join(node["assetKey"]["path"]): node["groupName"] for node in nodes}
    assert groups == {
        **{name: "raw" for name in ASSETS[:5] + QUARANTINES},
        "features": "features",
        "failure_model": "model",
        "daily_predictions": "scoring",
        "maintenance_worklist": "scoring",
        "maintenance_worklist_csv": "scoring",
        "maintenance_worklist_page": "scoring",
        "prediction_outcomes": "outcomes",
    }
    assert all(node["description"] for node in nodes)


LAUNCH_RUN = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
LAUNCH_BACKFILL = """mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on InvalidSubsetError { message } } }"""
BACKFILL_QUERY = """query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs(limit: 10) { runId status tags { key value } } } } }"""
SENSOR_SELECTOR = {**LOCATION, "sensorName": "new_data_sensor"}
START_SENSOR = """mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
SENSOR_TICKS = """query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { ticks(limit: 10, statuses: [SUCCESS, FAILURE]) {
  status runIds error { message } } } } } }"""

GRAPHQL_DAY = "2015-04-29"  # one partition, launched as the UI's Materialize button does
BACKFILL_DAYS = ["2015-04-20", "2015-04-21", "2015-04-22"]  # a backfill, as the UI's partitions dialog does
DROP_DAY = "2015-04-30"  # a daily drop, for the sensor


@dataclass
class Launched:
    run_id: str
    backfill_id: str


@pytest.fixture(scope="module")
def launched(deployment) -> Iterator[Launched]:
    """A run, a backfill and a drop for the sensor, all launched at once, then the daemon started: it runs them
    side by side (its first iterations find the backfill and the sensor waiting, where a running daemon would
    look for backfills only every 30 s). The command line's runs: test_cluster and test_faults."""
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

    backfill_params = {
        "partitionNames": BACKFILL_DAYS,
        "assetSelection": asset_keys("daily_predictions"),
    }
    backfill = deployment.graphql(LAUNCH_BACKFILL, params=backfill_params)["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill

    command = dagster_command("dagster-daemon", "run", "-w", "workspace.yaml")
    daemon = start_process(command, deployment.env(), output=deployment.logs[1].open("w"))
    try:
        yield Launched(run["run"]["runId"], backfill["backfillId"])
    finally:
        stop_process(daemon)


def asset_keys(*names: str) -> list[dict]:
    return [{"path": name.split("/")} for name in names]


def test_a_partition_launched_through_graphql_is_materialized_and_stored(spark, deployment, launched):
    run = deployment.wait_for_run(launched.run_id)
    assert {"key": "dagster/partition", "value": GRAPHQL_DAY} in run["tags"]
    stored = deployment.predictions(spark, [GRAPHQL_DAY])
    assert stored.count() == MACHINES
    (version,) = model_versions(spark, deployment.warehouse)
    assert {r.model_version for r in stored.select("model_version").distinct().collect()} == {version}
    statuses = deployment.graphql(
        """{ assetNodeOrError(assetKey: {path: ["daily_predictions"]}) { ... on AssetNode {
          assetPartitionStatuses { ... on TimePartitionStatuses { ranges { startKey endKey status } } } } } }"""
    )["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
    # the other runs may have filled the days beside it: a range of materialized days holds it
    assert [r for r in statuses if r["status"] == "MATERIALIZED" and r["startKey"] <= GRAPHQL_DAY <= r["endKey"]]


def wait_for_backfill(deployment: Deployment, backfill_id: str) -> dict:
    def finished_backfill():
        backfill = deployment.graphql(BACKFILL_QUERY, id=backfill_id)["partitionBackfillOrError"]
        return backfill["status"] != "REQUESTED" and backfill

    backfill = wait_for(finished_backfill, "the backfill to finish", logs=deployment.logs)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    return backfill


def wait_for_sensor_run(deployment: Deployment) -> dict:
    """The run of the first sensor tick that requested one, once it succeeded; no tick may fail."""

    def tick_with_run():
        ticks = deployment.graphql(SENSOR_TICKS, selector=SENSOR_SELECTOR)["sensorOrError"]["sensorState"]["ticks"]
        assert not [t for t in ticks if t["status"] == "FAILURE"], ticks
        return next((t for t in ticks if t["runIds"]), None)

    tick = wait_for(tick_with_run, "a sensor tick that requests a run", timeout=180, logs=deployment.logs)
    assert tick["status"] == "SUCCESS"
    (run_id,) = tick["runIds"]
    return deployment.wait_for_run(run_id)


def test_a_backfill_launched_through_graphql_scores_the_range_in_one_run(spark, deployment, launched):
    backfill = wait_for_backfill(deployment, launched.backfill_id)
    (run,) = backfill["runs"]  # BackfillPolicy.single_run(): one run, one Spark session, for the range
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    range_tags = (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
    assert range_tags == (BACKFILL_DAYS[0], BACKFILL_DAYS[-1])
    assert deployment.predictions(spark, BACKFILL_DAYS).count() == MACHINES * len(BACKFILL_DAYS)


def test_the_daemon_s_sensor_tick_scores_a_new_drop_in_a_successful_run(spark, deployment, launched):
    run = wait_for_sensor_run(deployment)
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dagster/partition"] == DROP_DAY and tags["dagster/sensor_name"] == "new_data_sensor"
    assert deployment.predictions(spark, [DROP_DAY]).count() == MACHINES


SCHEDULE_SELECTOR = {**LOCATION, "scheduleName": "daily_scoring_schedule"}


def test_the_schedule_once_on_next_ticks_at_six_utc(deployment):
    started = deployment.graphql(
        """mutation Start($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) {
          __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }""",
        selector=SCHEDULE_SELECTOR,
    )["startSchedule"]
    assert started["scheduleState"]["status"] == "RUNNING", started
    schedule = deployment.graphql(
        """query Schedule($selector: ScheduleSelector!) { scheduleOrError(scheduleSelector: $selector) {
          ... on Schedule { scheduleState { status } futureTicks(limit: 2) { results { timestamp } } } } }""",
        selector=SCHEDULE_SELECTOR,
    )["scheduleOrError"]
    assert schedule["scheduleState"]["status"] == "RUNNING"
    ticks = [datetime.fromtimestamp(t["timestamp"], timezone.utc) for t in schedule["futureTicks"]["results"]]
    assert [(t.hour, t.minute) for t in ticks] == [(6, 0), (6, 0)]
    assert (ticks[1] - ticks[0]).days == 1


def wait_for_every_run(deployment: Deployment, launched: Launched) -> dict[str, str]:
    """Wait until the three runs launched have ended; their run ids, by who launched them."""
    deployment.wait_for_run(launched.run_id)
    (backfill_run,) = wait_for_backfill(deployment, launched.backfill_id)["runs"]
    sensor_run = wait_for_sensor_run(deployment)
    return {"graphql": launched.run_id, "backfill": backfill_run["runId"], "sensor": sensor_run["runId"]}


def test_the_ui_shows_the_whole_lineage_and_the_scored_partitions(deployment, launched, tmp_path):
    wait_for_every_run(deployment, launched)
    deployment.graphql("mutation { setNuxSeen }")  # the community sign-up dialog would cover the page
    lineage = text_of(
        open_in_chromium(
            f"{deployment.url}/assets/daily_predictions?view=lineage&lineageScope=neighbors&lineageDepth=3",
            ARTIFACTS / "asset_lineage.png",
            tmp_path,
            window="3200,2000",  # five groups side by side, each node still showing its status
        )
    )
    for name in ASSETS:
        assert re.search(rf"\b{name}\b", lineage), f"{name} is not in the lineage"
    for group in ("raw", "features", "model", "scoring"):
        assert f" {group} " in lineage
    # the two assets without days (raw_machines and the model) were materialized by the quick start's training run;
    # the ten daily assets (the four event tables, the crews' page and the outcomes among them) say how many days
    # are filled, the outcomes none: no day's 7 days have been measured here
    assert lineage.count("Materialized") == 2 and "Never materialized" not in lineage
    assert lineage.count("% filled") == 10 and "3 / 3 Passed" in lineage
    assert re.search(r"prediction_outcomes Latest event Asset checks 0 / 1 Passed Partitions 0% filled", lineage)
    # the model's page (its metadata table loads after the page's text is taken: the screenshot has it, and the
    # page's own query serves the hold-out figures of the quick start's training run)
    model = text_of(
        open_in_chromium(f"{deployment.url}/assets/failure_model", ARTIFACTS / "failure_model.png", tmp_path)
    )
    assert "failure_model" in model and "training_job" in model
    (latest,) = deployment.graphql(MODEL_METADATA_QUERY)["assetOrError"]["assetMaterializations"]
    figures = {entry["label"]: entry.get("floatValue") for entry in latest["metadataEntries"]}
    assert 0.5 <= figures["macro_f1"] <= 1 and "confusion_matrix" in figures

    # the whole graph, by group (raw: five tables and their five quarantines), and a quarantine in its lineage
    everything = text_of(open_in_chromium(f"{deployment.url}/asset-groups", ARTIFACTS / "global_lineage.png", tmp_path))
    for group in ("raw", "features", "model", "scoring"):
        assert f" {group} " in everything
    quarantine = text_of(
        open_in_chromium(
            f"{deployment.url}/assets/quarantine/raw_telemetry?view=lineage&lineageScope=upstream&lineageDepth=1",
            ARTIFACTS / "quarantine_lineage.png",
            tmp_path,
        )
    )
    assert "quarantine" in quarantine and re.search(r"\braw_machines\b", quarantine)

    partitions = text_of(
        open_in_chromium(
            f"{deployment.url}/assets/daily_predictions?view=partitions",
            ARTIFACTS / "daily_predictions_partitions.png",
            tmp_path,
        )
    )
    scored_days = 1 + len(BACKFILL_DAYS) + 1  # GraphQL, backfill, sensor
    assert f"Materialized ({scored_days})" in partitions and "Failed (0)" in partitions


def test_runs_at_once_on_different_days_of_the_same_tables_all_succeed(deployment, launched):
    runs = wait_for_every_run(deployment, launched)
    assert warnings_in(deployment.logs[1]) == []  # the daemon ran them without a warning or an error
    with dg.DagsterInstance.from_config(str(deployment.home)) as instance:
        records = {r.dagster_run.run_id: r for r in instance.get_run_records() if r.dagster_run.run_id in runs.values()}
    # each on other days, all writing daily_predictions
    assert set(records) == set(runs.values())
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records.values())
    # the two launched at once (the backfill's run waits for the daemon's next backfill iteration)
    started_together = [records[runs["graphql"]], records[runs["sensor"]]]
    assert max(r.start_time for r in started_together) < min(r.end_time for r in started_together), "they overlapped"


def test_a_secret_in_the_environment_is_never_written_to_logs_metadata_or_files(deployment, launched):
    wait_for_every_run(deployment, launched)
    for folder in (deployment.home, deployment.warehouse, *{log.parent for log in deployment.logs}):
        for path in folder.rglob("*"):
            if path.is_file():
                assert FAKE_TOKEN.encode() not in path.read_bytes(), f"the secret leaked into {path}"
    with dg.DagsterInstance.from_config(str(deployment.home)) as instance:
        for record in instance.get_run_records():
            for event in instance.all_logs(record.dagster_run.run_id):
                assert FAKE_TOKEN not in dg.serialize_value(event), "the secret leaked into the event log"
