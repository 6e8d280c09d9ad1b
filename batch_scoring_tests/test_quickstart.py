"""The quick start's first command, run in-process on a small fleet (the `quickstart` fixture, which the tests
that need a trained fleet share)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from batch_scoring import settings
from batch_scoring.cli import main
from batch_scoring.lib.features import FEATURES_SCHEMA
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import TEST_SPARK_CONFIG, days_with_rows, model_versions

TABLES = (MACHINES, TELEMETRY, ERRORS, MAINTENANCE, FAILURES)


def test_quickstart_runs_the_chain_from_simulation_to_the_worklist(spark, quickstart):
    out, warehouse = quickstart.output, quickstart.warehouse
    assert quickstart.exit_code == 0, out
    assert f"Simulating 30 machines over 120 days from 2015-01-01 into {quickstart.input_dir}" in out
    summary = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("raw_", "features"))}
    assert summary["raw_telemetry"] == ["86,400", "0", str(warehouse / "raw_telemetry")]
    assert summary["raw_machines"] == ["30", "0", str(warehouse / "raw_machines")]
    assert summary["features"] == ["3,600", "-", str(warehouse / "features")]
    store = DeltaTables(spark, str(warehouse))
    assert store.read("raw_telemetry", TELEMETRY.schema).count() == 30 * 120 * 24
    assert store.read("features", FEATURES_SCHEMA).count() == 30 * 120
    (version,) = model_versions(spark, warehouse)
    assert f"failure_model {version}: hold-out macro F1" in out
    chosen = re.search(r"worklist threshold (0\.\d+), chosen on the validation days 2015-02-28 \.\. 2015-03-23: ", out)
    assert chosen, out
    listed = re.search(
        rf"hold-out worklists \(failure probability >= {chosen[1]}\): (\d+) of (\d+) failures listed the day", out
    )
    assert listed and 0 < int(listed[1]) <= int(listed[2]), out
    assert re.search(rf"Worklist for 2015-04-30: \d+ machines at failure probability >= {chosen[1]}\n", out), out
    assert "check usable_for_scoring: passed" in out
    assert f"Predictions for 2015-04-30: 30 machines scored with model {version}" in out
    for kind, suffix in (("CSV", "csv"), ("Page", "html")):
        assert f"{kind}: {warehouse / 'worklists' / f'maintenance_worklist_2015-04-30.{suffix}'}" in out
        assert (warehouse / "worklists" / f"maintenance_worklist_2015-04-30.{suffix}").exists()
    assert days_with_rows(store, "daily_predictions") == ["2015-04-30"]
    # it ends with the command that opens the UI on its runs and its folders
    *variables, dagster, command = out.rstrip().splitlines()[-1].split(maxsplit=5)
    assert variables == [
        f"DAGSTER_HOME={quickstart.dagster_home}",
        f"BATCH_SCORING_INPUT_DIR={quickstart.input_dir}",
        f"BATCH_SCORING_WAREHOUSE_DIR={warehouse}",
        "BATCH_SCORING_FIRST_DAY=2015-01-01",
    ]
    assert (
        os.path.abspath(dagster) == str(Path(sys.executable).parent / "dagster") and command == "dev -w workspace.yaml"
    )
    # each step said in the run's log what it read, scored and wrote, as it went
    with dg.DagsterInstance.from_config(str(quickstart.dagster_home)) as instance:
        (scoring, _) = instance.get_runs()  # newest first
        said = [entry.user_message for entry in instance.all_logs(scoring.run_id) if entry.dagster_event is None]
    # training_job made the day's raw tables and features: the scoring run reads them and ingests nothing again
    assert "daily_predictions: reading features for 2015-04-30 at Delta version 1" in said
    assert not [line for line in said if line.startswith(("raw_", "quarantine/", "features:"))]
    assert f"daily_predictions: 30 machine-days of 2015-04-30 scored with model {version}" in said
    assert (
        "maintenance_worklist_csv: wrote 1 CSV file(s), the last "
        + str(warehouse / "worklists" / "maintenance_worklist_2015-04-30.csv")
        in said
    )
    assert (
        "maintenance_worklist_page: wrote 1 HTML file(s), the last "
        + str(warehouse / "worklists" / "maintenance_worklist_2015-04-30.html")
        in said
    )
    # every table of the warehouse is a Delta table
    table_folders = {p.parent.relative_to(warehouse).as_posix() for p in warehouse.rglob("_delta_log")}
    assert table_folders == {
        *(f"{prefix}{t.asset}" for t in TABLES for prefix in ("", "quarantine/")),
        "features",
        "daily_predictions",
        "maintenance_worklist",
        "failure_model/registry",
    }


def test_score_runs_a_day_in_the_quick_start_s_instance_and_says_what_came_of_it(quickstart, tmp_path, capsys):
    home = shutil.copytree(quickstart.dagster_home, tmp_path / "home")
    warehouse = shutil.copytree(quickstart.warehouse, tmp_path / "warehouse")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(settings.INPUT_DIR_ENV, str(quickstart.input_dir))
        env.setenv(settings.WAREHOUSE_DIR_ENV, str(warehouse))
        env.setenv(settings.SPARK_CONF_ENV, json.dumps(TEST_SPARK_CONFIG))
        env.setenv("DAGSTER_HOME", str(home))
        assert main(["score", "--day", "2015-04-29"]) == 0
        out = capsys.readouterr().out
        assert main(["score", "--day", "2014-12-31"]) == 2
        assert "2014-12-31 is not a daily partition: they run from 2015-01-01 (BATCH_SCORING_FIRST_DAY)" in (
            capsys.readouterr().err
        )
    assert "Predictions for 2015-04-29: 30 machines scored with model" in out
    assert f"CSV: {warehouse / 'worklists' / 'maintenance_worklist_2015-04-29.csv'}" in out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (newest, *_) = instance.get_runs()
        assert (newest.job_name, newest.status, newest.tags["dagster/partition"]) == (
            "daily_scoring_job",
            dg.DagsterRunStatus.SUCCESS,
            "2015-04-29",
        )


SESSION_STARTED = """
from batch_scoring.lib.spark import build_spark_session
print(build_spark_session({"spark.master": "local[1]", "spark.driver.memory": "%s"}).range(3).count())
"""


def test_spark_starts_without_its_start_up_chatter_and_a_failed_start_says_why():
    """What the quick start's console shows of Spark: nothing, unless it cannot start."""
    started = subprocess.run([sys.executable, "-c", SESSION_STARTED % "512m"], capture_output=True, text=True)
    assert (started.returncode, started.stdout, started.stderr) == (0, "3\n", "")
    failed = subprocess.run([sys.executable, "-c", SESSION_STARTED % "lots"], capture_output=True, text=True)
    assert failed.returncode == 1 and "Invalid maximum heap size: -Xmxlots" in failed.stderr
