"""Feature and label rules on small hand-built frames; every expected value is worked out by hand."""

from datetime import date, datetime, timedelta

import pytest

from batch_scoring.lib.features import (
    FEATURES_SCHEMA,
    MAX_DAYS_SINCE_ERROR,
    MAX_DAYS_SINCE_REPLACEMENT,
    build_features,
    error_days_features,
    error_features,
    label_observations,
    replacement_features,
    telemetry_features,
)

pytestmark = pytest.mark.unit  # tiny frames in one process: part of the fast loop

DAY = date(2015, 1, 10)
OBSERVED_AT = datetime(2015, 1, 11)  # the end of DAY
NEXT_DAY = DAY + timedelta(days=1)

TELEMETRY_DDL = "machine_id int, datetime timestamp, volt double, rotate double, pressure double, vibration double"


def telemetry_rows(spark, readings):
    """readings: (machine_id, datetime, volt); other sensors constant."""
    return spark.createDataFrame([(m, t, v, 450.0, 100.0, 40.0) for m, t, v in readings], TELEMETRY_DDL)


def one_row(df, **where):
    rows = [r for r in df.collect() if all(r[k] == v for k, v in where.items())]
    assert len(rows) == 1, rows
    return rows[0]


def test_windows_are_time_ranges_so_a_gap_leaves_fewer_readings_not_older_ones(spark):
    # hours 0..20 read 100, 21:00 and 22:00 are missing, 23:00 reads 130
    hours = [*range(0, 21), 23]
    readings = [(1, datetime(2015, 1, 10, h), 130.0 if h == 23 else 100.0) for h in hours]
    row = one_row(telemetry_features(telemetry_rows(spark, readings), DAY, NEXT_DAY), machine_id=1)
    # the 3 h window [21:00, 24:00) holds only the 23:00 reading (counting 3 rows would average 100, 100, 130)
    assert row["volt_mean_3h"] == 130.0
    assert (row["volt_min_3h"], row["volt_max_3h"]) == (130.0, 130.0)
    assert row["telemetry_hours_24h"] == 22.0
    assert row["volt_mean_24h"] == pytest.approx((21 * 100 + 130) / 22)
    # one reading has no standard deviation: the 24 h window's is used
    expected_std_24h = (((130 - (2230 / 22)) ** 2 + 21 * (100 - 2230 / 22) ** 2) / 21) ** 0.5
    assert row["volt_std_24h"] == pytest.approx(expected_std_24h)
    assert row["volt_std_3h"] == pytest.approx(expected_std_24h)


def test_a_window_without_readings_takes_the_longer_window_s_values(spark):
    readings = [(1, datetime(2015, 1, 10, h), float(h)) for h in range(0, 12)]  # nothing after 11:00
    row = one_row(telemetry_features(telemetry_rows(spark, readings), DAY, NEXT_DAY), machine_id=1)
    assert row["volt_mean_3h"] == row["volt_mean_24h"] == pytest.approx(5.5)
    assert row["volt_max_3h"] == 11.0


def test_the_72_hour_window_reaches_two_days_back_and_no_further(spark):
    readings = [
        (1, datetime(2015, 1, 7, 23), 1000.0),  # 73 h before the observation: outside
        (1, datetime(2015, 1, 8, 0), 10.0),  # exactly 72 h before: inside
        (1, datetime(2015, 1, 10, 12), 40.0),
    ]
    row = one_row(telemetry_features(telemetry_rows(spark, readings), DAY, NEXT_DAY), machine_id=1)
    assert (row["volt_mean_72h"], row["volt_max_72h"]) == (25.0, 40.0)
    assert row["volt_mean_24h"] == 40.0


def baseline_readings(machine_id: int) -> list[tuple[int, datetime, float]]:
    """The machine's baseline for DAY, the 10 days 2014-12-22 .. 2014-12-31: volt 100 at midnight and 102 at noon
    (mean 101, sample standard deviation sqrt(20/19))."""
    days = [date(2014, 12, 22) + timedelta(days=n) for n in range(10)]
    return [(machine_id, datetime(d.year, d.month, d.day, h), 100.0 + h / 6) for d in days for h in (0, 12)]


BASELINE_STD = (20 / 19) ** 0.5


def test_the_240_hour_window_reaches_nine_days_back_and_the_baseline_the_ten_days_before(spark):
    readings = [
        *baseline_readings(1),
        (1, datetime(2014, 12, 21, 12), 1000.0),  # before the baseline: read by nothing
        (1, datetime(2015, 1, 1, 0), 500.0),  # exactly 240 h before the observation: inside, not the baseline
        (1, datetime(2015, 1, 10, 6), 104.0),
        (1, datetime(2015, 1, 10, 18), 104.0),
        *[(2, datetime(2015, 1, 10, h), 100.0 + h) for h in range(24)],  # a machine without a baseline yet
    ]
    rows = {r.machine_id: r for r in telemetry_features(telemetry_rows(spark, readings), DAY, NEXT_DAY).collect()}
    row = rows[1]
    assert (row["volt_mean_240h"], row["volt_max_240h"], row["volt_min_240h"]) == (236.0, 500.0, 104.0)
    assert row["volt_mean_72h"] == 104.0 and row["telemetry_hours_baseline"] == 20.0
    assert row["volt_shift_24h"] == pytest.approx((104 - 101) / BASELINE_STD)
    assert row["rotate_shift_24h"] == 0.0  # a constant baseline has no spread to measure a shift in
    assert (rows[2]["volt_shift_24h"], rows[2]["telemetry_hours_baseline"]) == (0.0, 0.0)


