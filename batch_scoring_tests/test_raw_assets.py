"""The ingest assets materialized with real Dagster and real Spark."""

import os
import shutil

import dagster as dg
import pytest

from batch_scoring.defs.assets.raw import RAW_ASSETS, raw_machines, raw_telemetry
from batch_scoring.defs.jobs import MACHINES_KEYS, daily_scoring_request, machines_changed
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.defs.resources import InputFiles
from batch_scoring.lib.tables import MACHINES, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import (
    SMALL_FLEET_DAYS,
    copy_warehouse,
    dagster_resources,
    days_with_rows,
    materialization_metadata,
)


def materialize_raw(input_dir, warehouse_dir, raise_on_error=True, catalog_schema="", **kwargs):
    resources = dagster_resources(input_dir, warehouse_dir, catalog_schema)
    return dg.materialize(RAW_ASSETS, resources=resources, raise_on_error=raise_on_error, **kwargs)


def test_a_range_of_days_is_ingested_in_one_run(spark, small_fleet_ingested):
    result, warehouse = small_fleet_ingested
    assert result.success
    store = DeltaTables(spark, str(warehouse))
    assert days_with_rows(store, "raw_telemetry") == [f"2015-01-{d:02d}" for d in range(1, 13)]
    telemetry = store.read("raw_telemetry", TELEMETRY.schema)
    assert telemetry.count() == 6 * 12 * 24
    meta = materialization_metadata(result, "raw_telemetry")
    assert (meta["rows_read"], meta["rows_kept"], meta["rows_quarantined"]) == (1728, 1728, 0)
    assert meta["rows_written"] == 1728 and meta["machines"] == 6
    # each day's materialization has that day's own row count (the last day's here), so the UI charts it by day
    assert meta["dagster/row_count"] == 6 * 24
    assert meta["first_timestamp"] == "2015-01-01 00:00:00" and meta["last_timestamp"] == "2015-01-12 23:00:00"
    assert [c.name for c in meta["dagster/column_schema"].columns] == TELEMETRY.column_names
    assert len(meta["preview"].records) == 5
    # readings as a person reads them: at most 3 decimals
    assert all(round(r.data["volt"], 3) == r.data["volt"] for r in meta["preview"].records)
    assert materialization_metadata(result, "raw_machines")["dagster/row_count"] == 6
    # one materialization per day of the range, all from the one run
    partitions = {
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "raw_telemetry"
    }
    assert len(partitions) == 12


def test_rerunning_a_day_gives_the_same_rows_without_duplicates(spark, small_fleet_dir, small_fleet_ingested, tmp_path):
    warehouse = copy_warehouse(small_fleet_ingested[1], tmp_path / "warehouse")
    store = DeltaTables(spark, str(warehouse))
    first = store.read("raw_telemetry", TELEMETRY.schema).localCheckpoint()
    for _ in range(2):  # raw_machines is loaded from the warehouse, as the first run left it
        result = materialize_raw(small_fleet_dir, warehouse, partition_key="2015-01-03", selection=[raw_telemetry])
        assert result.success
    telemetry = store.read("raw_telemetry", TELEMETRY.schema)
    assert telemetry.count() == 6 * 12 * 24
    assert telemetry.exceptAll(first).count() == 0 and first.exceptAll(telemetry).count() == 0
    assert telemetry.groupBy("machine_id", "datetime").count().where("count > 1").count() == 0


def test_a_day_without_telemetry_fails_with_a_message_saying_so(small_fleet_dir, small_fleet_ingested, tmp_path):
    warehouse = copy_warehouse(small_fleet_ingested[1], tmp_path / "warehouse")
    result = materialize_raw(
        small_fleet_dir, warehouse, raise_on_error=False, partition_key="2015-02-01", selection=[raw_telemetry]
    )
    assert not result.success
    failure = result.failure_data_for_node("raw_telemetry")
    assert "No telemetry rows dated 2015-02-01 in" in failure.user_failure_data.description
    assert not (warehouse / "raw_telemetry" / "date=2015-02-01").exists()


@pytest.mark.unit
def test_a_missing_input_file_fails_the_run_naming_folder_and_file_names(tmp_path):
    (tmp_path / "input").mkdir()
    with pytest.raises(
        Exception, match=r"No machines file in .*input \(looked for PdM_machines\.csv, .*nor in daily drops"
    ):
        materialize_raw(tmp_path / "input", tmp_path / "warehouse", tags=partition_range_tags(*SMALL_FLEET_DAYS))


def test_with_a_catalog_schema_the_tables_are_catalog_tables(spark, small_fleet_dir, tmp_path, catalog_schema):
    """BATCH_SCORING_CATALOG / _SCHEMA: each asset is the Delta table <catalog>.<schema>.<asset> analysts query."""
    selection = [raw_machines, raw_telemetry]
    result = materialize_raw(
        small_fleet_dir,
        tmp_path / "volume",
        catalog_schema=catalog_schema,
        partition_key="2015-01-03",
        selection=selection,
    )
    assert result.success
    meta = materialization_metadata(result, "raw_telemetry")
    assert meta["table"] == f"{catalog_schema}.raw_telemetry" and "path" not in meta
    assert spark.table(f"{catalog_schema}.raw_telemetry").count() == meta["dagster/row_count"] == 6 * 24
    assert spark.table(f"{catalog_schema}.quarantine_raw_telemetry").columns[-1] == "date"
    assert spark.table(f"{catalog_schema}.raw_machines").count() == 6


def test_the_daily_run_reads_raw_machines_only_when_its_files_changed(small_fleet_dir, tmp_path):
    input_dir = tmp_path / "input"
    shutil.copytree(small_fleet_dir, input_dir)
    input_files, instance = InputFiles(input_dir=str(input_dir)), dg.DagsterInstance.ephemeral()

    def machines_in_daily_run() -> bool:
        request = daily_scoring_request("2015-01-05", machines_changed(instance, input_files))
        selected = {key.to_user_string() for key in request.asset_selection}
        assert {"raw_telemetry", "features", "daily_predictions"} <= selected
        return MACHINES_KEYS <= set(request.asset_selection)

    assert machines_in_daily_run()  # never made
    result = materialize_raw(input_dir, tmp_path / "warehouse", selection=[raw_machines], instance=instance)
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(MACHINES.asset)]
    assert event.materialization.tags["dagster/data_version"] == input_files.fingerprint(MACHINES)
    assert not machines_in_daily_run()
    machines_file = input_dir / "PdM_machines.csv"
    os.utime(machines_file, ns=(1, 2))  # touched, the same bytes
    assert not machines_in_daily_run()
    with open(machines_file, "a") as machines:
        machines.write("7,model3,12\n")
    assert machines_in_daily_run()
