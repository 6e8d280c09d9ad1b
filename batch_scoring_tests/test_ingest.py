"""Reading the input files: every accepted layout, every kind of bad row, every unreadable file."""

import gzip
from datetime import date, datetime
from pathlib import Path

import pytest

from batch_scoring.lib.ingest import (
    InputFileError,
    check_rows,
    kept_rows,
    locate_source_file,
    numbered_lines,
    quarantined_rows,
    read_header,
    timestamp_formats,
)
from batch_scoring.lib.tables import ERRORS, MACHINES, MAINTENANCE, TELEMETRY, UNDATED

pytestmark = pytest.mark.unit  # tiny frames in one process: part of the fast loop


def write_file(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = "\n".join(lines) + "\n"
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def checked(spark, folder: Path, table, known=None, dates=None, lines_read=None):
    path = locate_source_file(folder, table)
    lines = numbered_lines(spark, path).lines
    return check_rows(lines, table, str(path), read_header(path), known, dates, lines_read=lines_read)


def known_machines(spark, *ids):
    return spark.createDataFrame([(i,) for i in ids], "machine_id int")


TELEMETRY_HEADER = "datetime,machineID,volt,rotate,pressure,vibration"


@pytest.mark.parametrize(
    "name,lines",
    [
        ("PdM_telemetry.csv", ["2015-01-03T07:00:00.000000,1,170.5,450.25,100.0,40.125"]),
        ("telemetry.csv", ["2015-01-03 07:00:00,1,170.5,450.25,100.0,40.125"]),
        ("PdM_telemetry.csv.gz", ['"1/3/2015 7:00:00 AM","1","170.5","450.25","100.0","40.125"']),
        ("telemetry.csv.gz", ["1/3/2015 7:00:00 AM,1,170.5,450.25,100,40.125"]),
    ],
)
def test_every_file_name_compression_quoting_and_timestamp_spelling_reads_the_same_row(spark, tmp_path, name, lines):
    write_file(tmp_path, name, [TELEMETRY_HEADER, *lines])
    rows = kept_rows(checked(spark, tmp_path, TELEMETRY), TELEMETRY).collect()
    assert [r.asDict() for r in rows] == [
        dict(
            datetime=datetime(2015, 1, 3, 7),
            machine_id=1,
            volt=170.5,
            rotate=450.25,
            pressure=100.0,
            vibration=40.125,
            date=date(2015, 1, 3),
        )
    ]


def test_a_file_s_own_timestamp_spelling_is_tried_first_and_a_file_of_mixed_spellings_reads_every_row(spark, tmp_path):
    iso = write_file(tmp_path / "iso", "telemetry.csv", [TELEMETRY_HEADER, "2015-01-03T07:00:00.000000,1,1,1,1,1"])
    us = write_file(tmp_path / "us", "telemetry.csv.gz", [TELEMETRY_HEADER, '"1/3/2015 7:00:00 PM",1,1,1,1,1'])
    blank = write_file(tmp_path / "blank", "telemetry.csv", [TELEMETRY_HEADER, ""])
    assert timestamp_formats(iso, 0)[0] == "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"
    assert timestamp_formats(us, 0)[0] == "M/d/yyyy h:mm:ss a"
    assert sorted(timestamp_formats(blank, 0)) == sorted(timestamp_formats(iso, 0))  # all of them, in some order
    mixed = ["1/3/2015 7:00:00 AM,1,1,1,1,1", "2015-01-03 08:00:00,1,1,1,1,1", "2015-01-03T09:00:00,1,1,1,1,1"]
    write_file(tmp_path / "mixed", "telemetry.csv", [TELEMETRY_HEADER, *mixed])
    rows = kept_rows(checked(spark, tmp_path / "mixed", TELEMETRY), TELEMETRY).collect()
    assert sorted(r.datetime.hour for r in rows) == [7, 8, 9]


@pytest.mark.parametrize("name", ["PdM_maint.csv", "maint.csv", "maintenance.csv.gz", "PdM_maintenance.csv"])
def test_maintenance_is_found_under_each_of_its_names(spark, tmp_path, name):
    write_file(tmp_path, name, ["datetime,machineID,comp", "2014-06-01 06:00:00,1,comp2"])
    rows = kept_rows(checked(spark, tmp_path, MAINTENANCE), MAINTENANCE).collect()
    assert [(r.machine_id, r.comp, r.datetime) for r in rows] == [(1, "comp2", datetime(2014, 6, 1, 6))]


def test_header_columns_are_matched_by_name_in_any_order_and_case(spark, tmp_path):
    write_file(tmp_path, "errors.csv", ["ErrorID,MachineID,DateTime", "error3,2,2015-02-01 10:00:00"])
    rows = kept_rows(checked(spark, tmp_path, ERRORS), ERRORS).collect()
    assert [(r.machine_id, r.error_id, r.datetime) for r in rows] == [(2, "error3", datetime(2015, 2, 1, 10))]


def test_each_kind_of_bad_row_is_quarantined_with_line_field_and_reason(spark, tmp_path):
    path = write_file(
        tmp_path,
        "PdM_telemetry.csv",
        [
            TELEMETRY_HEADER,
            "2015-01-03 07:00:00,1,170,450,100,40",  # 2: kept
            "2015-13-45 07:00:00,1,170,450,100,40",  # 3: bad timestamp
            "2015-01-03 08:00:00,1,abc,450,100,40",  # 4: non-numeric sensor
            "2015-01-03 09:00:00,1,,450,100,40",  # 5: missing sensor
            "2015-01-03 10:00:00,99,170,450,100,40",  # 6: unknown machine
            "2015-01-03 07:00:00,1,170,450,100,40",  # 7: duplicate of line 2
            "2015-01-03 11:00:00,x,170,450,100,40",  # 8: machine id not an integer
            "2015-01-03 12:00:00,1,NaN,450,100,40",  # 9: not finite
            "",  # 10: blank line
            "2015-01-03 13:00:00,1,170,450,100,40,7",  # 11: extra field
            "2015-01-03 14:00:00,1,170,45",  # 12: truncated line
        ],
    )
    result = checked(spark, tmp_path, TELEMETRY, known=known_machines(spark, 1))
    quarantine = {r.line_number: r for r in quarantined_rows(result).collect()}
    found = {n: (r.reason, r.field, r.detail) for n, r in quarantine.items()}
    assert found == {
        3: ("bad_timestamp", "datetime", "2015-13-45 07:00:00"),
        4: ("not_numeric", "volt", "abc"),
        5: ("missing_field", "volt", None),
        6: ("unknown_machine", "machineID", "99"),
        7: ("duplicate", None, "same key as line 2"),
        8: ("not_integer", "machineID", "x"),
        9: ("not_finite", "volt", "NaN"),
        10: ("blank_line", None, None),
        11: ("extra_fields", None, "more fields than the header names"),
        12: ("missing_field", "pressure", None),
    }
    assert {r.source_file for r in quarantine.values()} == {str(path)}
    assert quarantine[3].date == UNDATED and quarantine[4].date == "2015-01-03"
    assert quarantine[4].line == "2015-01-03 08:00:00,1,abc,450,100,40"
    assert kept_rows(result, TELEMETRY).count() == 1


def test_unknown_component_error_id_and_negative_age_are_quarantined(spark, tmp_path):
    write_file(tmp_path, "maint.csv", ["datetime,machineID,comp", "2015-01-01 06:00:00,1,comp9"])
    write_file(tmp_path, "errors.csv", ["datetime,machineID,errorID", "2015-01-01 06:00:00,1,error0"])
    write_file(tmp_path, "machines.csv", ["machineID,model,age", "1,model3,-2", "2,model1,4"])
    reasons = {
        table.name: [(r.reason, r.field, r.detail) for r in quarantined_rows(checked(spark, tmp_path, table)).collect()]
        for table in (MAINTENANCE, ERRORS, MACHINES)
    }
    assert reasons == {
        "maintenance": [("unknown_component", "comp", "comp9")],
        "errors": [("unknown_error_id", "errorID", "error0")],
        "machines": [("out_of_range", "age", "-2")],
    }


def test_rows_read_equal_rows_kept_plus_rows_quarantined(spark, tmp_path):
    # 60 distinct keys; volt is "x" where i % 7 == 0 (9 rows), machine 4 (unknown) where i % 4 == 3 (15 rows)
    lines = [TELEMETRY_HEADER] + [
        f"2015-01-0{1 + i // 24} {i % 24:02d}:00:00,{1 + i % 4},{'x' if i % 7 == 0 else 170},450,100,40"
        for i in range(60)
    ]
    write_file(tmp_path, "telemetry.csv", lines)
    result = checked(spark, tmp_path, TELEMETRY, known=known_machines(spark, 1, 2, 3))
    kept, quarantined = kept_rows(result, TELEMETRY).count(), quarantined_rows(result).count()
    assert kept + quarantined == 60
    assert quarantined == 9 + 15 - 2  # i = 7 and 35 are both, and count once


def test_a_range_of_days_keeps_its_rows_and_the_undated_ones(spark, tmp_path):
    write_file(
        tmp_path,
        "telemetry.csv",
        [
            TELEMETRY_HEADER,
            "2015-01-01 23:00:00,1,170,450,100,40",
            "2015-01-02 00:00:00,1,170,450,100,40",
            "2015-01-02 23:00:00,1,x,450,100,40",
            "2015-01-03 00:00:00,1,170,450,100,40",
            "not a time,1,170,450,100,40",
        ],
    )
    result = checked(spark, tmp_path, TELEMETRY, dates=(date(2015, 1, 2), date(2015, 1, 3)))
    assert [r.datetime for r in kept_rows(result, TELEMETRY).collect()] == [datetime(2015, 1, 2)]
    assert sorted((r.line_number, r.date) for r in quarantined_rows(result).collect()) == [
        (4, "2015-01-02"),
        (6, UNDATED),
    ]


def test_line_numbers_stay_exact_when_spark_splits_a_file_into_blocks(spark, tmp_path):
    bad_lines = {1234, 20_000, 29_999}
    lines = [TELEMETRY_HEADER] + [
        f"2015-01-01 00:00:00,{n},{'bad' if n in bad_lines else 170},450,100,40" for n in range(2, 30_002)
    ]
    path = write_file(tmp_path, "telemetry.csv", lines)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "64k")
    try:
        numbered = numbered_lines(spark, path)
        assert numbered.lines.rdd.getNumPartitions() > 10
        assert numbered.line_count == len(lines)
        result = check_rows(numbered.lines, TELEMETRY, str(path), read_header(path))
        found = {(r.line_number, r.detail) for r in quarantined_rows(result).collect()}
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    # machine id n sits on line n, so a quarantined row's line number must equal its machine id
    assert found == {(n, "bad") for n in bad_lines}