def test_after_a_replacement_the_shift_is_of_the_readings_since(spark):
    drifting_then_repaired = [(h, 110.0 if h < 10 else 101.0) for h in range(24)]
    readings = [(m, datetime(2015, 1, 10, h), volt) for m in (1, 2, 3) for h, volt in drifting_then_repaired] + [
        reading for m in (1, 2, 3) for reading in baseline_readings(m)
    ]
    maintenance = spark.createDataFrame(
        [
            (1, datetime(2015, 1, 10, 10), "comp2"),  # replaced at 10:00: the readings from 11:00 are after it
            (2, datetime(2015, 1, 8, 10), "comp2"),  # two days earlier: the last 24 h are all after it
            (3, datetime(2015, 1, 10, 23, 30), "comp1"),  # after the day's last reading
        ],
        "machine_id int, datetime timestamp, comp string",
    )
    errors = spark.createDataFrame([], "machine_id int, datetime timestamp, error_id string")
    machines = spark.createDataFrame([(m, "model1", 5) for m in (1, 2, 3)], "machine_id int, model string, age int")
    features = build_features(telemetry_rows(spark, readings), errors, maintenance, machines, DAY, NEXT_DAY)
    rows = {r.machine_id: r for r in features.collect()}
    day_shift = ((10 * 110 + 14 * 101) / 24 - 101) / BASELINE_STD
    assert all(rows[m].volt_shift_24h == pytest.approx(day_shift) for m in (1, 2, 3))
    assert (rows[1].volt_shift_since_replacement, rows[1].telemetry_hours_since_replacement) == (0.0, 13.0)
    assert rows[2].volt_shift_since_replacement == pytest.approx(day_shift)
    assert rows[2].telemetry_hours_since_replacement == 24.0
    assert (rows[3].volt_shift_since_replacement, rows[3].telemetry_hours_since_replacement) == (0.0, 0.0)


def test_no_observation_for_a_machine_without_telemetry_in_the_last_24_hours(spark):
    readings = [(1, datetime(2015, 1, 9, 12), 100.0), (2, datetime(2015, 1, 10, 5), 100.0)]
    rows = telemetry_features(telemetry_rows(spark, readings), DAY, NEXT_DAY).collect()
    assert [r.machine_id for r in rows] == [2]


def test_error_counts_cover_exactly_the_24_hours_before_the_observation(spark):
    errors = spark.createDataFrame(
        [
            (1, datetime(2015, 1, 9, 23), "error1"),  # 25 h before: outside
            (1, datetime(2015, 1, 10, 0), "error1"),  # exactly 24 h before: inside
            (1, datetime(2015, 1, 10, 17), "error1"),
            (1, datetime(2015, 1, 10, 17), "error5"),
            (1, datetime(2015, 1, 11, 0), "error2"),  # at the observation: the next day's
        ],
        "machine_id int, datetime timestamp, error_id string",
    )
    row = one_row(error_features(errors, DAY, NEXT_DAY), machine_id=1)
    counts = [row[f"error{i}_count_24h"] for i in range(1, 6)]
    assert counts == [2.0, 0.0, 0.0, 0.0, 1.0]


def test_error_counts_over_72_hours_and_days_since_each_error(spark):
    errors = spark.createDataFrame(
        [
            (1, datetime(2015, 1, 7, 23), "error1"),  # 73 h before: outside 72 h, 3 days and 1 hour ago
            (1, datetime(2015, 1, 8, 0), "error1"),  # exactly 72 h before: inside
            (1, datetime(2015, 1, 10, 18), "error3"),
            (1, datetime(2014, 11, 1), "error4"),  # longer ago than the cap
        ],
        "machine_id int, datetime timestamp, error_id string",
    )
    row = one_row(error_features(errors, DAY, NEXT_DAY), machine_id=1)
    assert [row[f"error{i}_count_72h"] for i in range(1, 6)] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert row["error1_count_24h"] == 0.0
    observations = spark.createDataFrame([(1, DAY, OBSERVED_AT)], "machine_id int, date date, observed_at timestamp")
    days = one_row(error_days_features(observations, errors), machine_id=1)
    assert [days[f"days_since_error{i}"] for i in range(1, 6)] == [
        3.0,  # the later of the two
        MAX_DAYS_SINCE_ERROR,
        0.25,
        MAX_DAYS_SINCE_ERROR,
        MAX_DAYS_SINCE_ERROR,
    ]


