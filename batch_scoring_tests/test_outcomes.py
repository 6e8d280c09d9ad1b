"""prediction_outcomes: a day's predictions joined, a week later, with the failures that followed; by hand on a
tiny frame, and on the quick start's fleet with real Dagster and Delta."""

import datetime as dt
from datetime import date, datetime

import dagster as dg
import pytest

from batch_scoring.defs.assets.outcomes import prediction_outcomes
from batch_scoring.defs.assets.scoring import daily_predictions, maintenance_worklist
from batch_scoring.defs.definitions import build_definitions
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.lib import steps
from batch_scoring.lib.outcomes import OUTCOMES_SCHEMA
from batch_scoring.lib.scoring import WORKLIST_SCHEMA
from batch_scoring.lib.steps import OUTCOMES_CHECK
from batch_scoring.lib.tables import FAILURES
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import copy_warehouse, materialization_metadata, materialize, model_manifests

PREDICTED_ON = date(2015, 3, 1)  # observed at 03-02 00:00: its 168 hours end with 03-08
CLOSED = date(2015, 3, 8)


def tiny_day(spark):
    """Five machines scored on 03-01, three of them listed, and the failures around their 168 hours."""
    observed = datetime(2015, 3, 2)
    predictions = spark.createDataFrame(
        [(m, observed, p, "v1", PREDICTED_ON) for m, p in ((1, 0.8), (2, 0.7), (3, 0.2), (4, 0.1), (5, 0.6))],
        "machine_id int, observed_at timestamp, failure_probability double, model_version string, date date",
    )
    worklist = spark.createDataFrame(
        [(1, 1, "comp1", PREDICTED_ON), (2, 2, "comp2", PREDICTED_ON), (3, 5, "comp2", PREDICTED_ON)],
        "rank int, machine_id int, likely_component string, date date",
    )
    failures = spark.createDataFrame(
        [
            (1, datetime(2015, 3, 4, 6), "comp1"),  # listed for it: a hit
            (2, datetime(2015, 3, 1, 10), "comp2"),  # before the observation: not in its hours
            (3, datetime(2015, 3, 8, 23), "comp3"),  # the last hour in: missed by the list
            (4, datetime(2015, 3, 9, 1), "comp4"),  # after its hours ended
            (5, datetime(2015, 3, 5, 6), "comp1"),  # listed, but for comp2
            (5, datetime(2015, 3, 6, 6), "comp2"),  # the first failure counts
        ],
        "machine_id int, datetime timestamp, failure string",
    )
    return predictions, worklist, failures


@pytest.mark.unit
def test_a_day_s_outcomes_and_the_list_s_realized_figures_by_hand(spark):
    predictions, worklist, failures = tiny_day(spark)
    earlier = spark.createDataFrame(  # 25 listed machine-days of 02-28 that did not fail, judged with the day
        [(100 + n, date(2015, 2, 28), 0.9, "comp1", "none", "v1", date(2015, 3, 7)) for n in range(25)],
        OUTCOMES_SCHEMA,
    )
    held_out = {"threshold": 0.5, "precision": 0.9, "recall": 0.8}
    outcome = steps.outcomes(predictions, worklist, failures, earlier, {"worklist": held_out}, [CLOSED])

    (produced,) = outcome.produced
    rows = {r.machine_id: (r.listed_for, r.failed_component) for r in produced.value.collect()}
    assert rows == {
        1: ("comp1", "comp1"),
        2: ("comp2", "none"),
        3: ("none", "comp3"),
        4: ("none", "none"),
        5: ("comp2", "comp1"),
    }
    assert {(r.predicted_on, r.date) for r in produced.value.collect()} == {(PREDICTED_ON, CLOSED)}
    # listed 1, 2, 5; failed 1, 3, 5; both 1 and 5
    meta = produced.metadata
    assert (meta["machine_days_listed"], meta["machine_days_failing"]) == (3, 3)
    assert meta["worklist_precision"] == meta["worklist_recall"] == round(2 / 3, 4)
    by_component = {row["component"]: row for row in meta["by_component"].rows}
    assert (by_component["comp1"]["precision"], by_component["comp1"]["recall"]) == (1.0, 0.5)
    assert (by_component["comp2"]["precision"], by_component["comp2"]["recall"]) == (0.0, None)
    assert (by_component["comp3"]["listed"], by_component["comp3"]["recall"]) == (0, 0.0)
    figures = ("worklist_precision", "worklist_recall", "machine_days_listed", "machine_days_failing")
    assert produced.per_day == {"2015-03-08": {"dagster/row_count": 5, **{name: meta[name] for name in figures}}}
    # the check judges the two days together: 28 listed, 2 failed (precision 0.07 against 0.9); recall on 3
    (check,) = outcome.checks
    assert (check.name, check.passed, check.warn_only) == (OUTCOMES_CHECK, False, True)
    assert check.metadata["worklist_precision"] == round(2 / 28, 4) and check.metadata["days_judged"] == 2
    assert "precision 0.07 against 0.90 held out" in check.description
    assert "not judged, too few outcomes: recall (3 failing machine-days)" in check.description
    # a model trained before its manifest kept the list's figures: not judged, and said
    (unjudged,) = steps.outcomes(predictions, worklist, failures, earlier, {}, [CLOSED]).checks
    assert unjudged.passed and "records no hold-out figures" in unjudged.description


