"""Features and labels: one definition serves training and scoring, so they cannot drift apart.

Pure Spark: DataFrames in, DataFrames out, no Dagster.

Grain: one observation per machine per day, at the end of the day (midnight UTC), for every machine
with telemetry in the 24 hours before it. Every window is a time range ending at the observation,
`[observed_at - lookback, observed_at)`, so a gap in telemetry leaves fewer readings in a window
rather than stretching it over older ones (the reference architecture counted rows).

- telemetry: mean, standard deviation, min and max of each sensor over 3 h, 24 h, 72 h and 240 h, and
  the hours with readings in the last 24 h. A statistic a window cannot give (no readings; for the
  standard deviation, fewer than two) takes the next longer window's value, and a standard
  deviation that no window can give is 0. Windows of whole days combine per-day sums (one pass over
  the readings, then window functions over days), so reaching back further costs little.
- shifts: each sensor's mean of the day against the machine's own baseline (the 10 days before the
  240 h window), in the baseline's standard deviations: machines differ from each other by more than
  a failure's slow precursor drifts at first. The same for the readings of the last 24 h after the
  machine's last replacement, so a component replaced after a failure stops looking like it drifts.
- errors: count of each error id in the last 24 h and 72 h, and days since each was last logged
  (capped at `MAX_DAYS_SINCE_ERROR`, also for none).
- replacements: days since the last replacement of each component, strictly before the observation,
  found with a window function over replacements and observations (no inequality join); capped at
  `MAX_DAYS_SINCE_REPLACEMENT`, which also stands for "none on record".
- machine: model and age.

Label: the component whose failure comes first in `[observed_at, observed_at + 168 h)`, else `none`;
an observation whose 168 hours are not all observed yet gets no label and is left out of training.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.lib.tables import COMPONENTS, ERROR_IDS, SENSORS, required_schema

# The shortest window lies within the day; the others are whole days, so they combine per-day sums exactly.
TELEMETRY_LOOKBACK_HOURS = (3, 24, 72, 240)
# A machine's own baseline: the days before the longest window, before a slow precursor starts (its sensors
# differ from other machines' by more than a precursor's early drift).
BASELINE_DAYS = 10
ERROR_COUNT_HOURS = (24, 72)
MAX_DAYS_SINCE_REPLACEMENT = 365.0
MAX_DAYS_SINCE_ERROR = 30.0
HORIZON_HOURS = 168
# Readings are summed as exact decimals (to the data set's 6 decimals), so a mean or standard
# deviation does not depend on the order in which Spark adds up partial sums: reruns and
# backfills give identical rows (floating-point sums differed in the last bits).
EXACT_READING = "decimal(12,6)"
EXACT_SUM = "decimal(22,6)"
EXACT_SQUARES = "decimal(35,12)"
STATISTICS = ("mean", "std", "min", "max")
CLASSES = ("none", *COMPONENTS)

_WINDOW_DAYS = max(TELEMETRY_LOOKBACK_HOURS) // 24
# Days of raw telemetry a day's features read: the day itself, the longest window's other days, the baseline.
TELEMETRY_LOOKBACK_DAYS = _WINDOW_DAYS + BASELINE_DAYS
# Days of raw errors: as far back as "days since" each error counts.
ERROR_LOOKBACK_DAYS = math.ceil(MAX_DAYS_SINCE_ERROR)
# Days of replacements: an older one is further back than the cap, which "none on record" also gives.
REPLACEMENT_LOOKBACK_DAYS = math.ceil(MAX_DAYS_SINCE_REPLACEMENT)


def sensor_feature(sensor: str, statistic: str, hours: int) -> str:
    return f"{sensor}_{statistic}_{hours}h"


TELEMETRY_FEATURES = [
    sensor_feature(s, stat, h) for h in TELEMETRY_LOOKBACK_HOURS for s in SENSORS for stat in STATISTICS
]
SHIFT_FEATURES = [f"{s}_shift_24h" for s in SENSORS]
RECOVERY_FEATURES = [f"{s}_shift_since_replacement" for s in SENSORS]
ERROR_FEATURES = [f"{e}_count_{h}h" for h in ERROR_COUNT_HOURS for e in ERROR_IDS]
ERROR_DAYS_FEATURES = [f"days_since_{e}" for e in ERROR_IDS]
REPLACEMENT_FEATURES = [f"days_since_{c}_replacement" for c in COMPONENTS]
NUMERIC_FEATURES = [
    *TELEMETRY_FEATURES,
    "telemetry_hours_24h",
    *SHIFT_FEATURES,
    "telemetry_hours_baseline",
    *RECOVERY_FEATURES,
    "telemetry_hours_since_replacement",
    *ERROR_FEATURES,
    *ERROR_DAYS_FEATURES,
    *REPLACEMENT_FEATURES,
    "age",
]
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


def _part(sensor: str, part: str, span: str) -> str:
    """An intermediate column: a sensor's `part` (n, sum, sumsq, min, max) over `span` (a window, or baseline)."""
    return f"_{sensor}_{part}_{span}"


