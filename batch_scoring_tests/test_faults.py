"""Faults end to end, with real Dagster and real Spark: bad input, a run killed mid-write, two runs at
once, and a secret in the environment."""

import gzip
import os
import random
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from pyspark.sql import DataFrame

from batch_scoring.defs.assets.features import features
from batch_scoring.defs.assets.raw import RAW_ASSETS, raw_machines, raw_telemetry
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.lib.steps import QUARANTINE_CHECK
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, QUARANTINE_SCHEMA, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    SMALL_FLEET_DAYS,
    copy_warehouse,
    dagster_command,
    dagster_resources,
    days_with_rows,
    deployment_env,
    materialization_metadata,
    materialize,
    start_process,
)

DAY = "2015-01-03"
TABLES = (MACHINES, TELEMETRY, ERRORS, MAINTENANCE, FAILURES)
# rows each table's corrupted copy gains, one per kind of fault, with the reason each gets
INJECTED = {
    "telemetry": [
        ("2015-01-05 03:00:00,1,abc,450,100,40", "not_numeric"),
        ("2015-01-05 03:00:00,42,170,450,100,40", "unknown_machine"),
        ("2015-01-05 25:00:00,1,170,450,100,40", "bad_timestamp"),
        ("2015-01-05 04:00:00,2,170,450,100,40,9", "extra_fields"),
        ("", "blank_line"),
    ],
    "errors": [("2015-01-05 03:00:00,1,error9", "unknown_error_id")],
    "maintenance": [("2015-01-05 03:00:00,1,comp7", "unknown_component")],
    "failures": [("2015-01-05 03:00:00,x,comp1", "not_integer")],
    "machines": [("99,model1,-3", "out_of_range")],
}
ALL_QUARANTINE_ALLOWED = {
    "ops": {table.asset: {"config": {"max_quarantined_share": 1.0}} for table in TABLES},
}


def run_raw(input_dir, warehouse, first=None, last=None, run_config=None, selection=None):
    tags = partition_range_tags(first or SMALL_FLEET_DAYS[0], last or SMALL_FLEET_DAYS[1])
    return dg.materialize(
        RAW_ASSETS,
        selection=selection,
        resources=dagster_resources(input_dir, warehouse),
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    )


def failure_text(result) -> str:
    """Every failed step's error and the errors that caused it, as one string."""
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause
    return "\n".join(texts)


def corrupt_copy(source: Path, target: Path) -> dict[str, int]:
    """The small fleet with its telemetry lines shuffled, one bad row of each kind appended to each
    table, and telemetry's last line cut short without a newline. Returns each file's line count."""
    shutil.copytree(source, target)
    lines_per_file = {}
    for table in TABLES:
        name, rows = table.name, INJECTED[table.name]
        path = target / f"{table.file_stems[0]}.csv"
        header, *body = path.read_text().splitlines()
        if table is TELEMETRY:
            random.Random(3).shuffle(body)
            rows = [*rows, ("2015-01-05 05:00:00,3,170,45", "missing_field")]
        body += [line for line, _ in rows]
        path.write_text("\n".join([header, *body]) + ("" if table is TELEMETRY else "\n"))
        lines_per_file[name] = 1 + len(body)
    return lines_per_file


