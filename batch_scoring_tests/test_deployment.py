"""The project as users run it: `dagster-webserver` and `dagster-daemon` on a temporary DAGSTER_HOME,
runs launched through the webserver's GraphQL API, the sensor ticking in the daemon, the UI in headless
Chromium; the runs side by side, with a secret in their environment (the `dagster` command line: test_cluster).
The webserver, the daemon and their runs start with the session (separate_processes.py); these tests run last."""

import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from batch_scoring_tests.conftest import (
    ARTIFACTS,
    REPO_ROOT,
    dagster_command,
    model_versions,
    open_in_chromium,
    text_of,
)
from batch_scoring_tests.separate_processes import (
    BACKFILL_DAYS,
    DROP_DAY,
    FAKE_TOKEN,
    GRAPHQL_DAY,
    LOCATION,
    SENSOR_SELECTOR,
    Deployment,
    Launched,
    wait_for,
)

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
MODEL_METADATA_QUERY = """{ assetOrError(assetKey: {path: ["failure_model"]}) { ... on Asset {
  assetMaterializations(limit: 1) { metadataEntries { label ... on FloatMetadataEntry { floatValue } } } } } }"""


def warnings_in(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if re.search(r"\w+Warning\b|Traceback|\bERROR\b", line)]


def test_the_code_location_loads_without_errors_or_warnings(deployment):
    validate = subprocess.run(
        dagster_command("dagster", "definitions", "validate", "-w", "workspace.yaml"),
        cwd=REPO_ROOT,
        env=deployment.env,
        capture_output=True,
        text=True,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "Validation successful" in validate.stdout + validate.stderr
    assert warnings_in(deployment.logs[0]) == []  # the webserver's (the daemon's: after its runs)
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


BACKFILL_QUERY = """query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs(limit: 10) { runId status tags { key value } } } } }"""
SENSOR_TICKS = """query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { ticks(limit: 10, statuses: [SUCCESS, FAILURE]) {
  status runIds error { message } } } } } }"""


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

    tick = wait_for(tick_with_run, "a sensor tick that requests a run", timeout=300, logs=deployment.logs)
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