def _day_parts(telemetry: DataFrame, first_day: date, end: date) -> DataFrame:
    """Per machine and day of [first_day, end): its readings, and per sensor the count, exact sum and sum of
    squares, lowest and highest reading of the whole day (the 24 h window) and of its last hours (the shortest
    window). Every longer window and the baseline combine whole days of these."""
    shortest = TELEMETRY_LOOKBACK_HOURS[0]
    rows = telemetry.withColumn("date", F.to_date("datetime")).where(
        (F.col("date") >= F.lit(first_day)) & (F.col("date") < F.lit(end))
    )
    late = F.col("datetime").cast("long") >= _observed_at(F.col("date")).cast("long") - shortest * 3600
    aggregates = [F.count(F.lit(1)).cast("double").alias("telemetry_hours_24h")]
    for sensor in SENSORS:
        reading = F.col(sensor).cast(EXACT_READING)
        for hours, kept in ((24, reading), (shortest, F.when(late, reading))):
            aggregates += [
                F.count(kept).alias(_part(sensor, "n", f"{hours}h")),
                F.sum(kept).alias(_part(sensor, "sum", f"{hours}h")),
                F.sum(kept * kept).alias(_part(sensor, "sumsq", f"{hours}h")),
                F.min(kept).alias(_part(sensor, "min", f"{hours}h")),
                F.max(kept).alias(_part(sensor, "max", f"{hours}h")),
            ]
    return rows.groupBy("machine_id", "date").agg(*aggregates)


def _combined(days: Window, sensor: str, span: str) -> list[Column]:
    """A sensor's parts over the days of `days`, from each day's 24 h parts (sums in the exact types of one pass)."""
    day = lambda part: F.col(_part(sensor, part, "24h"))  # noqa: E731
    return [
        F.sum(day("n")).over(days).alias(_part(sensor, "n", span)),
        F.sum(day("sum")).over(days).cast(EXACT_SUM).alias(_part(sensor, "sum", span)),
        F.sum(day("sumsq")).over(days).cast(EXACT_SQUARES).alias(_part(sensor, "sumsq", span)),
        F.min(day("min")).over(days).alias(_part(sensor, "min", span)),
        F.max(day("max")).over(days).alias(_part(sensor, "max", span)),
    ]


def _mean(sensor: str, span: str) -> Column:
    n, total = F.col(_part(sensor, "n", span)), F.col(_part(sensor, "sum", span))
    return F.when(n > 0, total / n)


def _std(sensor: str, span: str) -> Column:
    """The sample standard deviation; exact sums rounded to 6 places can leave a tiny negative variance for equal
    readings, read as 0."""
    n, total, squares = (F.col(_part(sensor, part, span)) for part in ("n", "sum", "sumsq"))
    variance = F.when(n > 1, (squares - total * total / n) / (n - 1))
    return F.sqrt(F.when(variance < 0, 0.0).otherwise(variance.cast("double")))


