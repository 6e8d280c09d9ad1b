"""Daily drops: which files a run reads, what the sensor asks for, and a drop ingested for real."""

import os
import shutil
from datetime import date

import dagster as dg
import pytest
from pyspark.sql import functions as F

from batch_scoring.defs.assets.raw import RAW_ASSETS, raw_errors, raw_machines, raw_telemetry
from batch_scoring.defs.resources import InputFiles
from batch_scoring.defs.sensors import new_data_sensor
from batch_scoring.lib.ingest import InputFileError, SourceFile, plan_sources
from batch_scoring.lib.tables import ERRORS, MACHINES, QUARANTINE_SCHEMA, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import dagster_resources, materialization_metadata

D1, D2, D3 = date(2015, 1, 4), date(2015, 1, 5), date(2015, 1, 6)


def drop(input_dir, day, files: dict[str, str], ready=True):
    folder = input_dir / "daily" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    if ready:
        (folder / "_SUCCESS").write_text("")
    return folder


@pytest.mark.unit
def test_telemetry_reads_each_day_s_drop_and_the_bulk_file_for_the_other_days(tmp_path):
    (tmp_path / "PdM_telemetry.csv").write_text("x")
    drop(tmp_path, D2, {"telemetry.csv": "x"})
    drop(tmp_path, D3, {"telemetry.csv": "x"})
    drops = InputFiles(input_dir=str(tmp_path)).ready_drops()
    assert plan_sources(tmp_path, drops, TELEMETRY, [D1, D2]) == [
        SourceFile(tmp_path / "PdM_telemetry.csv", superseded_days=(D2,)),
        SourceFile(tmp_path / "daily" / "2015-01-05" / "telemetry.csv", day=D2),
    ]
    # every day has its drop: the bulk file is not read at all
    assert plan_sources(tmp_path, drops, TELEMETRY, [D2, D3]) == [
        SourceFile(tmp_path / "daily" / "2015-01-05" / "telemetry.csv", day=D2),
        SourceFile(tmp_path / "daily" / "2015-01-06" / "telemetry.csv", day=D3),
    ]


@pytest.mark.unit
def test_event_tables_read_each_day_s_drop_and_the_bulk_file_for_a_drop_without_them(tmp_path):
    (tmp_path / "errors.csv").write_text("x")
    drop(tmp_path, D3, {"PdM_errors.csv": "x"})
    drop(tmp_path, D1, {"errors.csv.gz": "x"})
    drop(tmp_path, D2, {"PdM_telemetry.csv": "x"})  # no errors in this drop: the bulk file's rows of D2 count
    drop(tmp_path, date(2015, 1, 7), {"errors.csv": "x"}, ready=False)  # not complete yet
    drops = InputFiles(input_dir=str(tmp_path)).ready_drops()
    assert plan_sources(tmp_path, drops, ERRORS, [D1, D2, D3, date(2015, 1, 7)]) == [
        SourceFile(tmp_path / "errors.csv", superseded_days=(D1, D3)),
        SourceFile(tmp_path / "daily" / "2015-01-04" / "errors.csv.gz", day=D1),
        SourceFile(tmp_path / "daily" / "2015-01-06" / "PdM_errors.csv", day=D3),
    ]


@pytest.mark.unit
def test_machines_are_the_bulk_file_then_every_drop_s_file_in_day_order(tmp_path):
    (tmp_path / "machines.csv").write_text("x")
    drop(tmp_path, D3, {"PdM_machines.csv": "x"})
    drop(tmp_path, D1, {"machines.csv": "x"})
    drop(tmp_path, D2, {"PdM_telemetry.csv": "x"})
    drops = InputFiles(input_dir=str(tmp_path)).ready_drops()
    assert [(s.path.relative_to(tmp_path).as_posix(), s.day) for s in plan_sources(tmp_path, drops, MACHINES)] == [
        ("machines.csv", None),
        ("daily/2015-01-04/machines.csv", D1),
        ("daily/2015-01-06/PdM_machines.csv", D3),
    ]


@pytest.mark.unit
def test_a_day_with_neither_drop_nor_bulk_file_is_an_error_saying_where_it_looked(tmp_path):
    with pytest.raises(InputFileError, match=r"No telemetry file for 2015-01-04 .. 2015-01-04 in .*daily drops"):
        plan_sources(tmp_path, {}, TELEMETRY, [D1])
    empty = drop(tmp_path, D1, {})  # a drop with its marker only
    with pytest.raises(InputFileError, match=rf"daily drops .*; the drop {empty} holds _SUCCESS$"):
        plan_sources(tmp_path, {D1: empty}, TELEMETRY, [D1])


@pytest.mark.unit
def test_a_folder_or_a_dangling_link_in_a_file_s_place_is_named_as_such(tmp_path):
    (tmp_path / "PdM_telemetry.csv").mkdir()
    with pytest.raises(InputFileError, match=r"PdM_telemetry.csv is a folder, not a telemetry file"):
        plan_sources(tmp_path, {}, TELEMETRY, [D1])
    (tmp_path / "PdM_errors.csv").symlink_to(tmp_path / "PdM_errors.csv")  # a loop
    with pytest.raises(InputFileError, match=r"PdM_errors.csv is a link that leads nowhere"):
        plan_sources(tmp_path, {}, ERRORS, [D1])


