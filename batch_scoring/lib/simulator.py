"""A fleet simulator that writes the five tables of the Azure predictive-maintenance data set.

Everything is generated with Spark column expressions, so a year of hourly telemetry for 1,000
machines (8.76 million rows) takes minutes. Random numbers come from hashing (seed, stream, keys)
rather than from a random generator, so the output does not depend on how Spark partitions the
work: the same seed gives the same bytes.

The generating process, calibrated against the real tables (see `docs/simulator.md`):
- machines of four models and ages 0..20 years;
- maintenance visits every 15 days replace each component with a fixed probability, starting
  `MAINTENANCE_HISTORY_DAYS` before the first day so components have a history at the start;
- each component fails after a Weibull-distributed life (hazard grows with its age since the last
  replacement); models and older machines wear faster; a failure is also a replacement;
- background errors of five kinds, plus component-specific error bursts in the 48 h before a failure;
- hourly telemetry around the data set's means, drifting in the days before a failure
  (comp1: voltage up, comp2: rotation down, comp3: pressure up, comp4: vibration up).
"""

from __future__ import annotations

import calendar
import functools
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from batch_scoring.lib.ingest import check_rows, kept_rows, locate_source_file, numbered_lines, read_header
from batch_scoring.lib.tables import (
    COMPONENTS,
    ERROR_IDS,
    ERRORS,
    FAILURES,
    MACHINE_MODELS,
    MACHINES,
    MAINTENANCE,
    SENSORS,
    TELEMETRY,
    SourceTable,
)

# --- calibration (per machine-year in the real 2015 tables: 7.6 failures, 39 errors, 29 replacements)
MODEL_SHARES = (0.16, 0.17, 0.35, 0.32)
MAX_MACHINE_AGE_YEARS = 20
MAINTENANCE_HISTORY_DAYS = 180
VISIT_INTERVAL_DAYS = 15
SCHEDULED_REPLACEMENT_PROBABILITY = 0.22
INITIAL_COMPONENT_AGE_DAYS = 90
EVENT_HOUR = 6  # replacements and failures are logged at 06:00, as in the real tables
WEIBULL_SHAPE = 2.0
WEIBULL_SCALE_DAYS = 140.0
MODEL_LIFE_FACTOR = {"model1": 0.66, "model2": 0.74, "model3": 1.1, "model4": 1.15}
COMPONENT_LIFE_FACTOR = {"comp1": 1.0, "comp2": 0.8, "comp3": 1.35, "comp4": 1.05}
AGE_LIFE_FACTOR_PER_YEAR = 0.01
BACKGROUND_ERRORS_PER_YEAR = {"error1": 7.8, "error2": 6.6, "error3": 5.0, "error4": 5.6, "error5": 1.3}
PRECURSOR_ERRORS = {"comp1": ("error1",), "comp2": ("error2", "error3"), "comp3": ("error4",), "comp4": ("error5",)}
PRECURSOR_ERROR_PROBABILITY = 0.95
SECOND_PRECURSOR_ERROR_PROBABILITY = 0.35
PRECURSOR_ERROR_HOURS = 48
SENSOR_MEAN = {"volt": 170.0, "rotate": 450.0, "pressure": 100.0, "vibration": 40.0}
SENSOR_SPREAD = 0.09  # hourly standard deviation as a share of the mean
MACHINE_OFFSET_SPREAD = 0.02
PRECURSOR_SENSOR = {
    "comp1": ("volt", 1.0),
    "comp2": ("rotate", -1.0),
    "comp3": ("pressure", 1.0),
    "comp4": ("vibration", 1.0),
}
PRECURSOR_DRIFT_HOURS = 240
PRECURSOR_DRIFT_SPREADS = 2.0  # drift at the failure, in hourly standard deviations
MAX_FAILURE_ROUNDS = 50
# A failure shows ahead of it (telemetry drifts, precursor errors), so a fleet is simulated this many days past its
# last day: its last days carry the signs of failures still to come, exactly as a later day's drop continues them.
LOOKAHEAD_DAYS = math.ceil(max(PRECURSOR_DRIFT_HOURS, PRECURSOR_ERROR_HOURS) / 24)
# what `simulate` wrote into a folder (size, first day, seed), so a later `--drop` continues the same fleet
FLEET_MANIFEST = "simulated_fleet.json"

