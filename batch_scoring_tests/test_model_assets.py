"""features and failure_model materialized with real Dagster and real Spark on a simulated fleet."""

import shutil
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pytest
from delta.tables import DeltaTable
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import RandomForestClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import functions as F

from batch_scoring.defs.assets.features import features
from batch_scoring.defs.assets.model import failure_model
from batch_scoring.lib.features import FEATURES_SCHEMA
from batch_scoring.lib.model import (
    PROBABILITY_COLUMNS,
    ForestParams,
    TrainedModel,
    WorklistTarget,
    calibration_bands,
    choose_threshold,
    lead_times,
    precision_recall_auc,
    threshold_table,
    training_rows,
)
from batch_scoring.lib.steps import MODEL_CHECK, forest_candidates, worklist_threshold
from batch_scoring.lib.tables import FAILURES
from batch_scoring.storage.delta import DeltaTables
from batch_scoring.storage.models import ModelNotUsable
from batch_scoring_tests.conftest import (
    copy_warehouse,
    days_with_rows,
    materialize,
    model_manifests,
    model_store,
    model_versions,
)


def run(input_dir, warehouse, selection, **kwargs):
    return materialize(input_dir, warehouse, selection, **kwargs)


@pytest.fixture
def fleet_warehouse(trained_fleet, tmp_path):
    """A copy of the shared fleet's warehouse, for tests that write to it."""
    input_dir, warehouse = trained_fleet
    return input_dir, copy_warehouse(warehouse, tmp_path / "warehouse")


def model_metadata(result):
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}


def test_features_cover_every_day_and_machine(spark, trained_fleet):
    _, warehouse = trained_fleet
    table = DeltaTables(spark, str(warehouse)).read("features", FEATURES_SCHEMA)
    assert table.count() == 30 * 120
    assert table.select("date").distinct().count() == 120


def test_a_day_s_features_need_only_its_lookback_and_a_day_missing_inside_it_fails(spark, fleet_warehouse):
    input_dir, warehouse = fleet_warehouse
    full = DeltaTables(spark, str(warehouse)).read("features", FEATURES_SCHEMA, ["2015-03-10"]).localCheckpoint()
    # the warehouse cut down to the telemetry of 2015-02-19 .. 03-10 (the 20 days the windows and the baseline of
    # 2015-03-10 reach), the errors of the 30 days days since reach, and the replacements up to that day (from
    # the first day: less than the 365 days that days since reach)
    for table, kept in (
        ("raw_telemetry", "date >= DATE'2015-02-19' AND date <= DATE'2015-03-10'"),
        ("raw_errors", "date >= DATE'2015-02-09' AND date <= DATE'2015-03-10'"),
        ("raw_maintenance", "date <= DATE'2015-03-10'"),
    ):
        DeltaTable.forPath(spark, str(warehouse / table)).delete(f"NOT ({kept})")
    shutil.rmtree(warehouse / "features")
    run(input_dir, warehouse, [features], partition_key="2015-03-10")
    store = DeltaTables(spark, str(warehouse))
    assert days_with_rows(store, "raw_telemetry")[::19] == ["2015-02-19", "2015-03-10"]
    bounded = store.read("features", FEATURES_SCHEMA, ["2015-03-10"])
    assert bounded.count() == 30
    assert bounded.exceptAll(full).count() == 0 and full.exceptAll(bounded).count() == 0

    # the telemetry begins on 2015-02-19: the first day's windows reach before it, which is no gap
    assert run(input_dir, warehouse, [features], partition_key="2015-02-19").success
    # a day missing inside the lookback would thin the windows: the step fails and names it
    DeltaTable.forPath(spark, str(warehouse / "raw_telemetry")).delete("date = DATE'2015-03-09'")
    result = run(input_dir, warehouse, [features], raise_on_error=False, partition_key="2015-03-10")
    assert not result.success
    assert (
        "features reads raw_telemetry for 2015-02-19 .. 2015-03-10, but raw_telemetry has no rows for 2015-03-09"
        in str(result.failure_data_for_node("features").error)
    )
    assert store.read("features", FEATURES_SCHEMA, ["2015-03-10"]).count() == 30  # the earlier rows stay


