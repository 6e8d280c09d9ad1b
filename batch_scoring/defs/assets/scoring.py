"""Daily scoring and the crews' worklist, one partition a day."""

from typing import Optional

import dagster as dg
from pydantic import Field
from pyspark.sql import DataFrame

from batch_scoring.defs.assets.common import run_days, scoring_model_input, table_asset_args, table_spec
from batch_scoring.defs.metadata import column_schema, step_results
from batch_scoring.defs.partitions import DAILY_PARTITIONS, SPARK_BACKFILL_POLICY, MissingDays, lookback
from batch_scoring.lib import steps
from batch_scoring.lib.crew_page import BASELINE_DAYS, HISTORY_DAYS
from batch_scoring.lib.model import TrainedModel
from batch_scoring.lib.scoring import CREW_CSV_SCHEMA, PREDICTIONS_SCHEMA, TRAILING_DAYS, WORKLIST_SCHEMA
from batch_scoring.lib.steps import COLUMN_SCHEMA_KEY, MAX_FAILURE_SHARE_CHANGE

GROUP = "scoring"
WORKLIST_FILES_KEY = "worklist_files"  # the IO manager writing the worklist's CSV files
CREW_PAGES_KEY = "crew_pages"  # the IO manager writing the crews' HTML pages


@dg.asset(
    group_name=GROUP,
    description=(
        "For each machine active that day: the predicted component to fail within 7 days (none, comp1..comp4), "
        "each class's probability, the probability that any component fails, the model version used and when "
        "it was scored."
    ),
    **table_asset_args(PREDICTIONS_SCHEMA, daily=True),
    # its own 7 days before the run's first day, for the failure-share check: a declared self-dependency;
    # days not scored yet are allowed and named in the check
    ins={
        "trailing_predictions": lookback(
            TRAILING_DAYS, key="daily_predictions", days_before=1, missing=MissingDays.ALLOWED
        ),
        "failure_model": scoring_model_input(),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "one_row_per_active_machine",
            asset="daily_predictions",
            blocking=True,
            description="Each day has exactly one prediction for each machine with features that day.",
        ),
        dg.AssetCheckSpec(
            "probabilities_valid",
            asset="daily_predictions",
            blocking=True,
            description="Every probability lies in [0, 1] and each row's class probabilities sum to 1.",
        ),
        dg.AssetCheckSpec(
            "failure_share_stable",
            asset="daily_predictions",
            description=f"Warns when a day's share of predicted failures moves more than "
            f"{MAX_FAILURE_SHARE_CHANGE:.0%} (absolute) from the mean of the 7 days before.",
        ),
    ],
)
def daily_predictions(
    context: dg.AssetExecutionContext,
    features: DataFrame,
    failure_model: TrainedModel,
    trailing_predictions: DataFrame,
):
    days = run_days(context)
    yield from step_results(context, lambda: steps.predictions(features, failure_model, trailing_predictions, days))


class WorklistConfig(dg.Config):
    min_failure_probability: Optional[float] = Field(
        default=None,
        description="Machines whose probability of a component failing within 7 days reaches this go on the list. "
        "Default: the threshold failure_model chose on its validation days for its target precision.",
    )


@dg.multi_asset(
    name="maintenance_worklist",
    specs=[
        table_spec(
            "maintenance_worklist",
            WORKLIST_SCHEMA,
            daily=True,
            group_name=GROUP,
            deps=["daily_predictions", "failure_model"],  # the threshold the model's manifest holds
            description="For the maintenance crews: machines whose probability of a component failing within 7 "
            "days reaches the threshold, most urgent first, with the likeliest component.",
        ),
        dg.AssetSpec(
            "maintenance_worklist_csv",
            group_name=GROUP,
            deps=["maintenance_worklist"],
            kinds={"csv"},
            partitions_def=DAILY_PARTITIONS,
            metadata={COLUMN_SCHEMA_KEY: column_schema(CREW_CSV_SCHEMA)},
            description="Each day's worklist as a CSV file a person can open: "
            "<warehouse>/worklists/maintenance_worklist_YYYY-MM-DD.csv, written even when the list is empty; "
            "probabilities in percent, times in UTC (the model version is in maintenance_worklist).",
        ).with_io_manager_key(WORKLIST_FILES_KEY),
    ],
    ins={"model_manifest": dg.AssetIn(key="failure_model")},
    backfill_policy=SPARK_BACKFILL_POLICY,
)
def maintenance_worklist(
    context: dg.AssetExecutionContext,
    config: WorklistConfig,
    daily_predictions: DataFrame,
    model_manifest: dict,
):
    days = run_days(context)
    yield from step_results(
        context,
        lambda: steps.maintenance_worklist(daily_predictions, days, config.min_failure_probability, model_manifest),
    )


@dg.asset(
    group_name=GROUP,
    kinds={"html"},
    io_manager_key=CREW_PAGES_KEY,
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=SPARK_BACKFILL_POLICY,
    description="Each day's page for the crews, one self-contained HTML file beside the CSV: "
    "<warehouse>/worklists/maintenance_worklist_YYYY-MM-DD.html. Per listed machine: the likely component, the "
    "probability in percent, the date to act before, the days in a row on the list, when that component was last "
    f"replaced, model and age, the sensor furthest from the machine's own {BASELINE_DAYS}-day baseline, and the "
    f"failure probability of the last {HISTORY_DAYS} days as a small chart.",
    # the days before each day, declared: the list and the probabilities for the history (days not scored leave
    # gaps in it), the features for the sensors' baseline
    ins={
        "maintenance_worklist": lookback(HISTORY_DAYS, missing=MissingDays.ALLOWED),
        "daily_predictions": lookback(HISTORY_DAYS, missing=MissingDays.ALLOWED),
        "features": lookback(BASELINE_DAYS + 1, missing=MissingDays.ALLOWED),
    },
)
def maintenance_worklist_page(
    context: dg.AssetExecutionContext,
    maintenance_worklist: DataFrame,
    daily_predictions: DataFrame,
    features: DataFrame,
):
    days = run_days(context)
    yield from step_results(context, lambda: steps.crew_pages(maintenance_worklist, daily_predictions, features, days))