def test_missing_file_names_the_folder_and_every_name_looked_for(tmp_path):
    with pytest.raises(InputFileError) as error:
        locate_source_file(tmp_path, MAINTENANCE)
    message = str(error.value)
    assert str(tmp_path) in message
    for name in ("PdM_maint.csv", "maint.csv.gz", "PdM_maintenance.csv", "maintenance.csv.gz"):
        assert name in message


def test_two_files_for_one_table_is_an_error_naming_both(tmp_path):
    write_file(tmp_path, "PdM_errors.csv", ["datetime,machineID,errorID"])
    write_file(tmp_path, "errors.csv.gz", ["datetime,machineID,errorID"])
    with pytest.raises(InputFileError, match=r"Several errors files .*PdM_errors\.csv, errors\.csv\.gz"):
        locate_source_file(tmp_path, ERRORS)


def test_empty_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "PdM_machines.csv"
    path.write_text("")
    with pytest.raises(InputFileError, match=f"{path} is empty"):
        read_header(path)


def test_missing_column_is_an_error_naming_file_and_field(spark, tmp_path):
    path = write_file(tmp_path, "telemetry.csv", ["datetime,machineID,volt,rotate,vibration", "x,1,2,3,4"])
    with pytest.raises(InputFileError, match=rf"{path}: no column pressure in the header"):
        checked(spark, tmp_path, TELEMETRY)


