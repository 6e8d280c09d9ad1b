"""The Databricks side of a run: the entry point a Databricks job run starts from the project's wheel.

Thin on purpose: it opens Pipes, takes the compute's Spark session, runs the project's steps (`lib.steps`)
for the assets the Dagster run selected over the run's days, reads and writes the warehouse's Delta tables
(`storage`), and reports each materialization and check result through Pipes. No Dagster run, instance
or definitions here: dagster-pipes is all of Dagster it needs.

A step that cannot run (`StepFailed`) or a failed blocking check stops the task before the assets
downstream; the reason goes back as a Pipes message and fails the Dagster step with it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from dagster_pipes import (
    PipesBlobStoreMessageWriter,
    PipesBufferedFilesystemMessageWriterChannel,
    PipesCliArgsParamsLoader,
    PipesContext,
    PipesContextLoader,
    PipesEnvVarParamsLoader,
    PipesParams,
    PipesParamsLoader,
    open_dagster_pipes,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from batch_scoring import settings
from batch_scoring.deploy import STOPPED_MESSAGE
from batch_scoring.lib import steps
from batch_scoring.lib.columns import column_description
from batch_scoring.lib.crew_page import BASELINE_DAYS, HISTORY_DAYS
from batch_scoring.lib.features import (
    ERROR_LOOKBACK_DAYS,
    FEATURES_SCHEMA,
    REPLACEMENT_LOOKBACK_DAYS,
    TELEMETRY_LOOKBACK_DAYS,
)
from batch_scoring.lib.model import TrainedModel
from batch_scoring.lib.outcomes import OUTCOME_DELAY_DAYS, OUTCOMES_SCHEMA, RECENT_OUTCOME_DAYS
from batch_scoring.lib.progress import progress_logged_to
from batch_scoring.lib.scoring import PREDICTIONS_SCHEMA, TRAILING_DAYS, WORKLIST_SCHEMA
from batch_scoring.lib.steps import CheckOutcome, Location, Produced, Records, StepFailed, StepOutcome, day_keys
from batch_scoring.lib.tables import ERRORS, FAILURES, MACHINES, MAINTENANCE, TELEMETRY, SourceTable
from batch_scoring.storage.delta import DeltaTables, unreadable_file_message
from batch_scoring.storage.models import ModelStore
from batch_scoring.storage.outputs import commit_note, store_crew_pages, store_model, store_table, store_worklist_files

# ---- Pipes on a Databricks driver


class MountedContextLoader(PipesContextLoader):
    """Reads the Pipes context from DBFS or a volume, through the driver's mount (BATCH_SCORING_WORKSPACE_MOUNT)."""

    @contextmanager
    def load_context(self, params: PipesParams) -> Iterator[Mapping]:
        with open(settings.workspace_path(params["path"]), encoding="utf-8") as handle:
            yield json.load(handle)


class MountedMessageWriter(PipesBlobStoreMessageWriter):
    """Writes Pipes message chunks to DBFS or a volume, through the driver's mount."""

    def make_channel(self, params: PipesParams) -> PipesBufferedFilesystemMessageWriterChannel:
        return PipesBufferedFilesystemMessageWriterChannel(
            path=settings.workspace_path(params["path"]), interval=self.interval
        )


def params_loader() -> PipesParamsLoader:
    """A new job cluster gets the Pipes parameters as environment variables; an existing cluster and
    serverless compute as the task's command-line parameters."""
    from_cli = PipesCliArgsParamsLoader()
    return from_cli if from_cli.is_dagster_pipes_process() else PipesEnvVarParamsLoader()


def _columns(columns: list[tuple[str, str]]) -> list[dict]:
    return [{"name": name, "type": kind, "constraints": {"nullable": True}} for name, kind in columns]


