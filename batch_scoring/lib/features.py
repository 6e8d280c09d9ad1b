"""Features and labels: one definition serves training and scoring, so they cannot drift apart.

Pure Spark: DataFrames in, DataFrames out, no Dagster.

Grain: one observation per machine per day, at the end of the day (midnight UTC), for every machine
with telemetry in the 24 hours before it. Every window is a time range ending at the observation,
`[observed_at - lookback, observed_at)`, so a gap in telemetry leaves fewer readings in a window
rather than stretching it over older ones (the reference architecture counted rows).

- telemetry: mean, standard deviation, min and max of each sensor over 3 h, 24 h and 72 h, and the
  hours with readings in the last 24 h. A statistic a window cannot give (no readings; for the
  standard deviation, fewer than two) takes the next longer window's value, and a standard
  deviation that no window can give is 0.
- errors: count of each error id in the last 24 h.
- replacements: days since the last replacement of each component, strictly before the observation,
  found with a window function over replacements and observations (no inequality join); capped at
  `MAX_DAYS_SINCE_REPLACEMENT`, which also stands for "none on record".
- machine: model and age.

Label: the component whose failure comes first in `[observed_at, observed_at + 168 h)`, else `none`;
an observation whose 168 hours are not all observed yet gets no label and is left out of training.
"""

from __future__ import annotations

import math
from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.lib.tables import COMPONENTS, ERROR_IDS, SENSORS, required_schema

TELEMETRY_LOOKBACK_HOURS = (3, 24, 72)
ERROR_LOOKBACK_HOURS = 24
MAX_DAYS_SINCE_REPLACEMENT = 365.0
HORIZON_HOURS = 168
# Readings are summed as exact decimals (to the data set's 6 decimals), so a mean or standard
# deviation does not depend on the order in which Spark adds up partial sums: reruns and
# backfills give identical rows (floating-point sums differed in the last bits).
EXACT_READING = "decimal(12,6)"
STATISTICS = ("mean", "std", "min", "max")
CLASSES = ("none", *COMPONENTS)

