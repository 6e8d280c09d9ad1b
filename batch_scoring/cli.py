"""Command line: `python -m batch_scoring simulate ...`, `... quickstart` and `... score --day D`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from batch_scoring import settings
from batch_scoring.lib import simulator
from batch_scoring.lib.crew_page import HISTORY_DAYS
from batch_scoring.lib.ingest import InputFileError, locate_source_file
from batch_scoring.lib.steps import ROW_COUNT_KEY, day_span
from batch_scoring.lib.tables import TELEMETRY

DEFAULT_MACHINES = 100
DEFAULT_DAYS = 365
DEFAULT_SCORE_DAYS = HISTORY_DAYS  # the quick start scores the days the crews' page looks back on
# step starts and ends, not every engine event
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _date(text: str) -> date:
    return date.fromisoformat(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m batch_scoring", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write the five tables of a simulated fleet, or one day's drop")
    simulate.add_argument("--out", type=Path, required=True, help="folder to write PdM_<name>.csv into")
    simulate.add_argument("--machines", type=int, help=f"fleet size (default {DEFAULT_MACHINES})")
    simulate.add_argument("--start", type=_date, help="first day, YYYY-MM-DD (default: --days days up to yesterday)")
    simulate.add_argument("--days", type=int, help=f"days of telemetry (default {DEFAULT_DAYS})")
    simulate.add_argument("--seed", type=int, help="same seed, same bytes (default 0)")
    simulate.add_argument("--gzip", action="store_true", help="write .csv.gz files")
    simulate.add_argument(
        "--like",
        type=Path,
        help="folder of real machines, errors, maint and failures files: keep them and simulate only "
        "telemetry consistent with them (by default over the days of their failures and errors)",
    )
    simulate.add_argument(
        "--drop",
        type=_date,
        metavar="DAY",
        help="write the day's telemetry, errors, maintenance and failures of the fleet simulated into --out as the "
        f"daily drop <out>/daily/DAY/ (the fleet as {simulator.FLEET_MANIFEST} there describes it)",
    )

    quickstart = commands.add_parser(
        "quickstart", help="simulate a fleet if the input folder is empty, then run the pipeline end to end"
    )
    quickstart.add_argument(
        "--machines", type=int, default=DEFAULT_MACHINES, help=f"fleet size to simulate (default {DEFAULT_MACHINES})"
    )
    quickstart.add_argument(
        "--start", type=_date, help="first day (default: the simulated fleet's, or --days days up to yesterday)"
    )
    quickstart.add_argument("--days", type=int, help=f"days to simulate and train on (default {DEFAULT_DAYS})")
    quickstart.add_argument(
        "--score-days",
        type=int,
        default=DEFAULT_SCORE_DAYS,
        help=f"last days to score, in one run (default {DEFAULT_SCORE_DAYS}: the history the crews' page shows)",
    )

    score = commands.add_parser(
        "score", help="run daily_scoring_job for a day, as the schedule does, and say what came of it"
    )
    score.add_argument("--day", type=_date, help="the day, YYYY-MM-DD (default: yesterday, UTC)")
    return parser


def last_complete_day() -> date:
    """Yesterday in UTC: the newest day of the daily partitions."""
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def days_up_to_yesterday(days: int) -> date:
    """The first of `days` days that end yesterday (UTC)."""
    return last_complete_day() - timedelta(days=days - 1)


def _spark():
    from batch_scoring.lib.spark import build_spark_session

    return build_spark_session(settings.spark_config())


def simulate(args: argparse.Namespace) -> None:
    if args.drop:
        written = _simulate_drop(args.out, args.drop)
    elif args.like:
        written = simulator.simulate_like(
            _spark(), args.like, args.out, args.start, args.days, args.seed or 0, args.gzip
        )
    else:
        days = args.days or DEFAULT_DAYS
        start = args.start or days_up_to_yesterday(days)
        fleet = simulator.FleetManifest(args.machines or DEFAULT_MACHINES, start, days, args.seed or 0)
        written = simulator.write_simulated_fleet(_spark(), fleet, args.out, args.gzip)
    for name, path in written.items():
        print(f"{name:12} {path}")


def _simulate_drop(input_dir: Path, day: date) -> dict[str, Path]:
    """The day's drop of the fleet simulated into `input_dir`: the same rows its bulk files hold for the day, if
    they reach it."""
    fleet = simulator.FleetManifest.read(input_dir)
    if fleet is None:
        raise InputFileError(
            f"No {simulator.FLEET_MANIFEST} in {input_dir}: simulate a fleet there first, then its drops"
        )
    if day < fleet.start:
        raise InputFileError(f"The fleet in {input_dir} starts on {fleet.start}: no drop before it")
    return simulator.write_drop(fleet.simulate(_spark(), (day - fleet.start).days + 1), day, input_dir)


def _ensure_input(input_dir: Path, machines: int, start: date | None, days: int | None) -> tuple[date, date]:
    """Simulate a fleet into `input_dir` unless it already holds the input files; the first and last day to train
    on: the given ones, else the simulated fleet's, else the `days` up to yesterday."""
    try:
        locate_source_file(input_dir, TELEMETRY)
    except InputFileError:
        days = days or DEFAULT_DAYS
        fleet = simulator.FleetManifest(machines, start or days_up_to_yesterday(days), days, seed=0)
        print(f"Simulating {machines} machines over {days} days from {fleet.start} into {input_dir} ...")
        simulator.write_simulated_fleet(_spark(), fleet, input_dir)
        return fleet.start, fleet.last_day
    print(f"Using the input files already in {input_dir}")
    simulated = simulator.FleetManifest.read(input_dir)
    if start is None and days is None and simulated:
        return simulated.start, simulated.last_day
    days = days or DEFAULT_DAYS
    start = start or days_up_to_yesterday(days)
    return start, start + timedelta(days=days - 1)


