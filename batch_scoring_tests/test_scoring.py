"""Daily scoring, reruns, backfills, the schedule and the worklist, with real Dagster and Spark."""

import csv
import datetime as dt

import dagster as dg
import pytest
from pyspark.sql import functions as F

from batch_scoring.defs.assets.scoring import daily_predictions, maintenance_worklist
from batch_scoring.defs.definitions import build_definitions
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.defs.resources import InputFiles
from batch_scoring.defs.schedules import daily_scoring_schedule
from batch_scoring.lib.features import FEATURES_SCHEMA
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA, WORKLIST_SCHEMA, share_drifts
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import copy_warehouse, materialize, model_versions

SCORING = [daily_predictions, maintenance_worklist]


@pytest.fixture
def warehouse(trained_fleet, tmp_path):
    return trained_fleet[0], copy_warehouse(trained_fleet[1], tmp_path / "warehouse")


def predictions(spark, warehouse_dir, days=None):
    return DeltaTables(spark, str(warehouse_dir)).read("daily_predictions", PREDICTIONS_SCHEMA, days)


def comparable(df):
    """Prediction rows without scored_at, which records when each run scored them."""
    return sorted(tuple(r) for r in df.drop("scored_at").collect())


def test_a_day_is_scored_once_per_active_machine_with_the_model_version(spark, warehouse):
    input_dir, warehouse_dir = warehouse
    result = materialize(input_dir, warehouse_dir, SCORING, partition_key="2015-04-20")
    version = model_versions(spark, warehouse_dir)[-1]
    table = predictions(spark, warehouse_dir)
    assert table.count() == 30
    assert table.select("machine_id").distinct().count() == 30
    assert {r.date for r in table.select("date").distinct().collect()} == {dt.date(2015, 4, 20)}
    assert {r.model_version for r in table.select("model_version").distinct().collect()} == {version}
    assert table.where(F.col("observed_at") != F.lit(dt.datetime(2015, 4, 21))).count() == 0
    assert table.where(F.col("predicted_component").isin("none", "comp1", "comp2", "comp3", "comp4")).count() == 30
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "one_row_per_active_machine": True,
        "probabilities_valid": True,
        "failure_share_stable": True,
    }
    # nothing was scored before: the check says it had no earlier day to compare with
    not_scored = checks["failure_share_stable"].metadata["trailing_days_not_scored"].value
    assert not_scored == [f"2015-04-{day}" for day in range(13, 20)]


def test_rerunning_a_day_replaces_its_predictions(spark, warehouse):
    input_dir, warehouse_dir = warehouse
    materialize(input_dir, warehouse_dir, SCORING, partition_key="2015-04-20")
    first = comparable(predictions(spark, warehouse_dir))
    materialize(input_dir, warehouse_dir, SCORING, partition_key="2015-04-20")
    assert comparable(predictions(spark, warehouse_dir)) == first
    assert len(first) == 30


def test_a_backfill_in_one_run_equals_scoring_the_days_one_by_one(spark, trained_fleet, tmp_path):
    input_dir, trained_warehouse = trained_fleet
    in_one_run = copy_warehouse(trained_warehouse, tmp_path / "range")
    result = materialize(input_dir, in_one_run, SCORING, tags=partition_range_tags("2015-04-10", "2015-04-13"))
    assert len({e.partition for e in result.get_asset_materialization_events()}) == 4
    day_by_day = copy_warehouse(trained_warehouse, tmp_path / "daily")
    for day in range(10, 14):
        last = materialize(input_dir, day_by_day, SCORING, partition_key=f"2015-04-{day}")
    # the last day read the days before it through daily_predictions' declared dependency on its own past
    (stable,) = [c for c in last.get_asset_check_evaluations() if c.check_name == "failure_share_stable"]
    assert stable.metadata["trailing_days_not_scored"].value == ["2015-04-06", "2015-04-07", "2015-04-08", "2015-04-09"]
    ranged = comparable(predictions(spark, in_one_run))
    assert len(ranged) == 4 * 30
    assert ranged == comparable(predictions(spark, day_by_day))
    worklists = [
        sorted(tuple(r) for r in DeltaTables(spark, str(w)).read("maintenance_worklist", WORKLIST_SCHEMA).collect())
        for w in (in_one_run, day_by_day)
    ]
    assert worklists[0] == worklists[1]


