"""The failure model: trained on a window of features, judged on a later hold-out period."""

from typing import Optional

import dagster as dg
from pydantic import Field
from pyspark.sql import DataFrame

from batch_scoring.defs.metadata import step_results
from batch_scoring.lib import steps
from batch_scoring.lib.model import CLASS_WEIGHTINGS
from batch_scoring.lib.steps import MODEL_CHECK


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
    validation_days: int = Field(
        default=60,
        description="Days at the end of the training period on which the worklist's threshold is chosen: a forest "
        "fitted on the days before them (7-day gap) scores them. The hold-out stays unseen until the final judgement.",
    )
    worklist_target_precision: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="The worklist's threshold is the lowest failure probability (of 0.05 .. 0.95) at which, on the "
        "validation days, at least this share of listed machine-days had a failure within 7 days.",
    )
    worklist_capacity: Optional[int] = Field(
        default=None,
        gt=0,
        description="At most this many machines on one day's list (the crews' capacity): thresholds that listed "
        "more on some validation day are not chosen. Default: no limit.",
    )
    num_trees: int = Field(default=60, description="Trees in the random forest.")
    max_depth: int = Field(default=10, description="Maximum depth of each tree.")
    class_weighting: str = Field(
        default="balanced",
        description=f"Rows weighted by class: {', '.join(CLASS_WEIGHTINGS)} (each class counting as much as the "
        "others, the square root of that, every row alike).",
    )
    search_max_depths: list[int] = Field(
        default=[14],
        description="Other tree depths tried on the validation days, with every class weighting: the forest with "
        "the best validation macro F1 is trained and judged on the hold-out (ties keep the configured one).",
    )
    search_class_weightings: list[str] = Field(
        default=["square_root"],
        description="Other class weightings tried on the validation days, with every depth. Empty lists with "
        "search_max_depths: no search, the configured forest.",
    )
    none_rows_per_failure_row: Optional[float] = Field(
        default=3.0,
        gt=0,
        description="Rows of class none each forest is fitted on, per failure row of its training days: drawn at "
        "random (seeded), each weighing more in proportion, so fitting time follows the failures, not the fleet's "
        "healthy days. Validation and hold-out days are scored in full. None: fit on every row.",
    )
    min_instances_per_node: int = Field(default=5, description="Minimum rows in each leaf.")
    seed: int = Field(default=42, description="Random seed of the forest.")
    min_macro_f1: float = Field(
        default=0.5,
        description="The check usable_for_scoring fails below this hold-out macro F1 over comp1..comp4; "
        "a model failing its check is not used for scoring.",
    )


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
            MODEL_CHECK,
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
    settings = steps.TrainingSettings.from_config(config.model_dump())
    yield from step_results(context, lambda: steps.train(features, raw_failures, settings, context.run.run_id))
