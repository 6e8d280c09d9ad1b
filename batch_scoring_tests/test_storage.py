"""The warehouse's Delta tables: days replaced alone in one commit, schemas enforced, versions readable."""

import fcntl
import threading
import time
from datetime import date

import pytest
from delta.tables import DeltaTable
from pyspark.sql import types as T

from batch_scoring.storage.delta import LOCKS_FOLDER, DeltaTables, SchemaMismatch, TableNotFound
from batch_scoring_tests.conftest import days_with_rows

pytestmark = pytest.mark.unit  # tiny frames in one process: part of the fast loop

SCHEMA = T.StructType(
    [T.StructField("value", T.IntegerType(), nullable=False), T.StructField("date", T.DateType(), nullable=False)]
)
UNDATED_SCHEMA = T.StructType([T.StructField("value", T.IntegerType())])
DAYS = ["2015-01-01", "2015-01-02"]


def frame(spark, rows, schema=SCHEMA):
    return spark.createDataFrame(rows, schema)


def days(first: int, last: int) -> list[str]:
    """The days first..last of January 2015, as partition keys."""
    return [date(2015, 1, day).isoformat() for day in range(first, last + 1)]


def table_rows(store, partitions=None, version=None):
    return sorted((r.value, r.date.isoformat()) for r in store.read("t", SCHEMA, partitions, version).collect())


def commits(store, name="t"):
    return DeltaTable.forPath(store.spark, store.location(name)).history().orderBy("version").collect()


def test_writing_days_replaces_exactly_those_days_in_one_commit(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    first = store.write("t", frame(spark, [(1, date(2015, 1, 1)), (2, date(2015, 1, 2))]), SCHEMA, DAYS, "run a")
    second = store.write("t", frame(spark, [(3, date(2015, 1, 2))]), SCHEMA, ["2015-01-02"], "run b")
    third = store.write("t", frame(spark, [(3, date(2015, 1, 2))]), SCHEMA, ["2015-01-02"], "run c")  # a rerun
    assert table_rows(store) == [(1, "2015-01-01"), (3, "2015-01-02")]
    assert (first, second, third) == (1, 2, 3) == (store.version("t") - 2, store.version("t") - 1, store.version("t"))
    history = commits(store)
    assert [c.operation for c in history] == ["CREATE TABLE", "WRITE", "WRITE", "WRITE"]
    assert history[2].userMetadata == "run b"  # which run wrote which version
    assert DeltaTable.forPath(spark, store.location("t")).detail().first().partitionColumns == ["date"]
    # each day's rows in one file
    assert len(store.read("t", SCHEMA, ["2015-01-02"]).inputFiles()) == 1


def test_a_listed_day_without_rows_ends_empty(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    store.write("t", frame(spark, [(day, date(2015, 1, day)) for day in range(1, 5)]), SCHEMA, days(1, 4))
    store.write("t", frame(spark, [(5, date(2015, 1, 2))]), SCHEMA, days(2, 3))  # a range of days replaced
    assert table_rows(store) == [(1, "2015-01-01"), (4, "2015-01-04"), (5, "2015-01-02")]
    assert days_with_rows(store, "t") == ["2015-01-01", "2015-01-02", "2015-01-04"]


def test_rows_outside_the_days_written_fail_the_write_and_change_nothing(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), SCHEMA, ["2015-01-01"])
    version = store.version("t")
    with pytest.raises(ValueError, match=r"rows of t fall outside the partitions being written \(2015-01-01\)"):
        store.write("t", frame(spark, [(2, date(2015, 1, 1)), (3, date(2015, 1, 9))]), SCHEMA, ["2015-01-01"])
    assert table_rows(store) == [(1, "2015-01-01")] and store.version("t") == version


def test_columns_differing_from_the_declared_ones_fail_naming_them(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    wrong = spark.createDataFrame([(1, "x", date(2015, 1, 1))], "value long, extra string, date date")
    with pytest.raises(SchemaMismatch, match="rows written to t: unexpected extra; value is bigint, declared int"):
        store.write("t", wrong, SCHEMA, ["2015-01-01"])
    assert not store.exists("t")  # nothing was created either
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), SCHEMA, ["2015-01-01"])
    narrower = T.StructType([SCHEMA["date"]])
    with pytest.raises(SchemaMismatch, match=f"table t at {tmp_path}/t: unexpected value"):
        store.read("t", narrower)


def test_a_null_in_a_non_null_column_fails_the_write_and_changes_nothing(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), SCHEMA, ["2015-01-01"])
    nullable = T.StructType([T.StructField(f.name, f.dataType, nullable=True) for f in SCHEMA.fields])
    with pytest.raises(Exception, match="NOT NULL constraint violated for column: value"):
        store.write("t", frame(spark, [(None, date(2015, 1, 1))], nullable), SCHEMA, ["2015-01-01"])
    assert table_rows(store) == [(1, "2015-01-01")]