def pipes_metadata_value(value: object) -> dict:
    """A step's plain metadata value as Pipes carries it: its type and a JSON value."""
    if isinstance(value, Records):
        return {"type": "table", "raw_value": {"records": value.rows, "schema": _columns(value.columns)}}
    if isinstance(value, T.StructType):
        columns = [
            {
                "name": f.name,
                "type": f.dataType.simpleString(),
                "description": column_description(f.name) or None,
                "constraints": {"nullable": f.nullable},
            }
            for f in value.fields
        ]
        return {"type": "table_schema", "raw_value": {"columns": columns}}
    if isinstance(value, Location):
        return {"type": "path", "raw_value": value.path}
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("json", (dict, list))):
        if isinstance(value, types):
            return {"type": kind, "raw_value": value}
    return {"type": "text", "raw_value": str(value)}


def pipes_metadata(values: Mapping[str, object]) -> dict[str, dict]:
    return {key: pipes_metadata_value(value) for key, value in values.items()}


# ---- the run's steps


@dataclass
class StepInputs:
    """What one step reads, each table pinned at one Delta version (recorded with what it writes)."""

    tables: DeltaTables
    versions_read: dict[str, int | str] = field(default_factory=dict)

    def table(self, name: str, schema: T.StructType, days: list[date] | None = None) -> DataFrame:
        if name not in self.versions_read:  # one version for the whole step
            self.versions_read[name] = self.tables.version(name)
        return self.tables.read(name, schema, day_keys(days) if days is not None else None, self.versions_read[name])

    def earlier_days(self, name: str, schema: T.StructType, days: list[date]) -> DataFrame:
        """A table's rows of `days` if it has been written (a declared self-dependency, missing days allowed)."""
        if not self.tables.exists(name):
            return self.tables.spark.createDataFrame([], schema)
        return self.table(name, schema, days)

    def lookback(self, reader: str, name: str, schema: T.StructType, days: list[date]) -> DataFrame:
        """A table's rows of `days`, failing on days missing inside them (they would thin the windows)."""
        rows = self.table(name, schema, days)
        gaps = self.tables.gaps(name, schema, day_keys(days), self.versions_read[name])
        if gaps:
            raise StepFailed(steps.gaps_message(reader, name, day_keys(days), gaps))
        return rows

    def model(self) -> TrainedModel:
        model = ModelStore(self.tables, "failure_model").load_latest_usable()
        self.versions_read["failure_model"] = model.version
        return model

    def model_manifest(self) -> dict:
        manifest = ModelStore(self.tables, "failure_model").latest_usable_manifest()
        self.versions_read["failure_model"] = manifest["version"]
        return manifest


@dataclass(frozen=True)
class RunScope:
    """What the Dagster run asked for: its days (none for unpartitioned assets only), config, folders."""

    spark: SparkSession
    tables: DeltaTables
    input_dir: Path
    days: list[date] | None
    calendar: tuple[date, date]  # the daily partitions, [first, end)
    config: Mapping[str, Mapping]
    run_id: str


def _days_before(first: date, count: int) -> list[date]:
    return [first - timedelta(days=n) for n in range(count, 0, -1)]


def _ingest_step(table: SourceTable) -> Callable[[RunScope, StepInputs], StepOutcome]:
    def ingest(scope: RunScope, inputs: StepInputs) -> StepOutcome:
        days = scope.days if table.daily_partitioned else None
        known = None if table is MACHINES else inputs.table(MACHINES.asset, MACHINES.schema).select("machine_id")
        settings = steps.IngestSettings.from_config(scope.config[table.asset])
        return steps.ingest(scope.spark, table, scope.input_dir, days, scope.calendar, known, settings)

    return ingest


def _reaching_back(scope: RunScope, lookback_days: int) -> list[date]:
    """The run's days and the days a lookback of `lookback_days` (the day included) reaches before them."""
    return _days_before(scope.days[0], lookback_days - 1) + scope.days


def _features_step(scope: RunScope, inputs: StepInputs) -> StepOutcome:
    return steps.features(
        inputs.lookback("features", TELEMETRY.asset, TELEMETRY.schema, _reaching_back(scope, TELEMETRY_LOOKBACK_DAYS)),
        inputs.table(ERRORS.asset, ERRORS.schema, _reaching_back(scope, ERROR_LOOKBACK_DAYS)),
        inputs.table(MAINTENANCE.asset, MAINTENANCE.schema, _reaching_back(scope, REPLACEMENT_LOOKBACK_DAYS)),
        inputs.table(MACHINES.asset, MACHINES.schema),
        scope.days,
    )


