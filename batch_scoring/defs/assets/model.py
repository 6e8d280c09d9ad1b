"""The failure model: trained on a window of features, judged on a later hold-out period."""

import time
from datetime import date
from typing import Optional

import dagster as dg
from pydantic import Field
from pyspark.sql import DataFrame

from batch_scoring.defs.metadata import records_table
from batch_scoring.lib.features import CLASSES
from batch_scoring.lib.model import Evaluation, ForestParams, TrainingError, feature_importances, train_and_evaluate
from batch_scoring.storage.models import TrainedModel

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
        {
            "class": name,
            **{key: round(value, 4) for key, value in report["per_class"][name].items()},
            "baseline_f1": round(baseline["per_class"][name]["f1"], 4),
        }
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
    params = ForestParams(config.num_trees, config.max_depth, config.min_instances_per_node, config.seed)
    first_day = date.fromisoformat(config.first_day) if config.first_day else None
    last_day = date.fromisoformat(config.last_day) if config.last_day else None
    try:
        evaluation = train_and_evaluate(features, raw_failures, first_day, last_day, config.holdout_days, params)
    except TrainingError as error:
        raise dg.Failure(description=str(error)) from error
    macro_f1, baseline_f1 = evaluation.report["macro_f1"], evaluation.baseline_report["macro_f1"]
    passed = macro_f1 >= config.min_macro_f1 and macro_f1 > baseline_f1
    reason = (
        f"hold-out macro F1 {macro_f1:.3f} (minimum {config.min_macro_f1}, majority-class baseline {baseline_f1:.3f})"
    )
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + context.run.run_id[:8]
    manifest = {
        "version": version,
        "run_id": context.run.run_id,
        "trained_on": [str(day) for day in evaluation.trained_on],
        "held_out": [str(day) for day in evaluation.held_out],
        "params": params.__dict__,
        "macro_f1": macro_f1,
        "baseline_macro_f1": baseline_f1,
        "check": {"passed": passed, "reason": reason},
    }
    yield dg.Output(TrainedModel(evaluation.pipeline, manifest), metadata=_model_metadata(evaluation, version))
    yield dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=passed,
        description=("Usable: " if passed else "Not used for scoring: ") + reason,
        metadata={
            "macro_f1": dg.MetadataValue.float(round(macro_f1, 4)),
            "baseline_macro_f1": dg.MetadataValue.float(round(baseline_f1, 4)),
            "min_macro_f1": dg.MetadataValue.float(config.min_macro_f1),
            "version": version,
        },
    )


def _model_metadata(evaluation: Evaluation, version: str) -> dict[str, object]:
    report, baseline = evaluation.report, evaluation.baseline_report
    importances = feature_importances(evaluation.pipeline)[:TOP_FEATURES]
    return {
        "version": version,
        "training_days": f"{evaluation.trained_on[0]} .. {evaluation.trained_on[1]}",
        "holdout_days": f"{evaluation.held_out[0]} .. {evaluation.held_out[1]}",
        "train_rows": dg.MetadataValue.int(sum(evaluation.train_label_counts.values())),
        "train_label_counts": dg.MetadataValue.json(evaluation.train_label_counts),
        "holdout_rows": dg.MetadataValue.int(evaluation.holdout_rows),
        "macro_f1": dg.MetadataValue.float(round(report["macro_f1"], 4)),
        "baseline_macro_f1": dg.MetadataValue.float(round(baseline["macro_f1"], 4)),
        "accuracy": dg.MetadataValue.float(round(report["accuracy"], 4)),
        "holdout_metrics": records_table(_metrics_rows(report, baseline), METRICS_SCHEMA),
        "confusion_matrix": records_table(_confusion_rows(evaluation.confusion), CONFUSION_SCHEMA),
        "feature_importances": records_table(
            [{"feature": name, "importance": round(value, 4)} for name, value in importances], IMPORTANCE_SCHEMA
        ),
    }