def test_the_worklist_lists_machines_above_the_threshold_most_urgent_first(spark, warehouse):
    input_dir, warehouse_dir = warehouse
    config = {"ops": {"maintenance_worklist": {"config": {"min_failure_probability": 0.3}}}}
    result = materialize(input_dir, warehouse_dir, SCORING, partition_key="2015-04-20", run_config=config)
    scored = predictions(spark, warehouse_dir).collect()
    expected = sorted(
        (r for r in scored if r.failure_probability >= 0.3), key=lambda r: (-r.failure_probability, r.machine_id)
    )
    listed = (
        DeltaTables(spark, str(warehouse_dir)).read("maintenance_worklist", WORKLIST_SCHEMA).orderBy("rank").collect()
    )
    assert [r.machine_id for r in listed] == [r.machine_id for r in expected]
    assert [r.rank for r in listed] == list(range(1, len(expected) + 1))
    for row, prediction in zip(listed, expected):
        components = {c: prediction[f"probability_{c}"] for c in ("comp1", "comp2", "comp3", "comp4")}
        assert row.likely_component == max(components, key=components.get)
        assert row.component_probability == components[row.likely_component]
    assert len(listed) >= 3, "the fixture's day should put several machines on the list"
    with open(warehouse_dir / "worklists" / "maintenance_worklist_2015-04-20.csv") as handle:
        reader = csv.DictReader(handle)
        csv_rows = list(reader)
    assert reader.fieldnames == WORKLIST_SCHEMA.fieldNames()
    assert [int(r["machine_id"]) for r in csv_rows] == [r.machine_id for r in listed]
    assert [r["likely_component"] for r in csv_rows] == [r.likely_component for r in listed]
    meta = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "maintenance_worklist"
    ]
    top = meta[0].step_materialization_data.materialization.metadata["most_urgent"].value.records
    assert [r.data["machine_id"] for r in top] == [r.machine_id for r in listed[:10]]


def test_an_empty_worklist_still_writes_a_csv_with_its_header(spark, warehouse):
    input_dir, warehouse_dir = warehouse
    config = {"ops": {"maintenance_worklist": {"config": {"min_failure_probability": 1.01}}}}
    materialize(input_dir, warehouse_dir, SCORING, partition_key="2015-04-20", run_config=config)
    lines = (warehouse_dir / "worklists" / "maintenance_worklist_2015-04-20.csv").read_text().splitlines()
    assert lines == [",".join(WORKLIST_SCHEMA.fieldNames())]


def test_scoring_without_a_trained_model_says_to_materialize_failure_model(fleet_with_features, tmp_path):
    input_dir, warehouse_dir = fleet_with_features
    untrained = copy_warehouse(warehouse_dir, tmp_path / "warehouse")
    result = materialize(input_dir, untrained, SCORING, partition_key="2015-04-20", raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "No trained failure_model in" in str(failure.step_failure_data.error)
    assert "materialize failure_model first" in str(failure.step_failure_data.error)
    assert not (untrained / "daily_predictions").exists()


@pytest.mark.unit
def test_the_daily_schedule_asks_for_the_day_that_just_ended(tmp_path):
    definitions = build_definitions()
    schedule = definitions.resolve_schedule_def(daily_scoring_schedule.name)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            repository_def=definitions.get_repository_def(),
            scheduled_execution_time=dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.timezone.utc),
            resources={"input_files": InputFiles(input_dir=str(tmp_path))},
        )
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-24"
    # raw_machines was never made: the run makes it (or says what is wrong with its files)
    assert dg.AssetKey("raw_machines") in request.asset_selection
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "UTC"


@pytest.mark.unit
def test_share_drift_compares_each_day_with_the_week_before():
    d = dt.date(2015, 4, 20)
    shares = {d - dt.timedelta(days=n): 0.05 for n in range(1, 8)}
    assert share_drifts({**shares, d: 0.14}, [d], 0.10) == []
    assert share_drifts({**shares, d: 0.20}, [d], 0.10) == [
        {"date": "2015-04-20", "share": 0.20, "trailing_week": pytest.approx(0.05), "days_compared": 7}
    ]
    assert share_drifts({d: 0.9}, [d], 0.10) == []  # nothing to compare with


def test_features_used_for_scoring_are_the_stored_features(spark, warehouse):
    input_dir, warehouse_dir = warehouse
    materialize(input_dir, warehouse_dir, SCORING, partition_key="2015-04-20")
    stored = DeltaTables(spark, str(warehouse_dir)).read("features", FEATURES_SCHEMA, ["2015-04-20"])
    scored = predictions(spark, warehouse_dir).select("machine_id", "observed_at")
    assert sorted(tuple(r) for r in scored.collect()) == sorted(
        tuple(r) for r in stored.select("machine_id", "observed_at").collect()
    )
