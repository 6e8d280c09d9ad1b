"""Benchmark the pipeline at the reference architecture's scale, and compare approaches side by side in one run.

    .venv/bin/python benchmarks/pipeline.py                      # the headline: 1,000 machines x 365 days
    .venv/bin/python benchmarks/pipeline.py --machines 100 --days 60 --separate-runs 5   # a quick look

Every step is a real Dagster materialization of the project's assets on local Spark with the project's
default settings, in this one process (one Spark session, as a run has). Prints a table and writes the
figures as JSON. Steps:

- simulate: the simulator writes the five tables; the newest day's telemetry (and day 30's) also as
  a daily drop, the way new days arrive;
- ingest, features, train: the whole history, each in one run (single-run backfills);
- score one day: the daily job's assets for the newest day (raw tables, features, predictions,
  worklist), as the schedule runs them.

Comparisons:
- (a) scoring one day incrementally vs. what the reference notebooks do each day: ingest everything,
  compute features over the whole history, score the newest day;
- (b) a 30-day backfill of features, predictions and worklist in one run vs. 30 runs of one day;
- (c) scoring day 30 of a fleet with 30 days of history vs. day 365 of a fleet with 365 days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pyspark
from pyspark.sql import functions as F

from batch_scoring import settings
from batch_scoring.defs.assets import SPARK_ASSETS
from batch_scoring.defs.definitions import pipeline_resources
from batch_scoring.defs.jobs import daily_scoring_request
from batch_scoring.defs.metadata import materialized_metadata
from batch_scoring.defs.partitions import partition_range_tags
from batch_scoring.defs.resources import SparkResource
from batch_scoring.lib.ingest import DROP_READY_MARKER, DROPS_FOLDER
from batch_scoring.lib.simulator import simulate_fleet, write_fleet, write_source_file
from batch_scoring.lib.spark import build_spark_session
from batch_scoring.lib.tables import TELEMETRY

START = date(2015, 1, 1)
TABLES = ["raw_machines", "raw_telemetry", "raw_errors", "raw_maintenance", "raw_failures"]
RAW = [*TABLES, *(f"quarantine/{name}" for name in TABLES)]  # a raw table's step writes its quarantine too
SCORING = ["daily_predictions", "maintenance_worklist", "maintenance_worklist_csv"]
# the day's run as the schedule asks for it, the machines files unchanged since raw_machines was made
DAILY_JOB = [
    key.to_user_string() for key in daily_scoring_request(START.isoformat(), with_machines=False).asset_selection
]
BACKFILL = ["features", *SCORING]
TARGETS = {
    "pipeline_seconds": 4 * 60,
    "ingest_rows_per_second": 250_000,
    "features_rows_per_second": 250_000,
    "daily_job_warm_seconds": 5.0,
    "daily_job_fresh_cli_seconds": 20.0,
    "a_incremental_speedup": 20.0,
    "b_backfill_speedup": 5.0,
    "c_day365_vs_day30": 1.3,
    "scale_rows_per_second_kept": 0.75,  # the largest fleet's rows/s against the smallest's
}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _process_tree_pss(root: int) -> int:
    """Proportional set size (resident memory, pages shared between processes split among them) of
    `root` and all its descendants: the Spark JVM and Spark's Python workers are children of this process."""
    parents, pss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as smaps:
                pss[pid] = next(int(line.split()[1]) * 1024 for line in smaps if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return sum(pss.values())


class PeakMemory:
    """Samples the process tree's memory in the background; `reset` starts a new peak."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak = interval, 0
        threading.Thread(target=self._sample, daemon=True).start()

    def reset(self) -> None:
        self.peak = _process_tree_pss(os.getpid())

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _process_tree_pss(os.getpid()))
            time.sleep(self.interval)


class Bench:
    def __init__(self):
        self.memory = PeakMemory()
        self.steps: list[dict] = []

    @contextmanager
    def step(self, name: str, what: str):
        """Time one step; the caller fills in `rows` (what the rows/s counts is in `what`)."""
        record = {"step": name, "rows_counted": what, "rows": None}
        self.memory.reset()
        started = time.perf_counter()
        yield record
        record["seconds"] = round(time.perf_counter() - started, 2)
        record["peak_memory_mb"] = round(self.memory.peak / 2**20)
        self.steps.append(record)
        print(f"  {name}: {record['seconds']:.1f} s", flush=True)


def resources(input_dir: Path, warehouse_dir: Path) -> dict[str, object]:
    """The production resources with the project's default Spark settings (local[*])."""
    return pipeline_resources(SparkResource(spark_config=settings.SPARK_DEFAULTS), str(input_dir), str(warehouse_dir))


def materialize(folders: tuple[Path, Path], selection: list[str], first=None, last=None, config=None):
    """One run of the selected assets: for the day `first`, the days first..last, or without days."""
    days = {}
    if first is not None and last is None:
        days = {"partition_key": first.isoformat()}
    elif first is not None:
        days = {"tags": partition_range_tags(str(first), str(last))}
    result = dg.materialize(
        SPARK_ASSETS,
        selection=selection,
        resources=resources(*folders),
        run_config={**QUIET, **({"ops": config} if config else {})},
        **days,
    )
    assert result.success, f"run of {selection} failed"
    return result


def metadata(result: dg.ExecuteInProcessResult, asset: str, key: str):
    """A value of an asset's materialization metadata (each day of a range run carries the same)."""
    return materialized_metadata(result.all_events)[asset][key]


def step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    """How long each asset's step of a run took: where a run's time goes."""
    return {
        event.step_key: round(event.event_specific_data.duration_ms / 1000, 2)
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }


def simulate(machines: int, days: int, input_dir: Path, drop_days: list[date]) -> None:
    """The five tables as bulk files, and each of `drop_days`' telemetry again as that day's drop."""
    spark = build_spark_session(settings.SPARK_DEFAULTS)
    fleet = simulate_fleet(spark, machines, START, days, seed=0)
    write_fleet(fleet, input_dir)
    for day in drop_days:
        folder = input_dir / DROPS_FOLDER / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        write_source_file(fleet.telemetry.where(F.to_date("datetime") == F.lit(day)), TELEMETRY, folder, gzip=False)
        (folder / DROP_READY_MARKER).touch()


def fresh_cli_day(folders: tuple[Path, Path], day: date, home: Path) -> None:
    """One day's daily_scoring_job as `dagster job execute` runs it: a new process, the code location loaded, a new
    JVM, the instance in `home` (a new one each time)."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        settings.DAGSTER_HOME_ENV: str(home.resolve()),
        settings.INPUT_DIR_ENV: str(folders[0].resolve()),
        settings.WAREHOUSE_DIR_ENV: str(folders[1].resolve()),
        settings.FIRST_DAY_ENV: START.isoformat(),
    }
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "batch_scoring.defs.definitions"]
    command += ["-j", "daily_scoring_job", "--tags", json.dumps({"dagster/partition": day.isoformat()})]
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"the fresh CLI run of {day} failed:\n{finished.stdout[-3000:]}{finished.stderr[-3000:]}")


def machine_facts() -> dict[str, object]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    memory_kb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": java,
        "pyspark": pyspark.__version__,
        "dagster": dg.__version__,
    }


def run(machines: int, days: int, workdir: Path, separate_runs: int, repeats: int) -> dict:
    bench = Bench()
    last = START + timedelta(days=days - 1)
    day30 = START + timedelta(days=29)
    big = (workdir / "input", workdir / "warehouse")
    small = (workdir / "input_30_days", workdir / "warehouse_30_days")
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"Pipeline: {machines} machines x {days} days into {workdir}", flush=True)
    with bench.step("simulate", "rows of the five tables (as ingest reads them)"):
        simulate(machines, days, big[0], [last])
    with bench.step("ingest", "rows read, all five tables") as step:
        ingest = materialize(big, RAW, START, last)
        step["rows"] = sum(metadata(ingest, name, "rows_read") for name in TABLES)
        step["asset_steps"] = step_seconds(ingest)
    bench.steps[0]["rows"] = step["rows"]
    telemetry_rows = metadata(ingest, "raw_telemetry", "rows_kept")
    with bench.step("features", "telemetry rows read") as step:
        features = materialize(big, ["features"], START, last)
        step["rows"] = telemetry_rows
    feature_rows = metadata(features, "features", "rows_written")
    with bench.step("train", "labelled feature rows (training + hold-out)") as step:
        # as the quick start: hold out the last fifth of the days, at most the model's default 60
        model = materialize(
            big, ["failure_model"], config={"failure_model": {"config": {"holdout_days": min(60, days // 5)}}}
        )
        step["rows"] = metadata(model, "failure_model", "train_rows") + metadata(model, "failure_model", "holdout_rows")
    macro_f1 = metadata(model, "failure_model", "macro_f1")
    with bench.step("score one day", "telemetry rows of the day") as step:
        scored = materialize(big, DAILY_JOB, last)
        step["rows"] = metadata(scored, "raw_telemetry", "rows_kept")
        step["asset_steps"] = step_seconds(scored)
    day_rows = step["rows"]
    pipeline_seconds = sum(s["seconds"] for s in bench.steps[1:])  # the steps so far, simulate excluded
    fresh_seconds = []
    for attempt in range(repeats):
        with bench.step(f"score one day, a fresh CLI run #{attempt + 1}", "telemetry rows of the day") as step:
            fresh_cli_day(big, last, workdir / "dagster_home")
            step["rows"] = day_rows
        fresh_seconds.append(step["seconds"])

    print("Comparisons", flush=True)
    with bench.step("(a) score the day from computed features", "feature rows of the day") as step:
        materialize(big, ["daily_predictions"], last)
        step["rows"] = machines
    reference_daily = bench.steps[1]["seconds"] + bench.steps[2]["seconds"] + step["seconds"]

    with bench.step("(c) set-up: 30-day fleet, ingest, features", "rows read, all five tables") as step:
        simulate(machines, 30, small[0], [day30])
        ingest30 = materialize(small, RAW, START, day30)
        step["rows"] = sum(metadata(ingest30, name, "rows_read") for name in TABLES)
        materialize(small, ["features"], START, day30)
        shutil.copytree(big[1] / "failure_model", small[1] / "failure_model")
    day_seconds = {30: [], days: []}
    for attempt in range(repeats):  # alternating, so both see the same machine conditions
        for history, folders, day in ((30, small, day30), (days, big, last)):
            with bench.step(
                f"(c) score day {history} of {history}, #{attempt + 1}", "telemetry rows of the day"
            ) as step:
                step["rows"] = metadata(materialize(folders, DAILY_JOB, day), "raw_telemetry", "rows_kept")
            day_seconds[history].append(step["seconds"])
    incremental = statistics.median(day_seconds[days])

    backfill_first = last - timedelta(days=30)
    backfill_last = last - timedelta(days=1)
    with bench.step("(b) 30-day backfill, one run", "feature rows") as step:
        backfill = materialize(big, BACKFILL, backfill_first, backfill_last)
        step["rows"] = metadata(backfill, "features", "rows_written")
    one_run = step["seconds"]
    runs = [backfill_last - timedelta(days=n) for n in range(separate_runs)]
    with bench.step(f"(b) {separate_runs} days, one run each", "feature rows") as step:
        for day in runs:
            materialize(big, BACKFILL, day)
        step["rows"] = machines * separate_runs
    per_day_separately = step["seconds"] / separate_runs
    one_run_per_day = one_run / 30

    comparisons = {
        "daily_job_fresh_cli": {
            "seconds_median": round(statistics.median(fresh_seconds), 1),
            "runs": len(fresh_seconds),
            "what": "dagster job execute ... daily_scoring_job for the newest day, raw_machines included",
        },
        "a_incremental_speedup": {
            "reference_daily_seconds": round(reference_daily, 1),
            "incremental_day_seconds": round(incremental, 1),
            "ratio": round(reference_daily / incremental, 1),
        },
        "b_backfill_speedup": {
            "one_run_seconds_per_day": round(one_run_per_day, 2),
            "separate_runs_seconds_per_day": round(per_day_separately, 2),
            "separate_runs_measured": separate_runs,
            "ratio": round(per_day_separately / one_run_per_day, 1),
        },
        "c_day365_vs_day30": {
            "day_30_seconds_median": round(statistics.median(day_seconds[30]), 1),
            f"day_{days}_seconds_median": round(incremental, 1),
            "ratio": round(incremental / statistics.median(day_seconds[30]), 2),
        },
    }
    for record in bench.steps:
        record["rows_per_second"] = round(record["rows"] / record["seconds"]) if record["rows"] else None
    return {
        "scale": {"machines": machines, "days": days, "telemetry_rows": telemetry_rows, "feature_rows": feature_rows},
        "machine": machine_facts(),
        "spark": {"master": "local[*]", "shuffle_partitions": 8, "driver_memory": "4g"},
        "model_holdout_macro_f1": round(macro_f1, 3),
        "pipeline_seconds": round(pipeline_seconds, 1),
        "steps": bench.steps,
        "comparisons": comparisons,
        "targets": TARGETS,
    }


def verdict(value: float, target: float, at_least: bool, unit: str = "") -> str:
    met = value >= target if at_least else value <= target
    return f"target {'>=' if at_least else '<='} {target}{unit}: {'met' if met else 'NOT met'}"


def report(figures: dict) -> str:
    scale, c, t = figures["scale"], figures["comparisons"], figures["targets"]
    steps = {s["step"]: s for s in figures["steps"]}
    lines = [
        f"{scale['machines']} machines x {scale['days']} days ({scale['telemetry_rows']:,} telemetry rows) on "
        f"{figures['machine']['cores']} cores, {figures['machine']['cpu']}",
        "",
        f"{'step':48} {'wall s':>8} {'rows':>12} {'rows/s':>10} {'peak MB':>8}",
    ]
    for s in figures["steps"]:
        rows, rate = s.get("rows") or 0, s.get("rows_per_second") or 0
        lines.append(f"{s['step']:48} {s['seconds']:8.1f} {rows:12,} {rate:10,} {s['peak_memory_mb']:8,}")
    a, b, c365 = c["a_incremental_speedup"], c["b_backfill_speedup"], c["c_day365_vs_day30"]
    fresh = c["daily_job_fresh_cli"]
    lines += [
        "",
        f"pipeline (ingest, features, train, score one day): {figures['pipeline_seconds']:.0f} s "
        f"({verdict(figures['pipeline_seconds'], t['pipeline_seconds'], False, ' s')})",
        f"ingest {steps['ingest']['rows_per_second']:,} rows/s "
        f"({verdict(steps['ingest']['rows_per_second'], t['ingest_rows_per_second'], True)}), features "
        f"{steps['features']['rows_per_second']:,} rows/s "
        f"({verdict(steps['features']['rows_per_second'], t['features_rows_per_second'], True)})",
        f"daily job warm, one process: {a['incremental_day_seconds']} s "
        f"({verdict(a['incremental_day_seconds'], t['daily_job_warm_seconds'], False, ' s')})",
        f"daily job as a fresh CLI run: {fresh['seconds_median']} s "
        f"({verdict(fresh['seconds_median'], t['daily_job_fresh_cli_seconds'], False, ' s')})",
        f"(a) reference's daily recompute {a['reference_daily_seconds']} s / incremental day "
        f"{a['incremental_day_seconds']} s = {a['ratio']}x "
        f"({verdict(a['ratio'], t['a_incremental_speedup'], True, 'x')})",
        f"(b) separate runs {b['separate_runs_seconds_per_day']} s/day / one run {b['one_run_seconds_per_day']} s/day "
        f"= {b['ratio']}x ({verdict(b['ratio'], t['b_backfill_speedup'], True, 'x')})",
        f"(c) day {scale['days']} / day 30 = {c365['ratio']} ({verdict(c365['ratio'], t['c_day365_vs_day30'], False)})",
    ]
    return "\n".join(lines)


def scaling(runs: dict[str, dict]) -> dict | None:
    """The largest fleet's run against the smallest's of as many days: rows/s kept at scale, and how a day's cost
    grows with the fleet (at most linearly: its ratio no larger than the fleets')."""
    by_fleet = sorted(runs.values(), key=lambda figures: figures["scale"]["machines"])
    small, large = by_fleet[0], by_fleet[-1]
    if small is large or small["scale"]["days"] != large["scale"]["days"]:
        return None

    def rate(figures: dict, step: str) -> int:
        return next(s["rows_per_second"] for s in figures["steps"] if s["step"] == step)

    def day(figures: dict) -> dict[str, float]:
        comparisons = figures["comparisons"]
        return {
            "warm": comparisons["a_incremental_speedup"]["incremental_day_seconds"],
            "fresh_cli": comparisons["daily_job_fresh_cli"]["seconds_median"],
        }

    return {
        "fleets": [small["scale"]["machines"], large["scale"]["machines"]],
        "fleet_ratio": round(large["scale"]["machines"] / small["scale"]["machines"], 1),
        "rows_per_second_kept": {
            step: round(rate(large, step) / rate(small, step), 2) for step in ("ingest", "features", "train")
        },
        "daily_job_seconds_ratio": {kind: round(day(large)[kind] / day(small)[kind], 2) for kind in day(small)},
    }


def scaling_report(scale: dict) -> str:
    small, large = scale["fleets"]
    kept, target = scale["rows_per_second_kept"], TARGETS["scale_rows_per_second_kept"]
    return "\n".join(
        [
            f"{large:,} machines against {small:,} ({scale['fleet_ratio']}x the fleet):",
            *(f"  {step} rows/s kept: {ratio} ({verdict(ratio, target, True)})" for step, ratio in kept.items()),
            *(
                f"  daily job ({kind}) seconds: {ratio}x ({verdict(ratio, scale['fleet_ratio'], False, 'x')})"
                for kind, ratio in scale["daily_job_seconds_ratio"].items()
            ),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--days", type=int, default=365, help="days of history (default 365)")
    parser.add_argument("--workdir", type=Path, default=Path("data/benchmarks"), help="scratch folder (replaced)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"), help="where to write figures")
    parser.add_argument("--separate-runs", type=int, default=30, help="one-day runs measured for (b) (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="scorings of each day for (c) (default 3)")
    args = parser.parse_args()
    if args.days < 31 or not 1 <= args.separate_runs <= 30:
        parser.error(
            "--days must be at least 31 (the 30-day backfill ends the day before the newest day), "
            "--separate-runs between 1 and 30"
        )
    figures = run(args.machines, args.days, args.workdir, args.separate_runs, args.repeats)
    figures["command"] = " ".join(["python", *sys.argv])
    # one entry per scale, so that the fleets' figures stand side by side
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    runs = {**results.get("runs", {}), f"{args.machines}x{args.days}": figures}
    results = {"runs": runs, "scaling": scaling(runs)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report(figures))
    if results["scaling"]:
        print(scaling_report(results["scaling"]))
    print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