_HASH_RANGE = 1 << 53


@dataclass(frozen=True)
class Fleet:
    """The five simulated tables, with warehouse column names."""

    machines: DataFrame
    telemetry: DataFrame
    errors: DataFrame
    maintenance: DataFrame
    failures: DataFrame

    def events(self) -> dict[SourceTable, DataFrame]:
        """The tables of dated rows, which a day's drop holds."""
        return {ERRORS: self.errors, MAINTENANCE: self.maintenance, FAILURES: self.failures, TELEMETRY: self.telemetry}


def uniform(seed: int, stream: str, *keys: Column) -> Column:
    """A uniform number in (0, 1) that depends only on the seed, the stream name and the keys."""
    hashed = F.xxhash64(F.lit(seed), F.lit(stream), *keys)
    return (F.pmod(hashed, F.lit(_HASH_RANGE)).cast("double") + 0.5) / float(_HASH_RANGE)


def normal(seed: int, stream: str, *keys: Column) -> Column:
    """A standard normal number (Box-Muller over two hashed uniforms)."""
    radius = F.sqrt(-2.0 * F.log(uniform(seed, stream + ".r", *keys)))
    return radius * F.cos(2.0 * math.pi * uniform(seed, stream + ".a", *keys))


def _event_time(start: date, day_column: Column, hour: int | Column = EVENT_HOUR) -> Column:
    """UTC timestamp `day_column` days after `start` at the given hour."""
    seconds = (
        F.lit(calendar.timegm(start.timetuple())) + day_column.cast("long") * 86400 + F.lit(hour).cast("long") * 3600
    )
    return F.timestamp_seconds(seconds)


def simulate_machines(spark: SparkSession, machines: int, seed: int) -> DataFrame:
    machine_id = F.col("id").cast("int")
    draw = uniform(seed, "model", machine_id)
    model = F.lit(MACHINE_MODELS[-1])
    for name, upper in reversed(list(zip(MACHINE_MODELS, _cumulative(MODEL_SHARES)))[:-1]):
        model = F.when(draw < upper, F.lit(name)).otherwise(model)
    age = F.floor(uniform(seed, "age", machine_id) * (MAX_MACHINE_AGE_YEARS + 1)).cast("int")
    return spark.range(1, machines + 1).select(machine_id.alias("machine_id"), model.alias("model"), age.alias("age"))


def _cumulative(shares: tuple[float, ...]) -> list[float]:
    total, out = 0.0, []
    for share in shares:
        total += share
        out.append(total)
    return out


