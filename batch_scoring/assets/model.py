"""The failure model: trained on a window of features, judged on a later hold-out period."""

import time
from datetime import date
from typing import Optional

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from batch_scoring.features import CLASSES, label_observations
from batch_scoring.metadata import table_value
from batch_scoring.model import (
    FAILURE_CLASSES,
    ForestParams,
    classification_report,
    confusion_counts,
    feature_importances,
    fit,
    majority_class,
    predict,
    temporal_split,
)
from batch_scoring.model_store import TrainedModel

CHECK_NAME = "usable_for_scoring"
TOP_FEATURES = 15
METRICS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("class", "string"),
        dg.TableColumn("precision", "float"),
        dg.TableColumn("recall", "float"),
        dg.TableColumn("f1", "float"),
        dg.TableColumn("support", "int"),
        dg.TableColumn("baseline_f1", "float"),
    ]
)
CONFUSION_SCHEMA = dg.TableSchema(
    columns=[dg.TableColumn("true_class", "string"), *[dg.TableColumn(f"predicted_{c}", "int") for c in CLASSES]]
)
IMPORTANCE_SCHEMA = dg.TableSchema(columns=[dg.TableColumn("feature", "string"), dg.TableColumn("importance", "float")])


class FailureModelConfig(dg.Config):
    first_day: Optional[str] = Field(
        default=None, description="First observation day (YYYY-MM-DD) to learn from; default: the first features day."
    )
    last_day: Optional[str] = Field(
        default=None,
        description="Last observation day (YYYY-MM-DD) of the window, hold-out included; default: the last features "
        "day whose 7-day horizon has been observed.",
    )
    holdout_days: int = Field(
        default=60, description="Days at the end of the window held out for evaluation; training stops 7 days earlier."
    )
    num_trees: int = Field(default=60, description="Trees in the random forest.")
    max_depth: int = Field(default=10, description="Maximum depth of each tree.")
    min_instances_per_node: int = Field(default=5, description="Minimum rows in each leaf.")
    seed: int = Field(default=42, description="Random seed of the forest.")
    min_macro_f1: float = Field(
        default=0.5,
        description="The check usable_for_scoring fails below this hold-out macro F1 over comp1..comp4; "
        "a model failing its check is not used for scoring.",
    )


def _metrics_rows(report: dict, baseline: dict) -> list[dict]:
    return [
        {**{"class": name}, **report["per_class"][name], "baseline_f1": baseline["per_class"][name]["f1"]}
        for name in CLASSES
    ]


def _confusion_rows(confusion: dict[tuple[str, str], int]) -> list[dict]:
    return [{"true_class": t, **{f"predicted_{p}": confusion.get((t, p), 0) for p in CLASSES}} for t in CLASSES]


@dg.asset(
    group_name="model",
    description=(
        "Random forest (Spark MLlib PipelineModel) predicting which component fails within 7 days, trained on a "
        "window of features and evaluated on a later, disjoint hold-out period. Every materialization is kept as "
        "its own version; scoring uses the newest one if its check passed."
    ),
    kinds={"spark", "mllib"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset="failure_model",
            blocking=True,
            description="Hold-out macro F1 over comp1..comp4 reaches the configured minimum and beats the "
            "majority-class baseline.",
        )
    ],
)
def failure_model(
    context: dg.AssetExecutionContext, config: FailureModelConfig, features: DataFrame, raw_failures: DataFrame
):
    # failures are known as far as features (i.e. telemetry) reach: to the end of the last features day
    observed_until = features.agg(F.max("observed_at")).first()[0]
    if observed_until is None:
        raise dg.Failure(description="No features to train on: materialize features for the training window first.")
    window = features
    if config.first_day:
        window = window.where(F.col("date") >= F.lit(date.fromisoformat(config.first_day)))
    if config.last_day:
        window = window.where(F.col("date") <= F.lit(date.fromisoformat(config.last_day)))
    labelled = label_observations(window, raw_failures, observed_until).persist(StorageLevel.MEMORY_AND_DISK)
    last_labelled = labelled.agg(F.max("date")).first()[0]
    if last_labelled is None:
        raise dg.Failure(description="No observation in the training window has its 7-day horizon observed yet.")
    split = temporal_split(labelled, last_labelled, config.holdout_days)
    train_labels = {row["label"]: row["count"] for row in split.train.groupBy("label").count().collect()}
    if not set(train_labels) & set(FAILURE_CLASSES):
        raise dg.Failure(
            description=f"No failure in the training days up to {split.train_last_day}: widen the window "
            f"or shorten holdout_days ({config.holdout_days})."
        )
    params = ForestParams(config.num_trees, config.max_depth, config.min_instances_per_node, config.seed)
    pipeline = fit(split.train, params)
    holdout = predict(pipeline, split.holdout).withColumn("baseline", F.lit(majority_class(split.train)))
    holdout = holdout.persist(StorageLevel.MEMORY_AND_DISK)
    confusion = confusion_counts(holdout)
    report = classification_report(confusion)
    baseline = classification_report(confusion_counts(holdout, "baseline"))
    holdout_rows = sum(confusion.values())
    if holdout_rows == 0:
        raise dg.Failure(description=f"The hold-out period from {split.holdout_first_day} has no labelled rows.")

    passed = report["macro_f1"] >= config.min_macro_f1 and report["macro_f1"] > baseline["macro_f1"]
    reason = (
        f"hold-out macro F1 {report['macro_f1']:.3f} (minimum {config.min_macro_f1}, "
        f"majority-class baseline {baseline['macro_f1']:.3f})"
    )
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + context.run.run_id[:8]
    manifest = {
        "version": version,
        "run_id": context.run.run_id,
        "trained_on": [str(split.train.agg(F.min("date")).first()[0]), str(split.train_last_day)],
        "held_out": [str(split.holdout_first_day), str(last_labelled)],
        "params": params.__dict__,
        "macro_f1": report["macro_f1"],
        "baseline_macro_f1": baseline["macro_f1"],
        "check": {"passed": passed, "reason": reason},
    }
    importances = feature_importances(pipeline)[:TOP_FEATURES]
    yield dg.Output(
        TrainedModel(pipeline, manifest),
        metadata={
            "version": version,
            "training_days": f"{manifest['trained_on'][0]} .. {manifest['trained_on'][1]}",
            "holdout_days": f"{manifest['held_out'][0]} .. {manifest['held_out'][1]}",
            "train_rows": dg.MetadataValue.int(sum(train_labels.values())),
            "train_label_counts": dg.MetadataValue.json(train_labels),
            "holdout_rows": dg.MetadataValue.int(holdout_rows),
            "macro_f1": dg.MetadataValue.float(report["macro_f1"]),
            "baseline_macro_f1": dg.MetadataValue.float(baseline["macro_f1"]),
            "accuracy": dg.MetadataValue.float(report["accuracy"]),
            "holdout_metrics": table_value(_metrics_rows(report, baseline), METRICS_SCHEMA),
            "confusion_matrix": table_value(_confusion_rows(confusion), CONFUSION_SCHEMA),
            "feature_importances": table_value(
                [{"feature": name, "importance": value} for name, value in importances], IMPORTANCE_SCHEMA
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=passed,
        description=("Usable: " if passed else "Not used for scoring: ") + reason,
        metadata={
            "macro_f1": dg.MetadataValue.float(report["macro_f1"]),
            "baseline_macro_f1": dg.MetadataValue.float(baseline["macro_f1"]),
            "min_macro_f1": dg.MetadataValue.float(config.min_macro_f1),
            "version": version,
        },
    )
