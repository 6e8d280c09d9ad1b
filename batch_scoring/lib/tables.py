"""The five input tables of the Azure predictive-maintenance data set and their warehouse schemas.

One description per table serves the simulator (what it writes), the ingest (what it accepts and
how it names the columns) and the storage layer (the declared schema of each Delta table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pyspark.sql import types as T

COMPONENTS = ("comp1", "comp2", "comp3", "comp4")
ERROR_IDS = ("error1", "error2", "error3", "error4", "error5")
SENSORS = ("volt", "rotate", "pressure", "vibration")
MACHINE_MODELS = ("model1", "model2", "model3", "model4")

FieldKind = Literal["timestamp", "integer", "double", "string"]

_SPARK_TYPES: dict[FieldKind, T.DataType] = {
    "timestamp": T.TimestampType(),
    "integer": T.IntegerType(),
    "double": T.DoubleType(),
    "string": T.StringType(),
}


def required_schema(*columns: tuple[str, T.DataType]) -> T.StructType:
    """A schema whose columns are all non-nullable, from (name, type) pairs."""
    return T.StructType([T.StructField(name, data_type, nullable=False) for name, data_type in columns])


@dataclass(frozen=True)
class SourceField:
    """A column of an input file: its header name there and its name and type in the warehouse."""

    source: str
    name: str
    kind: FieldKind
    allowed: tuple[str, ...] | None = None
    unknown_reason: str = "unknown_value"
    minimum: float | None = None
    maximum: float | None = None

    @property
    def spark_type(self) -> T.DataType:
        return _SPARK_TYPES[self.kind]


@dataclass(frozen=True)
class SourceTable:
    """One input table: which files hold it, its fields, its natural key and its warehouse asset."""

    name: str
    asset: str
    file_stems: tuple[str, ...]
    fields: tuple[SourceField, ...]
    key: tuple[str, ...]
    requires_rows: bool
    daily_partitioned: bool = False
    hourly: bool = False  # one row per machine and hour, on the hour: another time is quarantined (off_hour)
    # rows dated before the partitions' first day go to the first day's partition (the history later days
    # reach back to) rather than being quarantined as outside_calendar
    history_in_first_partition: bool = False

    @property
    def schema(self) -> T.StructType:
        """Warehouse schema; daily-partitioned tables carry their partition column `date`."""
        columns = [T.StructField(f.name, f.spark_type, nullable=False) for f in self.fields]
        if self.daily_partitioned:
            columns.append(T.StructField("date", T.DateType(), nullable=False))
        return T.StructType(columns)

    def with_ranges(self, ranges: Mapping[str, Sequence[float]]) -> SourceTable:
        """This table with other plausible ranges for some numeric fields, by warehouse column:
        `{"volt": [0, 400]}`; values outside a field's range are quarantined as out_of_range."""
        numeric = {f.name for f in self.fields if f.kind in ("integer", "double")}
        unknown = sorted(set(ranges) - numeric)
        if unknown:
            raise ValueError(
                f"No numeric field {', '.join(unknown)} in {self.name} (its are: {', '.join(sorted(numeric))})"
            )
        for name, bounds in ranges.items():
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"The range of {self.name}.{name} must be [lowest, highest], not {list(bounds)}")
        fields = tuple(
            replace(f, minimum=float(ranges[f.name][0]), maximum=float(ranges[f.name][1])) if f.name in ranges else f
            for f in self.fields
        )
        return replace(self, fields=fields)

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.schema.fields]

    @property
    def file_names(self) -> list[str]:
        """Every file name accepted for this table, in the order they are looked for."""
        return [f"{stem}{suffix}" for stem in self.file_stems for suffix in (".csv", ".csv.gz")]


# What a reading or a fact can plausibly be (units as in the data set): beyond, a value is a fault of the
# file, not of the machine, and is quarantined as out_of_range. Runs may narrow or widen them
# (raw assets' config `plausible_ranges`).
SENSOR_RANGES = {"volt": (0.0, 1000.0), "rotate": (0.0, 10000.0), "pressure": (0.0, 1000.0), "vibration": (0.0, 1000.0)}
MAX_AGE_YEARS = 100

DATETIME = SourceField("datetime", "datetime", "timestamp")
MACHINE_ID = SourceField("machineID", "machine_id", "integer", minimum=1)

MACHINES = SourceTable(
    name="machines",
    asset="raw_machines",
    file_stems=("PdM_machines", "machines"),
    fields=(
        MACHINE_ID,
        # the models the failure model knows: another is quarantined rather than scored blind
        SourceField("model", "model", "string", MACHINE_MODELS, "unknown_model"),
        SourceField("age", "age", "integer", minimum=0, maximum=MAX_AGE_YEARS),
    ),
    key=("machine_id",),
    requires_rows=True,
)

TELEMETRY = SourceTable(
    name="telemetry",
    asset="raw_telemetry",
    file_stems=("PdM_telemetry", "telemetry"),
    fields=(
        DATETIME,
        MACHINE_ID,
        *(SourceField(s, s, "double", minimum=SENSOR_RANGES[s][0], maximum=SENSOR_RANGES[s][1]) for s in SENSORS),
    ),
    key=("machine_id", "datetime"),
    requires_rows=True,
    daily_partitioned=True,
    hourly=True,
)


def machine_events(
    name: str, file_stems: tuple[str, ...], event: SourceField, history_in_first_partition: bool = False
) -> SourceTable:
    """A log of timestamped events per machine, one partition per event day; a machine may have several
    events in one hour, and a day may have none."""
    return SourceTable(
        name=name,
        asset=f"raw_{name}",
        file_stems=file_stems,
        fields=(DATETIME, MACHINE_ID, event),
        key=("machine_id", "datetime", event.name),
        requires_rows=False,  # a fleet may well have no failures in a file, or on a day
        daily_partitioned=True,
        history_in_first_partition=history_in_first_partition,
    )


ERRORS = machine_events(
    "errors", ("PdM_errors", "errors"), SourceField("errorID", "error_id", "string", ERROR_IDS, "unknown_error_id")
)
MAINTENANCE = machine_events(
    "maintenance",
    ("PdM_maint", "maint", "PdM_maintenance", "maintenance"),
    SourceField("comp", "comp", "string", COMPONENTS, "unknown_component"),
    # days since a replacement reach back before the first day: the data set's replacements start in 2014
    history_in_first_partition=True,
)
FAILURES = machine_events(
    "failures",
    ("PdM_failures", "failures"),
    SourceField("failure", "failure", "string", COMPONENTS, "unknown_component"),
)

SOURCE_TABLES = (MACHINES, TELEMETRY, ERRORS, MAINTENANCE, FAILURES)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("source_file", T.StringType(), nullable=False),
        T.StructField("line_number", T.LongType(), nullable=False),
        T.StructField("reason", T.StringType(), nullable=False),
        T.StructField("field", T.StringType(), nullable=True),
        T.StructField("detail", T.StringType(), nullable=True),
        T.StructField("line", T.StringType(), nullable=True),
        # the row's day as YYYY-MM-DD, or UNDATED when its timestamp could not be read
        T.StructField("date", T.StringType(), nullable=False),
    ]
)
UNDATED = "undated"