@pytest.mark.unit
def test_the_outcomes_schedule_asks_at_seven_utc_for_the_day_before():
    definitions = build_definitions()
    schedule = definitions.resolve_schedule_def("prediction_outcomes_schedule")
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(
            instance=instance,
            repository_def=definitions.get_repository_def(),
            scheduled_execution_time=dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.timezone.utc),
        ) as context:  # entered and left inside the instance's block, in order
            (request,) = schedule.evaluate_tick(context).run_requests
    assert (request.partition_key, request.run_key) == ("2026-11-24", "2026-11-24")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "0 7 * * *",
        "UTC",
        "outcomes_job",
    )


SCORED = ("2015-04-10", "2015-04-12")
CLOSING = ("2015-04-17", "2015-04-20")  # 04-20's predictions (04-13) were never made


def test_outcomes_join_the_predictions_of_a_week_before_with_the_failures_that_followed(spark, trained_fleet, tmp_path):
    input_dir, trained = trained_fleet
    warehouse = copy_warehouse(trained, tmp_path / "warehouse")
    scoring = [daily_predictions, maintenance_worklist]
    assert materialize(input_dir, warehouse, scoring, tags=partition_range_tags(*SCORED)).success
    result = materialize(input_dir, warehouse, [prediction_outcomes], tags=partition_range_tags(*CLOSING))
    assert result.success

    store = DeltaTables(spark, str(warehouse))
    rows = store.read("prediction_outcomes", OUTCOMES_SCHEMA).collect()
    assert len(rows) == 30 * 3 and {(r.date - r.predicted_on).days for r in rows} == {7}
    assert sorted({str(r.date) for r in rows}) == ["2015-04-17", "2015-04-18", "2015-04-19"]
    # the list as the crews had it, and the first failure in the 7 days after each day (read here by dates alone)
    listed = {
        (r.machine_id, r.date): r.likely_component
        for r in store.read("maintenance_worklist", WORKLIST_SCHEMA).collect()  # those days, and the quick start's
    }
    failures = sorted(
        (r.datetime, r.failure, r.machine_id) for r in store.read(FAILURES.asset, FAILURES.schema).collect()
    )

    def first_failure(machine: int, day: date) -> str:
        after = datetime.combine(day + dt.timedelta(days=1), datetime.min.time())
        due = [f for at, f, m in failures if m == machine and after <= at < after + dt.timedelta(days=7)]
        return due[0] if due else "none"

    for r in rows:
        assert r.listed_for == listed.get((r.machine_id, r.predicted_on), "none"), r
        assert r.failed_component == first_failure(r.machine_id, r.predicted_on), r
    assert any(r.failed_component != "none" for r in rows) and any(r.listed_for != "none" for r in rows)

    meta = materialization_metadata(result, "prediction_outcomes")
    hits = sum(r.listed_for != "none" and r.failed_component != "none" for r in rows)
    listed_days = sum(r.listed_for != "none" for r in rows)
    assert meta["machine_days_listed"] == listed_days and meta["worklist_precision"] == round(hits / listed_days, 4)
    assert meta["days_without_predictions"] == ["2015-04-20"]
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.severity) == (OUTCOMES_CHECK, dg.AssetCheckSeverity.WARN)
    (manifest,) = model_manifests(spark, warehouse)
    assert check.metadata["held_out_precision"].value == round(manifest["worklist"]["precision"], 4)
    assert check.metadata["days_judged"].value == 3