def test_absurd_readings_and_foreign_number_spellings_are_quarantined_not_kept(spark, tmp_path):
    """A finite but impossible reading would crash the features' exact arithmetic far from its file and line;
    Java's number spellings are not numbers in these files."""
    path = write_file(
        tmp_path,
        "telemetry.csv",
        [
            "datetime,machineID,volt,rotate,pressure,vibration",
            "2015-01-03 06:00:00,1,170,450,100,40",  # 2: kept
            "2015-01-03 07:00:00,1,-1e6,450,100,40",  # 3: below the volt range
            "2015-01-03 08:00:00,1,170,1e12,100,40",  # 4: above the rotate range
            "2015-01-03 09:00:00,1,0x1.5p7,450,100,40",  # 5: a hexadecimal float
            "2015-01-03 10:00:00,1,170.5d,450,100,40",  # 6: a Java double suffix
            "2015-01-03 11:00:00,1,1.7E2,450,100,40",  # 7: kept: an exponent is a decimal spelling
            "2015-01-03 12:00:00,1,380,450,100,40",  # 8: kept by default, out of a narrower range
        ],
    )
    result = checked(spark, tmp_path, TELEMETRY)
    found = {r.line_number: (r.reason, r.field, r.detail) for r in quarantined_rows(result).collect()}
    assert found == {
        3: ("out_of_range", "volt", "-1e6"),
        4: ("out_of_range", "rotate", "1e12"),
        5: ("not_numeric", "volt", "0x1.5p7"),
        6: ("not_numeric", "volt", "170.5d"),
    }
    assert sorted(r.volt for r in kept_rows(result, TELEMETRY).collect()) == [170.0, 170.0, 380.0]
    # a run's config narrows a range
    narrower = TELEMETRY.with_ranges({"volt": [100, 300]})
    rows = check_rows(numbered_lines(spark, path).lines, narrower, str(path), read_header(path))
    assert {r.line_number: r.reason for r in quarantined_rows(rows).collect()}[8] == "out_of_range"
    with pytest.raises(ValueError, match="No numeric field speed in telemetry"):
        TELEMETRY.with_ranges({"speed": [0, 1]})


