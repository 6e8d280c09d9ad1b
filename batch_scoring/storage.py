"""Parquet tables in the warehouse folder, replaced whole or one partition at a time.

The storage contract: table `name` lives at `<root>/<name>/`; a daily-partitioned table keeps each
day under `<root>/<name>/date=YYYY-MM-DD/`, so any Spark or SQL engine can read the folders.

A write never leaves a half-written table behind: Spark writes to a staging folder beside the
table, and only a finished write is moved into place, partition by partition, with two renames
(old version aside, new version in). The renames run under a per-table file lock, so concurrent
runs writing different partitions of one table do not interleave; a crash between the two renames
leaves the old version aside, and the next read or write of the table moves it back. Inputs are
read as snapshots under the same lock, so a run reading a table another run replaces meanwhile keeps
the rows it read (a lazy Spark read would find its files gone). A writer
holds a lock on a claim file beside its staging folder; the next write of the table sweeps staging
folders whose claim nobody holds, i.e. those of killed runs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

PARTITION_COLUMN = "date"
_LOCKS_HELD: set[Path] = set()  # the table locks this process holds (a run's steps run in one thread)


class TableStore:
    def __init__(self, spark: SparkSession, root: Path):
        self.spark = spark
        self.root = Path(root).absolute()

    def path(self, name: str) -> Path:
        return self.root / name

    def partition_path(self, name: str, partition: str) -> Path:
        return self.path(name) / f"{PARTITION_COLUMN}={partition}"

    def write(self, name: str, df: DataFrame, partitions: Sequence[str] | None = None) -> None:
        """Replace table `name` by `df`, or, given `partitions`, replace exactly those partitions.

        With `partitions`, rows are placed by their `date` column; a listed partition without
        rows becomes empty, and partitions not listed are left as they are.
        """
        with self._claimed_staging(name) as (staging, token):
            if partitions is None:
                df.write.mode("overwrite").parquet(str(staging))
                with self._locked(name):
                    self._swap(staging, self.path(name), name, token)
                return
            # one file per day rather than one per day and shuffle partition
            df.repartition(PARTITION_COLUMN).write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(str(staging))
            unexpected = sorted(set(self._partitions_in(staging)) - set(partitions))
            if unexpected:
                raise ValueError(f"rows of {name} fall outside the partitions being written: {unexpected[:10]}")
            self.path(name).mkdir(parents=True, exist_ok=True)
            with self._locked(name):
                for partition in partitions:
                    staged = staging / f"{PARTITION_COLUMN}={partition}"
                    staged.mkdir(parents=True, exist_ok=True)
                    self._swap(staged, self.partition_path(name, partition), name, token)

    def read(self, name: str, schema: T.StructType, partitions: Sequence[str] | None = None) -> DataFrame:
        """Table `name` with an explicit schema; given `partitions`, only those (missing ones skipped).

        Lazy, like any Spark read: its files are opened when an action runs, so a run that replaces
        the table in between pulls them away. Use `snapshot` for a table other runs may be writing."""
        with self._locked(name):
            pass  # taking the lock puts back a version that a crash left aside
        return self._plan_read(name, schema, partitions)

    def snapshot(self, name: str, schema: T.StructType, partitions: Sequence[str] | None = None) -> DataFrame:
        """Like `read`, but read in full, under the table's lock, into Spark's block store: the rows
        stay readable whatever other runs write to the table afterwards."""
        with self._locked(name):
            return self._plan_read(name, schema, partitions).localCheckpoint(eager=True)

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """No run replaces any part of the table until the block ends: for reading it consistently."""
        with self._locked(name):
            yield

    def _plan_read(self, name: str, schema: T.StructType, partitions: Sequence[str] | None) -> DataFrame:
        reader = self.spark.read.schema(schema)
        if partitions is None:
            if not self.path(name).exists():
                raise FileNotFoundError(f"table {name} has not been written: no folder {self.path(name)}")
            return reader.parquet(str(self.path(name)))
        paths = [str(p) for p in (self.partition_path(name, x) for x in partitions) if p.exists()]
        if not paths:
            return self.spark.createDataFrame([], schema)
        return reader.option("basePath", str(self.path(name))).parquet(*paths)

    def existing_partitions(self, name: str) -> list[str]:
        return self._partitions_in(self.path(name))

    @staticmethod
    def _partitions_in(folder: Path) -> list[str]:
        prefix = f"{PARTITION_COLUMN}="
        if not folder.exists():
            return []
        return sorted(p.name[len(prefix) :] for p in folder.iterdir() if p.name.startswith(prefix))

    def _swap(self, new: Path, target: Path, name: str, token: str) -> None:
        aside = self._aside_folder(name) / f"{target.name}.{token}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            os.rename(target, aside)
        os.rename(new, target)
        shutil.rmtree(aside, ignore_errors=True)

    @contextmanager
    def _claimed_staging(self, name: str) -> Iterator[tuple[Path, str]]:
        """A new staging folder for one write, and its token. The claim file appears already locked
        (locked under a temporary name, then renamed), so a claim nobody holds is a dead writer's."""
        folder = self.root / ".staging" / name
        folder.mkdir(parents=True, exist_ok=True)
        self._sweep_staging(folder)
        token = uuid.uuid4().hex
        staging, claim, pending = folder / token, folder / f"{token}.claim", folder / f".{token}.pending"
        with open(pending, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            os.rename(pending, claim)
            try:
                yield staging, token
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                claim.unlink(missing_ok=True)

    @staticmethod
    def _sweep_staging(folder: Path) -> None:
        """Remove the staging folders of writers that died: their claim is unlocked or gone."""
        for claim in folder.glob("*.claim"):
            with open(claim, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is still at work
                shutil.rmtree(folder / claim.stem, ignore_errors=True)
                claim.unlink(missing_ok=True)
        for staging in folder.iterdir():
            if staging.is_dir() and not (folder / f"{staging.name}.claim").exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _aside_folder(self, name: str) -> Path:
        return self.root / ".aside" / name

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold the table's lock, first putting back any old version a crash left aside.

        Reentrant within the process: flock on a second open file of the same lock would wait for itself."""
        lock_file = self.root / ".locks" / f"{name}.lock"
        if lock_file in _LOCKS_HELD:
            yield
            return
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _LOCKS_HELD.add(lock_file)
            try:
                self._recover(name)
                yield
            finally:
                _LOCKS_HELD.discard(lock_file)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _recover(self, name: str) -> None:
        aside = self._aside_folder(name)
        if not aside.exists():
            return
        for old in aside.iterdir():
            target_name = old.name.rsplit(".", 1)[0]
            target = self.path(name) if target_name == Path(name).name else self.path(name) / target_name
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(old, target)


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
