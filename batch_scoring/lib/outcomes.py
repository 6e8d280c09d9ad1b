"""What became of the predictions once their 7 days had passed. Pure Spark: no Dagster.

A day's predictions (observed at the end of day P) look 168 hours ahead, to the end of day P + 7. On that day X
their outcome is known: each machine's row gets the component that did fail in those hours (`none` if none),
found as training labels its rows (`features.label_observations`), beside the component the machine was on that
day's worklist for (`none` if it was not listed). The worklist's realized precision and recall come from these
rows, by machine-day, as the model's hold-out figures are counted (`model.lead_times`).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.lib.features import CLASSES, HORIZON_HOURS, label_observations
from batch_scoring.lib.model import FAILURE_CLASSES
from batch_scoring.lib.tables import required_schema

NONE = CLASSES[0]
OUTCOME_DELAY_DAYS = HORIZON_HOURS // 24  # a day's outcomes are known 7 days later
RECENT_OUTCOME_DAYS = 28  # the days of outcomes the check judges together

OUTCOMES_SCHEMA = required_schema(
    ("machine_id", T.IntegerType()),
    ("predicted_on", T.DateType()),
    ("failure_probability", T.DoubleType()),
    ("listed_for", T.StringType()),
    ("failed_component", T.StringType()),
    ("model_version", T.StringType()),
    ("date", T.DateType()),
)


def prediction_outcomes(predictions: DataFrame, worklist: DataFrame, failures: DataFrame, last_day: date) -> DataFrame:
    """The predictions whose 168 hours ended by the end of `last_day`, each with the component the machine was
    listed for that day (`none`: not listed) and the first component that failed in those hours (`none`: none);
    `date` is the day the hours ended (`OUTCOME_DELAY_DAYS` after the prediction's)."""
    observed_until = datetime.combine(last_day + timedelta(days=1), time())
    labelled = label_observations(predictions, failures, observed_until)
    listed = worklist.select("machine_id", "date", F.col("likely_component").alias("listed_for"))
    return labelled.join(listed, ["machine_id", "date"], "left").select(
        "machine_id",
        F.col("date").alias("predicted_on"),
        "failure_probability",
        F.coalesce(F.col("listed_for"), F.lit(NONE)).alias("listed_for"),
        F.col("label").alias("failed_component"),
        "model_version",
        F.date_add("date", OUTCOME_DELAY_DAYS).alias("date"),
    )


COUNTS = ("machine_days", "listed", "failing", "listed_failing")


def outcome_counts(outcomes: DataFrame) -> dict[date, dict[str, int]]:
    """Per day (`date`): machine-days, listed, with a failure, both; and per component, listed for it, failed,
    both. One row per day is collected."""
    listed, failing = F.col("listed_for") != NONE, F.col("failed_component") != NONE
    counts = [
        F.count(F.lit(1)).alias("machine_days"),
        F.count(F.when(listed, 1)).alias("listed"),
        F.count(F.when(failing, 1)).alias("failing"),
        F.count(F.when(listed & failing, 1)).alias("listed_failing"),
    ]
    for component in FAILURE_CLASSES:
        listed_for, failed = F.col("listed_for") == component, F.col("failed_component") == component
        counts += [
            F.count(F.when(listed_for, 1)).alias(f"listed_{component}"),
            F.count(F.when(failed, 1)).alias(f"failed_{component}"),
            F.count(F.when(listed_for & failed, 1)).alias(f"listed_failed_{component}"),
        ]
    return {row["date"]: row.asDict() for row in outcomes.groupBy("date").agg(*counts).collect()}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def worklist_figures(counts: list[dict[str, int]]) -> dict[str, object]:
    """The worklist's realized figures over some days' `outcome_counts`: precision (of the listed machine-days,
    the share with a failure within 7 days) and recall (of those, the share listed), overall and per component
    (listed for it, and it failed)."""
    total: dict[str, int] = {}
    for day in counts:
        for key, value in day.items():
            if key != "date":
                total[key] = total.get(key, 0) + value
    count = lambda key: total.get(key, 0)  # noqa: E731
    by_component = [
        {
            "component": component,
            "listed": count(f"listed_{component}"),
            "failed": count(f"failed_{component}"),
            "listed_and_failed": count(f"listed_failed_{component}"),
            "precision": _share(count(f"listed_failed_{component}"), count(f"listed_{component}")),
            "recall": _share(count(f"listed_failed_{component}"), count(f"failed_{component}")),
        }
        for component in FAILURE_CLASSES
    ]
    return {
        **{key: count(key) for key in COUNTS},
        "precision": _share(count("listed_failing"), count("listed")),
        "recall": _share(count("listed_failing"), count("failing")),
        "by_component": by_component,
    }
