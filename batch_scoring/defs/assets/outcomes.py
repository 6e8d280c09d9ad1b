"""What became of the predictions: each day, the outcomes of the predictions made 7 days before."""

import dagster as dg
from pyspark.sql import DataFrame

from batch_scoring.defs.assets.common import run_days, table_asset_args
from batch_scoring.defs.metadata import step_results
from batch_scoring.defs.partitions import MissingDays, lookback
from batch_scoring.lib import steps
from batch_scoring.lib.outcomes import OUTCOME_DELAY_DAYS, OUTCOMES_SCHEMA, RECENT_OUTCOME_DAYS
from batch_scoring.lib.steps import MAX_OUTCOME_SHORTFALL, OUTCOMES_CHECK
from batch_scoring.lib.tables import FAILURES

GROUP = "outcomes"


@dg.asset(
    group_name=GROUP,
    description=(
        f"Day X holds the predictions of day X - {OUTCOME_DELAY_DAYS}, whose 168 hours ended with day X, each with "
        "the component its machine was on that day's worklist for (none: not listed) and the first component that "
        "did fail in those hours (none: none). Its metadata: the worklist's realized precision and recall by "
        "machine-day, overall and per component."
    ),
    **table_asset_args(OUTCOMES_SCHEMA, daily=True),
    # the predictions and the list of 7 days before, the failures of the 7 days up to the day, and its own days
    # before for the check; days never scored give no outcomes (said in the metadata), failures may have quiet days
    ins={
        "daily_predictions": lookback(1, days_before=OUTCOME_DELAY_DAYS, missing=MissingDays.ALLOWED),
        "maintenance_worklist": lookback(1, days_before=OUTCOME_DELAY_DAYS, missing=MissingDays.ALLOWED),
        "raw_failures": lookback(OUTCOME_DELAY_DAYS, key=FAILURES.asset, missing=MissingDays.QUIET),
        "earlier_outcomes": lookback(
            RECENT_OUTCOME_DAYS - 1, key="prediction_outcomes", days_before=1, missing=MissingDays.ALLOWED
        ),
        "model_manifest": dg.AssetIn(key="failure_model"),  # its manifest: the hold-out figures
    },
    check_specs=[
        dg.AssetCheckSpec(
            OUTCOMES_CHECK,
            asset="prediction_outcomes",
            description=f"Warns when the worklist's realized precision or recall over the last {RECENT_OUTCOME_DAYS} "
            f"days of outcomes falls more than {MAX_OUTCOME_SHORTFALL} below the newest usable model's hold-out "
            "figures: a sign to look at the data and train failure_model again.",
        )
    ],
)
def prediction_outcomes(
    context: dg.AssetExecutionContext,
    daily_predictions: DataFrame,
    maintenance_worklist: DataFrame,
    raw_failures: DataFrame,
    earlier_outcomes: DataFrame,
    model_manifest: dict,
):
    days = run_days(context)
    yield from step_results(
        context,
        lambda: steps.outcomes(
            daily_predictions, maintenance_worklist, raw_failures, earlier_outcomes, model_manifest, days
        ),
    )