def test_every_kind_of_bad_row_is_quarantined_and_the_good_rows_are_kept_in_any_order(
    spark, small_fleet_dir, small_fleet_ingested, tmp_path
):
    lines = corrupt_copy(small_fleet_dir, tmp_path / "corrupt")
    corrupt = run_raw(tmp_path / "corrupt", tmp_path / "warehouse", run_config=ALL_QUARANTINE_ALLOWED)
    clean, clean_warehouse = small_fleet_ingested  # the same days of the files before they were damaged
    assert clean.success and corrupt.success
    clean_store = DeltaTables(spark, str(clean_warehouse))
    store = DeltaTables(spark, str(tmp_path / "warehouse"))
    for table in TABLES:
        meta = materialization_metadata(corrupt, table.asset)
        expected_reasons = [reason for _, reason in INJECTED[table.name]]
        if table is TELEMETRY:
            expected_reasons.append("missing_field")  # the cut-short last line
        quarantine = store.read(f"quarantine/{table.asset}", QUARANTINE_SCHEMA).collect()
        assert sorted(r.reason for r in quarantine) == sorted(expected_reasons), table.name
        # every line but the header is accounted for, kept or quarantined
        assert meta["rows_read"] == lines[table.name] - 1 == meta["rows_kept"] + meta["rows_quarantined"]
        assert meta["rows_quarantined"] == len(quarantine)
        kept, clean_kept = store.read(table.asset, table.schema), clean_store.read(table.asset, table.schema)
        assert kept.count() == clean_kept.count() == meta["rows_kept"], table.name
        assert kept.exceptAll(clean_kept).count() == 0, f"{table.name}: shuffled lines keep the same rows"
    telemetry_quarantine = store.read("quarantine/raw_telemetry", QUARANTINE_SCHEMA)
    (cut_short,) = telemetry_quarantine.where("reason = 'missing_field'").collect()
    assert (cut_short.line_number, cut_short.field) == (lines["telemetry"], "pressure")
    # a row keeps its day where its timestamp reads, and the metadata and the check count by reason
    days = {r.reason: r.date for r in telemetry_quarantine.collect()}
    assert (days["not_numeric"], days["unknown_machine"], days["bad_timestamp"]) == (
        "2015-01-05",
        "2015-01-05",
        "undated",
    )
    meta = materialization_metadata(corrupt, "raw_telemetry")
    by_reason = {r.data["reason"]: r.data["rows"] for r in meta["quarantined_by_reason"].records}
    assert by_reason == dict.fromkeys(days, 1) and len(by_reason) == 6
    (check,) = [c for c in corrupt.get_asset_check_evaluations() if c.asset_key.to_user_string() == "raw_telemetry"]
    assert check.passed and check.metadata["quarantined_share"].value == pytest.approx(6 / meta["rows_read"], abs=1e-6)


def test_too_many_quarantined_rows_fail_the_check_and_stop_everything_downstream(spark, small_fleet_dir, tmp_path):
    input_dir = tmp_path / "input"
    shutil.copytree(small_fleet_dir, input_dir)
    with open(input_dir / "PdM_machines.csv", "a") as machines:
        machines.write("7,model1,-1\n")  # 1 of 7 rows (14 %) quarantined: over the default 1 %
    blocked = run_raw(input_dir, tmp_path / "warehouse", DAY, DAY)
    assert not blocked.success
    (check,) = [c for c in blocked.get_asset_check_evaluations() if c.asset_key.to_user_string() == "raw_machines"]
    assert check.check_name == QUARANTINE_CHECK and not check.passed
    assert check.metadata["quarantined_share"].value == pytest.approx(1 / 7, abs=1e-6)
    assert "quarantine/raw_machines" in check.description
    materialized = {e.asset_key.to_user_string() for e in blocked.get_asset_materialization_events()}
    # written for inspection, with the rows it rejected; the tables that need it did not run
    assert materialized == {"raw_machines", "quarantine/raw_machines"}

    allowed = {"ops": {"raw_machines": {"config": {"max_quarantined_share": 0.2}}}}
    rerun = run_raw(input_dir, tmp_path / "warehouse", DAY, DAY, run_config=allowed)
    assert rerun.success
    assert {e.asset_key.to_user_string() for e in rerun.get_asset_materialization_events()} == {
        *(t.asset for t in TABLES),
        *(f"quarantine/{t.asset}" for t in TABLES),
    }
    assert all(c.passed for c in rerun.get_asset_check_evaluations())


def _wrong_header(path: Path) -> None:
    header, rest = path.read_text().split("\n", 1)
    path.write_text(header.replace("volt", "voltage") + "\n" + rest)


def _truncated_gzip(path: Path) -> None:
    packed = gzip.compress(path.read_bytes())
    path.unlink()
    path.with_suffix(".csv.gz").write_bytes(packed[: len(packed) // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_wrong_header, r"PdM_telemetry\.csv: no column volt in the header"),
        (_truncated_gzip, r"PdM_telemetry\.csv\.gz: cannot be read: .*EOFException"),
    ],
    ids=["wrong_header", "truncated_gzip"],
)
def test_an_unreadable_file_fails_the_run_naming_it_and_leaves_the_table_as_it_was(
    spark, small_fleet_dir, small_fleet_ingested, tmp_path, damage, message
):
    input_dir = tmp_path / "input"
    shutil.copytree(small_fleet_dir, input_dir)
    warehouse = copy_warehouse(small_fleet_ingested[1], tmp_path / "warehouse")
    store = DeltaTables(spark, str(warehouse))
    version_before = store.version("raw_telemetry")
    damage(input_dir / "PdM_telemetry.csv")
    result = run_raw(input_dir, warehouse, DAY, DAY, selection=[raw_machines, raw_telemetry])
    assert not result.success
    assert re.search(message, failure_text(result)), failure_text(result)
    assert store.version("raw_telemetry") == version_before
    assert store.read("raw_telemetry", TELEMETRY.schema).count() == 6 * 24 * 12


