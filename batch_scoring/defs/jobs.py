"""The jobs: ingest, train, and score a day; and the daily run that the schedule and the sensor request."""

import functools

import dagster as dg

from batch_scoring.defs.assets import SPARK_ASSETS
from batch_scoring.defs.resources import InputFiles
from batch_scoring.lib.ingest import InputFileError
from batch_scoring.lib.steps import quarantine_table
from batch_scoring.lib.tables import MACHINES

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("raw"),
    description="Read the five input tables and their quarantines into the warehouse; telemetry for the chosen days.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("raw", "features", "model"),
    description="Ingest the selected days, build their features and train failure_model on them.",
)

# scoring never reads failures: they only label training rows
DAILY_SCORING_SELECTION = dg.AssetSelection.groups("raw", "features", "scoring") - dg.AssetSelection.assets(
    "raw_failures", ["quarantine", "raw_failures"]
)
daily_scoring_job = dg.define_asset_job(
    "daily_scoring_job",
    selection=DAILY_SCORING_SELECTION,
    description="Ingest a day, build its features, score it with the newest usable model, list machines for the "
    "crews. The schedule's and the sensor's runs leave raw_machines out while its files are unchanged.",
)

# a day's failures, and the outcomes of the predictions whose 7 days ended with it
outcomes_job = dg.define_asset_job(
    "outcomes_job",
    selection=dg.AssetSelection.assets("raw_failures", ["quarantine", "raw_failures"], "prediction_outcomes"),
    description="Ingest a day's failures and join the predictions of 7 days before with the failures that followed: "
    "the worklist's realized precision and recall.",
)

JOBS = [ingest_job, training_job, daily_scoring_job, outcomes_job]

MACHINES_KEYS = {dg.AssetKey(MACHINES.asset), dg.AssetKey.from_user_string(quarantine_table(MACHINES))}
DATA_VERSION_TAG = "dagster/data_version"


@functools.cache
def daily_scoring_keys() -> frozenset[dg.AssetKey]:
    return frozenset(DAILY_SCORING_SELECTION.resolve(SPARK_ASSETS))


def machines_changed(instance: dg.DagsterInstance, input_files: InputFiles) -> bool:
    """Whether the machines files differ from those raw_machines was last made from (its data version is their
    fingerprint), or raw_machines was never made, or the files cannot be read."""
    latest = instance.get_latest_materialization_event(dg.AssetKey(MACHINES.asset))
    stored = latest.asset_materialization.tags.get(DATA_VERSION_TAG) if latest else None
    try:
        return stored != input_files.fingerprint(MACHINES)
    except InputFileError:
        return True  # the run's raw_machines step says what is wrong with the files


def daily_scoring_request(partition_key: str, with_machines: bool, run_key: str | None = None) -> dg.RunRequest:
    """One day of daily_scoring_job, with raw_machines only when its files changed (`machines_changed`): so a
    day's run reads one day of each table, and what was made from the machines stays up to date."""
    keys = daily_scoring_keys() if with_machines else daily_scoring_keys() - MACHINES_KEYS
    return dg.RunRequest(
        run_key=run_key,
        partition_key=partition_key,
        asset_selection=sorted(keys, key=lambda key: key.to_user_string()),
        tags={"batch_scoring/machines": "changed: ingested again" if with_machines else "unchanged: not read"},
    )


@functools.cache
def scoring_keys() -> frozenset[dg.AssetKey]:
    """daily_scoring_job's scoring steps alone: what days need whose raw tables and features are made already."""
    return frozenset(dg.AssetSelection.groups("scoring").resolve(SPARK_ASSETS))
