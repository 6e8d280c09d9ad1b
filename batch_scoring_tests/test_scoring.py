"""Daily scoring, reruns, backfills, the schedule and the worklist, with real Dagster and Spark."""

import csv
import datetime as dt
import re
import shutil

import dagster as dg
import pytest
from pyspark.sql import functions as F

from batch_scoring.defs.assets.scoring import daily_predictions, maintenance_worklist, maintenance_worklist_page
from batch_scoring.defs.definitions import build_definitions
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.defs.resources import InputFiles
from batch_scoring.defs.schedules import daily_scoring_schedule
from batch_scoring.lib.features import FEATURES_SCHEMA
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA, WORKLIST_SCHEMA, share_drifts
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    ARTIFACTS,
    copy_warehouse,
    days_with_rows,
    materialize,
    model_versions,
    open_in_chromium,
    text_of,
)

SCORING = [daily_predictions, maintenance_worklist]

# the crews' file of a day: its name gives the day
CREW_CSV_COLUMNS = [
    "rank",
    "machine_id",
    "likely_component",
    "failure_probability_percent",
    "component_probability_percent",
    "observed_at_utc",
]


DAY = "2015-04-20"
WEEK = [f"2015-04-{day}" for day in range(14, 21)]  # up to DAY
WORKLIST_FROM_0_3 = {"ops": {"maintenance_worklist": {"config": {"min_failure_probability": 0.3}}}}


@pytest.fixture(scope="module")
def scored_day(trained_fleet, tmp_path_factory):
    """A copy of the trained fleet's warehouse with the WEEK up to DAY scored in one run (the worklist from failure
    probability 0.3) and the crews' pages made, and that run's result. Read-only: tests that write copy it."""
    input_dir, trained_warehouse = trained_fleet
    warehouse_dir = copy_warehouse(trained_warehouse, tmp_path_factory.mktemp("scored") / "warehouse")
    scoring_and_pages = [*SCORING, maintenance_worklist_page]
    tags = partition_range_tags(WEEK[0], WEEK[-1])
    return (
        input_dir,
        warehouse_dir,
        materialize(input_dir, warehouse_dir, scoring_and_pages, tags=tags, run_config=WORKLIST_FROM_0_3),
    )


def predictions(spark, warehouse_dir, days):
    return DeltaTables(spark, str(warehouse_dir)).read("daily_predictions", PREDICTIONS_SCHEMA, days)


def comparable(df):
    """Prediction rows without scored_at, which records when each run scored them."""
    return sorted(tuple(r) for r in df.drop("scored_at").collect())


def test_a_day_is_scored_once_per_active_machine_with_the_model_version(spark, scored_day):
    _, warehouse_dir, result = scored_day
    version = model_versions(spark, warehouse_dir)[-1]
    # the quick start scored its last day; this run added the week up to DAY and nothing else
    assert days_with_rows(DeltaTables(spark, str(warehouse_dir)), "daily_predictions") == [*WEEK, "2015-04-30"]
    table = predictions(spark, warehouse_dir, [DAY])
    assert table.count() == 30
    assert table.select("machine_id").distinct().count() == 30
    assert {r.model_version for r in table.select("model_version").distinct().collect()} == {version}
    assert table.where(F.col("observed_at") != F.lit(dt.datetime(2015, 4, 21))).count() == 0
    assert table.where(F.col("predicted_component").isin("none", "comp1", "comp2", "comp3", "comp4")).count() == 30
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "one_row_per_active_machine": True,
        "probabilities_valid": True,
        "failure_share_stable": True,
    }
    # nothing was scored before the week: the check says which earlier days it had nothing for
    not_scored = checks["failure_share_stable"].metadata["trailing_days_not_scored"].value
    assert not_scored == [f"2015-04-{day:02}" for day in range(7, 14)]


def test_rerunning_a_day_replaces_its_predictions(spark, scored_day, tmp_path):
    input_dir, scored_warehouse, _ = scored_day
    warehouse_dir = copy_warehouse(scored_warehouse, tmp_path / "warehouse")
    assert materialize(input_dir, warehouse_dir, SCORING, partition_key=DAY, run_config=WORKLIST_FROM_0_3).success
    first = comparable(predictions(spark, scored_warehouse, [DAY]))
    assert comparable(predictions(spark, warehouse_dir, [DAY])) == first
    assert len(first) == 30
    versions = [DeltaTables(spark, str(w)).version("daily_predictions") for w in (scored_warehouse, warehouse_dir)]
    assert versions[1] == versions[0] + 1  # replaced in one commit