# a file's line count chooses the plan: a window over the key (small files), or the repeated keys aggregated first
@pytest.mark.parametrize("lines_read", [6, None], ids=["window", "repeated_keys_first"])
def test_a_key_given_twice_with_other_values_is_a_conflict_showing_both_lines(spark, tmp_path, lines_read):
    write_file(
        tmp_path,
        "machines.csv",
        ["machineID,model,age", "1,model3,18", "1,model3,18", "1,model2,7", "2,model9,4", "3,model1,2"],
    )
    found = {
        r.line_number: (r.reason, r.field, r.detail)
        for r in quarantined_rows(checked(spark, tmp_path, MACHINES, lines_read=lines_read)).collect()
    }
    assert found == {
        3: ("duplicate", None, "same key as line 2"),
        4: ("conflicting_duplicate", None, "same key as line 2, which says: 1,model3,18"),
        5: ("unknown_model", "model", "model9"),
    }


def test_readings_off_the_hour_and_lines_not_utf8_anywhere_in_a_file_are_quarantined(spark, tmp_path):
    header = "datetime,machineID,volt,rotate,pressure,vibration"
    good = [f"2015-01-03 {h:02d}:00:00,1,170,450,100,40" for h in range(20)]
    path = tmp_path / "telemetry.csv"
    lines = [header.encode(), *(line.encode() for line in good)]
    lines[15] = b"2015-01-03 14:00:00,1,17\xff0,450,100,40"  # line 16: a bad byte far from the start
    lines += [b"2015-01-03 07:30:00,1,170,450,100,40", b"2015-01-03 06:00:00.500,1,170,450,100,40"]  # 22, 23
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = checked(spark, tmp_path, TELEMETRY)
    found = {r.line_number: r for r in quarantined_rows(result).collect()}
    assert {n: (r.reason, r.field) for n, r in found.items()} == {
        16: ("not_utf8", None),
        22: ("off_hour", "datetime"),
        23: ("off_hour", "datetime"),
    }
    assert found[16].detail == "bytes " + lines[15].hex().upper()
    assert found[16].line == "2015-01-03 14:00:00,1,17\ufffd0,450,100,40"
    assert found[22].detail == "2015-01-03 07:30:00"
    assert kept_rows(result, TELEMETRY).count() == 19