def test_a_drop_replaces_its_day_and_adds_its_events(spark, small_fleet_dir, tmp_path):
    input_dir = tmp_path / "input"
    shutil.copytree(small_fleet_dir, input_dir)
    header = "datetime,machineID,volt,rotate,pressure,vibration"
    readings = [f"2015-01-05 {h:02d}:00:00,{m},999.0,450,100,40" for m in range(1, 7) for h in range(24)]
    drop(
        input_dir,
        D2,
        {
            "PdM_telemetry.csv": "\n".join([header, *readings, "2015-01-09 00:00:00,1,170,450,100,40"]) + "\n",
            "PdM_errors.csv": "datetime,machineID,errorID\n2015-01-05 13:00:00,2,error4\n",
        },
    )
    (input_dir / "daily" / "2015-01-05 (resent)").mkdir()  # not a drop: never read, but said
    warehouse = tmp_path / "warehouse"
    resources = dagster_resources(input_dir, warehouse)
    dg.materialize(RAW_ASSETS, selection=[raw_machines], resources=resources)
    result = dg.materialize(
        RAW_ASSETS, selection=[raw_telemetry, raw_errors], resources=resources, partition_key="2015-01-05"
    )
    assert materialization_metadata(result, "raw_telemetry")["ignored_in_drops_folder"] == ["2015-01-05 (resent)"]
    store = DeltaTables(spark, str(warehouse))
    day = store.read("raw_telemetry", TELEMETRY.schema, ["2015-01-05"])
    assert day.count() == 6 * 24 and day.where(F.col("volt") != 999.0).count() == 0  # from the drop only
    (quarantined,) = store.read("quarantine/raw_telemetry", QUARANTINE_SCHEMA).collect()
    assert (quarantined.reason, quarantined.detail, quarantined.line_number, quarantined.date) == (
        "wrong_day",
        "dated 2015-01-09 in the drop for 2015-01-05",
        146,
        "2015-01-05",
    )
    # the day's errors are the drop's alone: the bulk file's errors of that day are superseded
    errors = store.read("raw_errors", ERRORS.schema, ["2015-01-05"]).collect()
    assert [(e.machine_id, e.error_id, e.datetime.hour) for e in errors] == [(2, "error4", 13)]


def evaluate(input_dir, cursor=None):
    """One tick of the sensor; its context is left inside the instance's block (a context left after its instance
    would leave the instance's state storage current for later tests)."""
    resources = {"input_files": InputFiles(input_dir=str(input_dir))}
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context,
    ):
        return new_data_sensor(context), context.cursor


@pytest.mark.unit
def test_the_sensor_runs_each_ready_drop_once_and_says_why_it_skips(tmp_path):
    result, cursor = evaluate(tmp_path)
    assert isinstance(result, dg.SkipReason) and "No daily drops in" in result.skip_message

    drop(tmp_path, D1, {"PdM_telemetry.csv": "a"})
    drop(tmp_path, D2, {"PdM_errors.csv": "b"})
    drop(tmp_path, D3, {"PdM_telemetry.csv": "c"}, ready=False)
    requests, cursor = evaluate(tmp_path)
    assert [(r.partition_key, r.run_key.split(":")[0]) for r in requests] == [
        ("2015-01-04", "2015-01-04"),
        ("2015-01-05", "2015-01-05"),
    ]

    result, cursor_after = evaluate(tmp_path, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "No new or changed drops" in result.skip_message and "2 handled so far" in result.skip_message
    assert "waiting for _SUCCESS in 2015-01-06" in result.skip_message
    assert cursor_after == cursor

    (tmp_path / "daily" / "2015-01-06" / "_SUCCESS").write_text("")
    redelivered = tmp_path / "daily" / "2015-01-04" / "PdM_telemetry.csv"
    redelivered.write_text("a corrected file")
    os.utime(redelivered, ns=(1, 2))
    requests, _ = evaluate(tmp_path, cursor)
    assert sorted(r.partition_key for r in requests) == ["2015-01-04", "2015-01-06"]


@pytest.mark.unit
def test_the_sensor_skips_drops_outside_the_partitions_and_says_so(tmp_path):
    drop(tmp_path, date(2014, 12, 30), {"PdM_telemetry.csv": "a"})
    result, _ = evaluate(tmp_path)
    assert isinstance(result, dg.SkipReason)
    assert "outside the daily partitions (2015-01-01 to yesterday): 2014-12-30" in result.skip_message


@pytest.mark.unit
def test_a_folder_in_the_drops_folder_not_named_by_a_day_is_reported_not_ignored(tmp_path):
    (tmp_path / "daily" / "2015-1-4").mkdir(parents=True)
    result, _ = evaluate(tmp_path)
    assert "ignored, not named YYYY-MM-DD: 2015-1-4" in result.skip_message
    drop(tmp_path, D1, {"PdM_telemetry.csv": "a"})
    requests, cursor = evaluate(tmp_path)
    result, _ = evaluate(tmp_path, cursor)
    assert "No new or changed drops" in result.skip_message and "2015-1-4" in result.skip_message