def test_a_backfill_in_one_run_equals_scoring_the_days_one_by_one(spark, trained_fleet, tmp_path):
    input_dir, trained_warehouse = trained_fleet
    days = ["2015-04-10", "2015-04-11", "2015-04-12"]
    in_one_run = copy_warehouse(trained_warehouse, tmp_path / "range")
    result = materialize(input_dir, in_one_run, SCORING, tags=partition_range_tags(days[0], days[-1]))
    assert {e.partition for e in result.get_asset_materialization_events()} == set(days)
    day_by_day = copy_warehouse(trained_warehouse, tmp_path / "daily")
    for day in days:
        last = materialize(input_dir, day_by_day, SCORING, partition_key=day)
    # the last day read the days before it through daily_predictions' declared dependency on its own past
    (stable,) = [c for c in last.get_asset_check_evaluations() if c.check_name == "failure_share_stable"]
    assert stable.metadata["trailing_days_not_scored"].value == [f"2015-04-0{day}" for day in range(5, 10)]
    ranged = comparable(predictions(spark, in_one_run, days))
    assert len(ranged) == 3 * 30
    assert ranged == comparable(predictions(spark, day_by_day, days))
    worklists = [
        sorted(
            tuple(r) for r in DeltaTables(spark, str(w)).read("maintenance_worklist", WORKLIST_SCHEMA, days).collect()
        )
        for w in (in_one_run, day_by_day)
    ]
    assert worklists[0] == worklists[1]


def test_the_worklist_lists_machines_above_the_threshold_most_urgent_first(spark, scored_day):
    _, warehouse_dir, result = scored_day
    scored = predictions(spark, warehouse_dir, [DAY]).collect()
    expected = sorted(
        (r for r in scored if r.failure_probability >= 0.3), key=lambda r: (-r.failure_probability, r.machine_id)
    )
    listed = (
        DeltaTables(spark, str(warehouse_dir))
        .read("maintenance_worklist", WORKLIST_SCHEMA, [DAY])
        .orderBy("rank")
        .collect()
    )
    assert [r.machine_id for r in listed] == [r.machine_id for r in expected]
    assert [r.rank for r in listed] == list(range(1, len(expected) + 1))
    for row, prediction in zip(listed, expected):
        components = {c: prediction[f"probability_{c}"] for c in ("comp1", "comp2", "comp3", "comp4")}
        assert row.likely_component == max(components, key=components.get)
        assert row.component_probability == components[row.likely_component]
    assert len(listed) >= 3, "the fixture's day should put several machines on the list"
    with open(warehouse_dir / "worklists" / f"maintenance_worklist_{DAY}.csv") as handle:
        reader = csv.DictReader(handle)
        csv_rows = list(reader)
    assert reader.fieldnames == CREW_CSV_COLUMNS
    assert [int(r["machine_id"]) for r in csv_rows] == [r.machine_id for r in listed]
    assert [r["likely_component"] for r in csv_rows] == [r.likely_component for r in listed]
    # for people: percent to one decimal, the time in UTC and said so
    assert [float(r["failure_probability_percent"]) for r in csv_rows] == [
        round(r.failure_probability * 100, 1) for r in listed
    ]
    assert {r["observed_at_utc"] for r in csv_rows} == {"2015-04-21 00:00"}
    meta = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "maintenance_worklist"
    ]
    top = meta[0].step_materialization_data.materialization.metadata["most_urgent"].value.records
    assert [r.data["machine_id"] for r in top] == [r.machine_id for r in listed[:10]]


def table_rows(page: str) -> list[list[str]]:
    """The cells' text of each row of the page's table body."""
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    return [
        [text_of(cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.DOTALL)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.DOTALL)
    ]


def days_in_a_row(listed_days: set[str], day: str) -> int:
    count, current = 0, dt.date.fromisoformat(day)
    while current.isoformat() in listed_days:
        count, current = count + 1, current - dt.timedelta(days=1)
    return count