def _failure_model_step(scope: RunScope, inputs: StepInputs) -> StepOutcome:
    training = steps.TrainingSettings.from_config(scope.config["failure_model"])
    features = inputs.table("features", FEATURES_SCHEMA)
    return steps.train(features, inputs.table(FAILURES.asset, FAILURES.schema), training, scope.run_id)


def _daily_predictions_step(scope: RunScope, inputs: StepInputs) -> StepOutcome:
    trailing = inputs.earlier_days("daily_predictions", PREDICTIONS_SCHEMA, _days_before(scope.days[0], TRAILING_DAYS))
    features = inputs.table("features", FEATURES_SCHEMA, scope.days)
    return steps.predictions(features, inputs.model(), trailing, scope.days)


def _maintenance_worklist_step(scope: RunScope, inputs: StepInputs) -> StepOutcome:
    threshold = scope.config["maintenance_worklist"]["min_failure_probability"]
    predictions = inputs.table("daily_predictions", PREDICTIONS_SCHEMA, scope.days)
    return steps.maintenance_worklist(predictions, scope.days, threshold, inputs.model_manifest())


def _maintenance_worklist_page_step(scope: RunScope, inputs: StepInputs) -> StepOutcome:
    return steps.crew_pages(
        inputs.table("maintenance_worklist", WORKLIST_SCHEMA, _reaching_back(scope, HISTORY_DAYS)),
        inputs.table("daily_predictions", PREDICTIONS_SCHEMA, _reaching_back(scope, HISTORY_DAYS)),
        inputs.table("features", FEATURES_SCHEMA, _reaching_back(scope, BASELINE_DAYS + 1)),
        scope.days,
    )


def _prediction_outcomes_step(scope: RunScope, inputs: StepInputs) -> StepOutcome:
    predicted_on = [day - timedelta(days=OUTCOME_DELAY_DAYS) for day in scope.days]
    return steps.outcomes(
        inputs.earlier_days("daily_predictions", PREDICTIONS_SCHEMA, predicted_on),
        inputs.earlier_days("maintenance_worklist", WORKLIST_SCHEMA, predicted_on),
        inputs.table(FAILURES.asset, FAILURES.schema, _reaching_back(scope, OUTCOME_DELAY_DAYS)),
        inputs.earlier_days(
            "prediction_outcomes", OUTCOMES_SCHEMA, _days_before(scope.days[0], RECENT_OUTCOME_DAYS - 1)
        ),
        inputs.model_manifest(),
        scope.days,
    )


# each step with the assets it makes, upstream first (the graph's order)
STEPS: list[tuple[tuple[str, ...], Callable[[RunScope, StepInputs], StepOutcome]]] = [
    *(
        ((table.asset, steps.quarantine_table(table)), _ingest_step(table))
        for table in (MACHINES, TELEMETRY, ERRORS, MAINTENANCE, FAILURES)
    ),
    (("features",), _features_step),
    (("failure_model",), _failure_model_step),
    (("daily_predictions",), _daily_predictions_step),
    (("maintenance_worklist", "maintenance_worklist_csv"), _maintenance_worklist_step),
    (("maintenance_worklist_page",), _maintenance_worklist_page_step),
    (("prediction_outcomes",), _prediction_outcomes_step),
]


# the crews' files: how each kind is written, and the metadata name of a day's file
FILE_STORES = {"csv": (store_worklist_files, "csv_file"), "html": (store_crew_pages, "page_file")}


def store(scope: RunScope, produced: Produced, versions_read: dict[str, int | str]) -> dict[str, object]:
    """Write what a step made, as the IO managers do in a local run; what the stored result says of itself."""
    note = commit_note(scope.run_id, produced.asset)
    if produced.stored_as == "model":
        return store_model(scope.tables, produced.asset, produced.value, note, versions_read)
    if produced.stored_as in FILE_STORES:
        write, key = FILE_STORES[produced.stored_as]
        files = write(scope.tables, produced.value, produced.partitions)
        # one materialization reports the run's days: the last day's file, and each day's when there are several
        return {key: Location(files[max(files)]), **({f"{key}s": files} if len(files) > 1 else {})}
    return store_table(
        scope.tables,
        produced.asset,
        produced.value,
        produced.schema,
        produced.partitions,
        note,
        versions_read,
        produced.counted,
    )