def _run_job(instance, job_name: str, **execute_args):
    """Run one of the project's jobs in this process. Its plan is recorded as one event per asset, not one per asset
    and day: the quick start's year of training is otherwise 4,380 events on a SQLite instance before any work
    (about a minute on 2 cores). The price, Dagster's: days of a failed run show as missing, not failed, in the UI;
    the command says the run failed."""
    from batch_scoring.defs.definitions import build_definitions

    job = build_definitions().resolve_job_def(job_name)
    with _environment(settings.PLANNED_DAYS_AS_RANGE_ENV, "true"):
        return job.execute_in_process(instance=instance, raise_on_error=False, **execute_args)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` for this process meanwhile, as it was afterwards."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def open_instance(home: Path):
    """The Dagster instance at `home`, created with its `dagster.yaml` when new: the runs stay there, so `dagster dev`
    on the same folder shows them."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("# the Dagster instance of batch_scoring's runs: the quick start's, `dagster dev`'s\n")
    return dg.DagsterInstance.from_config(str(home))


def run_quickstart(machines: int, start: date | None, days: int | None, days_to_score: int) -> int:
    """Simulate (if needed), train on every day, then score the last `days_to_score` days; print what came of each,
    then the command that opens the UI on those runs (recorded in DAGSTER_HOME, by default the project's
    `.dagster_home/`)."""
    input_dir, warehouse_dir, home = Path(settings.input_dir()), Path(settings.warehouse_dir()), settings.dagster_home()
    first, last = _ensure_input(input_dir, machines, start, days)
    # the daily partitions start with the data unless set otherwise (read when the definitions load, below)
    os.environ.setdefault(settings.FIRST_DAY_ENV, first.isoformat())
    if first < settings.first_day():
        raise InputFileError(
            f"The days to train on start on {first}, before the first partition day {settings.first_day()}: "
            f"set {settings.FIRST_DAY_ENV}={first} (or earlier)"
        )
    with open_instance(Path(home)) as instance:
        succeeded = _train_and_score(instance, input_dir, warehouse_dir, first, last, days_to_score)
    if succeeded:
        print(f"\nThe runs are recorded in {home}. Open the UI on them at http://127.0.0.1:3000 with:\n")
        print("  " + ui_command(home, settings.first_day()))
    return 0 if succeeded else 1


def run_score(day: date) -> int:
    """Score a day into the warehouse, recorded in the instance at DAGSTER_HOME (the UI's)."""
    if not settings.first_day() <= day <= last_complete_day():
        raise InputFileError(
            f"{day} is not a daily partition: they run from {settings.first_day()} ({settings.FIRST_DAY_ENV}) "
            f"to {last_complete_day()}, yesterday (UTC)"
        )
    with open_instance(Path(settings.dagster_home())) as instance:
        return 0 if score_days(instance, Path(settings.input_dir()), day, day) else 1


def ui_command(home: str, first_day: date) -> str:
    """`dagster dev` on the instance at `home`, the folders of this process's settings, and daily partitions from
    `first_day` (so the UI's calendar starts where the data do)."""
    folders = {
        name: os.environ[name] for name in (settings.INPUT_DIR_ENV, settings.WAREHOUSE_DIR_ENV) if name in os.environ
    }
    dagster = Path(sys.executable).parent / "dagster"
    if dagster.is_relative_to(Path.cwd()):
        dagster = dagster.relative_to(Path.cwd())
    variables = {settings.DAGSTER_HOME_ENV: home, **folders, settings.FIRST_DAY_ENV: first_day.isoformat()}
    return shlex.join(
        [*(f"{name}={value}" for name, value in variables.items()), str(dagster), "dev", "-w", "workspace.yaml"]
    )


def _train_and_score(
    instance, input_dir: Path, warehouse_dir: Path, first: date, last: date, days_to_score: int
) -> bool:
    """training_job over the days, then daily_scoring_job for the last `days_to_score`, each with its summary
    printed."""
    from batch_scoring.defs.metadata import materialized_metadata
    from batch_scoring.defs.partitions import partition_range_tags

    print(f"Running training_job for {first} .. {last} into {warehouse_dir} ...")
    # hold out the last fifth of the days (at most the model's default 60) for evaluation, and choose the
    # worklist's threshold on as many days before them
    days = (last - first).days + 1
    period = min(60, days // 5)
    model_config = {"ops": {"failure_model": {"config": {"holdout_days": period, "validation_days": period}}}}
    training = _run_job(
        instance,
        "training_job",
        tags=partition_range_tags(first.isoformat(), last.isoformat()),
        run_config={**QUIET_LOGS, **model_config},
    )
    print()
    print(training_summary(materialized_metadata(training.all_events), training.get_asset_check_evaluations()))
    if not training.success:
        print("\nThe run failed; see the messages above.")
        return False
    print()
    # training_job made those days' raw tables and features: the scoring steps alone score them
    return score_days(instance, input_dir, max(first, last - timedelta(days=days_to_score - 1)), last, True)


def score_days(instance, input_dir: Path, first: date, last: date, scoring_only: bool = False) -> bool:
    """daily_scoring_job for the days first..last in one run, as the schedule runs a day (raw_machines only when its
    files changed), or only its scoring steps; with its summary printed."""
    from batch_scoring.defs.jobs import daily_scoring_request, machines_changed, scoring_keys
    from batch_scoring.defs.metadata import materialized_metadata
    from batch_scoring.defs.partitions import partition_range_tags
    from batch_scoring.defs.resources import InputFiles

    steps = " (its scoring steps)" if scoring_only else ""
    print(f"Running daily_scoring_job{steps} for {day_span([first, last] if first < last else [last])} ...")
    if scoring_only:
        selection, tags = sorted(scoring_keys(), key=lambda key: key.to_user_string()), {}
    else:
        machines = machines_changed(instance, InputFiles(input_dir=str(input_dir)))
        request = daily_scoring_request(last.isoformat(), machines)
        selection, tags = request.asset_selection, request.tags
    one_day = first == last
    scoring = _run_job(
        instance,
        "daily_scoring_job",
        asset_selection=selection,
        tags=tags if one_day else {**tags, **partition_range_tags(first.isoformat(), last.isoformat())},
        run_config=QUIET_LOGS,
        **({"partition_key": last.isoformat()} if one_day else {}),
    )
    print()
    print(
        scoring_summary(materialized_metadata(scoring.all_events), last)
        if scoring.success
        else "The scoring run failed; see above."
    )
    return scoring.success


def _where(table_metadata: dict[str, object]) -> object:
    """A table's folder, or its catalog name."""
    return table_metadata.get("path", table_metadata.get("table"))


def training_summary(latest: dict[str, dict[str, object]], checks) -> str:
    """One line per table, then the model's figures and its check."""
    lines = [f"{'table':28} {'rows':>10} {'quarantined':>12}  where"]
    for asset, meta in latest.items():
        if "rows_written" in meta:
            quarantined = f"{meta['rows_quarantined']:,}" if "rows_quarantined" in meta else "-"
            lines.append(f"{asset:28} {meta['rows_written']:>10,} {quarantined:>12}  {_where(meta)}")
    model = latest.get("failure_model")
    if model:
        lines.append(
            f"\nfailure_model {model['version']}: hold-out macro F1 {model['macro_f1']:.3f} "
            f"(majority-class baseline {model['baseline_macro_f1']:.3f}), trained on {model['training_days']}, "
            f"held out {model['holdout_days']}\n  saved at {model['path']}"
        )
        lines.append(
            f"  worklist threshold {model['worklist_threshold']}, chosen on the validation days "
            f"{model['validation_days']}: {model['worklist_threshold_choice']}"
        )
        lines.append("  " + _lead_time_line(model))
    for check in checks:
        lines.append(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'}: {check.description}")
    return "\n".join(lines)


def _lead_time_line(model: dict[str, object]) -> str:
    """The hold-out's worklists as crews would have lived them: failures on the list the day before, false alarms."""
    day_before = model["lead_time"].records[0].data
    per_caught = model["false_alarms_per_caught_failure"]
    alarms = "no failure caught" if per_caught is None else f"{per_caught:.2f} false alarms per failure caught"
    return (
        f"hold-out worklists (failure probability >= {model['worklist_threshold']}): {day_before['on_list']} of "
        f"{day_before['failures']} failures listed the day before; {alarms}; by machine-day, precision "
        f"{_figure(model['worklist_precision'])} and recall {_figure(model['worklist_recall'])}"
    )


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def scoring_summary(latest: dict[str, dict[str, object]], day: date) -> str:
    """Where the predictions and worklists are, and the figures and most urgent machines of the run's last `day`."""
    predictions, worklist = latest["daily_predictions"], latest["maintenance_worklist"]
    lines = [
        f"Predictions for {day}: {predictions[ROW_COUNT_KEY]} machines scored with model "
        f"{predictions['model_version']}, {predictions['predicted_failure_share']:.0%} predicted to have a component "
        "fail within 7 days",
        f"  Delta table: {_where(predictions)} (version {predictions['delta_version']})",
        f"Worklist for {day}: {worklist['machines_listed']} machines at failure probability >= "
        f"{worklist['min_failure_probability']}",
        f"  CSV: {latest['maintenance_worklist_csv']['csv_file']}",
        f"  Page: {latest['maintenance_worklist_page']['page_file']}",
    ]
    for record in worklist["most_urgent"].records[:5]:
        row = record.data
        lines.append(
            f"  #{row['rank']} machine {row['machine_id']}: {row['likely_component']} "
            f"(failure probability {row['failure_probability']:.2f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "simulate" and args.drop:
        given = [f"--{name}" for name in ("machines", "start", "days", "seed", "like") if getattr(args, name)]
        if given or args.gzip:
            parser.error(f"--drop continues the fleet {simulator.FLEET_MANIFEST} describes: drop {given or '--gzip'}")
    try:
        if args.command == "simulate":
            simulate(args)
            return 0
        if args.command == "score":
            return run_score(args.day or last_complete_day())
        return run_quickstart(args.machines, args.start, args.days, args.score_days)
    except InputFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
