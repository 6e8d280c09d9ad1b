"""The fleet simulator: reproducible, in the public layout, calibrated, with learnable precursors. The tests on
simulated frames are part of the fast loop (`pytest -m unit`); those reading the real data set, and the drop's
three simulations, are not."""

import filecmp
import gzip
from datetime import date, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from batch_scoring.cli import main
from batch_scoring.lib.ingest import check_rows, kept_rows, locate_source_file, numbered_lines, read_header
from batch_scoring.lib.simulator import (
    PRECURSOR_ERRORS,
    PRECURSOR_SENSOR,
    SENSOR_MEAN,
    SENSOR_SPREAD,
    simulate_events,
    simulate_fleet,
    simulate_like,
    simulate_machines,
)
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, SOURCE_TABLES, TELEMETRY

FILES = ["PdM_machines.csv", "PdM_telemetry.csv", "PdM_errors.csv", "PdM_maint.csv", "PdM_failures.csv"]


def shift_in_spreads(telemetry, sensor):
    """How far a sensor's mean over these rows lies from its simulated mean, in hourly spreads."""
    mean = telemetry.agg(F.avg(sensor)).first()[0]
    return (mean - SENSOR_MEAN[sensor]) / (SENSOR_MEAN[sensor] * SENSOR_SPREAD)


def read_table(spark, folder, table):
    path = locate_source_file(folder, table)
    checked = check_rows(numbered_lines(spark, path).lines, table, str(path), read_header(path))
    assert checked.where(F.col("reason").isNotNull()).count() == 0, f"{path} has rows the ingest rejects"
    return kept_rows(checked, table)


def lines_of(path):
    """A CSV file's rows as written, without its header."""
    return path.read_text().splitlines()[1:]


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(spark, tmp_path):
    args = ["simulate", "--machines", "4", "--days", "3", "--start", "2016-03-01"]
    for folder, seed, extra in (("a", "5", []), ("gz", "5", ["--gzip"]), ("c", "6", [])):
        assert main([*args, *extra, "--seed", seed, "--out", str(tmp_path / folder)]) == 0
    # the same seed again writes the same bytes (--gzip: compressed)
    for name in FILES:
        assert gzip.decompress((tmp_path / "gz" / f"{name}.gz").read_bytes()) == (tmp_path / "a" / name).read_bytes()
    same, different, missing = filecmp.cmpfiles(tmp_path / "a", tmp_path / "c", FILES, shallow=False)
    assert "PdM_telemetry.csv" in different


def test_a_drop_holds_the_day_of_the_same_fleet_simulated_further(spark, tmp_path, capsys):
    """The live demo: the bulk files end yesterday, and each later day comes as a drop of the same fleet. Both
    are cut from one simulation, so the bulk's last days already drift towards the failures still to come."""
    fleet = ["--machines", "4", "--start", "2016-03-01", "--seed", "3"]
    ten, twelve = tmp_path / "ten", tmp_path / "twelve"
    assert main(["simulate", *fleet, "--days", "10", "--out", str(ten)]) == 0
    assert main(["simulate", *fleet, "--days", "12", "--out", str(twelve)]) == 0
    assert main(["simulate", "--out", str(ten), "--drop", "2016-03-12"]) == 0
    drop = ten / "daily" / "2016-03-12"
    drop_files = ["PdM_errors.csv", "PdM_failures.csv", "PdM_maint.csv", "PdM_telemetry.csv", "_SUCCESS"]
    assert sorted(p.name for p in drop.iterdir()) == drop_files
    # the files are written alike, so the rows compare as lines: the drop's are the longer simulation's of its day,
    # and the shorter one's are the longer one's before its end (replacements before the start included)
    for name in drop_files[:-1]:
        later = lines_of(twelve / name)
        assert lines_of(drop / name) == [line for line in later if line.startswith("2016-03-12")], name
        assert lines_of(ten / name) == [line for line in later if line < "2016-03-11"], name
    assert len(lines_of(drop / "PdM_telemetry.csv")) == 4 * 24
    # a drop continues a fleet the folder describes, and only that one
    assert main(["simulate", "--out", str(tmp_path / "empty"), "--drop", "2016-03-12"]) == 2
    assert "No simulated_fleet.json in" in capsys.readouterr().err
    assert main(["simulate", "--out", str(ten), "--drop", "2016-02-29"]) == 2
    assert "starts on 2016-03-01: no drop before it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--out", str(ten), "--drop", "2016-03-12", "--seed", "4"])
    assert "--drop continues the fleet simulated_fleet.json describes: drop ['--seed']" in capsys.readouterr().err


def test_files_follow_the_public_layout_and_the_ingest_accepts_every_row(spark, small_fleet_dir):
    header, first_row = (small_fleet_dir / "PdM_telemetry.csv").read_text().splitlines()[:2]
    assert header == "datetime,machineID,volt,rotate,pressure,vibration"
    assert first_row.startswith("2015-01-01 00:00:00,1,")
    telemetry = read_table(spark, small_fleet_dir, TELEMETRY)
    assert telemetry.count() == 6 * 12 * 24
    span = telemetry.agg(F.min("datetime"), F.max("datetime")).first()
    assert tuple(span) == (datetime(2015, 1, 1), datetime(2015, 1, 12, 23))
    for table in SOURCE_TABLES:
        read_table(spark, small_fleet_dir, table)  # asserts nothing is rejected
    maintenance = read_table(spark, small_fleet_dir, MAINTENANCE)
    assert maintenance.agg(F.min("datetime")).first()[0] < datetime(2014, 9, 1), (
        "replacements reach back before the start"
    )


