"""The sensor that scores each day as soon as its data arrive."""

import hashlib
import json
from pathlib import Path

import dagster as dg

from batch_scoring.defs.jobs import daily_scoring_job, daily_scoring_request, machines_changed
from batch_scoring.defs.partitions import DAILY_PARTITIONS
from batch_scoring.defs.resources import InputFiles
from batch_scoring.lib.ingest import DROP_READY_MARKER, misnamed_drop_folders


def drop_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of a drop's files: a re-delivered drop gets a new one."""
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


@dg.sensor(
    job=daily_scoring_job,
    minimum_interval_seconds=60,
    description=(
        "Watches <input_dir>/daily/YYYY-MM-DD/ for daily drops (any of the five tables' files, then a _SUCCESS "
        "marker written last) and runs daily_scoring_job for exactly the days that arrived or changed (with "
        "raw_machines when its files changed). The cursor keeps each handled drop's fingerprint, so a drop runs "
        "once, and again only if re-delivered."
    ),
)
def new_data_sensor(context: dg.SensorEvaluationContext, input_files: InputFiles):
    handled: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    folders = input_files.drop_folders()
    misnamed = misnamed_drop_folders(Path(input_files.input_dir))
    ignored = f"; ignored, not named YYYY-MM-DD: {', '.join(misnamed)}" if misnamed else ""
    if not folders:
        return dg.SkipReason(f"No daily drops in {input_files.drops_dir} (folders named YYYY-MM-DD){ignored}")
    waiting = [day.isoformat() for day, folder in folders.items() if not (folder / DROP_READY_MARKER).exists()]
    arrived = {
        day.isoformat(): drop_fingerprint(folder)
        for day, folder in input_files.ready_drops().items()
        if handled.get(day.isoformat()) != drop_fingerprint(folder)
    }
    outside = [day for day in arrived if not DAILY_PARTITIONS.has_partition_key(day)]
    to_run = {day: fingerprint for day, fingerprint in arrived.items() if day not in outside}
    if not to_run:
        reason = f"No new or changed drops in {input_files.drops_dir} ({len(handled)} handled so far)"
        if waiting:
            reason += f"; waiting for {DROP_READY_MARKER} in {', '.join(waiting)}"
        if outside:
            first_day = f"{DAILY_PARTITIONS.start:%Y-%m-%d}"
            reason += f"; outside the daily partitions ({first_day} to yesterday): {', '.join(outside)}"
        return dg.SkipReason(reason + ignored)
    context.update_cursor(json.dumps({**handled, **to_run}, sort_keys=True))
    # changed machines files are ingested once, by the first day's run
    with_machines = machines_changed(context.instance, input_files)
    return [
        daily_scoring_request(day, with_machines and position == 0, run_key=f"{day}:{fingerprint}")
        for position, (day, fingerprint) in enumerate(sorted(to_run.items()))
    ]
