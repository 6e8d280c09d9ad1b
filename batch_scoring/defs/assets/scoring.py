"""Daily scoring and the crews' worklist, one partition a day."""

import datetime as dt

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from batch_scoring.defs.assets.common import table_asset_args, table_spec
from batch_scoring.defs.metadata import COLUMN_SCHEMA_KEY, column_schema, preview
from batch_scoring.defs.partitions import DAILY_PARTITIONS, SPARK_BACKFILL_POLICY, MissingDays, day_span, lookback
from batch_scoring.lib.scoring import (
    PREDICTIONS_SCHEMA,
    WORKLIST_SCHEMA,
    failure_shares,
    invalid_probability_rows,
    prediction_counts_per_day,
    score,
    share_drifts,
)
from batch_scoring.lib.scoring import worklist as build_worklist
from batch_scoring.storage.models import TrainedModel

GROUP = "scoring"
MAX_FAILURE_SHARE_CHANGE = 0.10  # a warning when a day's predicted-failure share moves further than this
TRAILING_DAYS = 7
TOP_WORKLIST_ROWS = 10
WORKLIST_FILES_KEY = "worklist_files"  # the IO manager writing the worklist's CSV files


def _days(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


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
            TRAILING_DAYS, key="daily_predictions", skip_own_day=True, missing=MissingDays.ALLOWED
        )
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
    days = _days(context)
    scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    rows = score(failure_model.pipeline, features, failure_model.version, scored_at).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    per_day = prediction_counts_per_day(rows, features)
    if not any(day["predictions"] for day in per_day):
        raise dg.Failure(
            description=f"Nothing to score for {day_span(days)}: features has no rows for those days. "
            "Materialize raw_telemetry and features for them first."
        )
    # the run's own days win over what an earlier run stored for them
    shares = {**failure_shares(trailing_predictions.where(F.col("date") < F.lit(days[0]))), **failure_shares(rows)}
    yield dg.Output(
        rows,
        metadata={
            "model_version": failure_model.version,
            "scored_at": scored_at.isoformat(sep=" "),
            "predicted_failure_share": dg.MetadataValue.json(
                {day.isoformat(): round(shares[day], 4) for day in days if day in shares}
            ),
        },
    )
    yield _one_row_per_active_machine(per_day)
    invalid = invalid_probability_rows(rows)
    yield dg.AssetCheckResult(check_name="probabilities_valid", passed=invalid == 0, metadata={"invalid_rows": invalid})
    yield _failure_share_stable(shares, days)


def _one_row_per_active_machine(per_day: list[dict]) -> dg.AssetCheckResult:
    unsound_days = [
        {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in day.items()}
        for day in per_day
        if not day["predictions"] == day["machines_predicted"] == day["active_machines"]
    ]
    return dg.AssetCheckResult(
        check_name="one_row_per_active_machine",
        passed=not unsound_days,
        metadata={"days_checked": len(per_day), "unsound_days": dg.MetadataValue.json(unsound_days)},
    )


def _failure_share_stable(shares: dict[dt.date, float], days: list[dt.date]) -> dg.AssetCheckResult:
    """Each day's predicted-failure share against the mean of the week before; the days of that week
    that were never scored are named, not guessed."""
    drifts = share_drifts(shares, days, MAX_FAILURE_SHARE_CHANGE)
    earlier_days = [days[0] - dt.timedelta(days=n) for n in range(TRAILING_DAYS, 0, -1)]
    return dg.AssetCheckResult(
        check_name="failure_share_stable",
        passed=not drifts,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "days_outside": dg.MetadataValue.json(drifts),
            "trailing_days_not_scored": dg.MetadataValue.json(
                [day.isoformat() for day in earlier_days if day not in shares]
            ),
        },
    )


class WorklistConfig(dg.Config):
    min_failure_probability: float = Field(
        default=0.5,
        description="Machines whose probability of a component failing within 7 days reaches this go on the list.",
    )


@dg.multi_asset(
    name="maintenance_worklist",
    specs=[
        table_spec(
            "maintenance_worklist",
            WORKLIST_SCHEMA,
            daily=True,
            group_name=GROUP,
            deps=["daily_predictions"],
            description="For the maintenance crews: machines whose probability of a component failing within 7 "
            "days reaches the threshold, most urgent first, with the likeliest component.",
        ),
        dg.AssetSpec(
            "maintenance_worklist_csv",
            group_name=GROUP,
            deps=["maintenance_worklist"],
            kinds={"csv"},
            partitions_def=DAILY_PARTITIONS,
            metadata={COLUMN_SCHEMA_KEY: column_schema(WORKLIST_SCHEMA)},
            description="Each day's worklist as a CSV file a person can open: "
            "<warehouse>/worklists/maintenance_worklist_YYYY-MM-DD.csv, written even when the list is empty.",
        ).with_io_manager_key(WORKLIST_FILES_KEY),
    ],
    backfill_policy=SPARK_BACKFILL_POLICY,
)
def maintenance_worklist(context: dg.AssetExecutionContext, config: WorklistConfig, daily_predictions: DataFrame):
    rows = build_worklist(daily_predictions, config.min_failure_probability).persist(StorageLevel.MEMORY_AND_DISK)
    counts = {row["date"].isoformat(): row["count"] for row in rows.groupBy("date").count().collect()}
    last_day = context.partition_keys[-1]
    yield dg.Output(
        rows,
        output_name="maintenance_worklist",
        metadata={
            "min_failure_probability": dg.MetadataValue.float(config.min_failure_probability),
            "machines_listed": dg.MetadataValue.json({day: counts.get(day, 0) for day in context.partition_keys}),
            "most_urgent": preview(
                rows.where(F.col("date") == F.lit(dt.date.fromisoformat(last_day))).orderBy("rank"), TOP_WORKLIST_ROWS
            ),
        },
    )
    yield dg.Output(rows, output_name="maintenance_worklist_csv")
