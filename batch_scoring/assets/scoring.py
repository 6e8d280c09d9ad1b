"""Daily scoring and the crews' worklist, one partition a day."""

import csv
import datetime as dt
import os
from pathlib import Path

import dagster as dg
from pydantic import Field
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from batch_scoring.assets.common import table_asset_args
from batch_scoring.metadata import preview
from batch_scoring.model_store import TrainedModel
from batch_scoring.resources import Warehouse
from batch_scoring.scoring import (
    PREDICTIONS_SCHEMA,
    WORKLIST_SCHEMA,
    failure_shares,
    invalid_probability_rows,
    rows_per_machine,
    score,
    share_drifts,
    worklist,
)

GROUP = "scoring"
MAX_FAILURE_SHARE_CHANGE = 0.10  # a warning when a day's predicted-failure share moves further than this
WORKLIST_FOLDER = "worklists"
TOP_WORKLIST_ROWS = 10


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
    context: dg.AssetExecutionContext, features: DataFrame, failure_model: TrainedModel, warehouse: Warehouse
):
    days = _days(context)
    scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    rows = score(failure_model.pipeline, features, failure_model.version, scored_at).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    per_day = rows_per_machine(rows, features)
    if not any(day["predictions"] for day in per_day):
        raise dg.Failure(
            description=f"Nothing to score for {days[0]} .. {days[-1]}: features has no rows for those days. "
            "Materialize raw_telemetry and features for them first."
        )
    earlier = [(days[0] - dt.timedelta(days=n)).isoformat() for n in range(7, 0, -1)]
    tables, shares = warehouse.tables(), failure_shares(rows)
    if tables.exists("daily_predictions"):
        shares = {**failure_shares(tables.read("daily_predictions", PREDICTIONS_SCHEMA, earlier)), **shares}
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
    unsound_days = [
        {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in day.items()}
        for day in per_day
        if not day["predictions"] == day["machines_predicted"] == day["active_machines"]
    ]
    yield dg.AssetCheckResult(
        check_name="one_row_per_active_machine",
        passed=not unsound_days,
        metadata={"days_checked": len(per_day), "unsound_days": dg.MetadataValue.json(unsound_days)},
    )
    invalid = invalid_probability_rows(rows)
    yield dg.AssetCheckResult(check_name="probabilities_valid", passed=invalid == 0, metadata={"invalid_rows": invalid})
    drifts = share_drifts(shares, days, MAX_FAILURE_SHARE_CHANGE)
    yield dg.AssetCheckResult(
        check_name="failure_share_stable",
        passed=not drifts,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"days_outside": dg.MetadataValue.json(drifts)},
    )


class WorklistConfig(dg.Config):
    min_failure_probability: float = Field(
        default=0.5,
        description="Machines whose probability of a component failing within 7 days reaches this go on the list.",
    )


def write_worklist_csv(rows: list[dict], target: Path) -> Path:
    """One day's worklist as a CSV file a person can open; replaced atomically, written even when empty."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")
    with open(staging, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in WORKLIST_SCHEMA.fields])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(staging, target)
    return target


@dg.asset(
    group_name=GROUP,
    description=(
        "For the maintenance crews: machines whose probability of a component failing within 7 days reaches the "
        "threshold, most urgent first, with the likeliest component. Also written as "
        f"<warehouse>/{WORKLIST_FOLDER}/maintenance_worklist_YYYY-MM-DD.csv."
    ),
    **table_asset_args(WORKLIST_SCHEMA, daily=True, kinds={"spark", "delta", "csv"}),
)
def maintenance_worklist(
    context: dg.AssetExecutionContext, config: WorklistConfig, daily_predictions: DataFrame, warehouse: Warehouse
) -> dg.Output[DataFrame]:
    rows = worklist(daily_predictions, config.min_failure_probability).persist(StorageLevel.MEMORY_AND_DISK)
    csv_files, counts = {}, {}
    for day in _days(context):
        # a day's list is bounded by the fleet's size
        day_rows = [r.asDict() for r in rows.where(F.col("date") == F.lit(day)).orderBy("rank").collect()]
        target = Path(warehouse.root).absolute() / WORKLIST_FOLDER / f"maintenance_worklist_{day.isoformat()}.csv"
        csv_files[day.isoformat()] = str(write_worklist_csv(day_rows, target))
        counts[day.isoformat()] = len(day_rows)
    last_day = _days(context)[-1]
    return dg.Output(
        rows,
        metadata={
            "min_failure_probability": config.min_failure_probability,
            "machines_listed": dg.MetadataValue.json(counts),
            "csv_files": dg.MetadataValue.json(csv_files),
            "csv_file": dg.MetadataValue.path(csv_files[last_day.isoformat()]),
            "most_urgent": preview(rows.where(F.col("date") == F.lit(last_day)).orderBy("rank"), TOP_WORKLIST_ROWS),
        },
    )