def figures_of_days(produced: Produced) -> dict[str, object]:
    """A day's own figures as a local run records them for its partition; Pipes reports one materialization for
    all of a run's days, so several days' figures go as one JSON value, by day."""
    if len(produced.per_day) == 1:
        return dict(*produced.per_day.values())
    return {"per_day": produced.per_day} if produced.per_day else {}


def report_check(pipes: PipesContext, check: CheckOutcome) -> None:
    metadata = dict(check.metadata)
    if check.description:
        metadata["description"] = check.description
    pipes.report_asset_check(
        check_name=check.name,
        asset_key=check.asset,
        passed=check.passed,
        severity="WARN" if check.warn_only else "ERROR",
        metadata=pipes_metadata(metadata),
    )


def run_selected_steps(pipes: PipesContext, scope: RunScope) -> None:
    """Each step with a selected asset, in order: store and report what it made, then its checks; stop at
    a step that fails or a failed blocking check, saying why."""
    selected = set(pipes.asset_keys)
    for assets, step in STEPS:
        if not selected.intersection(assets):
            continue
        pipes.log.info(f"batch_scoring: {' + '.join(a for a in assets if a in selected)} on {scope.tables.root}")
        inputs = StepInputs(scope.tables)
        try:
            outcome = step(scope, inputs)
        except StepFailed as failure:
            pipes.report_custom_message({STOPPED_MESSAGE: str(failure)})
            return
        except Exception as error:
            damaged = unreadable_file_message(error)
            if damaged is None:
                raise
            pipes.report_custom_message({STOPPED_MESSAGE: damaged})
            return
        for produced in outcome.produced:
            if produced.asset in selected:
                stored = store(scope, produced, inputs.versions_read)
                pipes.report_asset_materialization(
                    asset_key=produced.asset,
                    metadata=pipes_metadata({**produced.metadata, **stored, **figures_of_days(produced)}),
                    data_version=produced.data_version,
                )
        for check in outcome.checks:
            report_check(pipes, check)
        failed = [check for check in outcome.checks if not check.passed and not check.warn_only]
        if failed:
            reasons = "; ".join(f"{c.asset} {c.name}: {c.description or 'failed'}" for c in failed)
            pipes.report_custom_message({STOPPED_MESSAGE: f"Blocking check failed, nothing downstream ran: {reasons}"})
            return


def run_days(pipes: PipesContext) -> list[date] | None:
    if not pipes.is_partition_step:
        return None
    first = date.fromisoformat(pipes.partition_key_range["start"])
    last = date.fromisoformat(pipes.partition_key_range["end"])
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def spark_session() -> SparkSession:
    """The compute's own session as Databricks configured it, plus the project's SQL settings; elsewhere
    (a test double) a session from the project's settings."""
    from batch_scoring.lib.spark import apply_runtime_settings, build_spark_session

    if settings.DATABRICKS_RUNTIME_ENV in os.environ:
        return apply_runtime_settings(SparkSession.builder.getOrCreate())
    return build_spark_session(settings.spark_config())


def main() -> int:
    """Console script `batch-scoring-databricks-task`, which the run's python_wheel_task starts."""
    spark = spark_session()
    with open_dagster_pipes(
        params_loader=params_loader(), context_loader=MountedContextLoader(), message_writer=MountedMessageWriter()
    ) as pipes:
        extras = pipes.extras
        scope = RunScope(
            spark=spark,
            tables=DeltaTables(spark, extras["warehouse_dir"], extras["catalog_schema"]),
            input_dir=Path(extras["input_dir"]),
            days=run_days(pipes),
            calendar=(date.fromisoformat(extras["calendar"][0]), date.fromisoformat(extras["calendar"][1])),
            config=extras["config"],
            run_id=pipes.run_id,
        )
        with progress_logged_to(pipes.log):
            run_selected_steps(pipes, scope)
    return 0


if __name__ == "__main__":
    sys.exit(main())