def test_rows_dated_outside_the_partitions_are_quarantined_not_lost(spark, tmp_path):
    """A day's run reading the bulk file accounts for the rows no partition will ever read."""
    path = write_file(
        tmp_path,
        "telemetry.csv",
        [
            "datetime,machineID,volt,rotate,pressure,vibration",
            "2014-12-31 23:00:00,1,170,450,100,40",  # 2: before the first partition
            "2015-01-03 06:00:00,1,170,450,100,40",  # 3: the run's day: kept
            "2015-01-04 06:00:00,1,170,450,100,40",  # 4: another partition's row: left to its run
            "2031-07-01 06:00:00,1,170,450,100,40",  # 5: years ahead
            "2015-01-02 23:00:00,1,170,450,100,40",  # 6: the day before the run's: left to its run
            "2025-12-31 23:00:00,1,170,450,100,40",  # 7: the last partition's
            "2026-01-01 00:00:00,1,170,450,100,40",  # 8: the first day after the partitions
        ],
    )
    lines = numbered_lines(spark, path).lines
    calendar = (date(2015, 1, 1), date(2026, 1, 1))
    result = check_rows(
        lines, TELEMETRY, str(path), read_header(path), None, (date(2015, 1, 3), date(2015, 1, 4)), calendar
    )
    found = {r.line_number: (r.reason, r.detail, r.date) for r in quarantined_rows(result).collect()}
    assert found == {
        2: ("outside_calendar", "dated 2014-12-31; the daily partitions run 2015-01-01 .. 2025-12-31", UNDATED),
        5: ("outside_calendar", "dated 2031-07-01; the daily partitions run 2015-01-01 .. 2025-12-31", UNDATED),
        8: ("outside_calendar", "dated 2026-01-01; the daily partitions run 2015-01-01 .. 2025-12-31", UNDATED),
    }
    assert [r.line_number for r in result.where("reason is null").collect()] == [3]


def test_replacements_before_the_first_day_are_its_partition_s_history(spark, tmp_path):
    """Days since a replacement reach back before the partitions begin: those rows are kept, on the first day."""
    path = write_file(
        tmp_path,
        "maint.csv",
        [
            "datetime,machineID,comp",
            "2014-06-01 06:00:00,1,comp2",  # 2: history: kept on the first day
            "2015-01-01 06:00:00,1,comp1",  # 3: the first day's own
            "2015-01-02 06:00:00,1,comp3",  # 4: another partition's row
            "2031-07-01 06:00:00,1,comp4",  # 5: years ahead: no partition ever reads it
        ],
    )
    lines = numbered_lines(spark, path).lines
    calendar = (date(2015, 1, 1), date(2026, 1, 1))
    first_day = (date(2015, 1, 1), date(2015, 1, 2))
    result = check_rows(lines, MAINTENANCE, str(path), read_header(path), None, first_day, calendar)
    kept = kept_rows(result, MAINTENANCE).orderBy("datetime").collect()  # rows come in no promised order
    assert [(r.datetime, r.comp, r.date) for r in kept] == [
        (datetime(2014, 6, 1, 6), "comp2", date(2015, 1, 1)),
        (datetime(2015, 1, 1, 6), "comp1", date(2015, 1, 1)),
    ]
    assert [(r.line_number, r.reason) for r in quarantined_rows(result).collect()] == [(5, "outside_calendar")]
    later_day = (date(2015, 1, 2), date(2015, 1, 3))
    result = check_rows(lines, MAINTENANCE, str(path), read_header(path), None, later_day, calendar)
    assert [r.comp for r in kept_rows(result, MAINTENANCE).collect()] == ["comp3"]
