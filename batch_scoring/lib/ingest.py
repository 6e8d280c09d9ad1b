"""Reading the input CSV files into typed rows, with every rejected row kept and explained.

Pure Spark: no Dagster here. A file is read as numbered text lines and each line parsed against
the table's header, so a rejected row can be reported with its file, line number, field and value.
Each row is either kept or quarantined with a reason; none is dropped without a trace.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from batch_scoring.lib.spark import STEP_CACHE
from batch_scoring.lib.tables import QUARANTINE_SCHEMA, UNDATED, SourceField, SourceTable

# Spellings of one instant in public copies of the data set (2015-01-03T07:00:00.000000, 2015-01-03 07:00:00,
# 1/3/2015 7:00:00 AM): Spark's pattern, and Python's for recognising the spelling of a file's first row. A
# value matches one spelling at most; the file's own is tried first, since a failed attempt costs more.
TIMESTAMP_FORMATS = {
    "yyyy-MM-dd'T'HH:mm:ss.SSSSSS": "%Y-%m-%dT%H:%M:%S.%f",
    "yyyy-MM-dd'T'HH:mm:ss": "%Y-%m-%dT%H:%M:%S",
    "yyyy-MM-dd HH:mm:ss": "%Y-%m-%d %H:%M:%S",
    "yyyy-MM-dd HH:mm:ss.SSSSSS": "%Y-%m-%d %H:%M:%S.%f",
    "M/d/yyyy h:mm:ss a": "%m/%d/%Y %I:%M:%S %p",
    "M/d/yyyy H:mm:ss": "%m/%d/%Y %H:%M:%S",
    "M/d/yyyy H:mm": "%m/%d/%Y %H:%M",
}


DROPS_FOLDER = "daily"  # <input_dir>/daily/YYYY-MM-DD/ holds one day's drop
DROP_READY_MARKER = "_SUCCESS"  # written last, once a drop's files are complete


class InputFileError(ValueError):
    """An input file is missing, empty, ambiguous, unreadable or lacks a column: nothing can be read from it."""


def _root_cause(error: Py4JJavaError) -> str:
    """The innermost Java exception's message, e.g. `java.io.EOFException: Unexpected end of input stream`."""
    cause = error.java_exception
    while cause.getCause() is not None:
        cause = cause.getCause()
    return cause.toString()


@dataclass(frozen=True)
class NumberedLines:
    lines: DataFrame  # line_number (1 = header), line
    line_count: int


@dataclass(frozen=True)
class SourceFile:
    """An input file to read. A daily drop holds one day's rows (`day`); a bulk file holds many days,
    and rows of `superseded_days` in it are left to those days' drops."""

    path: Path
    day: date | None = None
    superseded_days: tuple[date, ...] = ()


def find_source_file(folder: Path, table: SourceTable) -> Path | None:
    """The file holding `table` in `folder` (e.g. PdM_telemetry.csv or telemetry.csv.gz), if any."""
    present = [folder / name for name in table.file_names if (folder / name).exists() or (folder / name).is_symlink()]
    for path in present:
        if path.is_symlink() and not path.exists():
            raise InputFileError(f"{path} is a link that leads nowhere (a loop or a missing target): link a file")
        if not path.is_file():
            raise InputFileError(
                f"{path} is a {'folder' if path.is_dir() else 'special file'}, not a {table.name} file"
            )
    found = present
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputFileError(
            f"Several {table.name} files in {folder} ({names}): keep exactly one of {', '.join(table.file_names)}"
        )
    return found[0] if found else None


def locate_source_file(folder: Path, table: SourceTable) -> Path:
    """The one file holding `table` in `folder`; an error naming the folder and the names looked for."""
    found = find_source_file(folder, table)
    if found is None:
        raise InputFileError(f"No {table.name} file in {folder}: looked for {', '.join(table.file_names)}")
    return found