def test_days_since_replacement_use_only_replacements_strictly_before_the_observation(spark):
    observations = spark.createDataFrame([(1, DAY, OBSERVED_AT)], "machine_id int, date date, observed_at timestamp")
    maintenance = spark.createDataFrame(
        [
            (1, datetime(2014, 12, 31), "comp1"),  # 11 days before
            (1, OBSERVED_AT, "comp1"),  # on the boundary: not yet seen
            (1, datetime(2015, 1, 10, 18), "comp2"),  # 6 hours before
            (1, datetime(2015, 1, 5), "comp2"),  # older than the 18:00 one
            (1, datetime(2013, 1, 1), "comp4"),  # more than a year: capped
            (2, datetime(2015, 1, 10), "comp3"),  # another machine
        ],
        "machine_id int, datetime timestamp, comp string",
    )
    row = one_row(replacement_features(observations, maintenance), machine_id=1)
    assert row["days_since_comp1_replacement"] == 11.0
    assert row["days_since_comp2_replacement"] == 0.25
    assert row["days_since_comp3_replacement"] == MAX_DAYS_SINCE_REPLACEMENT  # none on record
    assert row["days_since_comp4_replacement"] == MAX_DAYS_SINCE_REPLACEMENT


def labelled(spark, failures, observed_until=datetime(2015, 2, 1)):
    features = spark.createDataFrame(
        [(m, DAY, OBSERVED_AT) for m in (1, 2, 3, 4, 5)], "machine_id int, date date, observed_at timestamp"
    )
    failure_rows = spark.createDataFrame(failures, "machine_id int, datetime timestamp, failure string")
    return {r.machine_id: r.label for r in label_observations(features, failure_rows, observed_until).collect()}


def test_label_is_the_component_failing_within_168_hours(spark):
    hours = lambda h: OBSERVED_AT + timedelta(hours=h)  # noqa: E731
    labels = labelled(
        spark,
        [
            (1, hours(167), "comp2"),  # inside the horizon
            (2, hours(169), "comp3"),  # outside
            (3, hours(168), "comp1"),  # the horizon's end is excluded
            (4, hours(0), "comp4"),  # at the observation itself: inside
            (4, hours(5), "comp1"),  # the first failure wins
            (5, hours(-1), "comp1"),  # before the observation: already known, not a label
        ],
    )
    assert labels == {1: "comp2", 2: "none", 3: "none", 4: "comp4", 5: "none"}


def test_observations_whose_horizon_is_not_yet_observed_are_left_out_not_labelled_none(spark):
    assert labelled(spark, [], observed_until=OBSERVED_AT + timedelta(hours=167)) == {}
    assert set(labelled(spark, [], observed_until=OBSERVED_AT + timedelta(hours=168)).values()) == {"none"}


def test_build_features_gives_one_complete_row_per_active_machine_in_schema_order(spark):
    readings = [(m, datetime(2015, 1, 10, h), 170.0 + h) for m in (1, 2) for h in range(24)]
    errors = spark.createDataFrame([], "machine_id int, datetime timestamp, error_id string")
    maintenance = spark.createDataFrame(
        [(1, datetime(2015, 1, 1), "comp1")], "machine_id int, datetime timestamp, comp string"
    )
    machines = spark.createDataFrame(
        [(1, "model3", 18), (2, "model1", 4), (3, "model2", 9)], "machine_id int, model string, age int"
    )
    features = build_features(telemetry_rows(spark, readings), errors, maintenance, machines, DAY, NEXT_DAY)
    assert features.columns == FEATURES_SCHEMA.fieldNames()
    rows = {r.machine_id: r for r in features.collect()}
    assert set(rows) == {1, 2}
    assert all(v is not None for r in rows.values() for v in r)
    assert (
        rows[1].days_since_comp1_replacement == 10.0
        and rows[2].days_since_comp1_replacement == MAX_DAYS_SINCE_REPLACEMENT
    )
    assert (rows[2].model, rows[2].age, rows[2].date, rows[2].observed_at) == ("model1", 4.0, DAY, OBSERVED_AT)
    assert rows[1].error1_count_24h == 0.0
    assert rows[1].volt_mean_3h == pytest.approx(170 + 22)


def test_features_do_not_depend_on_how_spark_splits_the_readings(spark):
    # 6-decimal readings whose means over 24 and 72 readings end in ...5 at the 7th decimal, where
    # floating-point sums in another order used to round the other way
    readings = [
        (m, datetime(2015, 1, 8) + timedelta(hours=h), 170.000001 + (h % 2) * 0.000001 + m * 1e-6)
        for m in (1, 2, 3)
        for h in range(72)
    ]
    telemetry = telemetry_rows(spark, readings)
    results = [telemetry_features(telemetry.repartition(n, "datetime"), DAY, NEXT_DAY).collect() for n in (1, 7)]
    assert sorted(map(tuple, results[0])) == sorted(map(tuple, results[1]))
    (row,) = [r for r in results[0] if r["machine_id"] == 1]
    assert row["volt_mean_24h"] == 170.0000025  # exactly half-way at the 7th decimal, not rounded away
