"""Delta tables in the warehouse: replaced whole or some days at a time, each write one Delta commit.

The storage contract: table `name` is the Delta table at `<root>/<name>/` (a local folder, or any URI
Spark and Delta write to: `abfss://`, `s3://`, `dbfs:/`, a Unity Catalog volume). A daily table is
partitioned by its `date` column; writing some days replaces exactly those days (`replaceWhere`), so
a rerun never duplicates rows and a failed write leaves the previous version. Every commit names the
write it came from (`userMetadata`), so `DESCRIBE HISTORY` tells which run wrote which version.

With a Unity Catalog schema (`<catalog>.<schema>`), table `name` is instead the catalog's Delta table
`<catalog>.<schema>.<name with / as _>` (`saveAsTable`, read by name), so analysts query it in Databricks
SQL; files that are not tables (model pipelines, the crews' CSV files) stay under `<root>`, a volume.

Reads are pinned to one table version: Delta keeps the files of older versions until a VACUUM, so a
step reads the same rows whatever other runs commit meanwhile, and a version can be read again later
(time travel). Delta detects conflicting commits itself on cloud storage; on a local file system its
log store only keeps committers of one JVM apart, so local writes take a per-table file lock.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from urllib.parse import urlparse

from delta.tables import DeltaTable
from py4j.protocol import Py4JError
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

PARTITION_COLUMN = "date"
LOCKS_FOLDER = ".locks"  # beside the tables, local warehouses only
_LAST_COMMIT_SETTING = "spark.databricks.delta.lastCommitVersionInSession"


_UNREADABLE_FILE = re.compile(r"Encountered error while reading file (\S+?)\.?\s")
_CAUSE = re.compile(r"Caused by: (.+)")


def unreadable_file_message(error: Exception) -> str | None:
    """When Spark failed on a damaged data file of a table: the table, the partition and the file, said first
    (Spark's own message buries the path in a long trace), with what to do; None for other errors."""
    text = str(error)
    found = _UNREADABLE_FILE.search(text)
    if found is None:
        return None
    path = found.group(1)
    parts = path.rstrip("/").split("/")
    partition = next((part for part in parts if part.startswith(f"{PARTITION_COLUMN}=")), None)
    table = parts[parts.index(partition) - 1] if partition else parts[-2]
    cause = _CAUSE.search(text)
    where = f"table {table}, partition {partition}" if partition else f"table {table}"
    return (
        f"Cannot read {where}: file {path} is damaged ({cause.group(1).strip() if cause else 'unreadable'}). "
        "Rematerialize the table for that day (the new version no longer uses the file), or RESTORE the table "
        "to an earlier version (docs/storage.md)."
    )


class TableNotFound(FileNotFoundError):
    """The table has never been written."""


class SchemaMismatch(ValueError):
    """A DataFrame's or a stored table's columns differ from the declared schema."""


def schema_differences(actual: T.StructType, declared: T.StructType) -> list[str]:
    """What differs between two schemas' column names, order and types, in words ([] when none)."""
    actual_types = {f.name: f.dataType.simpleString() for f in actual.fields}
    declared_types = {f.name: f.dataType.simpleString() for f in declared.fields}
    differences = [f"missing {name}" for name in declared_types if name not in actual_types]
    differences += [f"unexpected {name}" for name in actual_types if name not in declared_types]
    differences += [
        f"{name} is {actual_types[name]}, declared {kind}"
        for name, kind in declared_types.items()
        if name in actual_types and actual_types[name] != kind
    ]
    if not differences and actual.fieldNames() != declared.fieldNames():
        differences.append(f"order {actual.fieldNames()} instead of {declared.fieldNames()}")
    return differences


class DeltaTables:
    """The warehouse's tables: `<root>/<name>/`, or `<catalog>.<schema>.<name>` given `catalog_schema`."""

    def __init__(self, spark: SparkSession, root: str, catalog_schema: str | None = None):
        self.spark = spark
        self.root = root if urlparse(root).scheme else os.path.abspath(root)
        self.catalog_schema = catalog_schema or None
        self._local = self.catalog_schema is None and self._is_local_file_system()

    def path(self, name: str) -> str:
        """A folder under the root (where files that are not catalog tables go)."""
        return f"{self.root.rstrip('/')}/{name}"

    def table_name(self, name: str) -> str:
        """The catalog's name of a table (catalog tables only)."""
        return f"{self.catalog_schema}.{name.replace('/', '_')}"

    def location(self, name: str) -> str:
        """Where table `name` is: its folder, or its catalog name."""
        return self.table_name(name) if self.catalog_schema else self.path(name)

    def _delta_table(self, name: str) -> DeltaTable:
        if self.catalog_schema:
            return DeltaTable.forName(self.spark, self.table_name(name))
        return DeltaTable.forPath(self.spark, self.path(name))

    def exists(self, name: str) -> bool:
        if self.catalog_schema:
            return self.spark.catalog.tableExists(self.table_name(name))
        return DeltaTable.isDeltaTable(self.spark, self.path(name))

    def _not_found(self, name: str) -> TableNotFound:
        return TableNotFound(f"table {name} has not been written: no Delta table at {self.location(name)}")

    def version(self, name: str) -> int:
        """The table's newest committed version, from its log's snapshot (a listing of the log, about 20 ms) rather
        than its history (a query, about 300 ms: a day's run asks for a dozen versions). A Delta whose log is not
        reachable from Python (Spark Connect, another runtime's build) answers from the history."""
        try:
            table = self._delta_table(name)
        except AnalysisException as error:  # what Delta raises for a folder or name without a table
            raise self._not_found(name) from error
        try:
            no_option = self.spark._jvm.scala.Option.empty()
            return int(table._jdt.deltaLog().update(False, no_option, no_option).version())
        except (AttributeError, Py4JError):
            return table.history(1).select("version").first()[0]

    def _load(self, name: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.table(self.table_name(name)) if self.catalog_schema else reader.load(self.path(name))

    def read(
        self, name: str, schema: T.StructType, partitions: Sequence[str] | None = None, version: int | None = None
    ) -> DataFrame:
        """Table `name` at `version` (default: the newest), checked against `schema`; given
        `partitions`, only the rows of those days (days without rows give none)."""
        try:
            table = self._load(name, version)
        except AnalysisException as error:
            if not self.exists(name):
                raise self._not_found(name) from error
            raise
        differences = schema_differences(table.schema, schema)
        if differences:
            raise SchemaMismatch(f"table {name} at {self.location(name)}: {'; '.join(differences)}")
        if partitions is not None:
            table = table.where(self._in_partitions(schema, partitions))
        return table

    def gaps(self, name: str, schema: T.StructType, days: Sequence[str], version: int) -> list[str]:
        """Of `days`, those without rows between the table's first day and the last of `days` that has rows:
        holes in the data, not where the data begin or end (a daily table, at `version`)."""
        table = self.read(name, schema, None, version)
        wanted = [date.fromisoformat(day) for day in days]
        partition = F.col(PARTITION_COLUMN)
        # one pass: the table's first day, and which of `days` hold rows (at most len(days) values)
        first, present_days = table.agg(
            F.min(partition), F.collect_set(F.when(self._in_partitions(schema, days), partition))
        ).first()
        present = set(present_days)
        missing = [day for day in wanted if day not in present]
        if not missing or not present:
            return []
        return [day.isoformat() for day in missing if first < day < max(present)]

    def write(
        self,
        name: str,
        df: DataFrame,
        schema: T.StructType,
        partitions: Sequence[str] | None = None,
        note: str = "",
        row_count: int | None = None,
    ) -> int:
        """Replace table `name` by `df`, or, given `partitions`, replace exactly those days, in one commit;
        return the version committed. A listed day without rows ends empty; a row outside the listed days,
        a column differing from `schema` or a null in a non-null column fails the write, which then
        changes nothing. `note` is kept in the commit's userMetadata; `row_count`, `df`'s rows when the caller
        counted them already (else a query finds whether there are any)."""
        if partitions is None:
            return self._commit(name, df, schema, "overwrite", {}, False, note, row_count)
        # one file per day rather than one per day and shuffle partition (one day: no shuffle for it)
        rows = df.coalesce(1) if len(partitions) == 1 else df.repartition(PARTITION_COLUMN)
        replaced = {"replaceWhere": self._partition_predicate(schema, partitions)}
        try:
            return self._commit(name, rows, schema, "overwrite", replaced, True, note, row_count)
        except AnalysisException as error:
            if "DELTA_REPLACE_WHERE_MISMATCH" not in str(error):
                raise
            raise ValueError(
                f"rows of {name} fall outside the partitions being written ({_span(partitions)}): "
                f"{str(error).splitlines()[-1].strip()}"
            ) from error

    def append(self, name: str, df: DataFrame, schema: T.StructType, note: str = "") -> int:
        """Add `df`'s rows to table `name` in one commit; return the version committed."""
        return self._commit(name, df, schema, "append", {}, False, note)

    def _commit(
        self,
        name: str,
        df: DataFrame,
        schema: T.StructType,
        mode: str,
        options: dict,
        partitioned: bool,
        note: str,
        row_count: int | None = None,
    ) -> int:
        differences = schema_differences(df.schema, schema)
        if differences:
            raise SchemaMismatch(f"rows written to {name}: {'; '.join(differences)}")
        writer = df.write.format("delta").mode(mode).options(userMetadata=note, **options)
        with self._local_commit_lock(name):
            created = not self.exists(name)
            if created:
                self._create(name, schema, partitioned)
            empty = df.isEmpty() if row_count is None else row_count == 0
            if empty and (created or mode == "append" or self._holds_no_rows(name, options.get("replaceWhere"))):
                return self.version(name)  # no rows over no rows: nothing to commit (the common empty quarantine)
            # Delta records the version of the session's last commit
            self.spark.conf.unset(_LAST_COMMIT_SETTING)
            writer.saveAsTable(self.table_name(name)) if self.catalog_schema else writer.save(self.path(name))
            committed = self.spark.conf.get(_LAST_COMMIT_SETTING, None)
            return int(committed) if committed is not None else self.version(name)

    def _holds_no_rows(self, name: str, predicate: str | None) -> bool:
        table = self._load(name)
        return (table.where(predicate) if predicate else table).isEmpty()

    def _create(self, name: str, schema: T.StructType, partitioned: bool) -> None:
        """Create the table with the declared schema, so its non-null columns are enforced from the first write
        (if another writer created it meanwhile, that one stays). A catalog table is created in SQL, which
        takes a three-part name everywhere (Delta's table builder takes two parts outside Databricks)."""
        if self.catalog_schema:
            columns = ", ".join(
                f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}" for f in schema.fields
            )
            partitioning = f" PARTITIONED BY ({PARTITION_COLUMN})" if partitioned else ""
            self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.table_name(name)} ({columns}) USING DELTA{partitioning}")
            return
        builder = DeltaTable.createIfNotExists(self.spark).location(self.path(name)).addColumns(schema)
        if partitioned:
            builder = builder.partitionedBy(PARTITION_COLUMN)
        builder.execute()

    @staticmethod
    def _literal(schema: T.StructType, partition: str) -> str:
        quoted = "'" + partition.replace("'", "''") + "'"
        return f"DATE{quoted}" if isinstance(schema[PARTITION_COLUMN].dataType, T.DateType) else quoted

    def _partition_predicate(self, schema: T.StructType, partitions: Sequence[str]) -> str:
        if not partitions:
            return "false"
        if consecutive_days(partitions):
            first, last = (self._literal(schema, p) for p in (partitions[0], partitions[-1]))
            # not BETWEEN: Spark 4 rewrites it into an expression Delta's replaceWhere check cannot resolve
            return f"{PARTITION_COLUMN} >= {first} AND {PARTITION_COLUMN} <= {last}"
        return f"{PARTITION_COLUMN} IN ({', '.join(self._literal(schema, p) for p in partitions)})"

    @staticmethod
    def _in_partitions(schema: T.StructType, partitions: Sequence[str]) -> Column:
        as_dates = isinstance(schema[PARTITION_COLUMN].dataType, T.DateType)
        values = [date.fromisoformat(p) for p in partitions] if as_dates else list(partitions)
        if consecutive_days(partitions):
            return (F.col(PARTITION_COLUMN) >= values[0]) & (F.col(PARTITION_COLUMN) <= values[-1])
        return F.col(PARTITION_COLUMN).isin(values)

    def _is_local_file_system(self) -> bool:
        """Whether Spark resolves the root to the local file system (no scheme resolves to Hadoop's
        default file system: local here, DBFS on Databricks)."""
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(self.root)
        file_system = path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        return file_system.getScheme() == "file"

    @contextmanager
    def _local_commit_lock(self, name: str) -> Iterator[None]:
        """On a local file system, one writer of a table at a time across processes: Delta's local log
        store only keeps the committers of one JVM apart. Elsewhere Delta's own conflict detection rules."""
        if not self._local:
            yield
            return
        lock_file = os.path.join(self.root, LOCKS_FOLDER, name.replace("/", "__") + ".lock")
        os.makedirs(os.path.dirname(lock_file), exist_ok=True)
        with open(lock_file, "a") as handle:  # flock excludes other open files, in this process too
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def consecutive_days(partitions: Sequence[str]) -> bool:
    """Whether `partitions` are two or more consecutive days (YYYY-MM-DD, in order): then they are read and
    replaced as one range, not a list (a year of days would be hundreds of literals to plan on every read)."""
    try:
        days = [date.fromisoformat(p) for p in partitions]
    except ValueError:  # a quarantine's `undated`
        return False
    return len(days) > 1 and all((later - earlier).days == 1 for earlier, later in zip(days, days[1:]))


def _span(partitions: Sequence[str] | None) -> str:
    if not partitions:
        return "none"
    return partitions[0] if len(partitions) == 1 else f"{partitions[0]} .. {partitions[-1]}"
