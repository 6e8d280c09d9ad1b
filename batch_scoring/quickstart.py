"""The quick start: simulate a fleet if there is no input yet, then run the pipeline's jobs end to end."""

import os
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from batch_scoring.definitions import (
    DEFAULT_INPUT_DIR,
    DEFAULT_WAREHOUSE_DIR,
    INPUT_DIR_ENV,
    WAREHOUSE_DIR_ENV,
    build_definitions,
)
from batch_scoring.ingest import InputFileError, locate_source_file
from batch_scoring.partitions import partition_range_tags
from batch_scoring.tables import TELEMETRY

# step starts and ends, not every engine event
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _instance() -> dg.DagsterInstance:
    """The instance at DAGSTER_HOME, so `dagster dev` shows the runs afterwards; else a throwaway one."""
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def run_quickstart(machines: int, start: date, days: int) -> None:
    input_dir = Path(os.environ.get(INPUT_DIR_ENV, DEFAULT_INPUT_DIR))
    warehouse_dir = Path(os.environ.get(WAREHOUSE_DIR_ENV, DEFAULT_WAREHOUSE_DIR))
    try:
        locate_source_file(input_dir, TELEMETRY)
        print(f"Using the input files already in {input_dir}")
    except InputFileError:
        from batch_scoring import simulator
        from batch_scoring.spark import build_spark_session

        print(f"Simulating {machines} machines over {days} days from {start} into {input_dir} ...")
        fleet = simulator.simulate_fleet(build_spark_session(), machines, start, days, seed=0)
        simulator.write_fleet(fleet, input_dir)

    first, last = start, start + timedelta(days=days - 1)
    instance = _instance()
    print(f"Ingesting {first} .. {last} into {warehouse_dir} ...")
    result = (
        build_definitions()
        .resolve_job_def("ingest_job")
        .execute_in_process(
            instance=instance,
            tags=partition_range_tags(first.isoformat(), last.isoformat()),
            run_config=QUIET_LOGS,
        )
    )
    print()
    print(f"{'table':16} {'kept':>10} {'quarantined':>12}  path")
    # a run over a range of days records one materialization per day, all with the run's figures
    latest = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        latest[materialization.asset_key.to_user_string()] = materialization.metadata
    for asset, meta in latest.items():
        print(f"{asset:16} {meta['rows_kept'].value:>10,} {meta['rows_quarantined'].value:>12,}  {meta['path'].value}")
