"""Daily scoring and the maintenance worklist. Pure Spark: no Dagster.

Scoring applies a trained pipeline, with `model.predict` (the same call the hold-out evaluation
makes), to the rows of the `features` table (the same rows training learnt from).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.lib.features import CLASSES
from batch_scoring.lib.model import FAILURE_CLASSES, PROBABILITY_COLUMNS, failure_probability, predict
from batch_scoring.lib.tables import required_schema

PREDICTIONS_SCHEMA = required_schema(
    ("machine_id", T.IntegerType()),
    ("observed_at", T.TimestampType()),
    ("predicted_component", T.StringType()),
    *[(name, T.DoubleType()) for name in PROBABILITY_COLUMNS],
    ("failure_probability", T.DoubleType()),
    ("model_version", T.StringType()),
    ("scored_at", T.TimestampType()),
    ("date", T.DateType()),
)

WORKLIST_SCHEMA = required_schema(
    ("rank", T.IntegerType()),
    ("machine_id", T.IntegerType()),
    ("likely_component", T.StringType()),
    ("component_probability", T.DoubleType()),
    ("failure_probability", T.DoubleType()),
    ("observed_at", T.TimestampType()),
    ("model_version", T.StringType()),
    ("date", T.DateType()),
)

# The crews' CSV files, one a day (its name says which, so the files leave `date` out): probabilities in percent,
# times in UTC and said so; the model version is in the table and the run's metadata, not on every row people read.
CREW_CSV_SCHEMA = required_schema(
    ("rank", T.IntegerType()),
    ("machine_id", T.IntegerType()),
    ("likely_component", T.StringType()),
    ("failure_probability_percent", T.DoubleType()),
    ("component_probability_percent", T.DoubleType()),
    ("observed_at_utc", T.StringType()),
    ("date", T.DateType()),
)

PROBABILITY_TOLERANCE = 1e-6
TRAILING_DAYS = 7  # a day's predicted-failure share is compared with the mean of the week before


def score(model: PipelineModel, features: DataFrame, model_version: str, scored_at: datetime) -> DataFrame:
    """One prediction per feature row: the likeliest class, each class's probability, the chance
    that any component fails within 7 days, and which model version scored it when."""
    predicted = predict(model, features)
    return predicted.select(
        "machine_id",
        "observed_at",
        "predicted_component",
        *PROBABILITY_COLUMNS,
        failure_probability().alias("failure_probability"),
        F.lit(model_version).alias("model_version"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
        "date",
    )


def worklist(predictions: DataFrame, min_failure_probability: float) -> DataFrame:
    """Machines whose failure probability reaches the threshold, most urgent first, each with the
    component most likely to fail (even when `none` is the single likeliest class)."""
    component_probabilities = F.array(
        *[F.struct(F.col(f"probability_{c}").alias("p"), F.lit(c).alias("component")) for c in FAILURE_CLASSES]
    )
    likeliest = F.array_max(component_probabilities)
    urgency = Window.partitionBy("date").orderBy(F.desc("failure_probability"), "machine_id")
    return (
        predictions.where(F.col("failure_probability") >= min_failure_probability)
        .withColumn("likeliest", likeliest)
        .select(
            F.row_number().over(urgency).alias("rank"),
            "machine_id",
            F.col("likeliest.component").alias("likely_component"),
            F.col("likeliest.p").alias("component_probability"),
            "failure_probability",
            "observed_at",
            "model_version",
            "date",
        )
    )


def crew_csv_rows(worklist_rows: DataFrame) -> DataFrame:
    """The worklist as the crews' CSV files hold it (`CREW_CSV_SCHEMA`)."""
    return worklist_rows.select(
        "rank",
        "machine_id",
        "likely_component",
        F.round(F.col("failure_probability") * 100, 1).alias("failure_probability_percent"),
        F.round(F.col("component_probability") * 100, 1).alias("component_probability_percent"),
        F.date_format("observed_at", "yyyy-MM-dd HH:mm").alias("observed_at_utc"),
        "date",
    )


def prediction_counts_per_day(predictions: DataFrame, features: DataFrame) -> list[dict]:
    """Per day: predictions, distinct machines predicted, and machines with features (all equal when sound)."""
    predicted = predictions.groupBy("date").agg(
        F.count(F.lit(1)).alias("predictions"), F.count_distinct("machine_id").alias("machines_predicted")
    )
    active = features.groupBy("date").agg(F.count_distinct("machine_id").alias("active_machines"))
    joined = active.join(predicted, "date", "full_outer").fillna(0).orderBy("date")
    return [row.asDict() for row in joined.collect()]  # one row per day of the run


def invalid_probability_rows(predictions: DataFrame) -> int:
    """Rows with a probability outside [0, 1], or class probabilities not summing to 1."""
    probabilities = [F.col(name) for name in PROBABILITY_COLUMNS]
    out_of_range = F.lit(False)
    for p in probabilities:
        out_of_range = out_of_range | p.isNull() | (p < 0) | (p > 1)
    total = sum(probabilities[1:], probabilities[0])
    return predictions.where(out_of_range | (F.abs(total - 1.0) > PROBABILITY_TOLERANCE)).count()


def failure_shares(predictions: DataFrame) -> dict[date, float]:
    """Per day, the share of machines predicted to have a component fail (one row per day collected)."""
    per_day = predictions.groupBy("date").agg(F.avg((F.col("predicted_component") != CLASSES[0]).cast("double")))
    return {row[0]: row[1] for row in per_day.collect()}


def share_drifts(shares: dict[date, float], days: list[date], max_change: float) -> list[dict]:
    """Days whose predicted-failure share differs from the mean of the 7 days before by more than
    `max_change` (absolute); days with no earlier day to compare with are not judged."""
    drifts = []
    for day in days:
        trailing = [shares[d] for d in (day - timedelta(days=n) for n in range(1, TRAILING_DAYS + 1)) if d in shares]
        if day in shares and trailing:
            baseline = sum(trailing) / len(trailing)
            if abs(shares[day] - baseline) > max_change:
                drifts.append(
                    {
                        "date": day.isoformat(),
                        "share": round(shares[day], 4),
                        "trailing_week": round(baseline, 4),
                        "days_compared": len(trailing),
                    }
                )
    return drifts