def test_telemetry_file_is_ordered_by_machine_then_time(small_fleet_dir):
    lines = (small_fleet_dir / "PdM_telemetry.csv").read_text().splitlines()[1:]
    keys = [(int(line.split(",")[1]), line.split(",")[0]) for line in lines]
    assert keys == sorted(keys)


@pytest.fixture(scope="module")
def busy_fleet(spark):
    """40 machines over 90 days: about 75 failures to look at."""
    fleet = simulate_fleet(spark, machines=40, start=date(2015, 1, 1), days=90, seed=3)
    return fleet.telemetry.cache(), fleet.failures.cache(), fleet.errors.cache()


@pytest.mark.unit
def test_the_failing_component_s_sensor_drifts_in_the_day_before_a_failure(busy_fleet):
    telemetry, failures, _ = busy_fleet
    assert failures.count() > 40
    for comp, (sensor, sign) in PRECURSOR_SENSOR.items():
        before = (
            failures.where(F.col("failure") == comp)
            .withColumnRenamed("datetime", "failed_at")
            .join(telemetry, "machine_id")
            .where(
                (F.col("datetime") < F.col("failed_at"))
                & (F.col("datetime") >= F.col("failed_at") - F.expr("INTERVAL 24 HOURS"))
            )
        )
        shift = shift_in_spreads(before, sensor)
        assert sign * shift > 0.5, f"{sensor} before {comp} failures moved by {shift:.2f} spreads"
    quiet = telemetry.join(failures.select("machine_id").distinct(), "machine_id", "left_anti")
    for sensor in SENSOR_MEAN:
        shift = shift_in_spreads(quiet, sensor)
        assert abs(shift) < 0.2, f"{sensor} of machines that never fail is off by {shift:.2f} spreads"


def share_of_failures_with_precursor_errors(failures, errors):
    """Share of failures preceded within 48 h by an error typical of the failing component."""
    typical = failures.sparkSession.createDataFrame(
        [(c, e) for c, es in PRECURSOR_ERRORS.items() for e in es], "failure string, error_id string"
    )
    flagged = (
        failures.withColumnRenamed("datetime", "failed_at")
        .join(typical, "failure")
        .join(errors, ["machine_id", "error_id"])
        .where(
            (F.col("datetime") <= F.col("failed_at"))
            & (F.col("datetime") >= F.col("failed_at") - F.expr("INTERVAL 48 HOURS"))
        )
        .select("machine_id", "failed_at", "failure")
        .distinct()
        .count()
    )
    return flagged / failures.count()


@pytest.mark.unit
def test_failures_are_preceded_by_their_component_s_errors(busy_fleet):
    _, failures, errors = busy_fleet
    assert share_of_failures_with_precursor_errors(failures, errors) > 0.85


def rates_per_machine_year(machines, failures, errors, maintenance, first, end):
    """Failures, errors and replacements per machine-year within [first, end)."""
    machine_years = machines.count() * (end - first).days / 365.0

    def in_period(df):
        return df.where((F.col("datetime") >= F.lit(first)) & (F.col("datetime") < F.lit(end))).count() / machine_years

    return {"failures": in_period(failures), "errors": in_period(errors), "replacements": in_period(maintenance)}


def test_simulated_rates_match_the_real_tables(spark, real_data_dir):
    year = (date(2015, 1, 1), date(2016, 1, 1))
    real = {t.name: read_table(spark, real_data_dir, t) for t in (MACHINES, FAILURES, ERRORS, MAINTENANCE)}
    real_rates = rates_per_machine_year(real["machines"], real["failures"], real["errors"], real["maintenance"], *year)
    machines = simulate_machines(spark, 300, seed=11)
    maintenance, failures, errors = simulate_events(machines, year[0], 365, seed=11)
    simulated = rates_per_machine_year(machines, failures, errors, maintenance, *year)
    for name, value in real_rates.items():
        assert simulated[name] == pytest.approx(value, rel=0.12), (
            f"{name}: simulated {simulated[name]:.2f}, real {value:.2f}"
        )
    real_share = share_of_failures_with_precursor_errors(real["failures"], real["errors"])
    assert share_of_failures_with_precursor_errors(failures, errors) == pytest.approx(real_share, abs=0.08)


def test_like_mode_keeps_the_real_tables_and_simulates_telemetry_before_real_failures(spark, real_data_dir, tmp_path):
    written = simulate_like(spark, real_data_dir, tmp_path, start=date(2015, 1, 1), days=10, seed=0)
    for table in (MACHINES, ERRORS, MAINTENANCE, FAILURES):
        assert filecmp.cmp(written[table.name], locate_source_file(real_data_dir, table), shallow=False)
    telemetry = read_table(spark, tmp_path, TELEMETRY)
    assert telemetry.count() == 100 * 10 * 24
    # the real data set's first failure: machine 1, comp4, 2015-01-05 06:00; comp4 drives vibration up
    failed_at = datetime(2015, 1, 5, 6)
    day_before = telemetry.where(
        (F.col("machine_id") == 1)
        & F.col("datetime").between(failed_at - timedelta(hours=24), failed_at - timedelta(hours=1))
    )
    assert shift_in_spreads(day_before, "vibration") > 0.5