def test_days_without_telemetry_in_a_range_are_written_empty_and_listed(
    spark, small_fleet_dir, small_fleet_ingested, tmp_path
):
    # the small fleet's telemetry ends on 2015-01-12; a day alone without rows fails (test_raw_assets)
    warehouse = copy_warehouse(small_fleet_ingested[1], tmp_path / "warehouse")
    result = materialize(
        small_fleet_dir, warehouse, [raw_telemetry, features], tags=partition_range_tags("2015-01-11", "2015-01-14")
    )
    assert result.success
    empty_days = ["2015-01-13", "2015-01-14"]
    assert materialization_metadata(result, "raw_telemetry")["days_without_rows"] == empty_days
    assert materialization_metadata(result, "features")["days_without_rows"] == empty_days
    store = DeltaTables(spark, str(warehouse))
    assert days_with_rows(store, "raw_telemetry")[-1] == "2015-01-12"
    assert store.read("raw_telemetry", TELEMETRY.schema, empty_days).count() == 0
    assert days_with_rows(store, "features") == ["2015-01-11", "2015-01-12"]


# ---- separate processes through the `dagster` CLI, as production runs them ----

TELEMETRY_STEP = "raw_telemetry,quarantine/raw_telemetry"  # one step writes both
FAKE_TOKEN = f"dapi{uuid.uuid4().hex}"  # a made-up Databricks token: it must never be written anywhere


def start_cli_run(input_dir: Path, warehouse: Path, dagster_home: Path, *args: str) -> subprocess.Popen:
    """`dagster asset materialize` in its own process group, with the fake token in its environment."""
    env = deployment_env(input_dir, warehouse, dagster_home, DATABRICKS_TOKEN=FAKE_TOKEN)
    command = dagster_command("dagster", "asset", "materialize", "-m", "batch_scoring.defs.definitions", *args)
    return start_process(command, env)


def cli_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def copy_fleet(trained_fleet, target: Path) -> tuple[Path, Path]:
    """The 30-machine fleet's input (with one bad telemetry row on each of two days and one undated)
    and a copy of its warehouse, which tests may change."""
    input_dir, warehouse = trained_fleet
    shutil.copytree(input_dir, target / "input")
    with open(target / "input" / "PdM_telemetry.csv", "a") as telemetry:
        telemetry.write("2015-02-01 05:00:00,1,x,450,100,40\n2015-02-02 05:00:00,1,x,450,100,40\nsoon,1,1,1,1,1\n")
    return target / "input", copy_warehouse(warehouse, target / "warehouse")


RERUN_DAYS = ("2015-01-25", "2015-02-10")  # a range holding the bad rows of 2015-02-01 and 2015-02-02


def telemetry_files(warehouse: Path) -> set[Path]:
    return set((warehouse / "raw_telemetry").rglob("date=*/*.parquet"))


@dataclass
class CliRuns:
    """Three CLI runs started together: one ingesting a range of telemetry into its own copy of the fleet,
    killed (SIGKILL) as soon as it had written a data file, and two ingesting a different day each into
    another copy, left to finish."""

    killed_input: Path
    killed_warehouse: Path
    rows_before_kill: DataFrame  # cached
    files_before_kill: set[Path]
    killed: subprocess.Popen
    killed_output: str
    warehouse: Path
    home: Path
    runs: list[subprocess.Popen]
    outputs: list[str]


