"""The warehouse store: partitions replaced alone, nothing half-written, crashes recovered."""

import os
from datetime import date

import pytest
from pyspark.sql import types as T

from batch_scoring.storage import TableStore

SCHEMA = T.StructType([T.StructField("value", T.IntegerType()), T.StructField("date", T.DateType())])


def frame(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def table_rows(store, partitions=None):
    return sorted((r.value, r.date.isoformat()) for r in store.read("t", SCHEMA, partitions).collect())


def test_writing_a_partition_replaces_it_alone(spark, tmp_path):
    store = TableStore(spark, tmp_path)
    store.write("t", frame(spark, [(1, date(2015, 1, 1)), (2, date(2015, 1, 2))]), ["2015-01-01", "2015-01-02"])
    store.write("t", frame(spark, [(3, date(2015, 1, 2))]), ["2015-01-02"])
    store.write("t", frame(spark, [(3, date(2015, 1, 2))]), ["2015-01-02"])  # a rerun: same rows, no more
    assert table_rows(store) == [(1, "2015-01-01"), (3, "2015-01-02")]
    assert store.existing_partitions("t") == ["2015-01-01", "2015-01-02"]
    assert len([f for f in os.listdir(store.partition_path("t", "2015-01-02")) if f.endswith(".parquet")]) == 1


def test_a_listed_partition_without_rows_becomes_empty(spark, tmp_path):
    store = TableStore(spark, tmp_path)
    store.write("t", frame(spark, [(1, date(2015, 1, 1)), (2, date(2015, 1, 2))]), ["2015-01-01", "2015-01-02"])
    store.write("t", frame(spark, [(5, date(2015, 1, 1))]), ["2015-01-01", "2015-01-02"])
    assert table_rows(store) == [(5, "2015-01-01")]


def test_rows_outside_the_partitions_fail_the_write_and_change_nothing(spark, tmp_path):
    store = TableStore(spark, tmp_path)
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), ["2015-01-01"])
    with pytest.raises(ValueError, match=r"outside the partitions being written: \['2015-01-09'\]"):
        store.write("t", frame(spark, [(2, date(2015, 1, 1)), (3, date(2015, 1, 9))]), ["2015-01-01"])
    assert table_rows(store) == [(1, "2015-01-01")]
    assert not list((tmp_path / ".staging" / "t").iterdir())


def test_reading_missing_partitions_gives_the_existing_ones_with_the_schema(spark, tmp_path):
    store = TableStore(spark, tmp_path)
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), ["2015-01-01"])
    assert table_rows(store, ["2015-01-01", "2015-01-05"]) == [(1, "2015-01-01")]
    empty = store.read("t", SCHEMA, ["2016-01-01"])
    assert empty.count() == 0 and empty.schema == SCHEMA


def test_a_crash_between_the_two_renames_is_undone_by_the_next_read(spark, tmp_path):
    store = TableStore(spark, tmp_path)
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), ["2015-01-01"])
    # what a crash after "old version aside" and before "new version in" leaves behind
    aside = tmp_path / ".aside" / "t" / "date=2015-01-01.deadbeef"
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.rename(store.partition_path("t", "2015-01-01"), aside)
    assert table_rows(store) == [(1, "2015-01-01")]
    assert not aside.exists()


def test_an_unpartitioned_table_is_replaced_whole(spark, tmp_path):
    store = TableStore(spark, tmp_path)
    schema = T.StructType([T.StructField("value", T.IntegerType())])
    store.write("u", spark.createDataFrame([(1,), (2,)], schema))
    store.write("u", spark.createDataFrame([(3,)], schema))
    assert [r.value for r in store.read("u", schema).collect()] == [3]
    with pytest.raises(FileNotFoundError, match="table never has not been written"):
        store.read("never", schema)


def test_the_next_write_sweeps_the_staging_of_dead_writers_and_spares_live_ones(spark, tmp_path):
    import fcntl

    staging = tmp_path / ".staging" / "t"
    for token in ("dead", "alive"):
        (staging / token / "date=2015-01-01").mkdir(parents=True)
        (staging / f"{token}.claim").touch()
    (staging / "unclaimed").mkdir()
    with open(staging / "alive.claim", "a") as live_writer:
        fcntl.flock(live_writer, fcntl.LOCK_EX)  # held as a writer in another process holds it
        TableStore(spark, tmp_path).write("t", frame(spark, [(1, date(2015, 1, 1))]), ["2015-01-01"])
    assert sorted(p.name for p in staging.iterdir()) == ["alive", "alive.claim"]


def test_a_snapshot_keeps_its_rows_when_another_run_replaces_the_table(spark, tmp_path):
    store, schema = TableStore(spark, tmp_path), T.StructType([T.StructField("value", T.IntegerType())])
    store.write("u", spark.createDataFrame([(1,), (2,)], schema))
    lazy, snapshot = store.read("u", schema), store.snapshot("u", schema)
    store.write("u", spark.createDataFrame([(3,)], schema))  # what a concurrent run does
    assert sorted(r.value for r in snapshot.collect()) == [1, 2]
    with pytest.raises(Exception, match="FileNotFound|does not exist"):
        lazy.collect()  # the reason inputs are snapshots: a lazy read's files are gone


def test_reading_a_table_while_holding_its_lock_does_not_wait_for_itself(spark, tmp_path):
    store = TableStore(spark, tmp_path)
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), ["2015-01-01"])
    with store.locked("t"):
        assert store.read("t", SCHEMA).count() == 1 and store.snapshot("t", SCHEMA).count() == 1
