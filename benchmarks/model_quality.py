"""The failure model's quality on a simulated fleet, measured on a later hold-out period.

    .venv/bin/python benchmarks/model_quality.py                              # 100 machines x 240 days
    .venv/bin/python benchmarks/model_quality.py --machines 1000 --days 365 --holdout-days 60
    .venv/bin/python benchmarks/model_quality.py --target-precision 0.9 --capacity 5
    .venv/bin/python benchmarks/model_quality.py --like ../shared/data/pdm-2015   # real events, simulated telemetry

Simulates the fleet in memory (no files, no Dagster run), builds its features with the project's one feature
function and trains and evaluates with the failure_model asset's own code (`lib.model.train_and_evaluate`,
the asset's default config: its forest search and worklist target on as many validation days as held out).
Prints the hold-out macro F1 against the majority-class baseline, each
component's precision, recall and precision-recall AUC, the calibration bands, and how often a machine whose
component failed that day is still flagged for that component at the day's end, once it was replaced, and
the worklist's threshold chosen on the validation days (as many as held out) with the lists it gives.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import functions as F

from batch_scoring import settings
from batch_scoring.defs.assets.model import FailureModelConfig
from batch_scoring.lib.features import build_features, label_observations
from batch_scoring.lib.ingest import check_rows, kept_rows, numbered_lines, read_header
from batch_scoring.lib.model import FAILURE_CLASSES, predict, train_and_evaluate
from batch_scoring.lib.simulator import Fleet, simulate_fleet, simulate_like
from batch_scoring.lib.spark import build_spark_session
from batch_scoring.lib.steps import TrainingSettings
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, TELEMETRY


def flagged_after_failure(evaluation, features, failures) -> tuple[int, int]:
    """Of the hold-out's observations at the end of a day with a failure (its component replaced that day): how
    many, and how many the model flags for that same component."""
    held_out = features.where(F.col("date") >= F.lit(evaluation.held_out[0]))
    observed_until = features.agg(F.max("observed_at")).first()[0]
    predicted = predict(evaluation.pipeline, label_observations(held_out, failures, observed_until))
    failed = failures.select("machine_id", F.to_date("datetime").alias("date"), F.col("failure").alias("failed"))
    after = predicted.join(failed, ["machine_id", "date"])
    return after.count(), after.where(F.col("predicted_component") == F.col("failed")).count()


def like_fleet(spark, source_dir: Path, seed: int) -> Fleet:
    """The real tables of `source_dir` with telemetry simulated for them (`simulate --like`), read back through the
    ingest's own row checks."""
    with tempfile.TemporaryDirectory() as out:
        written = simulate_like(spark, source_dir, Path(out), None, None, seed)
        tables = {}
        for table in (MACHINES, TELEMETRY, ERRORS, MAINTENANCE, FAILURES):
            path = written[table.name]
            checked = check_rows(numbered_lines(spark, path).lines, table, str(path), read_header(path))
            tables[table.name] = kept_rows(checked, table).localCheckpoint()
    return Fleet(**tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--days", type=int, default=240)
    parser.add_argument("--holdout-days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--target-precision", type=float, default=0.8, help="the worklist's, on the validation days")
    parser.add_argument("--capacity", type=int, help="at most this many machines on one day's list")
    parser.add_argument("--like", type=Path, help="the real tables' folder: their events, simulated telemetry")
    args = parser.parse_args()
    spark = build_spark_session(settings.spark_config())
    began = time.perf_counter()
    if args.like:
        fleet = like_fleet(spark, args.like, args.seed)
        first, last = fleet.telemetry.agg(F.min(F.to_date("datetime")), F.max(F.to_date("datetime"))).first()
        start, end = first, last + timedelta(days=1)
        fleet_name = f"like {args.like}, {fleet.machines.count()} machines x {(end - start).days} days"
    else:
        start = date(2015, 1, 1)
        end = start + timedelta(days=args.days)
        fleet = simulate_fleet(spark, args.machines, start, args.days, args.seed)
        fleet_name = f"{args.machines} machines x {args.days} days"
    failures = fleet.failures.localCheckpoint()
    features = build_features(fleet.telemetry, fleet.errors, fleet.maintenance, fleet.machines, start, end).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    print(f"{fleet_name} (seed {args.seed}): {features.count():,} feature rows")
    config = FailureModelConfig(
        holdout_days=args.holdout_days,
        validation_days=args.holdout_days,
        worklist_target_precision=args.target_precision,
        worklist_capacity=args.capacity,
    )
    training = TrainingSettings.from_config(config.model_dump())
    evaluation = train_and_evaluate(
        features,
        failures,
        None,
        None,
        training.holdout_days,
        training.candidates,
        training.validation_days,
        training.worklist,
    )
    report, baseline = evaluation.report, evaluation.baseline_report
    print(f"trained on {evaluation.trained_on[0]} .. {evaluation.trained_on[1]}, held out {evaluation.held_out[0]} ..")
    print(f"hold-out macro F1 {report['macro_f1']:.3f} (majority-class baseline {baseline['macro_f1']:.3f})")
    print(f"{'class':8} {'precision':>9} {'recall':>7} {'PR AUC':>7} {'rows':>6}")
    for name in FAILURE_CLASSES:
        figures, auc = report["per_class"][name], evaluation.pr_auc[name]
        auc_text = f"{auc:.3f}" if auc is not None else "-"
        print(f"{name:8} {figures['precision']:9.3f} {figures['recall']:7.3f} {auc_text:>7} {figures['support']:6d}")
    print("calibration: predicted failure probability -> rows, share that failed within 7 days")
    for band in evaluation.calibration:
        print(f"  {band['failure_probability']}: {band['rows']:6d}  {band['observed_failure_share']:.2f}")
    failure_days, flagged = flagged_after_failure(evaluation, features, failures)
    print(f"failure days in the hold-out: {failure_days}; flagged again for the replaced component: {flagged}")
    lead = evaluation.lead_time
    for row in evaluation.validation.search:
        print(f"  validation: max_depth {row['max_depth']}, {row['class_weighting']}: macro F1 {row['macro_f1']:.3f}")
    params = evaluation.validation.params
    print(f"chosen: max_depth {params.max_depth}, class weighting {params.class_weighting}")
    choice = evaluation.worklist
    validated_on = " .. ".join(map(str, choice.validated_on)) if choice.validated_on else "no validation days"
    print(f"worklist threshold {choice.threshold}, chosen on {validated_on}: {choice.reason}")
    print(f"{'threshold':>9} {'listed':>7} {'most/day':>8} {'precision':>9} {'recall':>7}  (validation days)")
    for row in choice.table:
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        print(
            f"{row['threshold']:9.2f} {row['machine_days_listed']:7d} {row['most_listed_on_a_day']:8d} "
            f"{precision:>9} {recall:>7}"
        )
    print(f"hold-out worklists at >= {choice.threshold}: failures on the list k days before (of those held out)")
    for row in lead["by_days_before"]:
        print(f"  {row['days_before']} day(s): {row['on_list']} of {row['failures']}")
    per_caught = lead["false_alarms_per_caught_failure"]
    print(
        f"caught within 7 days: {lead['caught']} of {lead['failures']} failures; {lead['false_alarms']} false alarms "
        f"(machine-days), {per_caught if per_caught is None else round(per_caught, 2)} per caught failure"
    )
    print(
        f"by machine-day: {lead['machine_days_listed']} listed, {lead['machine_days_failing']} with a failure within "
        f"7 days; precision {lead['precision']:.3f}, recall {lead['recall']:.3f}"
    )
    print(f"{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
