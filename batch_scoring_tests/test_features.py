"""Feature and label rules on small hand-built frames; every expected value is worked out by hand."""

from datetime import date, datetime, timedelta

import pytest

from batch_scoring.lib.features import (
    FEATURES_SCHEMA,
    MAX_DAYS_SINCE_REPLACEMENT,
    build_features,
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
    results = [
        sorted(tuple(r) for r in telemetry_features(telemetry.repartition(n, "datetime"), DAY, NEXT_DAY).collect())
        for n in (1, 7)
    ]
    assert results[0] == results[1]
    row = one_row(telemetry_features(telemetry, DAY, NEXT_DAY), machine_id=1)
    assert row["volt_mean_24h"] == 170.0000025  # exactly half-way at the 7th decimal, not rounded away