def test_reading_days_gives_their_rows_and_missing_days_give_none(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    store.write("t", frame(spark, [(day, date(2015, 1, day)) for day in (1, 2, 3, 5)]), SCHEMA, days(1, 5))
    assert table_rows(store, ["2015-01-01", "2015-01-05"]) == [(1, "2015-01-01"), (5, "2015-01-05")]
    # consecutive days are read as one range of days, other lists as the days listed
    assert table_rows(store, days(2, 4)) == [(2, "2015-01-02"), (3, "2015-01-03")]
    assert table_rows(store, ["2015-01-03", "2015-01-02", "2015-01-09"]) == [(2, "2015-01-02"), (3, "2015-01-03")]
    empty = store.read("t", SCHEMA, ["2016-01-01"])
    assert empty.count() == 0 and empty.schema.fieldNames() == SCHEMA.fieldNames()
    with pytest.raises(TableNotFound, match=f"table never has not been written: no Delta table at {tmp_path}/never"):
        store.read("never", SCHEMA)


def test_an_undated_table_is_replaced_whole_and_appends_add_rows(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    store.write("u", frame(spark, [(1,), (2,)], UNDATED_SCHEMA), UNDATED_SCHEMA)
    store.write("u", frame(spark, [(3,)], UNDATED_SCHEMA), UNDATED_SCHEMA)
    assert [r.value for r in store.read("u", UNDATED_SCHEMA).collect()] == [3]
    store.append("u", frame(spark, [(4,)], UNDATED_SCHEMA), UNDATED_SCHEMA)
    assert sorted(r.value for r in store.read("u", UNDATED_SCHEMA).collect()) == [3, 4]


def test_a_read_pinned_to_a_version_keeps_its_rows_when_another_run_replaces_the_table(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), SCHEMA, ["2015-01-01"])
    pinned, newest = store.read("t", SCHEMA, version=store.version("t")), store.read("t", SCHEMA)
    store.write("t", frame(spark, [(2, date(2015, 1, 1))]), SCHEMA, ["2015-01-01"])  # what a concurrent run does
    assert [r.value for r in pinned.collect()] == [1]
    assert [r.value for r in newest.collect()] == [2]  # why inputs are read at a version: Delta re-resolves
    # the newest version is the log's, also after a commit by another writer
    before = store.version("t")
    DeltaTable.forPath(spark, store.location("t")).delete("value = 2")
    (newest_commit,) = DeltaTable.forPath(spark, store.location("t")).history(1).collect()
    assert store.version("t") == newest_commit.version == before + 1


def test_a_local_write_waits_for_another_process_holding_the_tables_lock(spark, tmp_path):
    store = DeltaTables(spark, str(tmp_path))
    store.write("t", frame(spark, [(1, date(2015, 1, 1))]), SCHEMA, ["2015-01-01"])
    lock_file = tmp_path / LOCKS_FOLDER / "t.lock"
    with open(lock_file, "a") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)  # as a writer in another process holds it
        writer = threading.Thread(
            target=store.write, args=("t", frame(spark, [(2, date(2015, 1, 2))]), SCHEMA, ["2015-01-02"])
        )
        writer.start()
        time.sleep(3)
        assert writer.is_alive() and store.version("t") == 1, "the write did not wait for the lock"
    writer.join(timeout=120)
    assert table_rows(store) == [(1, "2015-01-01"), (2, "2015-01-02")]


def test_reading_takes_no_lock(spark, tmp_path):
    frame(spark, [(1, date(2015, 1, 1))]).write.format("delta").save(str(tmp_path / "t"))  # written by another tool
    assert table_rows(DeltaTables(spark, str(tmp_path))) == [(1, "2015-01-01")]
    assert not (tmp_path / LOCKS_FOLDER).exists()  # so a read-only warehouse can be read


def test_with_a_catalog_schema_tables_are_catalog_tables_written_and_read_by_name(spark, tmp_path, catalog_schema):
    store = DeltaTables(spark, str(tmp_path / "volume"), catalog_schema)
    store.write("quarantine/t", frame(spark, [(1, date(2015, 1, 1)), (2, date(2015, 1, 2))]), SCHEMA, DAYS, "run a")
    store.write("quarantine/t", frame(spark, [(3, date(2015, 1, 2))]), SCHEMA, ["2015-01-02"], "run b")
    name = f"{catalog_schema}.quarantine_t"
    assert store.location("quarantine/t") == name and store.exists("quarantine/t")
    # what an analyst's SQL sees: the table by its name, replaced day by day, with its history
    assert sorted(tuple(r) for r in spark.sql(f"SELECT value, date FROM {name}").collect()) == [
        (1, date(2015, 1, 1)),
        (3, date(2015, 1, 2)),
    ]
    history = spark.sql(f"DESCRIBE HISTORY {name}").orderBy("version").collect()
    assert [(h.operation, h.userMetadata) for h in history][-1] == ("WRITE", "run b")
    assert sorted(r.value for r in store.read("quarantine/t", SCHEMA, None, version=1).collect()) == [1, 2]
    assert store.gaps("quarantine/t", SCHEMA, ["2015-01-01", "2015-01-02"], store.version("quarantine/t")) == []
    assert not (tmp_path / "volume").exists(), "no table files under the root: the catalog keeps them"