def plan_sources(
    input_dir: Path, drops: dict[date, Path], table: SourceTable, days: list[date] | None = None
) -> list[SourceFile]:
    """The files to read for `table`: the bulk file in `input_dir` and the daily drops.

    A daily-partitioned table reads, for each of `days`, that day's drop if it has one, else the
    bulk file (whose rows of those drop days are then superseded). Other tables read the bulk file
    (when there is one) followed by every drop's file, in day order.
    """
    dropped = {day: path for day, folder in sorted(drops.items()) if (path := find_source_file(folder, table))}
    if table.daily_partitioned:
        dropped = {day: path for day, path in dropped.items() if day in (days or [])}
        uncovered = [day for day in (days or []) if day not in dropped]
        bulk_needed = bool(uncovered)
    else:
        uncovered, bulk_needed = [], not dropped
    bulk = find_source_file(input_dir, table) if bulk_needed or not table.daily_partitioned else None
    if bulk_needed and bulk is None:
        days_text = f" for {uncovered[0]} .. {uncovered[-1]}" if uncovered else ""
        empty_drops = [drops[day] for day in uncovered if day in drops]
        drops_text = ""
        if empty_drops:  # a drop for the day came, without this table's file
            drops_text = (
                f"; the drop {empty_drops[0]} holds {', '.join(sorted(p.name for p in empty_drops[0].iterdir()))}"
            )
        raise InputFileError(
            f"No {table.name} file{days_text} in {input_dir} (looked for {', '.join(table.file_names)}), "
            f"nor in daily drops {input_dir}/{DROPS_FOLDER}/YYYY-MM-DD/{drops_text}"
        )
    sources = [SourceFile(bulk, superseded_days=tuple(dropped) if table.daily_partitioned else ())] if bulk else []
    return sources + [SourceFile(path, day=day) for day, path in dropped.items()]


def drop_folders(input_dir: Path) -> dict[date, Path]:
    """Every folder in the drops folder named by a day, ready or not, in day order."""
    drops_dir = input_dir / DROPS_FOLDER
    if not drops_dir.is_dir():
        return {}
    folders = {}
    for folder in drops_dir.iterdir():
        try:
            folders[date.fromisoformat(folder.name)] = folder
        except ValueError:
            continue  # not a drop: the sensor's skip reason does not count it either
    return dict(sorted(folders.items()))


def misnamed_drop_folders(input_dir: Path) -> list[str]:
    """Entries of the drops folder that are not drops (not named YYYY-MM-DD): never read, so reported."""
    drops_dir = input_dir / DROPS_FOLDER
    if not drops_dir.is_dir():
        return []
    drops = {folder.name for folder in drop_folders(input_dir).values()}
    return sorted(entry.name for entry in drops_dir.iterdir() if entry.name not in drops)


def ready_drops(input_dir: Path) -> dict[date, Path]:
    """The drops whose files are complete (their marker is written)."""
    return {day: folder for day, folder in drop_folders(input_dir).items() if (folder / DROP_READY_MARKER).exists()}


def source_files(input_dir: Path, table: SourceTable, days: list[date] | None = None) -> list[SourceFile]:
    """The files to read for `table` (and `days`) in the input folder, ready drops included."""
    return plan_sources(input_dir, ready_drops(input_dir), table, days)


def sources_fingerprint(sources: list[SourceFile]) -> str:
    """A digest of the files' names and bytes: it changes when any of them does, and only then (a file
    touched or copied again keeps it). For small tables: every byte is read."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(f"{source.path.name}:{source.day}\n".encode())
        with open(source.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _head(path: Path, lines: int) -> list[str]:
    """The first `lines` lines of a CSV file, gzipped or not. Only those are decoded: a bad byte further in
    is the business of its own line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = [handle.readline() for _ in range(lines)]
        return [line.decode("utf-8-sig") for line in head if line]
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise InputFileError(f"{path}: cannot be read as UTF-8 CSV ({error})") from error


def read_header(path: Path) -> list[str]:
    """The column names on the first line of a CSV file."""
    head = _head(path, 1)
    if not head or not head[0].strip():
        raise InputFileError(f"{path} is empty: expected a header line")
    return [name.strip() for name in next(csv.reader(head))]


