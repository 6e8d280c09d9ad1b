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


def run_quickstart(machines: int, start: date, days: int) -> int:
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
    print(f"Running training_job for {first} .. {last} into {warehouse_dir} ...")
    result = (
        build_definitions()
        .resolve_job_def("training_job")
        .execute_in_process(
            instance=_instance(),
            tags=partition_range_tags(first.isoformat(), last.isoformat()),
            run_config={
                **QUIET_LOGS,
                # hold out the last fifth of the days (at most the model's default 60) for evaluation
                "ops": {"failure_model": {"config": {"holdout_days": min(60, days // 5)}}},
            },
            raise_on_error=False,
        )
    )
    print()
    print(_summary(result))
    if not result.success:
        return 1
    print(f"\nRunning daily_scoring_job for {last} ...")
    scoring = (
        build_definitions()
        .resolve_job_def("daily_scoring_job")
        .execute_in_process(
            instance=_instance(), partition_key=last.isoformat(), run_config=QUIET_LOGS, raise_on_error=False
        )
    )
    print()
    print(_scoring_summary(scoring, warehouse_dir))
    return 0 if scoring.success else 1


def _summary(result: dg.ExecuteInProcessResult) -> str:
    """One line per table, then the model's figures and its check."""
    # a run over a range of days records one materialization per day, all with the run's figures
    latest = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        latest[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    lines = [f"{'table':16} {'rows':>10} {'quarantined':>12}  path"]
    for asset, meta in latest.items():
        if "dagster/row_count" in meta:
            quarantined = f"{meta['rows_quarantined']:,}" if "rows_quarantined" in meta else "-"
            lines.append(f"{asset:16} {meta['dagster/row_count']:>10,} {quarantined:>12}  {meta['path']}")
    model = latest.get("failure_model")
    if model:
        lines.append(
            f"\nfailure_model {model['version']}: hold-out macro F1 {model['macro_f1']:.3f} "
            f"(majority-class baseline {model['baseline_macro_f1']:.3f}), trained on {model['training_days']}, "
            f"held out {model['holdout_days']}\n  saved at {model['path']}"
        )
    for check in result.get_asset_check_evaluations():
        lines.append(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'}: {check.description}")
    if not result.success:
        lines.append("\nThe run failed; see the messages above.")
    return "\n".join(lines)


def _scoring_summary(result: dg.ExecuteInProcessResult, warehouse_dir: Path) -> str:
    """Where the day's predictions and worklist are, and the most urgent machines."""
    latest = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        latest[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    if not result.success or "maintenance_worklist" not in latest:
        return "The scoring run failed; see the messages above."
    predictions, worklist = latest["daily_predictions"], latest["maintenance_worklist"]
    shares = predictions["predicted_failure_share"]
    lines = [
        f"Predictions: {predictions['dagster/row_count']} machines scored with model {predictions['model_version']}, "
        f"{next(iter(shares.values())):.0%} predicted to have a component fail within 7 days",
        f"  Delta table: {predictions['path']} (version {predictions['delta_version']})",
        f"Worklist: {worklist['dagster/row_count']} machines at failure probability >= "
        f"{worklist['min_failure_probability']}",
        f"  CSV: {worklist['csv_file']}",
    ]
    for record in worklist["most_urgent"].records[:5]:
        row = record.data
        lines.append(
            f"  #{row['rank']} machine {row['machine_id']}: {row['likely_component']} "
            f"(failure probability {row['failure_probability']:.2f})"
        )
    return "\n".join(lines)
