"""Faults end to end, with real Dagster and real Spark: bad input and a run killed mid-write (it starts with the
session, separate_processes.py; runs at once and a secret in the environment: test_deployment)."""

import gzip
import random
import re
import shutil
import signal
from pathlib import Path

import dagster as dg
import pytest

from batch_scoring.defs.assets.features import features
from batch_scoring.defs.assets.raw import RAW_ASSETS, raw_machines, raw_telemetry
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.lib.steps import QUARANTINE_CHECK
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, QUARANTINE_SCHEMA, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    SMALL_FLEET_DAYS,
    copy_warehouse,
    dagster_resources,
    days_with_rows,
    materialization_metadata,
    materialize,
)
from batch_scoring_tests.separate_processes import RERUN_DAYS, TELEMETRY_STEP, telemetry_files

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
        # the table's machines and time range are its kept rows' (the injected rows name machine 42 or 99)
        summary = ("machines", "first_timestamp", "last_timestamp")
        clean_meta = materialization_metadata(clean, table.asset)
        assert [meta.get(key) for key in summary] == [clean_meta.get(key) for key in summary], table.name
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


def test_a_run_killed_mid_write_leaves_the_previous_table_readable_and_a_rerun_succeeds(spark, killed_run):
    warehouse, before = killed_run.warehouse, killed_run.rows_before
    assert killed_run.process.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{killed_run.output}"
    uncommitted = {str(p) for p in telemetry_files(warehouse) - killed_run.files_before}
    assert uncommitted, "the killed run had written data files"

    store = DeltaTables(spark, str(warehouse))
    rows_before = before.count()
    after_kill = store.read("raw_telemetry", TELEMETRY.schema)
    assert after_kill.count() == rows_before and after_kill.exceptAll(before).count() == 0
    assert not {f.removeprefix("file:") for f in after_kill.inputFiles()} & uncommitted, "uncommitted files are read"

    rerun = dg.materialize(
        RAW_ASSETS,
        selection=TELEMETRY_STEP.split(","),
        resources=dagster_resources(killed_run.input_dir, warehouse),
        tags=partition_range_tags(*RERUN_DAYS),
    )
    assert rerun.success
    assert store.read("raw_telemetry", TELEMETRY.schema).count() == rows_before
    quarantine = store.read("quarantine/raw_telemetry", QUARANTINE_SCHEMA)
    assert sorted((r.date, r.reason) for r in quarantine.collect()) == [
        ("2015-02-01", "not_numeric"),
        ("2015-02-02", "not_numeric"),
        ("undated", "bad_timestamp"),
    ]