# Days of raw telemetry a day's features read: the day itself and the days the longest window reaches.
TELEMETRY_LOOKBACK_DAYS = -(-max(TELEMETRY_LOOKBACK_HOURS) // 24)
# Days of raw errors: a day's observation counts the errors of that day only.
ERROR_LOOKBACK_DAYS = -(-ERROR_LOOKBACK_HOURS // 24)
# Days of replacements: an older one is further back than the cap, which "none on record" also gives.
REPLACEMENT_LOOKBACK_DAYS = math.ceil(MAX_DAYS_SINCE_REPLACEMENT)


def sensor_feature(sensor: str, statistic: str, hours: int) -> str:
    return f"{sensor}_{statistic}_{hours}h"


TELEMETRY_FEATURES = [
    sensor_feature(s, stat, h) for h in TELEMETRY_LOOKBACK_HOURS for s in SENSORS for stat in STATISTICS
]
ERROR_FEATURES = [f"{e}_count_{ERROR_LOOKBACK_HOURS}h" for e in ERROR_IDS]
REPLACEMENT_FEATURES = [f"days_since_{c}_replacement" for c in COMPONENTS]
NUMERIC_FEATURES = [*TELEMETRY_FEATURES, "telemetry_hours_24h", *ERROR_FEATURES, *REPLACEMENT_FEATURES, "age"]
CATEGORICAL_FEATURES = ["model"]

FEATURES_SCHEMA = required_schema(
    ("machine_id", T.IntegerType()),
    ("observed_at", T.TimestampType()),
    ("model", T.StringType()),
    *[(name, T.DoubleType()) for name in NUMERIC_FEATURES],
    ("date", T.DateType()),
)


def _observations_reached(datetime_column: Column, lookback_hours: int, first: date, end: date) -> Column:
    """The observation days in [first, end) whose window of `lookback_hours` holds this timestamp.

    A timestamp on day d lies before the observations at the ends of days d, d+1, ..., so it is
    exploded into those days as far as the lookback reaches, and then aged against each.
    """
    reach = -(-lookback_hours // 24)
    day = F.to_date(datetime_column)
    candidates = F.sequence(day, F.date_add(day, reach - 1))
    return F.filter(candidates, lambda d: (d >= F.lit(first)) & (d < F.lit(end)))


def _observed_at(day: Column) -> Column:
    """The observation at the end of a day: midnight UTC starting the next day."""
    return F.to_timestamp(F.date_add(day, 1))


def _aged(df: DataFrame, lookback_hours: int, first: date, end: date) -> DataFrame:
    """Rows with `date` (the observation day) and `age_hours` before that observation."""
    exploded = df.withColumn("date", F.explode(_observations_reached(F.col("datetime"), lookback_hours, first, end)))
    age = (_observed_at(F.col("date")).cast("long") - F.col("datetime").cast("long")) / 3600.0
    return exploded.withColumn("age_hours", age).where(
        (F.col("age_hours") > 0) & (F.col("age_hours") <= lookback_hours)
    )


def telemetry_features(telemetry: DataFrame, first: date, end: date) -> DataFrame:
    """(machine_id, date, sensor statistics per window, telemetry_hours_24h) for days in [first, end)."""
    aged = _aged(telemetry, max(TELEMETRY_LOOKBACK_HOURS), first, end)
    aggregates = [F.count(F.when(F.col("age_hours") <= 24, 1)).cast("double").alias("telemetry_hours_24h")]
    moments = []
    for hours in TELEMETRY_LOOKBACK_HOURS:
        for sensor in SENSORS:
            reading = F.when(F.col("age_hours") <= hours, F.col(sensor).cast(EXACT_READING))
            n, total, squares = (f"{sensor_feature(sensor, part, hours)}" for part in ("n", "sum", "sumsq"))
            aggregates += [
                F.count(reading).alias(n),
                F.sum(reading).alias(total),
                F.sum(reading * reading).alias(squares),
                F.min(reading).cast("double").alias(sensor_feature(sensor, "min", hours)),
                F.max(reading).cast("double").alias(sensor_feature(sensor, "max", hours)),
            ]
            mean = F.when(F.col(n) > 0, F.col(total) / F.col(n))
            variance = F.when(F.col(n) > 1, (F.col(squares) - F.col(total) * F.col(total) / F.col(n)) / (F.col(n) - 1))
            moments += [
                mean.cast("double").alias(sensor_feature(sensor, "mean", hours)),
                # exact sums rounded to 6 places can leave a tiny negative variance for equal readings
                F.sqrt(F.when(variance < 0, 0.0).otherwise(variance.cast("double"))).alias(
                    sensor_feature(sensor, "std", hours)
                ),
                F.col(sensor_feature(sensor, "min", hours)),
                F.col(sensor_feature(sensor, "max", hours)),
            ]
    raw = (
        aged.groupBy("machine_id", "date")
        .agg(*aggregates)
        .where(F.col("telemetry_hours_24h") > 0)
        .select("machine_id", "date", "telemetry_hours_24h", *moments)
    )
    filled = []
    for position, hours in enumerate(TELEMETRY_LOOKBACK_HOURS):
        longer = TELEMETRY_LOOKBACK_HOURS[position + 1 :]
        for sensor in SENSORS:
            for statistic in STATISTICS:
                fallbacks = [F.col(sensor_feature(sensor, statistic, h)) for h in longer]
                final = [F.lit(0.0)] if statistic == "std" else []
                column = F.coalesce(F.col(sensor_feature(sensor, statistic, hours)), *fallbacks, *final)
                filled.append(column.alias(sensor_feature(sensor, statistic, hours)))
    return raw.select("machine_id", "date", "telemetry_hours_24h", *filled)


def error_features(errors: DataFrame, first: date, end: date) -> DataFrame:
    """(machine_id, date, count of each error id in the last 24 h)."""
    aged = _aged(errors, ERROR_LOOKBACK_HOURS, first, end)
    counts = [
        F.count(F.when(F.col("error_id") == e, 1)).cast("double").alias(name)
        for e, name in zip(ERROR_IDS, ERROR_FEATURES)
    ]
    return aged.groupBy("machine_id", "date").agg(*counts)


def _timeline(observations: DataFrame, events: DataFrame, payload: Column) -> DataFrame:
    """One timeline per machine of events (at their `datetime`, carrying `payload`) and observations
    (at their `observed_at`, carrying their `date`), for window functions to walk in time order.

    `order` puts an observation before an event at the same instant.
    """
    event_rows = events.select(
        "machine_id",
        F.col("datetime").alias("at"),
        F.lit(1).alias("order"),
        payload.alias("payload"),
        F.lit(None).cast("date").alias("date"),
    )
    marks = observations.select(
        "machine_id",
        F.col("observed_at").alias("at"),
        F.lit(0).alias("order"),
        F.lit(None).cast(event_rows.schema["payload"].dataType).alias("payload"),
        "date",
    )
    return event_rows.unionByName(marks)


def replacement_features(observations: DataFrame, maintenance: DataFrame) -> DataFrame:
    """Days since each component's last replacement strictly before each observation.

    Replacements and observations are put in one timeline per machine; walking it in time order,
    each observation picks the last replacement of each component seen so far. At equal times the
    observation comes first, so a replacement at the very instant of the observation is not seen.
    """
    timeline = _timeline(observations, maintenance, F.col("comp"))
    so_far = Window.partitionBy("machine_id").orderBy("at", "order").rowsBetween(Window.unboundedPreceding, 0)
    last_replaced = [
        F.last(F.when(F.col("payload") == c, F.col("at")), ignorenulls=True).over(so_far).alias(c) for c in COMPONENTS
    ]
    timeline = timeline.select("machine_id", "at", "date", *last_replaced)
    days_since = [
        F.least(
            F.coalesce((F.col("at").cast("long") - F.col(c).cast("long")) / 86400.0, F.lit(MAX_DAYS_SINCE_REPLACEMENT)),
            F.lit(MAX_DAYS_SINCE_REPLACEMENT),
        ).alias(name)
        for c, name in zip(COMPONENTS, REPLACEMENT_FEATURES)
    ]
    return timeline.where(F.col("date").isNotNull()).select("machine_id", "date", *days_since)


def build_features(
    telemetry: DataFrame,
    errors: DataFrame,
    maintenance: DataFrame,
    machines: DataFrame,
    first: date,
    end: date,
) -> DataFrame:
    """The feature rows of the observation days [first, end), in `FEATURES_SCHEMA` order.

    Each input needs the days from `first - <its>_LOOKBACK_DAYS + 1` to the day before `end`: `telemetry`
    3, `errors` 1 and `maintenance` 365 (a replacement may be months old; an older one is capped anyway).
    Used by training and by scoring alike.
    """
    sensors = telemetry_features(telemetry, first, end)
    observations = sensors.select("machine_id", "date").withColumn("observed_at", _observed_at(F.col("date")))
    counted = error_features(errors, first, end)
    replaced = replacement_features(observations, maintenance)
    rows = (
        observations.join(sensors, ["machine_id", "date"])
        .join(counted, ["machine_id", "date"], "left")
        .join(replaced, ["machine_id", "date"])
        .join(machines.select("machine_id", "model", F.col("age").cast("double").alias("age")), "machine_id")
        .fillna(0.0, subset=ERROR_FEATURES)
    )
    return rows.select(*[F.col(f.name).cast(f.dataType) for f in FEATURES_SCHEMA.fields])


def label_observations(features: DataFrame, failures: DataFrame, observed_until: object) -> DataFrame:
    """Add `label`: the first component to fail in [observed_at, observed_at + 168 h), else `none`.

    Failures are known up to `observed_until` (a timestamp); an observation whose horizon reaches
    past it is dropped, never labelled `none`. The next failure is found with a window function
    over one timeline of failures and observations per machine.
    """
    horizon_seconds = HORIZON_HOURS * 3600
    failure = F.struct(F.col("datetime").alias("at"), F.col("failure").alias("comp"))
    timeline = _timeline(features, failures, failure)
    ahead = (
        Window.partitionBy("machine_id")
        .orderBy("at", "order", "payload.comp")
        .rowsBetween(0, Window.unboundedFollowing)
    )
    timeline = timeline.withColumn("next_failure", F.first("payload", ignorenulls=True).over(ahead))
    in_horizon = F.col("next_failure.at").cast("long") < F.col("at").cast("long") + horizon_seconds
    labels = timeline.where(F.col("date").isNotNull()).select(
        "machine_id",
        "date",
        F.when(in_horizon, F.col("next_failure.comp")).otherwise(F.lit("none")).alias("label"),
    )
    observed = F.col("observed_at").cast("long") + horizon_seconds <= F.lit(observed_until).cast("timestamp").cast(
        "long"
    )
    return features.where(observed).join(labels, ["machine_id", "date"])