def _scheduled_replacements(machines: DataFrame, total_days: int, seed: int) -> DataFrame:
    """(machine_id, comp, day) of every scheduled replacement, days counted from the history start."""
    spark = machines.sparkSession
    phase = F.floor(uniform(seed, "visit-phase", F.col("machine_id")) * VISIT_INTERVAL_DAYS).cast("int")
    slots = spark.range(0, total_days // VISIT_INTERVAL_DAYS + 1).withColumnRenamed("id", "slot")
    visits = (
        machines.select("machine_id", phase.alias("phase"))
        .crossJoin(slots)
        .select("machine_id", (F.col("slot") * VISIT_INTERVAL_DAYS + F.col("phase")).cast("int").alias("day"))
        .where(F.col("day") < total_days)
        .withColumn("comp", F.explode(F.array(*[F.lit(c) for c in COMPONENTS])))
    )
    replaced = uniform(seed, "replace", F.col("machine_id"), F.col("comp"), F.col("day"))
    return visits.where(replaced < SCHEDULED_REPLACEMENT_PROBABILITY)


def _life_scale(machines: DataFrame) -> DataFrame:
    """(machine_id, comp, scale): the Weibull scale in days of each component of each machine."""
    comps = machines.sparkSession.createDataFrame(
        [(c, COMPONENT_LIFE_FACTOR[c]) for c in COMPONENTS], "comp string, comp_factor double"
    )
    model_factor = F.lit(1.0)
    for model, factor in MODEL_LIFE_FACTOR.items():
        model_factor = F.when(F.col("model") == model, F.lit(factor)).otherwise(model_factor)
    age_factor = F.greatest(F.lit(0.5), 1.0 - AGE_LIFE_FACTOR_PER_YEAR * F.col("age"))
    return machines.crossJoin(comps).select(
        "machine_id",
        "comp",
        (F.lit(WEIBULL_SCALE_DAYS) * model_factor * F.col("comp_factor") * age_factor).alias("scale"),
    )


def _failure_days(machines: DataFrame, scheduled: DataFrame, total_days: int, seed: int) -> DataFrame:
    """(machine_id, comp, day) of every failure between the history start and the end.

    A component's life between two replacements is cut short by a failure when its Weibull life,
    given its age at the segment start, ends before the next scheduled replacement. A failure
    starts a new segment, so segments are sampled in rounds until none fails; each round is one
    vectorised Spark step over the still-open segments.
    """
    initial = (
        machines.select("machine_id")
        .crossJoin(machines.sparkSession.createDataFrame([(c,) for c in COMPONENTS], "comp string"))
        .select(
            "machine_id",
            "comp",
            F.lit(0).alias("day"),
            (uniform(seed, "initial-age", F.col("machine_id"), F.col("comp")) * INITIAL_COMPONENT_AGE_DAYS).alias(
                "age0"
            ),
        )
    )
    starts = scheduled.select("machine_id", "comp", "day", F.lit(0.0).alias("age0")).unionByName(initial)
    next_start = F.lead("day", 1, total_days).over(Window.partitionBy("machine_id", "comp").orderBy("day"))
    segments = (
        # a replacement on the first day makes that component new
        starts.groupBy("machine_id", "comp", "day")
        .agg(F.min("age0").alias("age0"))
        .withColumn("end", next_start)
        .join(_life_scale(machines), ["machine_id", "comp"])
    )
    failures = []
    for round_number in range(MAX_FAILURE_ROUNDS):
        draw = uniform(seed, "life", F.col("machine_id"), F.col("comp"), F.col("day"), F.lit(round_number))
        scaled_age = F.col("age0") / F.col("scale")
        life_left = F.col("scale") * F.pow(F.pow(scaled_age, WEIBULL_SHAPE) - F.log(draw), 1.0 / WEIBULL_SHAPE) - F.col(
            "age0"
        )
        failed = (
            segments.withColumn("fail_day", F.col("day") + F.greatest(F.lit(1), F.ceil(life_left)).cast("int"))
            .where(F.col("fail_day") < F.col("end"))
            .select("machine_id", "comp", F.col("fail_day").alias("day"), "end", "scale", F.lit(0.0).alias("age0"))
            .localCheckpoint()
        )
        if failed.isEmpty():
            return functools.reduce(DataFrame.unionByName, failures, failed.select("machine_id", "comp", "day"))
        failures.append(failed.select("machine_id", "comp", "day"))
        segments = failed
    raise RuntimeError(f"failure sampling did not settle in {MAX_FAILURE_ROUNDS} rounds")


def _precursor_errors(failures: DataFrame, seed: int) -> DataFrame:
    """Errors typical of the failing component in the hours before each failure."""
    mapping = failures.sparkSession.createDataFrame(
        [(comp, error) for comp, errors in PRECURSOR_ERRORS.items() for error in errors],
        "failure string, error_id string",
    )
    candidates = failures.join(F.broadcast(mapping), "failure").withColumn(
        "nth", F.explode(F.array(F.lit(1), F.lit(2)))
    )
    keys = F.col("machine_id"), F.col("datetime"), F.col("error_id"), F.col("nth")
    chance = F.when(F.col("nth") == 1, PRECURSOR_ERROR_PROBABILITY).otherwise(SECOND_PRECURSOR_ERROR_PROBABILITY)
    hours_before = 1 + F.floor(uniform(seed, "precursor-hour", *keys) * PRECURSOR_ERROR_HOURS).cast("int")
    return candidates.where(uniform(seed, "precursor", *keys) < chance).select(
        "machine_id",
        F.timestamp_seconds(F.col("datetime").cast("long") - hours_before * 3600).alias("datetime"),
        "error_id",
    )


def _background_errors(machines: DataFrame, start: date, days: int, seed: int) -> DataFrame:
    spark = machines.sparkSession
    rates = spark.createDataFrame(
        [(e, BACKGROUND_ERRORS_PER_YEAR[e] / 365.0) for e in ERROR_IDS], "error_id string, daily_rate double"
    )
    grid = (
        machines.select("machine_id")
        .crossJoin(spark.range(days).withColumnRenamed("id", "day"))
        .crossJoin(F.broadcast(rates))
    )
    keys = F.col("machine_id"), F.col("day"), F.col("error_id")
    hour = F.floor(uniform(seed, "error-hour", *keys) * 24).cast("int")
    return grid.where(uniform(seed, "error", *keys) < F.col("daily_rate")).select(
        "machine_id", _event_time(start, F.col("day"), hour).alias("datetime"), "error_id"
    )


def simulate_events(machines: DataFrame, start: date, days: int, seed: int) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Return (maintenance, failures, errors) for the machines over `days` days from `start`.

    Maintenance reaches back `MAINTENANCE_HISTORY_DAYS` before the start; failures and errors lie
    within [start, start + days).
    """
    history_start = start - timedelta(days=MAINTENANCE_HISTORY_DAYS)
    total_days = MAINTENANCE_HISTORY_DAYS + days
    scheduled = _scheduled_replacements(machines, total_days, seed)
    failed = _failure_days(machines, scheduled, total_days, seed)
    maintenance = (
        scheduled.select("machine_id", "comp", "day")
        .unionByName(failed)
        .select("machine_id", _event_time(history_start, F.col("day")).alias("datetime"), "comp")
    )
    failures = failed.where(F.col("day") >= MAINTENANCE_HISTORY_DAYS).select(
        "machine_id", _event_time(history_start, F.col("day")).alias("datetime"), F.col("comp").alias("failure")
    )
    in_period = (F.col("datetime") >= _event_time(start, F.lit(0), 0)) & (
        F.col("datetime") < _event_time(start, F.lit(days), 0)
    )
    errors = (
        _background_errors(machines, start, days, seed)
        .unionByName(_precursor_errors(failures, seed))
        .where(in_period)
        .dropDuplicates()
    )
    return maintenance, failures, errors


def simulate_telemetry(machines: DataFrame, failures: DataFrame, start: date, days: int, seed: int) -> DataFrame:
    """Hourly (machine_id, datetime, volt, rotate, pressure, vibration) for [start, start + days)."""
    spark = machines.sparkSession
    hours = days * 24
    grid = machines.select("machine_id").crossJoin(spark.range(hours).withColumnRenamed("id", "hour"))
    drift = _precursor_drift(failures, start)
    sensors = []
    for sensor in SENSORS:
        mean, spread = SENSOR_MEAN[sensor], SENSOR_MEAN[sensor] * SENSOR_SPREAD
        machine_offset = normal(seed, f"offset-{sensor}", F.col("machine_id")) * mean * MACHINE_OFFSET_SPREAD
        noise = normal(seed, f"noise-{sensor}", F.col("machine_id"), F.col("hour")) * spread
        shift = F.coalesce(F.col(f"drift_{sensor}"), F.lit(0.0)) * spread
        sensors.append((F.lit(mean) + machine_offset + noise + shift).alias(sensor))
    return grid.join(drift, ["machine_id", "hour"], "left").select(
        "machine_id", _event_time(start, F.lit(0), F.col("hour")).alias("datetime"), *sensors
    )


def _precursor_drift(failures: DataFrame, start: date) -> DataFrame:
    """(machine_id, hour, drift_<sensor>...): sensor shifts in spreads, ramping up to each failure."""
    start_seconds = _event_time(start, F.lit(0), 0).cast("long")
    failure_hour = ((F.col("datetime").cast("long") - start_seconds) / 3600).cast("long")
    ramp = F.sequence(F.lit(1), F.lit(PRECURSOR_DRIFT_HOURS))
    before = failures.select("machine_id", "failure", failure_hour.alias("failure_hour")).withColumn(
        "hours_before", F.explode(ramp)
    )
    weight = (1.0 - F.col("hours_before") / float(PRECURSOR_DRIFT_HOURS)) * PRECURSOR_DRIFT_SPREADS
    drifts = []
    for sensor in SENSORS:
        shift = F.lit(0.0)
        for comp, (target, sign) in PRECURSOR_SENSOR.items():
            if target == sensor:
                shift = F.when(F.col("failure") == comp, weight * sign).otherwise(shift)
        drifts.append(F.sum(shift).alias(f"drift_{sensor}"))
    return (
        before.select(
            "machine_id", "failure", (F.col("failure_hour") - F.col("hours_before")).alias("hour"), "hours_before"
        )
        .groupBy("machine_id", "hour")
        .agg(*drifts)
    )


def simulate_fleet(spark: SparkSession, machines: int, start: date, days: int, seed: int) -> Fleet:
    """The fleet as seen at the end of its last day: events are simulated `LOOKAHEAD_DAYS` further, so the last days
    show what is coming, and left out from the day after on (nothing after it has happened yet)."""
    machine_table = simulate_machines(spark, machines, seed).localCheckpoint()
    maintenance, failures, errors = simulate_events(machine_table, start, days + LOOKAHEAD_DAYS, seed)
    failures = failures.localCheckpoint()
    happened = F.col("datetime") < _event_time(start, F.lit(days), 0)
    return Fleet(
        machines=machine_table,
        telemetry=simulate_telemetry(machine_table, failures, start, days, seed),
        errors=errors.where(happened),
        maintenance=maintenance.where(happened),
        failures=failures.where(happened),
    )


def to_source_layout(df: DataFrame, table: SourceTable) -> DataFrame:
    """Rename to the public data set's header and format values as its CSV files spell them."""
    columns = []
    for field in table.fields:
        column = F.col(field.name)
        if field.kind == "timestamp":
            column = F.date_format(column, "yyyy-MM-dd HH:mm:ss")
        elif field.kind == "double":
            column = F.format_string("%.6f", column)
        columns.append(column.alias(field.source))
    return df.select(*columns)


def write_source_file(df: DataFrame, table: SourceTable, out_dir: Path, gzip: bool) -> Path:
    """Write one table as a single `PdM_<name>.csv[.gz]` file, ordered by its key, atomically."""
    source_names = {f.name: f.source for f in table.fields}
    ordered = to_source_layout(df, table).orderBy(*[source_names[name] for name in table.key])
    target = out_dir / f"{table.file_stems[0]}.csv{'.gz' if gzip else ''}"
    _remove_other_files(out_dir, table, keep=target.name)
    return write_single_csv(ordered, target, gzip)


def write_fleet(fleet: Fleet, out_dir: Path, gzip: bool = False) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {MACHINES: fleet.machines, **fleet.events()}
    return {table.name: write_source_file(df, table, out_dir, gzip) for table, df in tables.items()}


def write_drop(fleet: Fleet, day: date, input_dir: Path) -> dict[str, Path]:
    """The fleet's events of `day` as that day's drop, `<input_dir>/daily/YYYY-MM-DD/`, with `_SUCCESS` written last
    (the sign that the drop is complete). The machines stay in the bulk file."""
    folder = input_dir / "daily" / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    on_day = F.to_date("datetime") == F.lit(day)
    written = {
        table.name: write_source_file(df.where(on_day), table, folder, False) for table, df in fleet.events().items()
    }
    (folder / "_SUCCESS").touch()
    return written


@dataclass(frozen=True)
class FleetManifest:
    """What `simulate` wrote into an input folder (`simulated_fleet.json`): the fleet's size, days and seed, so the
    quick start trains on those days and a later `--drop` continues the same fleet."""

    machines: int
    start: date
    days: int
    seed: int

    @property
    def last_day(self) -> date:
        return self.start + timedelta(days=self.days - 1)

    def simulate(self, spark: SparkSession, days: int | None = None) -> Fleet:
        """The fleet over its days, or over `days` from its first day."""
        return simulate_fleet(spark, self.machines, self.start, days or self.days, self.seed)

    def write(self, out_dir: Path) -> None:
        values = {"machines": self.machines, "start": self.start.isoformat(), "days": self.days, "seed": self.seed}
        (out_dir / FLEET_MANIFEST).write_text(json.dumps(values) + "\n")

    @classmethod
    def read(cls, input_dir: Path) -> FleetManifest | None:
        path = input_dir / FLEET_MANIFEST
        if not path.is_file():
            return None
        values = json.loads(path.read_text())
        return cls(
            int(values["machines"]), date.fromisoformat(values["start"]), int(values["days"]), int(values["seed"])
        )


def write_simulated_fleet(
    spark: SparkSession, fleet: FleetManifest, out_dir: Path, gzip: bool = False
) -> dict[str, Path]:
    """Simulate the fleet into `out_dir`'s five files, with the manifest that lets a drop continue it."""
    written = write_fleet(fleet.simulate(spark), out_dir, gzip)
    fleet.write(out_dir)
    return written


def _remove_other_files(out_dir: Path, table: SourceTable, keep: str) -> None:
    """Drop an older file of the same table under another accepted name, which would make it ambiguous."""
    for name in table.file_names:
        if name != keep:
            (out_dir / name).unlink(missing_ok=True)


def simulate_like(
    spark: SparkSession,
    source_dir: Path,
    out_dir: Path,
    start: date | None,
    days: int | None,
    seed: int,
    gzip: bool = False,
) -> dict[str, Path]:
    """Keep the real machines, errors, maintenance and failures of `source_dir`; simulate telemetry.

    The four files are copied unchanged; telemetry drifts before each real failure. Without
    `start` and `days`, telemetry covers the days from the first to the last failure or error.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written, real = {}, {}
    for table in (MACHINES, ERRORS, MAINTENANCE, FAILURES):
        path = locate_source_file(source_dir, table)
        checked = check_rows(numbered_lines(spark, path).lines, table, str(path), read_header(path))
        real[table.name] = kept_rows(checked, table).localCheckpoint()
        _remove_other_files(out_dir, table, keep=path.name)
        shutil.copyfile(path, out_dir / path.name)
        written[table.name] = out_dir / path.name
    if start is None or days is None:
        events = real["errors"].select("datetime").unionByName(real["failures"].select("datetime"))
        first, last = events.agg(F.min(F.to_date("datetime")), F.max(F.to_date("datetime"))).first()
        start = start or first
        days = days or (last - start).days + 1
    telemetry = simulate_telemetry(real["machines"], real["failures"], start, days, seed)
    written[TELEMETRY.name] = write_source_file(telemetry, TELEMETRY, out_dir, gzip)
    return written


def write_single_csv(df: DataFrame, target: Path, gzip: bool = False) -> Path:
    """Write `df`, in its order, as one CSV file with a header, replacing `target` atomically."""
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        (
            df.coalesce(1)
            .write.option("header", True)
            .option("compression", "gzip" if gzip else "none")
            .csv(str(staging))
        )
        (part,) = [p for p in staging.iterdir() if p.name.startswith("part-")]
        os.replace(part, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
