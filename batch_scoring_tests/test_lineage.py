"""Lineage you can replay: Delta versions in the metadata, time travel and RESTORE, and another engine
(delta-rs) reading exactly the rows Spark wrote."""

import datetime as dt

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from batch_scoring.defs.assets.scoring import daily_predictions, maintenance_worklist
from batch_scoring.lib.features import FEATURES_SCHEMA
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA, WORKLIST_SCHEMA
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, QUARANTINE_SCHEMA, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import copy_warehouse, materialization_metadata, materialize, model_manifests

DAY = "2015-04-20"
SCORING = [daily_predictions, maintenance_worklist]


@pytest.fixture(scope="module")
def scored(trained_fleet, tmp_path_factory):
    """A copy of the trained fleet's warehouse with DAY scored, and that run's result. Read-only."""
    input_dir, trained_warehouse = trained_fleet
    warehouse = copy_warehouse(trained_warehouse, tmp_path_factory.mktemp("scored") / "warehouse")
    return input_dir, warehouse, materialize(input_dir, warehouse, SCORING, partition_key=DAY)


def version_at(spark, location: str, moment: dt.datetime) -> int:
    """The newest version of a Delta table committed at or before `moment`."""
    history = DeltaTable.forPath(spark, location).history().where(F.col("timestamp") <= F.lit(moment))
    return history.agg(F.max("version")).first()[0]


def test_each_materialization_records_the_delta_versions_it_wrote_and_read(spark, scored):
    _, warehouse, result = scored
    tables = DeltaTables(spark, str(warehouse))
    (manifest,) = model_manifests(spark, warehouse)
    # the model names the versions of the tables it learnt from: those they held when it was registered (the quick
    # start's daily run wrote features again afterwards)
    (registered,) = DeltaTable.forPath(spark, tables.location("failure_model/registry")).history(1).collect()
    assert manifest["read"] == {
        name: version_at(spark, tables.location(name), registered.timestamp) for name in ("features", "raw_failures")
    }
    predictions = materialization_metadata(result, "daily_predictions")
    assert predictions["delta_version"] == tables.version("daily_predictions")
    assert predictions["delta_versions_read"] == {
        "features": tables.version("features"),
        "failure_model": manifest["version"],
        # its own trailing week, read before this run wrote (the table held the quick start's day)
        "daily_predictions": predictions["delta_version"] - 1,
    }
    worklist = materialization_metadata(result, "maintenance_worklist")
    # the predictions it lists, and the model whose threshold it lists them by
    assert worklist["delta_versions_read"] == {
        "daily_predictions": predictions["delta_version"],
        "failure_model": manifest["version"],
    }
    # and each commit names the run that made it
    (commit,) = DeltaTable.forPath(spark, tables.location("daily_predictions")).history(1).collect()
    assert commit.userMetadata == f"dagster run {result.run_id} asset daily_predictions"


def test_a_day_can_be_read_as_it_was_before_a_rerun_and_the_table_restored(spark, scored, tmp_path):
    input_dir, scored_warehouse, first = scored
    warehouse = copy_warehouse(scored_warehouse, tmp_path / "warehouse")
    tables = DeltaTables(spark, str(warehouse))
    before = materialization_metadata(first, "daily_predictions")["delta_version"]
    rows_before = sorted(tuple(r) for r in tables.read("daily_predictions", PREDICTIONS_SCHEMA, [DAY]).collect())
    materialize(input_dir, warehouse, SCORING, partition_key=DAY)
    rerun = sorted(tuple(r) for r in tables.read("daily_predictions", PREDICTIONS_SCHEMA, [DAY]).collect())
    assert rerun != rows_before  # the rerun's rows carry its own scored_at
    as_it_was = tables.read("daily_predictions", PREDICTIONS_SCHEMA, [DAY], version=before)
    assert sorted(tuple(r) for r in as_it_was.collect()) == rows_before

    DeltaTable.forPath(spark, tables.location("daily_predictions")).restoreToVersion(before)
    restored = tables.read("daily_predictions", PREDICTIONS_SCHEMA, [DAY])
    assert sorted(tuple(r) for r in restored.collect()) == rows_before


def _canonical(value):
    """One spelling for a value however the engine returns it (delta-rs gives zoned UTC timestamps)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def test_delta_rs_reads_exactly_the_rows_spark_wrote(spark, trained_fleet):
    from deltalake import DeltaTable as RustDeltaTable
    from deltalake import QueryBuilder

    _, warehouse = trained_fleet  # every table, written by the quick start
    tables = DeltaTables(spark, str(warehouse))
    schemas = {
        **{table.asset: table.schema for table in (MACHINES, TELEMETRY, ERRORS, MAINTENANCE, FAILURES)},
        **{f"quarantine/{table.asset}": QUARANTINE_SCHEMA for table in (MACHINES, TELEMETRY)},
        "features": FEATURES_SCHEMA,
        "daily_predictions": PREDICTIONS_SCHEMA,
        "maintenance_worklist": WORKLIST_SCHEMA,
    }
    for name, schema in schemas.items():
        by_spark = sorted(tuple(row) for row in tables.read(name, schema).collect())
        rust_table = RustDeltaTable(tables.location(name))
        assert rust_table.version() == tables.version(name), name
        read = QueryBuilder().register("t", rust_table).execute("SELECT * FROM t").read_all()
        columns = [[_canonical(v) for v in read.column(field.name).to_pylist()] for field in schema.fields]
        by_rust = sorted(zip(*columns)) if columns[0] else []
        assert len(by_rust) == len(by_spark), name
        assert by_rust == by_spark, name
