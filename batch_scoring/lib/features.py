"""Features and labels: one definition serves training and scoring, so they cannot drift apart.

Pure Spark: DataFrames in, DataFrames out, no Dagster. The wide selects are written as SQL text, one call
into the JVM per column, where the Column API takes dozens (a day's plan: 2,539 calls instead of 21,276).

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
    late = f"CAST(datetime AS LONG) >= CAST(TO_TIMESTAMP(DATE_ADD(date, 1)) AS LONG) - {shortest * 3600}"
    aggregates = ["CAST(COUNT(1) AS DOUBLE) AS telemetry_hours_24h"]
    for sensor in SENSORS:
        reading = f"CAST({sensor} AS {EXACT_READING})"
        for hours, kept in ((24, reading), (shortest, f"CASE WHEN {late} THEN {reading} END")):
            aggregates += [
                f"COUNT({kept}) AS {_part(sensor, 'n', f'{hours}h')}",
                f"SUM({kept}) AS {_part(sensor, 'sum', f'{hours}h')}",
                f"SUM({kept} * {kept}) AS {_part(sensor, 'sumsq', f'{hours}h')}",
                f"MIN({kept}) AS {_part(sensor, 'min', f'{hours}h')}",
                f"MAX({kept}) AS {_part(sensor, 'max', f'{hours}h')}",
            ]
    return rows.groupBy("machine_id", "date").agg(*[F.expr(aggregate) for aggregate in aggregates])


def _over_days(days_before: tuple[int, int]) -> str:
    """A window over a machine's days, from `days_before[0]` to `days_before[1]` days before the row's day."""
    earliest, latest = (f"{n} PRECEDING" if n else "CURRENT ROW" for n in days_before)
    return f"OVER (PARTITION BY machine_id ORDER BY day_number RANGE BETWEEN {earliest} AND {latest})"


def _combined(days_before: tuple[int, int], sensor: str, span: str) -> list[str]:
    """A sensor's parts over a window of days, from each day's 24 h parts (sums in the exact types of one pass)."""
    day = lambda part: _part(sensor, part, "24h")  # noqa: E731
    over = _over_days(days_before)
    return [
        f"SUM({day('n')}) {over} AS {_part(sensor, 'n', span)}",
        f"CAST(SUM({day('sum')}) {over} AS {EXACT_SUM}) AS {_part(sensor, 'sum', span)}",
        f"CAST(SUM({day('sumsq')}) {over} AS {EXACT_SQUARES}) AS {_part(sensor, 'sumsq', span)}",
        f"MIN({day('min')}) {over} AS {_part(sensor, 'min', span)}",
        f"MAX({day('max')}) {over} AS {_part(sensor, 'max', span)}",
    ]


def _mean(sensor: str, span: str) -> str:
    n, total = _part(sensor, "n", span), _part(sensor, "sum", span)
    return f"CASE WHEN {n} > 0 THEN {total} / {n} END"


def _std(sensor: str, span: str) -> str:
    """The sample standard deviation; exact sums rounded to 6 places can leave a tiny negative variance for equal
    readings, read as 0."""
    n, total, squares = (_part(sensor, part, span) for part in ("n", "sum", "sumsq"))
    variance = f"CASE WHEN {n} > 1 THEN ({squares} - {total} * {total} / {n}) / ({n} - 1) END"
    return f"SQRT(CASE WHEN {variance} < 0 THEN 0D ELSE CAST({variance} AS DOUBLE) END)"


def _telemetry_windows(telemetry: DataFrame, first: date, end: date) -> DataFrame:
    """Per machine and observation day in [first, end) with readings that day: every window's parts and the
    baseline's (read from `TELEMETRY_LOOKBACK_DAYS` days of `telemetry`)."""
    first_read = first - timedelta(days=TELEMETRY_LOOKBACK_DAYS - 1)
    parts = _day_parts(telemetry, first_read, end).withColumn("day_number", F.unix_date("date"))
    combined = []
    for hours in TELEMETRY_LOOKBACK_HOURS[2:]:
        combined += [column for sensor in SENSORS for column in _combined((hours // 24 - 1, 0), sensor, f"{hours}h")]
    baseline = (TELEMETRY_LOOKBACK_DAYS - 1, _WINDOW_DAYS)
    combined += [column for sensor in SENSORS for column in _combined(baseline, sensor, "baseline")]
    baseline_hours = f"COALESCE(SUM(telemetry_hours_24h) {_over_days(baseline)}, 0D) AS telemetry_hours_baseline"
    return parts.selectExpr("*", *combined, baseline_hours).where(
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
                f"CAST({_mean(sensor, span)} AS DOUBLE) AS {_part(sensor, 'mean', span)}",
                f"{_std(sensor, span)} AS {_part(sensor, 'std', span)}",
                f"CAST({_part(sensor, 'min', span)} AS DOUBLE) AS {_part(sensor, 'min', span)}",
                f"CAST({_part(sensor, 'max', span)} AS DOUBLE) AS {_part(sensor, 'max', span)}",
            ]
    return windows.selectExpr("machine_id", "date", "telemetry_hours_24h", "telemetry_hours_baseline", *statistics)


def _filled(sensor: str, statistic: str, position: int) -> str:
    """A window's statistic, or where it cannot give it (no readings; for the standard deviation, fewer than two)
    the next longer window's; a standard deviation that no window can give is 0."""
    spans = [f"{hours}h" for hours in TELEMETRY_LOOKBACK_HOURS[position:]]
    final = ["0D"] if statistic == "std" else []
    return f"COALESCE({', '.join([*[_part(sensor, statistic, span) for span in spans], *final])})"


def _shift(mean: str, sensor: str) -> str:
    """How far `mean` lies from the machine's baseline, in the baseline's standard deviations; 0 without a
    baseline to compare with (a machine's first days, or no reading to compare)."""
    spread = _part(sensor, "std", "baseline")
    shift = f"(CAST({mean} AS DOUBLE) - {_part(sensor, 'mean', 'baseline')}) / {spread}"
    return f"COALESCE(CASE WHEN {spread} > 0 THEN {shift} END, 0D)"


BASELINE_COLUMNS = [_part(sensor, statistic, "baseline") for sensor in SENSORS for statistic in ("mean", "std")]


def telemetry_features(telemetry: DataFrame, first: date, end: date) -> DataFrame:
    """(machine_id, date, sensor statistics per window, hours with readings in the last 24 h, each sensor's shift
    of the day against the machine's baseline, hours with readings in the baseline) for days in [first, end), and
    the baseline's mean and standard deviation of each sensor (`BASELINE_COLUMNS`, for the shifts since a
    replacement)."""
    statistics = _window_statistics(_telemetry_windows(telemetry, first, end))
    filled = [
        f"{_filled(sensor, statistic, position)} AS {sensor_feature(sensor, statistic, hours)}"
        for position, hours in enumerate(TELEMETRY_LOOKBACK_HOURS)
        for sensor in SENSORS
        for statistic in STATISTICS
    ]
    shifts = [f"{_shift(_part(sensor, 'mean', '24h'), sensor)} AS {sensor}_shift_24h" for sensor in SENSORS]
    return statistics.selectExpr(
        "machine_id", "date", "telemetry_hours_24h", *filled, *shifts, "telemetry_hours_baseline", *BASELINE_COLUMNS
    )


def error_features(errors: DataFrame, first: date, end: date) -> DataFrame:
    """(machine_id, date, count of each error id in the last 24 h and in the last 72 h)."""
    aged = _aged(errors, max(ERROR_COUNT_HOURS), first, end)
    counts = [
        F.expr(f"CAST(COUNT(CASE WHEN error_id = '{error}' AND age_hours <= {hours} THEN 1 END) AS DOUBLE)").alias(
            f"{error}_count_{hours}h"
        )
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
    so_far = "OVER (PARTITION BY machine_id ORDER BY at, `order` ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    last = [f"LAST(CASE WHEN payload = '{k}' THEN at END, TRUE) {so_far} AS {k}" for k in kinds]
    return timeline.selectExpr("machine_id", "at", "date", *last).where(F.col("date").isNotNull())


def _days_since(kinds: tuple[str, ...], names: list[str], cap: float) -> list[str]:
    """Days from each kind's last event to the observation, capped at `cap` (which also stands for none)."""
    return [
        f"LEAST(COALESCE((CAST(at AS LONG) - CAST({k} AS LONG)) / 86400D, {cap}D), {cap}D) AS {name}"
        for k, name in zip(kinds, names)
    ]


def replacement_features(observations: DataFrame, maintenance: DataFrame) -> DataFrame:
    """Days since each component's last replacement strictly before each observation (capped at
    `MAX_DAYS_SINCE_REPLACEMENT`, also for none on record), and `last_replaced_at`, the last replacement of any
    component (an intermediate column)."""
    last = _last_before(observations, maintenance, "comp", COMPONENTS)
    days = _days_since(COMPONENTS, REPLACEMENT_FEATURES, MAX_DAYS_SINCE_REPLACEMENT)
    return last.selectExpr("machine_id", "date", *days, f"GREATEST({', '.join(COMPONENTS)}) AS last_replaced_at")


def error_days_features(observations: DataFrame, errors: DataFrame) -> DataFrame:
    """Days since each error id was last logged strictly before each observation, capped at
    `MAX_DAYS_SINCE_ERROR` (also for none in that time)."""
    last = _last_before(observations, errors, "error_id", ERROR_IDS)
    return last.selectExpr("machine_id", "date", *_days_since(ERROR_IDS, ERROR_DAYS_FEATURES, MAX_DAYS_SINCE_ERROR))


def observation_days(telemetry: DataFrame, first: date, end: date) -> DataFrame:
    """(machine_id, date, observed_at) of each machine with readings on a day of [first, end): the grain of the
    feature rows, straight from the readings (the statistics' plan is too big to derive it from cheaply)."""
    day = F.to_date("datetime")
    return (
        telemetry.where((day >= F.lit(first)) & (day < F.lit(end)))
        .select("machine_id", day.alias("date"))
        .distinct()
        .withColumn("observed_at", _observed_at(F.col("date")))
    )


def readings_since_replacement(telemetry: DataFrame, replaced: DataFrame) -> DataFrame:
    """(machine_id, date, last_replaced_at, hours_after, after_<sensor>) for the observations whose day saw a
    replacement (`replaced`, from `replacement_features`): how many readings of that day came after the machine's
    last replacement, and each sensor's mean over them (null without any)."""
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
    return worked.join(after, ["machine_id", "date"], "left")


def _recovery_columns() -> list[Column]:
    """Each sensor's shift against the machine's baseline (as in `telemetry_features`) of the readings of the last
    24 h after the machine's last replacement, and how many hours those are, on rows that hold
    `telemetry_features`' and `readings_since_replacement`'s columns. A component replaced after a failure no longer
    drifts: the readings since say so, where the day's whole 24 h still hold the drift before the failure. A day
    without a replacement gives the day's own figures; a replacement after the day's last reading gives 0 hours,
    shift 0."""
    was_worked = "last_replaced_at IS NOT NULL"
    hours = f"CASE WHEN {was_worked} THEN COALESCE(hours_after, 0D) ELSE telemetry_hours_24h END"
    shifts = [
        f"CASE WHEN {was_worked} THEN {_shift(f'after_{sensor}', sensor)} ELSE {sensor}_shift_24h END"
        f" AS {sensor}_shift_since_replacement"
        for sensor in SENSORS
    ]
    return [F.expr(column) for column in [*shifts, f"{hours} AS telemetry_hours_since_replacement"]]


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
    observations = observation_days(telemetry, first, end)
    replaced = replacement_features(observations, maintenance)
    since_replacement = readings_since_replacement(telemetry, replaced)
    rows = (
        observations.join(telemetry_features(telemetry, first, end), ["machine_id", "date"])
        .join(since_replacement, ["machine_id", "date"], "left")
        .select("*", *_recovery_columns())
        .join(error_features(errors, first, end), ["machine_id", "date"], "left")
        .join(error_days_features(observations, errors), ["machine_id", "date"])
        .join(replaced.drop("last_replaced_at"), ["machine_id", "date"])
        .join(machines.select("machine_id", "model", F.col("age").cast("double").alias("age")), "machine_id")
        .fillna(0.0, subset=ERROR_FEATURES)
    )
    return rows.selectExpr(
        *[f"CAST({f.name} AS {f.dataType.simpleString()}) AS {f.name}" for f in FEATURES_SCHEMA.fields]
    )


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