def timestamp_formats(path: Path, position: int) -> list[str]:
    """Spark's timestamp patterns to try on a file's column `position`: the spelling of its first data row
    first (a file keeps one spelling), then the others."""
    try:
        first_row = _head(path, 2)[1:]
        value = next(csv.reader(first_row))[position].strip() if first_row else ""
    except (InputFileError, IndexError, csv.Error):
        value = ""  # the row's own problem, found by the rules: only the order of attempts is at stake
    own = []
    for pattern, spelling in TIMESTAMP_FORMATS.items():
        try:
            datetime.strptime(value, spelling)
        except ValueError:
            continue
        own = [pattern]
        break
    return own + [pattern for pattern in TIMESTAMP_FORMATS if pattern not in own]


def numbered_lines(spark: SparkSession, path: Path) -> NumberedLines:
    """Every line of a text file with its 1-based line number, computed in the JVM.

    A file is read in blocks (one for a gzipped file); within a block, Spark keeps the file's
    order, so a line's number is its position in its block plus the lines of earlier blocks.
    """
    text = spark.read.text(str(path)).select(
        F.col("value").alias("line"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("row_id"),
    )
    try:  # this reads the whole file, so a truncated or corrupt one fails here
        block_rows = (
            text.groupBy("block_start")
            .agg(F.min("row_id").alias("first_row_id"), F.count("*").alias("lines"))
            .collect()
        )
    except Py4JJavaError as error:
        raise InputFileError(f"{path}: cannot be read: {_root_cause(error)}") from error
    blocks = sorted((row.block_start, row.first_row_id, row.lines) for row in block_rows)
    offsets, lines_before = [], 0
    for block_start, first_row_id, lines in blocks:
        offsets.append((block_start, first_row_id, lines_before))
        lines_before += lines
    block_offsets = spark.createDataFrame(offsets, "block_start long, first_row_id long, lines_before long")
    numbered = text.join(F.broadcast(block_offsets), "block_start").select(
        (F.col("row_id") - F.col("first_row_id") + F.col("lines_before") + 1).alias("line_number"), "line"
    )
    return NumberedLines(numbered, lines_before)


# how a number is written in these files: decimal, maybe with an exponent (or NaN / Infinity, which are
# numbers but not finite); Spark's cast would also take Java spellings such as 0x1.5p7 or 170.5d
DECIMAL_NUMBER = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$|^(?i)[+-]?(nan|inf|infinity)$"
# what every one of those other spellings has (hex's x, a type suffix, control characters Java trims): a line
# without any is checked once, not each of its numbers against DECIMAL_NUMBER (a regular expression a field)
JAVA_NUMBER_SIGNS = r"[xXdDfF\x00-\x1f]"


def _parsed_value(raw: Column, field: SourceField, formats: list[str], plain_line: Column) -> Column:
    if field.kind == "timestamp":
        return F.coalesce(*[F.try_to_timestamp(raw, F.lit(pattern)) for pattern in formats])
    if field.kind == "integer":
        return raw.try_cast("int")
    if field.kind == "double":
        return F.when(plain_line | raw.rlike(DECIMAL_NUMBER), raw.try_cast("double"))
    return raw


def _fields(line: Column, count: int) -> Column:
    """A line's first `count` fields and then the rest of the line, if any (null when the line has no more), as
    an array. A line without quotes is split at its commas; a quoted one is parsed as CSV, which costs more."""
    ddl = ", ".join(f"c{i} STRING" for i in range(count + 1))
    quoted = F.from_csv(line, ddl)
    return F.when(line.contains('"'), F.array(*[quoted[f"c{i}"] for i in range(count + 1)])).otherwise(
        F.split(line, ",", count + 1)
    )


_NOT_PARSED = {"timestamp": "bad_timestamp", "integer": "not_integer", "double": "not_numeric"}


Rule = tuple[Column, str, str | None, Column]  # condition, reason, field, detail


def _row_rules(table: SourceTable, raw: dict[str, Column], value: dict[str, Column], extra: Column) -> list[Rule]:
    """The rules a row can break on its own, in the order they are checked."""
    rules: list[Rule] = [
        # Spark keeps a line's bytes as read: a line that is not UTF-8 is shown as its bytes, in hex
        (~F.is_valid_utf8("line"), "not_utf8", None, F.concat(F.lit("bytes "), F.hex(F.col("line").cast("binary")))),
        (F.trim(F.col("line")) == "", "blank_line", None, F.lit(None)),
        (extra.isNotNull(), "extra_fields", None, F.lit("more fields than the header names")),
    ]
    for field in table.fields:
        rules.append((raw[field.name].isNull() | (raw[field.name] == ""), "missing_field", field.source, F.lit(None)))
    for field in table.fields:
        given, parsed = raw[field.name], value[field.name]
        if field.kind in _NOT_PARSED:
            rules.append((parsed.isNull(), _NOT_PARSED[field.kind], field.source, given))
        if field.kind == "double":
            rules.append((F.isnan(parsed) | (F.abs(parsed) == float("inf")), "not_finite", field.source, given))
        if field.kind == "timestamp" and table.hourly:
            rules.append((F.date_trunc("hour", parsed) != parsed, "off_hour", field.source, given))
        if field.minimum is not None:
            rules.append((parsed < field.minimum, "out_of_range", field.source, given))
        if field.maximum is not None:
            rules.append((parsed > field.maximum, "out_of_range", field.source, given))
        if field.allowed is not None:
            rules.append((~given.isin(*field.allowed), field.unknown_reason, field.source, given))
    return rules


def _first_problem(rules: list[Rule]) -> Column:
    """The first rule a row breaks, as struct(reason, field, detail), or null for a good row. One CASE of many
    branches, not a CASE nested in each one's ELSE: the code of the row loop stays under the size the JVM
    compiles (a method of more than 8,000 bytes of bytecode is left interpreted, and the parse ran twice as slow)."""
    branches = [
        (
            condition,
            F.struct(F.lit(reason).alias("reason"), F.lit(field).alias("field"), detail.cast("string").alias("detail")),
        )
        for condition, reason, field, detail in rules
    ]
    problem = F.when(*branches[0])
    for condition, found in branches[1:]:
        problem = problem.when(condition, found)
    return problem


def parse_file(lines: DataFrame, table: SourceTable, source: SourceFile, header: list[str], order: int) -> DataFrame:
    """Parse the data lines of one file and apply the rules a row can break on its own.

    Adds `source_file`, `file_order` (to rank duplicates across files), `day` (the partition a
    row belongs to: the drop's day, else the row's own date) and `problem` (null for a good row).
    """
    positions = {name.lower(): i for i, name in enumerate(header)}
    missing = [f.source for f in table.fields if f.source.lower() not in positions]
    if missing:
        raise InputFileError(
            f"{source.path}: no column {', '.join(missing)} in the header (found: {', '.join(header)})"
        )
    # one field more than the header names, to catch lines with extra fields
    split = lines.where(F.col("line_number") > 1).select(
        "line_number",
        "line",
        _fields(F.col("line"), len(header)).alias("fields"),
        (~F.col("line").rlike(JAVA_NUMBER_SIGNS)).alias("plain_line"),
    )
    texts = {f.name: F.trim(F.try_element_at("fields", F.lit(positions[f.source.lower()] + 1))) for f in table.fields}
    timestamps = [f for f in table.fields if f.kind == "timestamp"]
    formats = {f.name: timestamp_formats(source.path, positions[f.source.lower()]) for f in timestamps}
    # each field's text and value computed once, as columns: the rules below read them several times each
    parsed = split.select(
        "line_number",
        "line",
        F.nullif(F.try_element_at("fields", F.lit(len(header) + 1)), F.lit("")).alias("extra_field"),
        *[text.alias(f"text_{name}") for name, text in texts.items()],
        *[
            _parsed_value(texts[f.name], f, formats.get(f.name, []), F.col("plain_line")).alias(f"value_{f.name}")
            for f in table.fields
        ],
    )
    raw = {f.name: F.col(f"text_{f.name}") for f in table.fields}
    value = {f.name: F.col(f"value_{f.name}") for f in table.fields}
    problem = _first_problem(_row_rules(table, raw, value, F.col("extra_field")))
    own_day = F.to_date(value["datetime"]) if "datetime" in value else F.lit(None).cast("date")
    if source.day is not None:
        wrong_day = F.struct(
            F.lit("wrong_day").alias("reason"),
            F.lit("datetime").alias("field"),
            F.format_string(f"dated %s in the drop for {source.day}", own_day.cast("string")).alias("detail"),
        )
        problem = F.when(problem.isNull() & (own_day != F.lit(source.day)), wrong_day).otherwise(problem)
    checked = parsed.select(
        *[value[f.name].cast(f.spark_type).alias(f.name) for f in table.fields],
        "line_number",
        "line",
        F.lit(str(source.path)).alias("source_file"),
        F.lit(order).alias("file_order"),
        (F.lit(source.day) if source.day is not None else own_day).alias("day"),
        problem.alias("problem"),
    )
    if source.superseded_days:
        checked = checked.where(_not_on(source.superseded_days))
    return checked


def _not_on(days: Sequence[date]) -> Column:
    """True unless the row's `day` is one of `days` (true for a row without a day). It names `day` once: Spark
    moves a filter down to the file's lines and writes the day's whole parse into it at each place the filter
    names it. SQL text: many days are one call into the JVM rather than one each."""
    if not days:
        return F.lit(True)
    return F.expr(f"coalesce(NOT (day IN ({_date_literals(days)})), true)")


def _date_literals(days: Sequence[date]) -> str:
    return ", ".join(f"DATE'{day.isoformat()}'" for day in days)


def check_parsed(
    parsed: DataFrame,
    table: SourceTable,
    known_machine_ids: DataFrame | None = None,
    dates: tuple[date, date] | None = None,
    calendar: tuple[date, date] | None = None,
    lines_read: int | None = None,
) -> DataFrame:
    """Apply the rules that look across rows to parsed rows of one or more files.

    Returns the table's columns plus `line_number`, `line`, `source_file`, `day` and the first
    problem found (`reason`, `field`, `detail`; null for a kept row). With `dates` = [first, end),
    only rows whose day is in that range, and rows without a readable day, are returned. A table that keeps
    its history in the first partition puts rows dated before the `calendar` on its first day.
    With `known_machine_ids`, a row naming another machine is quarantined as unknown_machine.
    Of rows sharing the table's key, the first (by file, then line) is kept and the others quarantined; the
    files' `lines_read`, when known, chooses how those are found.
    """
    if calendar is not None and table.history_in_first_partition:
        earlier = F.col("day") < F.lit(calendar[0])  # null (undated) stays null
        parsed = parsed.withColumn("day", F.when(earlier, F.lit(calendar[0])).otherwise(F.col("day")))
    # the rows of these days, parsed once: the cross-row rules below read them several times, and compiled
    # apart from the parse (in one piece, the code of all is too large for the JVM to compile)
    checked = (parsed if dates is None else parsed.where(_of_days(*dates, calendar))).persist(STEP_CACHE)
    if dates is not None and calendar is not None:
        checked = _flag_outside_calendar(checked, calendar)
    if table.daily_partitioned:  # a kept row's partition: its own day (or the first, for earlier history)
        checked = checked.withColumn("date", F.col("day"))
    if known_machine_ids is not None:
        checked = _flag_unknown_machines(checked, known_machine_ids)
    return _flag_duplicates(checked, table, lines_read).select(
        *table.column_names,
        "line_number",
        "line",
        "source_file",
        "day",
        F.col("problem.reason").alias("reason"),
        F.col("problem.field").alias("field"),
        F.col("problem.detail").alias("detail"),
    )


def _problem(reason: str, field: str | None, detail: Column) -> Column:
    return F.struct(F.lit(reason).alias("reason"), F.lit(field).cast("string").alias("field"), detail.alias("detail"))


def _flag(rows: DataFrame, condition: Column, problem: Column) -> DataFrame:
    """Give rows without a problem yet that meet `condition` this problem."""
    flagged = F.when(F.col("problem").isNull() & condition, problem).otherwise(F.col("problem"))
    return rows.withColumn("problem", flagged)


def _of_days(first: date, end: date, calendar: tuple[date, date] | None) -> Column:
    """Rows dated in [first, end); rows of other days belong to other partitions, rows without a readable day
    stay (they are quarantined by whichever run reads their file). Given the partitions' `calendar` [start,
    end), rows dated outside it, which belong to no partition, stay too (see `_flag_outside_calendar`)."""
    day = F.col("day")
    if calendar is None:  # the plain form, which names the day three times (see _not_on)
        return day.isNull() | ((day >= F.lit(first)) & (day < F.lit(end)))
    # naming the day once: a byte a calendar day says whether the run keeps it, read at the day's position; a day
    # before the calendar, or none (`greatest` passes over a null), reads the first byte, one after it the last.
    # (`day IN (...)` of the calendar's other days was as cheap to run, but its thousands of literals are planned
    # anew on every read; of the run's days, a year of literals compiles to a `switch` too large for the JIT.)
    days = [calendar[0] + timedelta(days=n) for n in range((calendar[1] - calendar[0]).days)]
    mask = bytes([True, *(first <= day < end for day in days), True])
    position = f"least(greatest(datediff(day, DATE'{calendar[0].isoformat()}'), -1), {len(days)}) + 2"
    return F.expr(f"substring(X'{mask.hex()}', {position}, 1) = X'01'")


def _flag_outside_calendar(rows: DataFrame, calendar: tuple[date, date]) -> DataFrame:
    """Rows dated outside the partitions' `calendar` [start, end) are quarantined as outside_calendar among the
    undated rows."""
    day = F.col("day")
    outside = (day < F.lit(calendar[0])) | (day >= F.lit(calendar[1]))
    last_day = calendar[1] - timedelta(days=1)
    detail = F.format_string(f"dated %s; the daily partitions run {calendar[0]} .. {last_day}", day.cast("string"))
    flagged = _flag(rows, outside, _problem("outside_calendar", "datetime", detail))
    return flagged.withColumn("day", F.when(outside, F.lit(None)).otherwise(day))


def _flag_unknown_machines(rows: DataFrame, known_machine_ids: DataFrame) -> DataFrame:
    known = F.broadcast(known_machine_ids.select("machine_id", F.lit(True).alias("known_machine")))
    unknown = _problem("unknown_machine", "machineID", F.col("machine_id").cast("string"))
    return _flag(rows.join(known, "machine_id", "left"), F.col("known_machine").isNull(), unknown)


# lines up to which the rows sharing a key are ranked by a window, in one pass over the rows; past it, the
# repeated keys are found first, by aggregating the keys alone
WINDOW_MAX_LINES = 100_000
# repeated keys beyond which the first rows of repeated keys are joined by a shuffle instead of a broadcast
# (a file appended twice repeats every key)
BROADCAST_REPEATED_KEYS = 1_000_000


def _flag_duplicates(rows: DataFrame, table: SourceTable, lines_read: int | None) -> DataFrame:
    """Of the rows sharing the table's key, all but the first (by file, then line) are quarantined: as
    `duplicate` when they repeat the first row's values, as `conflicting_duplicate` (with the first line)
    when they say something else about the same key."""
    position = F.struct("file_order", "line_number", "source_file")
    values = F.struct(*[f.name for f in table.fields if f.name not in table.key])
    first = F.struct(position.alias("first_position"), values.alias("first_values"), F.col("line").alias("first_line"))
    if lines_read is not None and lines_read <= WINDOW_MAX_LINES:
        rows = _with_first_by_window(rows, table, position, first)
    else:
        with_first = _with_first_of_repeated_keys(rows, table, position, first)
        if with_first is None:  # the common case: no key repeats, nothing to flag
            return rows
        rows = with_first
    at = F.col("first_position")
    where_first = F.when(at["source_file"] == F.col("source_file"), F.lit("")).otherwise(
        F.concat(F.lit(" of "), at["source_file"])
    )
    same_key = F.concat(F.lit("same key as line "), at["line_number"].cast("string"), where_first)
    conflicting = F.concat(same_key, F.lit(", which says: "), F.col("first_line"))
    later = at.isNotNull() & (position != at)
    rows = _flag(
        rows,
        later & ~values.eqNullSafe(F.col("first_values")),
        _problem("conflicting_duplicate", None, conflicting),
    )
    return _flag(rows, later, _problem("duplicate", None, same_key))


def _with_first_by_window(rows: DataFrame, table: SourceTable, position: Column, first: Column) -> DataFrame:
    """Each row without a problem yet with the first of the rows sharing its key (`first_position`,
    `first_values`, `first_line`): a window over the key, one shuffle and sort of every row with its line, the
    cheaper plan for a small file."""
    candidate = F.col("problem").isNull()
    by_key = (
        Window.partitionBy(*table.key, candidate)
        .orderBy(position)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return rows.withColumn("first", F.when(candidate, F.first(first).over(by_key))).select("*", "first.*").drop("first")


def _with_first_of_repeated_keys(
    rows: DataFrame, table: SourceTable, position: Column, first: Column
) -> DataFrame | None:
    """As `_with_first_by_window`, for the rows of repeated keys only, or None when no key repeats. The keys
    alone are aggregated, then the rows of repeated keys joined to their first: for a bulk file, a window would
    shuffle and sort every row with its line, the most costly step of its ingest."""
    candidates = rows.where(F.col("problem").isNull())
    repeated = (
        candidates.groupBy(*table.key)
        .agg(F.min(position).alias("first_position"), F.count("*").alias("copies"))
        .where(F.col("copies") > 1)
        .drop("copies")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    repeated_keys = repeated.count()
    if repeated_keys == 0:
        repeated.unpersist()
        return None
    small = F.broadcast if repeated_keys <= BROADCAST_REPEATED_KEYS else (lambda df: df)
    firsts = (
        candidates.join(small(repeated), list(table.key))
        .where(position == F.col("first_position"))
        .select(*table.key, first.alias("first"))
        .select(*table.key, "first.*")
    )
    return rows.join(small(firsts), list(table.key), "left")


def check_rows(
    lines: DataFrame,
    table: SourceTable,
    source_file: str,
    header: list[str],
    known_machine_ids: DataFrame | None = None,
    dates: tuple[date, date] | None = None,
    calendar: tuple[date, date] | None = None,
    lines_read: int | None = None,
) -> DataFrame:
    """Parse and check the data lines of one file (see `check_parsed`)."""
    parsed = parse_file(lines, table, SourceFile(Path(source_file)), header, order=0)
    return check_parsed(parsed, table, known_machine_ids, dates, calendar, lines_read)


def check_files(
    spark: SparkSession,
    table: SourceTable,
    sources: list[SourceFile],
    known_machine_ids: DataFrame | None = None,
    dates: tuple[date, date] | None = None,
    calendar: tuple[date, date] | None = None,
) -> DataFrame:
    """Read, parse and check several files of one table together (see `check_parsed`)."""
    parsed, lines_read = [], 0
    for order, source in enumerate(sources):
        numbered = numbered_lines(spark, source.path)
        if table.requires_rows and numbered.line_count < 2:
            raise InputFileError(f"{source.path} has a header but no {table.name} rows")
        parsed.append(parse_file(numbered.lines, table, source, read_header(source.path), order))
        lines_read += numbered.line_count
    return check_parsed(
        functools.reduce(DataFrame.unionByName, parsed), table, known_machine_ids, dates, calendar, lines_read
    )


def kept_rows(checked: DataFrame, table: SourceTable) -> DataFrame:
    return checked.where(F.col("reason").isNull()).select(*table.column_names)


def _partition() -> Column:
    """A checked row's partition: its day (YYYY-MM-DD), or `undated`."""
    return F.coalesce(F.date_format(F.col("day"), "yyyy-MM-dd"), F.lit(UNDATED))


def quarantined_rows(checked: DataFrame) -> DataFrame:
    """Rejected rows in the quarantine layout; `date` is the row's day, or `undated`; a line that is not
    UTF-8 is kept readable (U+FFFD for its bad bytes, which its detail lists)."""
    columns = {
        "date": _partition(),
        "line": F.make_valid_utf8("line"),
    }
    return checked.where(F.col("reason").isNotNull()).select(
        *[columns.get(f.name, F.col(f.name)).alias(f.name) for f in QUARANTINE_SCHEMA.fields]
    )


@dataclass(frozen=True)
class IngestCounts:
    """What became of the rows read, by reason (None: kept) and partition (a day, YYYY-MM-DD, or `undated`); of
    the kept rows, the machines and the time range (None for a table without those columns, or no kept rows)."""

    rows: dict[tuple[str | None, str], int]
    kept_machines: int | None = None
    kept_first: datetime | None = None
    kept_last: datetime | None = None

    @property
    def kept(self) -> int:
        return sum(n for (reason, _), n in self.rows.items() if reason is None)

    @property
    def quarantined_by_reason(self) -> dict[str, int]:
        by_reason: dict[str, int] = {}
        for (reason, _), n in self.rows.items():
            if reason is not None:
                by_reason[reason] = by_reason.get(reason, 0) + n
        return dict(sorted(by_reason.items()))

    def by_partition(self, partitions: list[str], kept: bool) -> dict[str, int]:
        """Kept (or quarantined) rows of each partition, 0 for one without."""
        counts = dict.fromkeys(partitions, 0)
        for (reason, partition), n in self.rows.items():
            if (reason is None) == kept and partition in counts:
                counts[partition] += n
        return counts

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    @property
    def read(self) -> int:
        return self.kept + self.quarantined

    @property
    def quarantined_share(self) -> float:
        return self.quarantined / self.read if self.read else 0.0


def count_outcomes(checked: DataFrame) -> IngestCounts:
    """Rows by reason and partition, and the kept rows' machines and time range, in one pass: the rows are counted
    by reason, partition and machine, then rolled up by reason and partition and over all (a row per reason and
    day is collected, and one for the whole)."""
    kept = F.col("reason").isNull()
    timed = "datetime" in checked.columns
    by_machine = checked.groupBy("reason", _partition().alias("partition"), "machine_id").agg(
        F.count("*").alias("rows"),
        *([F.min("datetime").alias("first"), F.max("datetime").alias("last")] if timed else []),
    )
    of_kept = {name: F.when(kept, F.col(name)) for name in ("machine_id", "first", "last")}
    figures = [F.sum("rows").alias("rows"), F.count_distinct(of_kept["machine_id"]).alias("machines")]
    if timed:
        figures += [F.min(of_kept["first"]).alias("first"), F.max(of_kept["last"]).alias("last")]
    rolled_up = (
        by_machine.groupingSets([["reason", "partition"], []], "reason", "partition")
        .agg(*figures, F.grouping("partition").alias("whole"))
        .collect()
    )
    # the row for the whole (none of no rows)
    whole = next((row.asDict() for row in rolled_up if row["whole"]), {})
    return IngestCounts(
        {(row["reason"], row["partition"]): row["rows"] for row in rolled_up if not row["whole"]},
        whole.get("machines") or None,
        whole.get("first"),
        whole.get("last"),
    )