def _telemetry_windows(telemetry: DataFrame, first: date, end: date) -> DataFrame:
    """Per machine and observation day in [first, end) with readings that day: every window's parts and the
    baseline's (read from `TELEMETRY_LOOKBACK_DAYS` days of `telemetry`)."""
    first_read = first - timedelta(days=TELEMETRY_LOOKBACK_DAYS - 1)
    parts = _day_parts(telemetry, first_read, end).withColumn("day_number", F.unix_date("date"))
    machine_days = Window.partitionBy("machine_id").orderBy("day_number")
    combined = []
    for hours in TELEMETRY_LOOKBACK_HOURS[2:]:
        days = machine_days.rangeBetween(-(hours // 24 - 1), 0)
        combined += [column for sensor in SENSORS for column in _combined(days, sensor, f"{hours}h")]
    baseline = machine_days.rangeBetween(-(TELEMETRY_LOOKBACK_DAYS - 1), -_WINDOW_DAYS)
    combined += [column for sensor in SENSORS for column in _combined(baseline, sensor, "baseline")]
    baseline_hours = F.sum("telemetry_hours_24h").over(baseline)
    return parts.select("*", *combined, F.coalesce(baseline_hours, F.lit(0.0)).alias("telemetry_hours_baseline")).where(
        (F.col("date") >= F.lit(first)) & (F.col("telemetry_hours_24h") > 0)
    )


def _window_statistics(windows: DataFrame) -> DataFrame:
    """Each window's and the baseline's mean, standard deviation, lowest and highest reading per sensor, as
    intermediate columns (`_<sensor>_<statistic>_<window>`; null where the window cannot give it): computed once,
    then read by the fallbacks and the shifts (inlined there, the generated code outgrew what Java compiles)."""
    statistics = []
    for span in [f"{hours}h" for hours in TELEMETRY_LOOKBACK_HOURS] + ["baseline"]:
        for sensor in SENSORS:
            statistics += [
                _mean(sensor, span).cast("double").alias(_part(sensor, "mean", span)),
                _std(sensor, span).alias(_part(sensor, "std", span)),
                F.col(_part(sensor, "min", span)).cast("double").alias(_part(sensor, "min", span)),
                F.col(_part(sensor, "max", span)).cast("double").alias(_part(sensor, "max", span)),
            ]
    return windows.select("machine_id", "date", "telemetry_hours_24h", "telemetry_hours_baseline", *statistics)


def _filled(sensor: str, statistic: str, position: int) -> Column:
    """A window's statistic, or where it cannot give it (no readings; for the standard deviation, fewer than two)
    the next longer window's; a standard deviation that no window can give is 0."""
    spans = [f"{hours}h" for hours in TELEMETRY_LOOKBACK_HOURS[position:]]
    final = [F.lit(0.0)] if statistic == "std" else []
    return F.coalesce(*[F.col(_part(sensor, statistic, span)) for span in spans], *final)


def _shift(mean: Column, sensor: str) -> Column:
    """How far `mean` lies from the machine's baseline, in the baseline's standard deviations; 0 without a
    baseline to compare with (a machine's first days, or no reading to compare)."""
    spread = F.col(_part(sensor, "std", "baseline"))
    shift = (mean.cast("double") - F.col(_part(sensor, "mean", "baseline"))) / spread
    return F.coalesce(F.when(spread > 0, shift), F.lit(0.0))


BASELINE_COLUMNS = [_part(sensor, statistic, "baseline") for sensor in SENSORS for statistic in ("mean", "std")]


def telemetry_features(telemetry: DataFrame, first: date, end: date) -> DataFrame:
    """(machine_id, date, sensor statistics per window, hours with readings in the last 24 h, each sensor's shift
    of the day against the machine's baseline, hours with readings in the baseline) for days in [first, end), and
    the baseline's mean and standard deviation of each sensor (`BASELINE_COLUMNS`, for `recovery_features`)."""
    statistics = _window_statistics(_telemetry_windows(telemetry, first, end))
    filled = [
        _filled(sensor, statistic, position).alias(sensor_feature(sensor, statistic, hours))
        for position, hours in enumerate(TELEMETRY_LOOKBACK_HOURS)
        for sensor in SENSORS
        for statistic in STATISTICS
    ]
    shifts = [_shift(F.col(_part(sensor, "mean", "24h")), sensor).alias(f"{sensor}_shift_24h") for sensor in SENSORS]
    return statistics.select(
        "machine_id", "date", "telemetry_hours_24h", *filled, *shifts, "telemetry_hours_baseline", *BASELINE_COLUMNS
    )


def error_features(errors: DataFrame, first: date, end: date) -> DataFrame:
    """(machine_id, date, count of each error id in the last 24 h and in the last 72 h)."""
    aged = _aged(errors, max(ERROR_COUNT_HOURS), first, end)
    counts = [
        F.count(F.when((F.col("error_id") == error) & (F.col("age_hours") <= hours), 1))
        .cast("double")
        .alias(f"{error}_count_{hours}h")
        for hours in ERROR_COUNT_HOURS
        for error in ERROR_IDS
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


def _last_before(observations: DataFrame, events: DataFrame, kind: str, kinds: tuple[str, ...]) -> DataFrame:
    """(machine_id, date, at: the observation's time, and per kind the time of its last event strictly before).

    Events and observations are put in one timeline per machine; walking it in time order, each observation
    picks the last event of each kind seen so far. At equal times the observation comes first, so an event at
    the very instant of the observation is not seen."""
    timeline = _timeline(observations, events, F.col(kind))
    so_far = Window.partitionBy("machine_id").orderBy("at", "order").rowsBetween(Window.unboundedPreceding, 0)
    last = [F.last(F.when(F.col("payload") == k, F.col("at")), ignorenulls=True).over(so_far).alias(k) for k in kinds]
    return timeline.select("machine_id", "at", "date", *last).where(F.col("date").isNotNull())


def _days_since(last: DataFrame, kinds: tuple[str, ...], names: list[str], cap: float) -> list[Column]:
    """Days from each kind's last event to the observation, capped at `cap` (which also stands for none)."""
    return [
        F.least(F.coalesce((F.col("at").cast("long") - F.col(k).cast("long")) / 86400.0, F.lit(cap)), F.lit(cap)).alias(
            name
        )
        for k, name in zip(kinds, names)
    ]


def replacement_features(observations: DataFrame, maintenance: DataFrame) -> DataFrame:
    """Days since each component's last replacement strictly before each observation (capped at
    `MAX_DAYS_SINCE_REPLACEMENT`, also for none on record), and `last_replaced_at`, the last replacement of any
    component (an intermediate column)."""
    last = _last_before(observations, maintenance, "comp", COMPONENTS)
    days = _days_since(last, COMPONENTS, REPLACEMENT_FEATURES, MAX_DAYS_SINCE_REPLACEMENT)
    return last.select("machine_id", "date", *days, F.greatest(*COMPONENTS).alias("last_replaced_at"))


def error_days_features(observations: DataFrame, errors: DataFrame) -> DataFrame:
    """Days since each error id was last logged strictly before each observation, capped at
    `MAX_DAYS_SINCE_ERROR` (also for none in that time)."""
    last = _last_before(observations, errors, "error_id", ERROR_IDS)
    return last.select("machine_id", "date", *_days_since(last, ERROR_IDS, ERROR_DAYS_FEATURES, MAX_DAYS_SINCE_ERROR))


def recovery_features(telemetry: DataFrame, sensors: DataFrame, replaced: DataFrame) -> DataFrame:
    """Per observation: each sensor's shift against the machine's baseline (as in `telemetry_features`, whose rows
    `sensors` are) of the readings of the last 24 h after the machine's last replacement (`replaced`, from
    `replacement_features`), and how many hours those are. A component replaced after a failure no longer drifts:
    the readings since say so, where the day's whole 24 h still hold the drift before the failure. A day without a
    replacement gives the day's own figures; a replacement after the day's last reading gives 0 hours, shift 0."""
    day_start = F.to_timestamp(F.col("date"))
    worked = replaced.where(F.col("last_replaced_at") >= day_start).select("machine_id", "date", "last_replaced_at")
    readings = telemetry.withColumn("date", F.to_date("datetime"))
    after = (
        readings.join(F.broadcast(worked), ["machine_id", "date"])
        .where(F.col("datetime") > F.col("last_replaced_at"))
        .groupBy("machine_id", "date")
        .agg(
            F.count(F.lit(1)).cast("double").alias("hours_after"),
            *[F.avg(F.col(sensor).cast(EXACT_READING)).alias(f"after_{sensor}") for sensor in SENSORS],
        )
    )
    rows = sensors.join(worked, ["machine_id", "date"], "left").join(after, ["machine_id", "date"], "left")
    was_worked = F.col("last_replaced_at").isNotNull()
    hours = F.when(was_worked, F.coalesce(F.col("hours_after"), F.lit(0.0))).otherwise(F.col("telemetry_hours_24h"))
    shifts = [
        F.when(was_worked, _shift(F.col(f"after_{sensor}"), sensor))
        .otherwise(F.col(f"{sensor}_shift_24h"))
        .alias(f"{sensor}_shift_since_replacement")
        for sensor in SENSORS
    ]
    return rows.select("machine_id", "date", *shifts, hours.alias("telemetry_hours_since_replacement"))


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
    20, `errors` 30 and `maintenance` 365 (a replacement may be months old; an older one is capped anyway).
    Used by training and by scoring alike.
    """
    sensors = telemetry_features(telemetry, first, end)
    observations = sensors.select("machine_id", "date").withColumn("observed_at", _observed_at(F.col("date")))
    counted = error_features(errors, first, end)
    replaced = replacement_features(observations, maintenance)
    rows = (
        observations.join(sensors, ["machine_id", "date"])
        .join(recovery_features(telemetry, sensors, replaced), ["machine_id", "date"])
        .join(counted, ["machine_id", "date"], "left")
        .join(error_days_features(observations, errors), ["machine_id", "date"])
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
