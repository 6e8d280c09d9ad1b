"""The failure model: trained on a window of features, judged on a later hold-out period."""

from typing import Optional

import dagster as dg
from pydantic import Field
from pyspark.sql import DataFrame

from batch_scoring.defs.metadata import step_results
from batch_scoring.lib import steps
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
    num_trees: int = Field(default=60, description="Trees in the random forest.")
    max_depth: int = Field(default=10, description="Maximum depth of each tree.")
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