@pytest.fixture(scope="module")
def cli_runs(spark, trained_fleet, tmp_path_factory) -> CliRuns:
    root = tmp_path_factory.mktemp("cli_runs")
    killed_input, killed_warehouse = copy_fleet(trained_fleet, root / "killed")
    before = DeltaTables(spark, str(killed_warehouse)).read("raw_telemetry", TELEMETRY.schema).cache()
    before.count()
    files_before = telemetry_files(killed_warehouse)
    input_dir, warehouse = copy_fleet(trained_fleet, root / "concurrent")
    home = root / "concurrent" / "home"
    range_run = ("--select", TELEMETRY_STEP, "--partition-range", "...".join(RERUN_DAYS))
    killed = start_cli_run(killed_input, killed_warehouse, root / "killed" / "home", *range_run)
    runs = [
        start_cli_run(input_dir, warehouse, home, "--select", TELEMETRY_STEP, "--partition", day)
        for day in ("2015-02-01", "2015-02-02")
    ]
    deadline = time.monotonic() + 300
    while not telemetry_files(killed_warehouse) - files_before and killed.poll() is None:
        assert time.monotonic() < deadline, "the range run wrote no data file in 300 s"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed_output = killed.communicate()[0]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    return CliRuns(
        killed_input, killed_warehouse, before, files_before, killed, killed_output, warehouse, home, runs, outputs
    )


def test_a_run_killed_mid_write_leaves_the_previous_table_readable_and_a_rerun_succeeds(spark, cli_runs):
    input_dir, warehouse, before = cli_runs.killed_input, cli_runs.killed_warehouse, cli_runs.rows_before_kill
    killed = cli_runs.killed
    assert killed.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{cli_runs.killed_output}"
    uncommitted = {str(p) for p in telemetry_files(warehouse) - cli_runs.files_before_kill}
    assert uncommitted, "the killed run had written data files"

    store = DeltaTables(spark, str(warehouse))
    rows_before = before.count()
    after_kill = store.read("raw_telemetry", TELEMETRY.schema)
    assert after_kill.count() == rows_before and after_kill.exceptAll(before).count() == 0
    assert not {f.removeprefix("file:") for f in after_kill.inputFiles()} & uncommitted, "uncommitted files are read"

    rerun = dg.materialize(
        RAW_ASSETS,
        selection=TELEMETRY_STEP.split(","),
        resources=dagster_resources(input_dir, warehouse),
        tags=partition_range_tags(*RERUN_DAYS),
    )
    assert rerun.success
    assert store.read("raw_telemetry", TELEMETRY.schema).count() == rows_before
    quarantine = store.read("quarantine/raw_telemetry", QUARANTINE_SCHEMA)
    assert sorted(r.date for r in quarantine.collect()) == ["2015-02-01", "2015-02-02", "undated"]


def test_two_runs_on_different_days_at_once_both_succeed(spark, cli_runs):
    assert [run.returncode for run in cli_runs.runs] == [0, 0], "\n".join(cli_runs.outputs)
    with cli_instance(cli_runs.home) as instance:
        records = instance.get_run_records()
    assert len(records) == 2 and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    assert max(r.start_time for r in records) < min(r.end_time for r in records), "the runs overlapped"

    store = DeltaTables(spark, str(cli_runs.warehouse))
    telemetry = store.read("raw_telemetry", TELEMETRY.schema)
    assert telemetry.count() == 30 * 24 * 120
    quarantine = store.read("quarantine/raw_telemetry", QUARANTINE_SCHEMA)
    assert sorted((r.date, r.reason) for r in quarantine.collect()) == [
        ("2015-02-01", "not_numeric"),
        ("2015-02-02", "not_numeric"),
        ("undated", "bad_timestamp"),
    ]


def test_a_secret_in_the_environment_is_never_written_to_logs_metadata_or_files(cli_runs):
    warehouse, home, runs, outputs = cli_runs.warehouse, cli_runs.home, cli_runs.runs, cli_runs.outputs
    assert all(run.returncode == 0 for run in runs)
    assert not any(FAKE_TOKEN in output for output in [*outputs, cli_runs.killed_output])
    for folder in (home, warehouse):
        for path in folder.rglob("*"):
            if path.is_file():
                assert FAKE_TOKEN.encode() not in path.read_bytes(), f"the secret leaked into {path}"
    with cli_instance(home) as instance:
        for record in instance.get_run_records():
            for event in instance.all_logs(record.dagster_run.run_id):
                assert FAKE_TOKEN not in dg.serialize_value(event), "the secret leaked into the event log"