def test_the_crews_page_shows_the_day_s_worklist_with_each_machine_s_recent_days(spark, scored_day, tmp_path):
    _, warehouse_dir, result = scored_day
    page_file = warehouse_dir / "worklists" / f"maintenance_worklist_{DAY}.html"
    page = open_in_chromium(page_file.as_uri(), ARTIFACTS / "crew_page.png", tmp_path, window="1400,900")
    tables = DeltaTables(spark, str(warehouse_dir))
    week = tables.read("maintenance_worklist", WORKLIST_SCHEMA, WEEK).collect()
    listed = sorted((r for r in week if r.date.isoformat() == DAY), key=lambda r: r.rank)
    scored = {
        (r.machine_id, r.date.isoformat()): r.failure_probability
        for r in predictions(spark, warehouse_dir, WEEK).collect()
    }
    rows = table_rows(page)
    assert len(rows) == len(listed) >= 3
    for cells, row in zip(rows, listed):
        rank, machine, component, probability, act_before, on_list, *_ = cells
        assert (int(rank), int(machine)) == (row.rank, row.machine_id)
        assert component.startswith(row.likely_component) and probability == f"{row.failure_probability:.0%}"
        assert act_before == "2015-04-28"  # the end of the 7 days from 2015-04-21 00:00 UTC
        listed_days = {r.date.isoformat() for r in week if r.machine_id == row.machine_id}
        assert on_list.split()[0] == str(days_in_a_row(listed_days, DAY))
        # the trail: the machine's probability on each day of the week, as scored
        trail = ", ".join(f"{day[5:]} {scored[(row.machine_id, day)]:.0%}" for day in WEEK)
        assert f"Failure probability: {trail}</title>" in page
    assert "likely to have a component fail within 7 days of 2015-04-21 00:00 UTC" in text_of(page)
    # each day's materialization links its own page
    pages = {
        e.partition: e.step_materialization_data.materialization.metadata["page_file"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "maintenance_worklist_page"
    }
    assert pages == {day: str(warehouse_dir / "worklists" / f"maintenance_worklist_{day}.html") for day in WEEK}


def test_an_empty_worklist_still_writes_a_csv_with_its_header(spark, scored_day, tmp_path):
    input_dir, scored_warehouse, _ = scored_day
    warehouse_dir = copy_warehouse(scored_warehouse, tmp_path / "warehouse")
    config = {"ops": {"maintenance_worklist": {"config": {"min_failure_probability": 1.01}}}}
    assert materialize(input_dir, warehouse_dir, [maintenance_worklist], partition_key=DAY, run_config=config).success
    assert DeltaTables(spark, str(warehouse_dir)).read("maintenance_worklist", WORKLIST_SCHEMA, [DAY]).isEmpty()
    lines = (warehouse_dir / "worklists" / f"maintenance_worklist_{DAY}.csv").read_text().splitlines()
    assert lines == [",".join(CREW_CSV_COLUMNS)]


def test_scoring_without_a_trained_model_says_to_materialize_failure_model(spark, trained_fleet, tmp_path):
    input_dir, warehouse_dir = trained_fleet
    untrained = copy_warehouse(warehouse_dir, tmp_path / "warehouse")
    shutil.rmtree(untrained / "failure_model")
    result = materialize(input_dir, untrained, SCORING, partition_key=DAY, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "No trained failure_model in" in str(failure.step_failure_data.error)
    assert "materialize failure_model first" in str(failure.step_failure_data.error)
    assert predictions(spark, untrained, [DAY]).isEmpty()


@pytest.mark.unit
def test_the_daily_schedule_asks_for_the_day_that_just_ended(tmp_path):
    definitions = build_definitions()
    schedule = definitions.resolve_schedule_def(daily_scoring_schedule.name)
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(
            instance=instance,
            repository_def=definitions.get_repository_def(),
            scheduled_execution_time=dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.timezone.utc),
            resources={"input_files": InputFiles(input_dir=str(tmp_path))},
        ) as context:  # entered and left inside the instance's block, in order
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


def test_features_used_for_scoring_are_the_stored_features(spark, scored_day):
    _, warehouse_dir, _ = scored_day
    stored = DeltaTables(spark, str(warehouse_dir)).read("features", FEATURES_SCHEMA, [DAY])
    scored = predictions(spark, warehouse_dir, [DAY]).select("machine_id", "observed_at")
    assert sorted(tuple(r) for r in scored.collect()) == sorted(
        tuple(r) for r in stored.select("machine_id", "observed_at").collect()
    )