def test_a_damaged_table_file_fails_naming_table_partition_and_file_first(fleet_warehouse):
    input_dir, warehouse = fleet_warehouse
    (damaged,) = (warehouse / "raw_telemetry" / "date=2015-03-09").glob("*.parquet")
    with damaged.open("r+b") as handle:
        handle.truncate(20)
    result = run(input_dir, warehouse, [features], raise_on_error=False, partition_key="2015-03-10")
    assert not result.success
    message = str(result.failure_data_for_node("features").error)
    assert f"Cannot read table raw_telemetry, partition date=2015-03-09: file file:{damaged} is damaged" in message
    assert "Rematerialize the table for that day" in message


def test_features_of_a_day_without_telemetry_fail_saying_what_to_materialize(fleet_warehouse):
    input_dir, warehouse = fleet_warehouse
    result = run(input_dir, warehouse, [features], raise_on_error=False, partition_key="2015-06-01")
    assert not result.success
    message = result.failure_data_for_node("features").user_failure_data.description
    assert "No features for 2015-06-01" in message and "Materialize raw_telemetry" in message


def quickstart_training(quickstart) -> tuple[dict, list[dg.AssetCheckEvaluation]]:
    """The failure_model materialization of the quick start's training run: its metadata and its checks."""
    with dg.DagsterInstance.from_config(str(quickstart.dagster_home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("failure_model"))
        checks = instance.get_records_for_run(event.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in checks.records]
    return metadata, [e for e in evaluations if e.asset_key == dg.AssetKey("failure_model")]


def test_failure_model_beats_the_baseline_on_a_later_holdout_and_is_kept_as_a_version(spark, quickstart):
    meta, checks = quickstart_training(quickstart)
    # labels end 7 days before the last day; hold-out = the last 24 labelled days (a fifth of the quick start's
    # 120); training stops 7 days earlier
    assert meta["holdout_days"] == "2015-03-31 .. 2015-04-23"
    assert meta["training_days"] == "2015-01-01 .. 2015-03-23"
    assert meta["holdout_rows"] == 30 * 24 and meta["train_rows"] == 30 * 82
    assert meta["baseline_macro_f1"] == 0.0
    assert meta["macro_f1"] > 0.5, meta["macro_f1"]
    assert [r.data["class"] for r in meta["holdout_metrics"].records] == ["none", "comp1", "comp2", "comp3", "comp4"]
    assert sum(sum(v for k, v in r.data.items() if k != "true_class") for r in meta["confusion_matrix"].records) == 720
    assert len(meta["feature_importances"].records) == 15
    # the ranking behind the classes, against ranking at random, and how well the probabilities are calibrated
    metrics = {r.data["class"]: r.data for r in meta["holdout_metrics"].records}
    assert all(metrics[c]["pr_auc"] > metrics[c]["class_share"] for c in ("comp1", "comp2", "comp3", "comp4"))
    assert metrics["none"]["pr_auc"] is None and 0.0 < meta["macro_pr_auc"] <= 1.0
    calibration = [r.data for r in meta["calibration"].records]
    assert sum(band["rows"] for band in calibration) == 720
    # the worklists of the hold-out against its failures: those whose day before was held out (04-01 .. 04-24)
    failure_days = DeltaTables(spark, str(quickstart.warehouse)).read("raw_failures", FAILURES.schema)
    failure_days = failure_days.select("machine_id", F.to_date("datetime").alias("day")).distinct()
    held_out_failures = failure_days.where("day BETWEEN DATE'2015-04-01' AND DATE'2015-04-24'").count()
    lead = [r.data for r in meta["lead_time"].records]
    assert [row["days_before"] for row in lead] == [1, 3, 5] and lead[0]["failures"] == held_out_failures > 0
    assert all(row["on_list"] <= row["failures"] for row in lead)
    assert 0.0 < meta["failures_caught_share"] <= 1.0 and meta["false_alarms_per_caught_failure"] >= 0.0
    assert 0.0 < meta["worklist_precision"] <= 1.0 and 0.0 < meta["worklist_recall"] <= 1.0
    # the worklist's threshold was chosen on as many days before the training days' end, never on the hold-out
    assert meta["validation_days"] == "2015-02-28 .. 2015-03-23"
    search = {r.data["threshold"]: r.data for r in meta["threshold_search"].records}
    assert sorted(search) == [round(0.05 * step, 2) for step in range(1, 20)]
    chosen = search[meta["worklist_threshold"]]
    assert (chosen["precision"] >= 0.8) == meta["worklist_threshold_choice"].startswith("the lowest threshold")
    (manifest,) = model_manifests(spark, quickstart.warehouse)
    assert manifest["worklist"]["threshold"] == meta["worklist_threshold"]
    assert manifest["worklist"]["chosen"] == meta["worklist_threshold_choice"]
    (check,) = checks
    assert (check.check_name, check.passed) == (MODEL_CHECK, True)

    store = model_store(spark, quickstart.warehouse)
    assert model_versions(spark, quickstart.warehouse) == [meta["version"]]
    assert store.load_latest_usable().version == meta["version"]


def test_a_model_failing_its_check_blocks_and_is_never_used_but_older_versions_stay_loadable(
    spark, trained_fleet, tmp_path
):
    input_dir, trained = trained_fleet
    warehouse = copy_warehouse(trained, tmp_path / "warehouse")
    (good,) = model_versions(spark, warehouse)
    result = run(input_dir, warehouse, [failure_model], raise_on_error=False, model_config={"min_macro_f1": 0.99})
    assert not result.success  # the blocking check fails the run
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "minimum 0.99" in check.description
    bad = model_metadata(result)["version"]
    store = model_store(spark, warehouse)
    assert {good, bad} <= set(model_versions(spark, warehouse))
    with pytest.raises(ModelNotUsable, match=f"version {bad}.*failed its check usable_for_scoring.*minimum 0.99"):
        store.load_latest_usable()
    checks = [m["check"]["passed"] for m in model_manifests(spark, warehouse) if m["version"] in (good, bad)]
    assert checks == [True, False]
    assert PipelineModel.load(store.pipeline_location(good)).stages  # an older version stays loadable


def hold_out_predictions(spark, rows: list[tuple[str, dict[str, float]]]):
    """Hold-out rows as the model's evaluation sees them: the true label and one probability per class (the rest of
    each row's probability on none)."""
    values = []
    for label, failing in rows:
        components = [failing.get(c, 0.0) for c in ("comp1", "comp2", "comp3", "comp4")]
        values.append((label, 1.0 - sum(components), *components))
    return spark.createDataFrame(values, ", ".join(["label string", *(f"{c} double" for c in PROBABILITY_COLUMNS)]))


@pytest.mark.unit
def test_precision_recall_auc_and_calibration_bands_by_hand(spark):
    predictions = hold_out_predictions(
        spark,
        [
            ("comp1", {"comp1": 0.6, "comp2": 0.35}),
            ("none", {"comp1": 0.2, "comp2": 0.05}),
            ("comp2", {"comp2": 0.75}),
            ("none", {"comp2": 0.15}),
            ("comp2", {"comp2": 0.85}),
            ("none", {"comp2": 1.0}),
        ],
    )
    auc = precision_recall_auc(predictions, {"none": 3, "comp1": 1, "comp2": 2})
    # comp1: its one row ranks first, above every other row
    assert auc["comp1"] == pytest.approx(1.0)
    # comp2 by score: 1.0 none, 0.85 comp2, 0.75 comp2, 0.35 comp1, 0.15 none, 0.05 none; (recall, precision)
    # from (0, 0) to (0.5, 0.5) to (1, 2/3), then recall stays 1: trapezoids 0.5 * 0.5/2 + 0.5 * (0.5 + 2/3)/2
    assert auc["comp2"] == pytest.approx(0.125 + 0.5 * (0.5 + 2 / 3) / 2)
    assert auc["comp3"] is None and auc["comp4"] is None  # no rows to rank

    bands = calibration_bands(predictions)
    # failure probabilities 0.95, 0.25, 0.75, 0.15, 0.85 and 1.0 (in the top band, not a band of its own)
    assert [(b["failure_probability"], b["rows"]) for b in bands] == [
        ("0.1 .. 0.2", 1),
        ("0.2 .. 0.3", 1),
        ("0.7 .. 0.8", 1),
        ("0.8 .. 0.9", 1),
        ("0.9 .. 1.0", 2),
    ]
    assert [b["observed_failure_share"] for b in bands] == [0.0, 0.0, 1.0, 1.0, 0.5]
    assert [b["mean_predicted"] for b in bands] == pytest.approx([0.15, 0.25, 0.75, 0.85, 0.975])


@pytest.mark.unit
def test_lead_times_and_false_alarms_of_the_hold_out_s_worklists_by_hand(spark):
    day = lambda d: date(2015, 3, d)  # noqa: E731
    # (machine, day, label, probability of none): listed at failure probability >= 0.5
    predictions = spark.createDataFrame(
        [
            (1, day(3), "comp1", 0.8),
            (1, day(5), "comp1", 0.3),  # listed 3 days before its failure on 03-08
            (1, day(7), "comp1", 0.2),  # and the day before
            (2, day(5), "comp2", 0.9),  # never listed before its failure on 03-06
            (3, day(1), "comp3", 0.5),  # listed (exactly 0.5) the day before its failure on 03-02
            (4, day(10), "comp4", 0.1),  # listed 5 days before its failure on 03-15, after the hold-out
            (5, day(4), "none", 0.4),  # listed, and nothing failed: a false alarm
            (5, day(6), "none", 0.7),
        ],
        "machine_id int, date date, label string, probability_none double",
    )
    failures = spark.createDataFrame(
        [
            (1, datetime(2015, 3, 8, 6), "comp1"),
            (1, datetime(2015, 3, 8, 6), "comp2"),  # the same machine and day: one failure for the crews
            (2, datetime(2015, 3, 6, 6), "comp2"),
            (3, datetime(2015, 3, 2, 6), "comp3"),
            (4, datetime(2015, 3, 15, 6), "comp4"),
        ],
        "machine_id int, datetime timestamp, failure string",
    )
    lead = lead_times(predictions, failures, (day(1), day(10)), 0.5)
    # 1 day before: machines 1, 2 and 3 (machine 4's day before is after the hold-out); 1 and 3 were listed.
    # 3 days before: 1 (listed) and 2 (03-03); 3's and 4's days lie outside. 5 days before: 1, 2 and 4 (listed).
    assert [(r["days_before"], r["failures"], r["on_list"]) for r in lead["by_days_before"]] == [
        (1, 3, 2),
        (3, 2, 1),
        (5, 3, 1),
    ]
    assert lead["by_days_before"][0]["share"] == pytest.approx(2 / 3)
    # caught: listed on any of the 7 days before, of the failures whose day before was held out (1, 2, 3)
    assert (lead["failures"], lead["caught"], lead["false_alarms"]) == (3, 2, 1)
    assert lead["false_alarms_per_caught_failure"] == pytest.approx(0.5)
    # by machine-day: listed at 03-05, 03-07 (machine 1), 03-01 (3), 03-10 (4) and 03-04 (5, the false alarm);
    # six machine-days had a failure within 7 days (all but machine 5's), machine 2's and machine 1's 03-03 unlisted
    assert (lead["machine_days_listed"], lead["machine_days_failing"]) == (5, 6)
    assert lead["precision"] == pytest.approx(4 / 5) and lead["recall"] == pytest.approx(4 / 6)


@pytest.mark.unit
def test_the_worklist_threshold_is_the_lowest_reaching_the_target_precision_within_the_capacity(spark):
    day = lambda d: date(2015, 3, d)  # noqa: E731
    # (machine, day, label, failure probability): five machine-days failing within 7 days, four not
    rows = [
        (1, day(1), "comp1", 0.9),
        (2, day(1), "comp2", 0.7),
        (3, day(1), "none", 0.6),
        (4, day(1), "none", 0.3),
        (1, day(2), "comp1", 0.95),
        (2, day(2), "comp2", 0.5),
        (3, day(2), "comp3", 0.25),
        (4, day(2), "none", 0.1),
        (5, day(2), "none", 0.05),
    ]
    predictions = spark.createDataFrame(
        [(m, d, label, 1.0 - p) for m, d, label, p in rows],
        "machine_id int, date date, label string, probability_none double",
    )
    table = {row["threshold"]: row for row in threshold_table(predictions, [0.25, 0.5, 0.65, 0.9])}
    # at 0.25: all but 0.1 and 0.05 (7, four on day 1), five failing; at 0.5: 0.9, 0.7, 0.6 on day 1 and 0.95, 0.5
    # on day 2, four failing; at 0.65: 0.9, 0.7 and 0.95; at 0.9: 0.9 and 0.95
    listed = {t: (r["machine_days_listed"], r["listed_failing"], r["most_listed_on_a_day"]) for t, r in table.items()}
    assert listed == {0.25: (7, 5, 4), 0.5: (5, 4, 3), 0.65: (3, 3, 2), 0.9: (2, 2, 1)}
    assert {r["machine_days_failing"] for r in table.values()} == {5}
    assert (table[0.5]["precision"], table[0.5]["recall"]) == pytest.approx((4 / 5, 4 / 5))

    ascending = list(table.values())
    assert choose_threshold(ascending, WorklistTarget(0.8))[0] == 0.5
    assert choose_threshold(ascending, WorklistTarget(0.7))[0] == 0.25  # 5 of 7
    assert choose_threshold(ascending, WorklistTarget(0.8, capacity=2))[0] == 0.65  # 0.5 listed 3 on day 1
    threshold, reason = choose_threshold(ascending[:2], WorklistTarget(0.9))
    assert threshold == 0.5 and reason.startswith("no threshold reached precision 0.9 on the validation days")
    nothing_failed = [{**row, "listed_failing": 0, "machine_days_failing": 0} for row in ascending]
    assert choose_threshold(nothing_failed, WorklistTarget(0.8)) == (
        0.5,
        "the default: no failure within 7 days of a validation day",
    )

    # the worklist uses a configured threshold, else the model's choice, else (an older model) the default
    chosen = {"version": "v2", "worklist": {"threshold": 0.35, "chosen": "the lowest threshold reaching 0.8"}}
    assert worklist_threshold(None, chosen) == (0.35, "model v2: the lowest threshold reaching 0.8")
    assert worklist_threshold(0.2, chosen) == (0.2, "configured")
    assert worklist_threshold(None, {"version": "v1", "worklist": {"threshold": 0.5}})[0] == 0.5


@pytest.mark.unit
def test_class_weightings_and_the_forests_searched_on_the_validation_days(spark):
    labels = spark.createDataFrame([(label,) for label in ["none"] * 6 + ["comp1"] * 2 + ["comp2"]], "label string")
    # 9 rows, 3 classes: balanced gives 9 / (3 x rows of the class)
    weights = {
        weighting: dict(training_rows(labels, ForestParams(class_weighting=weighting)).distinct().collect())
        for weighting in ("balanced", "square_root", "none")
    }
    assert weights["balanced"] == pytest.approx({"none": 0.5, "comp1": 1.5, "comp2": 3.0})
    assert weights["square_root"] == pytest.approx({"none": 0.5**0.5, "comp1": 1.5**0.5, "comp2": 3.0**0.5})
    assert weights["none"] == {"none": 1.0, "comp1": 1.0, "comp2": 1.0}

    # 2,000 healthy rows and 30 failure rows: at most 10 none rows per failure row are fitted on (about 300, a
    # share of 0.15), every failure row is, and each class keeps its total weight
    many = spark.createDataFrame(
        [(label,) for label in ["none"] * 2000 + ["comp1"] * 20 + ["comp2"] * 10], "label string"
    )
    for weighting in ("balanced", "none"):
        fitted = training_rows(many, ForestParams(class_weighting=weighting, none_rows_per_failure_row=10.0))
        rows = {
            row["label"]: (row["rows"], row["weight"])
            for row in fitted.groupBy("label")
            .agg(F.count("*").alias("rows"), F.sum("class_weight").alias("weight"))
            .collect()
        }
        assert 240 <= rows["none"][0] <= 360 and rows["comp1"][0] == 20 and rows["comp2"][0] == 10
        all_rows = dict(
            training_rows(many, ForestParams(class_weighting=weighting, none_rows_per_failure_row=None))
            .groupBy("label")
            .agg(F.sum("class_weight"))
            .collect()
        )
        assert rows["none"][1] == pytest.approx(all_rows["none"], rel=0.2)
        assert rows["comp1"][1] == pytest.approx(all_rows["comp1"])
    assert training_rows(many, ForestParams(none_rows_per_failure_row=None)).count() == 2030
    assert training_rows(many, ForestParams(none_rows_per_failure_row=100.0)).count() == 2030  # 3,000 allowed

    config = {"num_trees": 20, "max_depth": 10, "min_instances_per_node": 5, "seed": 1, "class_weighting": "balanced"}
    searched = forest_candidates({**config, "search_max_depths": [14, 10], "search_class_weightings": ["none"]})
    assert [(c.max_depth, c.class_weighting) for c in searched] == [
        (10, "balanced"),  # the configured forest first: it wins ties
        (10, "none"),
        (14, "balanced"),
        (14, "none"),
    ]
    assert [(c.max_depth, c.num_trees) for c in forest_candidates(config)] == [(10, 20)]
    with pytest.raises(ValueError, match=r"class weightings \['even'\]: each one of balanced, square_root, none"):
        forest_candidates({**config, "search_class_weightings": ["even"]})


@pytest.mark.unit
def test_no_trained_model_says_to_materialize_failure_model_first(spark, tmp_path):
    with pytest.raises(ModelNotUsable, match="No trained failure_model in .*: materialize failure_model first"):
        model_store(spark, tmp_path).load_latest_usable()


def test_a_damaged_model_version_is_named_with_its_path_and_what_to_do(spark, tmp_path):
    rows = spark.createDataFrame([(float(x), float(x % 2)) for x in range(8)], "x double, label double")
    forest = Pipeline(
        stages=[VectorAssembler(inputCols=["x"], outputCol="features"), RandomForestClassifier(numTrees=2, seed=1)]
    ).fit(rows)
    store = model_store(spark, tmp_path)
    manifest = {"version": "20150601T000000Z-abcdef12", "check": {"passed": True, "reason": "test"}}
    path = store.save(TrainedModel(forest, manifest))
    assert store.load_latest_usable().pipeline.stages[-1].getNumTrees == 2

    shutil.rmtree(Path(path) / "stages")  # a version whose files were partly lost
    with pytest.raises(ModelNotUsable, match=rf"version 20150601T000000Z-abcdef12 at {path} cannot be loaded") as error:
        store.load_latest_usable()
    assert "Materialize failure_model again" in str(error.value)

    not_a_forest = Pipeline(stages=[VectorAssembler(inputCols=["x"], outputCol="features")]).fit(rows)
    store.save(TrainedModel(not_a_forest, {**manifest, "version": "20150602T000000Z-abcdef12"}))
    with pytest.raises(ModelNotUsable, match="20150602T000000Z-abcdef12 at .* holds no fitted random forest"):
        store.load_latest_usable()
