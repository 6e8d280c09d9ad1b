"""The quick start's first command, run in-process on a small fleet (the `quickstart` fixture, which the tests
that need a trained fleet share)."""

import os
import sys
from pathlib import Path

from batch_scoring.lib.features import FEATURES_SCHEMA
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, TELEMETRY
from batch_scoring.storage.delta import DeltaTables
from batch_scoring_tests.conftest import days_with_rows, model_versions

TABLES = (MACHINES, TELEMETRY, ERRORS, MAINTENANCE, FAILURES)


def test_quickstart_runs_the_chain_from_simulation_to_the_worklist(spark, quickstart):
    out, warehouse = quickstart.output, quickstart.warehouse
    assert quickstart.exit_code == 0, out
    assert f"Simulating 30 machines over 120 days from 2015-01-01 into {quickstart.input_dir}" in out
    summary = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("raw_", "features"))}
    assert summary["raw_telemetry"] == ["86,400", "0", str(warehouse / "raw_telemetry")]
    assert summary["raw_machines"] == ["30", "0", str(warehouse / "raw_machines")]
    assert summary["features"] == ["3,600", "-", str(warehouse / "features")]
    store = DeltaTables(spark, str(warehouse))
    assert store.read("raw_telemetry", TELEMETRY.schema).count() == 30 * 120 * 24
    assert store.read("features", FEATURES_SCHEMA).count() == 30 * 120
    (version,) = model_versions(spark, warehouse)
    assert f"failure_model {version}: hold-out macro F1" in out
    assert "check usable_for_scoring: passed" in out
    assert f"Predictions: 30 machines scored with model {version}" in out
    assert f"CSV: {warehouse / 'worklists' / 'maintenance_worklist_2015-04-30.csv'}" in out
    assert (warehouse / "worklists" / "maintenance_worklist_2015-04-30.csv").exists()
    assert days_with_rows(store, "daily_predictions") == ["2015-04-30"]
    # it ends with the command that opens the UI on its runs and its folders
    *variables, dagster, command = out.rstrip().splitlines()[-1].split(maxsplit=5)
    assert variables == [
        f"DAGSTER_HOME={quickstart.dagster_home}",
        f"BATCH_SCORING_INPUT_DIR={quickstart.input_dir}",
        f"BATCH_SCORING_WAREHOUSE_DIR={warehouse}",
        "BATCH_SCORING_FIRST_DAY=2015-01-01",
    ]
    assert (
        os.path.abspath(dagster) == str(Path(sys.executable).parent / "dagster") and command == "dev -w workspace.yaml"
    )
    # every table of the warehouse is a Delta table
    table_folders = {p.parent.relative_to(warehouse).as_posix() for p in warehouse.rglob("_delta_log")}
    assert table_folders == {
        *(f"{prefix}{t.asset}" for t in TABLES for prefix in ("", "quarantine/")),
        "features",
        "daily_predictions",
        "maintenance_worklist",
        "failure_model/registry",
    }
