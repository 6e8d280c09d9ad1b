"""Each asset's work as one function of its inputs: the tables it makes, what is said of them and its checks'
verdicts, in plain values. The Dagster assets turn an outcome into outputs, metadata and check results; the
Databricks task writes the same outcome and reports it through Pipes. No Dagster and no storage here: inputs
come in as DataFrames, outputs go out as DataFrames (or a trained model)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.lib.crew_page import page_rows
from batch_scoring.lib.features import CLASSES, FEATURES_SCHEMA, build_features
from batch_scoring.lib.ingest import (
    IngestCounts,
    check_files,
    count_outcomes,
    kept_rows,
    misnamed_drop_folders,
    quarantined_rows,
    source_files,
    sources_fingerprint,
)
from batch_scoring.lib.model import (
    CLASS_WEIGHTINGS,
    DEFAULT_MIN_FAILURE_PROBABILITY,
    Evaluation,
    ForestParams,
    TrainedModel,
    TrainingError,
    ValidationChoice,
    WorklistTarget,
    feature_importances,
    train_and_evaluate,
)
from batch_scoring.lib.outcomes import (
    OUTCOME_DELAY_DAYS,
    OUTCOMES_SCHEMA,
    RECENT_OUTCOME_DAYS,
    outcome_counts,
    prediction_outcomes,
    worklist_figures,
)
from batch_scoring.lib.scoring import (
    CREW_CSV_SCHEMA,
    PREDICTIONS_SCHEMA,
    TRAILING_DAYS,
    WORKLIST_SCHEMA,
    crew_csv_rows,
    failure_shares,
    invalid_probability_rows,
    prediction_counts_per_day,
    score,
    share_drifts,
    worklist,
)
from batch_scoring.lib.spark import STEP_CACHE
from batch_scoring.lib.tables import QUARANTINE_SCHEMA, UNDATED, SourceTable

LOG = logging.getLogger(__name__)  # progress, for the run's log (lib.progress)

COLUMN_SCHEMA_KEY = "dagster/column_schema"  # the metadata names Dagster shows as a table's columns and size
ROW_COUNT_KEY = "dagster/row_count"
ROWS_WRITTEN_KEY = "rows_written"  # by the run, all its days
PREVIEW_ROWS = 5
TOP_FEATURES = 15
TOP_WORKLIST_ROWS = 10
MAX_FAILURE_SHARE_CHANGE = 0.10  # a warning when a day's predicted-failure share moves further than this
QUARANTINE_CHECK = "quarantined_share_within_limit"
MODEL_CHECK = "usable_for_scoring"
OUTCOMES_CHECK = "worklist_holds_up"
# the outcomes check warns when the last weeks' realized precision or recall fall this far below the hold-out's,
# once at least this many listed (for precision) or failing (for recall) machine-days are in them
MAX_OUTCOME_SHORTFALL = 0.15
MIN_OUTCOME_MACHINE_DAYS = 20


@dataclass(frozen=True)
class Records:
    """A small table in metadata: a few rows of plain values, and its columns' names and types."""

    rows: list[dict]
    columns: list[tuple[str, str]]


@dataclass(frozen=True)
class Location:
    """A file or folder, in metadata."""

    path: str


@dataclass(frozen=True)
class Produced:
    """A table (or model) a step makes, with what is said of it. `stored_as` says how it is kept: a Delta table
    with `schema`, whole or (a daily table) exactly its `partitions`, the model store, or one CSV file a day."""

    asset: str
    value: DataFrame | TrainedModel
    metadata: dict[str, object] = field(default_factory=dict)
    schema: T.StructType | None = None
    partitions: list[str] | None = None
    stored_as: str = "delta"  # "delta", "model", "csv" or "html" (the crews' files)
    data_version: str | None = None  # what the table was made from, when a digest of it says (Dagster's data version)
    # figures of each day (partition) it holds, by day: numbers the UI charts across partitions
    per_day: dict[str, dict[str, object]] = field(default_factory=dict)
    # what the step counted of the rows `value` holds (`table_summary`'s figures: rows, machines, time range):
    # storing it queries no more
    counted: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckOutcome:
    asset: str
    name: str
    passed: bool
    metadata: dict[str, object]
    description: str | None = None
    warn_only: bool = False


@dataclass(frozen=True)
class StepOutcome:
    """What a step made, upstream first, and its checks' verdicts."""

    produced: list[Produced]
    checks: list[CheckOutcome] = field(default_factory=list)


class StepFailed(RuntimeError):
    """The step cannot make its tables from these inputs; the message says why and what to do."""

    def __init__(self, message: str, metadata: dict[str, object] | None = None):
        super().__init__(message)
        self.metadata = metadata or {}


def day_span(days: list) -> str:
    """Days as people write them: `2015-02-01`, or `2015-02-01 .. 2015-02-07`."""
    return str(days[0]) if len(days) == 1 else f"{days[0]} .. {days[-1]}"


def gaps_message(reader: str, table: str, days: list[str], gaps: list[str]) -> str:
    """Why a step cannot read a lookback with holes: they would thin the windows reaching over them."""
    return (
        f"{reader} reads {table} for {day_span(days)}, but {table} has no rows for {', '.join(gaps)}: "
        f"materialize {table} for those days first (a backfill of the range does)."
    )


def _plain(value: object) -> object:
    """A value a metadata table holds: str, int, float (to 3 decimals: tables are for people), bool or None."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def records(rows: list[dict], columns: list[tuple[str, str]]) -> Records:
    return Records([{key: _plain(value) for key, value in row.items()} for row in rows], columns)


def _columns(df: DataFrame) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in df.schema.fields]


def preview(df: DataFrame, rows: int = PREVIEW_ROWS) -> Records:
    """The first rows of a DataFrame; `limit` keeps the collected rows bounded."""
    return records([row.asDict() for row in df.limit(rows).collect()], _columns(df))


MACHINES_KEY, FIRST_TIMESTAMP_KEY, LAST_TIMESTAMP_KEY = "machines", "first_timestamp", "last_timestamp"
# the figures of `table_summary` a step may have counted already
COUNTED_KEYS = (ROW_COUNT_KEY, MACHINES_KEY, FIRST_TIMESTAMP_KEY, LAST_TIMESTAMP_KEY)


def table_summary(df: DataFrame, counted: Mapping[str, object] | None = None) -> dict[str, object]:
    """Row count, time range, machines, schema and a preview of a table. What the step did not count already
    (`counted`, keyed as the result) comes from one aggregation; none for a table of no rows."""
    counted = dict(counted or {})
    aggregates = []
    if "datetime" in df.columns and FIRST_TIMESTAMP_KEY not in counted:
        aggregates += [F.min("datetime").alias(FIRST_TIMESTAMP_KEY), F.max("datetime").alias(LAST_TIMESTAMP_KEY)]
    if "machine_id" in df.columns and MACHINES_KEY not in counted:
        aggregates.append(F.count_distinct("machine_id").alias(MACHINES_KEY))
    if ROW_COUNT_KEY not in counted:
        aggregates.append(F.count(F.lit(1)).alias(ROW_COUNT_KEY))
    if aggregates and counted.get(ROW_COUNT_KEY) != 0:
        counted.update(df.agg(*aggregates).first().asDict())
    rows = counted[ROW_COUNT_KEY]
    metadata: dict[str, object] = {
        ROW_COUNT_KEY: rows,  # a daily table's steps give each day's own (`Produced.per_day`)
        ROWS_WRITTEN_KEY: rows,
        COLUMN_SCHEMA_KEY: df.schema,
        # no query for the preview of no rows (the common empty quarantine)
        "preview": preview(df) if rows else records([], _columns(df)),
    }
    if rows:  # of no rows: no machines and no time range
        if MACHINES_KEY in counted:
            metadata[MACHINES_KEY] = counted[MACHINES_KEY]
        metadata.update({key: str(counted[key]) for key in (FIRST_TIMESTAMP_KEY, LAST_TIMESTAMP_KEY) if key in counted})
    return metadata


def kept_summary(counts: IngestCounts) -> dict[str, object]:
    """What an ingest's count of outcomes gives of the kept rows' `table_summary`: rows, machines, time range."""
    counted: dict[str, object] = {ROW_COUNT_KEY: counts.kept}
    if counts.kept_machines:
        counted[MACHINES_KEY] = counts.kept_machines
    if counts.kept_first is not None:
        counted.update({FIRST_TIMESTAMP_KEY: str(counts.kept_first), LAST_TIMESTAMP_KEY: str(counts.kept_last)})
    return counted


def rows_by_day(df: DataFrame, partitions: list[str]) -> dict[str, int]:
    """Rows of each day in a daily table, 0 for a day without (one row per day is collected)."""
    counts = {str(row["date"]): row["count"] for row in df.groupBy("date").count().collect()}
    return {key: counts.get(key, 0) for key in partitions}


def day_figures(rows: Mapping[str, int]) -> dict[str, dict[str, object]]:
    """Each day's row count as that partition's own (a range run's metadata would otherwise give every day the
    whole run's)."""
    return {day: {ROW_COUNT_KEY: count} for day, count in rows.items()}


def days_without_rows(rows: Mapping[str, int]) -> list[str]:
    return [day for day, count in rows.items() if count == 0]


def day_keys(days: list[date]) -> list[str]:
    """Days as partition keys, YYYY-MM-DD."""
    return [day.isoformat() for day in days]


def quarantine_table(table: SourceTable) -> str:
    """A raw table's quarantine: `quarantine/<raw asset>`."""
    return f"quarantine/{table.asset}"


# ---- raw tables


@dataclass(frozen=True)
class IngestSettings:
    """A raw table's run config: the largest share of quarantined rows its check passes, and other plausible
    ranges for its numeric fields (`{"volt": [0, 400]}`)."""

    max_quarantined_share: float
    plausible_ranges: Mapping[str, Sequence[float]]

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> IngestSettings:
        return cls(float(config["max_quarantined_share"]), dict(config.get("plausible_ranges") or {}))


def ingest(
    spark: SparkSession,
    table: SourceTable,
    input_dir: Path,
    days: list[date] | None,
    calendar: tuple[date, date],
    known_machine_ids: DataFrame | None,
    settings: IngestSettings,
) -> StepOutcome:
    """Read one input table's files: its kept rows, its quarantined rows and the quarantine check. A daily
    table keeps the rows dated in `days`; its quarantine replaces those days, and the undated rows of the
    bulk file when the step read it (each step reading it finds the same ones), with the rows dated
    outside the partitions' `calendar` [start, end)."""
    try:
        table = table.with_ranges(settings.plausible_ranges)
    except ValueError as error:
        raise StepFailed(f"plausible_ranges of {table.asset}: {error}") from error
    sources = source_files(input_dir, table, days)
    dates = (days[0], days[-1] + timedelta(days=1)) if days else None
    checked = check_files(spark, table, sources, known_machine_ids, dates, calendar)  # read from Spark's cache
    counts = count_outcomes(checked)
    LOG.info(
        "%s: %s rows read from %s: %s kept, %s quarantined",
        table.asset,
        f"{counts.read:,}",
        ", ".join(source.path.name if source.day is None else f"{source.day} drop" for source in sources),
        f"{counts.kept:,}",
        f"{counts.quarantined:,}",
    )
    metadata: dict[str, object] = {
        "source_files": [str(source.path) for source in sources],
        "rows_read": counts.read,
        "rows_kept": counts.kept,
        "rows_quarantined": counts.quarantined,
        "quarantined_by_reason": records(
            [{"reason": r, "rows": n} for r, n in counts.quarantined_by_reason.items()],
            [("reason", "string"), ("rows", "int")],
        ),
    }
    if days and table.requires_rows and counts.kept == 0:
        raise StepFailed(
            f"No {table.name} rows dated {day_span(days)} in {', '.join(str(source.path) for source in sources)}: "
            f"{counts.quarantined} rows of those days or undated were quarantined; nothing to ingest",
            metadata,
        )
    misnamed = misnamed_drop_folders(input_dir)
    if misnamed:  # never read: said, so a drop put under a wrong name is not taken for absent data
        metadata["ignored_in_drops_folder"] = misnamed
    kept = kept_rows(checked, table)
    partitions = quarantine_partitions = None
    quarantine = quarantined_rows(checked)
    kept_by_day = quarantined_by_day = {}
    if days:
        partitions = day_keys(days)
        kept_by_day = counts.by_partition(partitions, kept=True)
        if table.requires_rows:  # an event log may well have quiet days
            metadata["days_without_rows"] = days_without_rows(kept_by_day)
        reads_bulk_file = any(source.day is None for source in sources)
        quarantine_partitions = partitions + ([UNDATED] if reads_bulk_file else [])
        quarantined_by_day = counts.by_partition(quarantine_partitions, kept=False)
    share = counts.quarantined_share
    check = CheckOutcome(
        asset=table.asset,
        name=QUARANTINE_CHECK,
        passed=share <= settings.max_quarantined_share,
        metadata={
            "quarantined_share": round(share, 6),
            "max_quarantined_share": float(settings.max_quarantined_share),
            "rows_quarantined": counts.quarantined,
        },
        description=(
            f"{counts.quarantined} of {counts.read} {table.name} rows quarantined ({share:.2%}; "
            f"limit {settings.max_quarantined_share:.2%}); reasons and lines in {quarantine_table(table)}"
        ),
    )
    return StepOutcome(
        [
            Produced(
                quarantine_table(table),
                quarantine,
                schema=QUARANTINE_SCHEMA,
                partitions=quarantine_partitions,
                per_day=day_figures(quarantined_by_day),
                counted={ROW_COUNT_KEY: counts.quarantined},
            ),
            # a whole table's version is its files' fingerprint: the same files give the same table
            Produced(
                table.asset,
                kept,
                metadata,
                table.schema,
                partitions,
                data_version=None if days else sources_fingerprint(sources),
                per_day=day_figures(kept_by_day),
                counted=kept_summary(counts),
            ),
        ],
        [check],
    )


# ---- features


def features(
    telemetry: DataFrame, errors: DataFrame, maintenance: DataFrame, machines: DataFrame, days: list[date]
) -> StepOutcome:
    """The feature rows of `days` (telemetry covering each day's lookback)."""
    LOG.info("features: building %s from telemetry, errors, replacements and machines", day_span(days))
    rows = build_features(telemetry, errors, maintenance, machines, days[0], days[-1] + timedelta(days=1))
    rows = rows.persist(STEP_CACHE)
    if rows.isEmpty():
        raise StepFailed(
            f"No features for {day_span(days)}: no machine has telemetry in those days. "
            "Materialize raw_telemetry for them first, or check the input files cover them."
        )
    by_day = rows_by_day(rows, day_keys(days))
    metadata = {"days_without_rows": days_without_rows(by_day)}
    return StepOutcome(
        [Produced("features", rows, metadata, FEATURES_SCHEMA, day_keys(days), per_day=day_figures(by_day))]
    )


# ---- the model


@dataclass(frozen=True)
class TrainingSettings:
    """The training window (None: from the first / to the last labelled features day), the hold-out and
    validation lengths, the forests to choose from (the configured one first), the worklist's target and the
    minimum hold-out macro F1 of a usable model."""

    first_day: date | None
    last_day: date | None
    holdout_days: int
    validation_days: int
    candidates: list[ForestParams]
    min_macro_f1: float
    worklist: WorklistTarget

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> TrainingSettings:
        """From failure_model's run config, defaults filled in (its fields are named as here and in ForestParams)."""
        return cls(
            first_day=date.fromisoformat(config["first_day"]) if config.get("first_day") else None,
            last_day=date.fromisoformat(config["last_day"]) if config.get("last_day") else None,
            holdout_days=int(config["holdout_days"]),
            validation_days=int(config["validation_days"]),
            candidates=forest_candidates(config),
            min_macro_f1=float(config["min_macro_f1"]),
            worklist=WorklistTarget(
                float(config["worklist_target_precision"]),
                int(config["worklist_capacity"]) if config.get("worklist_capacity") else None,
            ),
        )


def forest_candidates(config: Mapping[str, object]) -> list[ForestParams]:
    """The configured forest first, then each other depth and class weighting of the search, every combination."""
    depths = list(dict.fromkeys([int(config["max_depth"]), *map(int, config.get("search_max_depths") or [])]))
    weightings = list(dict.fromkeys([config["class_weighting"], *(config.get("search_class_weightings") or [])]))
    unknown = [weighting for weighting in weightings if weighting not in CLASS_WEIGHTINGS]
    if unknown:
        raise ValueError(f"failure_model's class weightings {unknown}: each one of {', '.join(CLASS_WEIGHTINGS)}")
    none_rows = config.get("none_rows_per_failure_row")
    return [
        ForestParams(
            num_trees=int(config["num_trees"]),
            max_depth=depth,
            min_instances_per_node=int(config["min_instances_per_node"]),
            seed=int(config["seed"]),
            class_weighting=weighting,
            none_rows_per_failure_row=float(none_rows) if none_rows else None,
        )
        for depth in depths
        for weighting in weightings
    ]


def _metrics_rows(evaluation: Evaluation) -> list[dict]:
    report, baseline = evaluation.report, evaluation.baseline_report
    return [
        {
            "class": name,
            **{key: round(value, 4) for key, value in report["per_class"][name].items()},
            "baseline_f1": round(baseline["per_class"][name]["f1"], 4),
            "pr_auc": _rounded(evaluation.pr_auc.get(name)),
            # what ranking the rows at random gives as precision-recall AUC
            "class_share": round(report["per_class"][name]["support"] / evaluation.holdout_rows, 4),
        }
        for name in CLASSES
    ]


def _rounded(value: float | None, places: int = 4) -> float | None:
    return None if value is None else round(value, places)


def _macro_pr_auc(pr_auc: dict[str, float | None]) -> float | None:
    """The mean precision-recall AUC of the failure classes with rows in the hold-out."""
    known = [value for value in pr_auc.values() if value is not None]
    return round(sum(known) / len(known), 4) if known else None


def _lead_time_metadata(lead_time: dict[str, object]) -> dict[str, object]:
    """The hold-out's worklists against its failures, as crews live them (`model.lead_times`)."""
    caught, failures = lead_time["caught"], lead_time["failures"]
    return {
        "failures_caught_share": _rounded(caught / failures if failures else None),
        "false_alarms_per_caught_failure": _rounded(lead_time["false_alarms_per_caught_failure"], 2),
        # by machine-day: of the listed, the share that failed within 7 days; of those that failed, the share listed
        "worklist_precision": _rounded(lead_time["precision"]),
        "worklist_recall": _rounded(lead_time["recall"]),
        "lead_time": records(
            [{**row, "share": _rounded(row["share"])} for row in lead_time["by_days_before"]],
            [("days_before", "int"), ("failures", "int"), ("on_list", "int"), ("share", "float")],
        ),
    }


def _validation_metadata(validation: ValidationChoice) -> dict[str, object]:
    """The forest chosen on the validation days and every candidate's macro F1 there; the worklist's threshold,
    why, and the lists each candidate threshold gave there."""
    choice = validation.worklist
    return {
        "max_depth": validation.params.max_depth,
        "class_weighting": validation.params.class_weighting,
        "forest_search": records(
            [{**row, "macro_f1": _rounded(row["macro_f1"])} for row in validation.search],
            [("max_depth", "int"), ("class_weighting", "string"), ("macro_f1", "float")],
        ),
        "worklist_threshold": choice.threshold,
        "worklist_threshold_choice": choice.reason,
        "validation_days": day_span([str(day) for day in choice.validated_on]) if choice.validated_on else "none",
        "threshold_search": records(
            [
                {
                    "threshold": row["threshold"],
                    "machine_days_listed": row["machine_days_listed"],
                    "most_listed_on_a_day": row["most_listed_on_a_day"],
                    "precision": _rounded(row["precision"]),
                    "recall": _rounded(row["recall"]),
                }
                for row in choice.table
            ],
            [("threshold", "float"), ("machine_days_listed", "int"), ("most_listed_on_a_day", "int")]
            + [("precision", "float"), ("recall", "float")],
        ),
    }


def _model_metadata(evaluation: Evaluation, version: str) -> dict[str, object]:
    report, baseline = evaluation.report, evaluation.baseline_report
    importances = feature_importances(evaluation.pipeline)[:TOP_FEATURES]
    confusion = evaluation.confusion
    return {
        "version": version,
        "training_days": f"{evaluation.trained_on[0]} .. {evaluation.trained_on[1]}",
        "holdout_days": f"{evaluation.held_out[0]} .. {evaluation.held_out[1]}",
        "train_rows": sum(evaluation.train_label_counts.values()),
        "train_label_counts": evaluation.train_label_counts,
        "holdout_rows": evaluation.holdout_rows,
        "macro_f1": round(report["macro_f1"], 4),
        "baseline_macro_f1": round(baseline["macro_f1"], 4),
        "accuracy": round(report["accuracy"], 4),
        "macro_pr_auc": _macro_pr_auc(evaluation.pr_auc),
        "holdout_metrics": records(
            _metrics_rows(evaluation),
            [("class", "string"), *[(m, "float") for m in ("precision", "recall", "f1")], ("support", "int")]
            + [(m, "float") for m in ("baseline_f1", "pr_auc", "class_share")],
        ),
        **_validation_metadata(evaluation.validation),
        **_lead_time_metadata(evaluation.lead_time),
        "calibration": records(
            evaluation.calibration,
            [("failure_probability", "string"), ("rows", "int")]
            + [(m, "float") for m in ("mean_predicted", "observed_failure_share")],
        ),
        "confusion_matrix": records(
            [{"true_class": t, **{f"predicted_{p}": confusion.get((t, p), 0) for p in CLASSES}} for t in CLASSES],
            [("true_class", "string"), *[(f"predicted_{c}", "int") for c in CLASSES]],
        ),
        "feature_importances": records(
            [{"feature": name, "importance": round(value, 4)} for name, value in importances],
            [("feature", "string"), ("importance", "float")],
        ),
    }


def train(features: DataFrame, failures: DataFrame, settings: TrainingSettings, run_id: str) -> StepOutcome:
    """Train and evaluate a new model version; its check says whether scoring may use it."""
    try:
        evaluation = train_and_evaluate(
            features,
            failures,
            settings.first_day,
            settings.last_day,
            settings.holdout_days,
            settings.candidates,
            settings.validation_days,
            settings.worklist,
        )
    except TrainingError as error:
        raise StepFailed(str(error)) from error
    macro_f1, baseline_f1 = evaluation.report["macro_f1"], evaluation.baseline_report["macro_f1"]
    passed = macro_f1 >= settings.min_macro_f1 and macro_f1 > baseline_f1
    reason = (
        f"hold-out macro F1 {macro_f1:.3f} (minimum {settings.min_macro_f1}, majority-class baseline {baseline_f1:.3f})"
    )
    LOG.info(
        "failure_model: trained on %s rows of %s, evaluated on %s rows of %s: %s",
        f"{sum(evaluation.train_label_counts.values()):,}",
        day_span(list(evaluation.trained_on)),
        f"{evaluation.holdout_rows:,}",
        day_span(list(evaluation.held_out)),
        reason,
    )
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + run_id[:8]
    manifest = {
        "version": version,
        "run_id": run_id,
        "trained_on": [str(day) for day in evaluation.trained_on],
        "held_out": [str(day) for day in evaluation.held_out],
        "params": evaluation.validation.params.__dict__,
        "macro_f1": macro_f1,
        "baseline_macro_f1": baseline_f1,
        # what prediction_outcomes compares the lists' realized figures with
        "worklist": {
            **{key: evaluation.lead_time[key] for key in ("threshold", "precision", "recall")},
            "chosen": evaluation.worklist.reason,
            "target_precision": settings.worklist.precision,
            "capacity": settings.worklist.capacity,
        },
        "check": {"passed": passed, "reason": reason},
    }
    check = CheckOutcome(
        asset="failure_model",
        name=MODEL_CHECK,
        passed=passed,
        description=("Usable: " if passed else "Not used for scoring: ") + reason,
        metadata={
            "macro_f1": round(macro_f1, 4),
            "baseline_macro_f1": round(baseline_f1, 4),
            "min_macro_f1": float(settings.min_macro_f1),
            "version": version,
        },
    )
    model = TrainedModel(evaluation.pipeline, manifest)
    return StepOutcome(
        [Produced("failure_model", model, _model_metadata(evaluation, version), stored_as="model")], [check]
    )


# ---- scoring


def _one_row_per_active_machine(per_day: list[dict]) -> CheckOutcome:
    unsound_days = [
        {k: _plain(v) for k, v in day.items()}
        for day in per_day
        if not day["predictions"] == day["machines_predicted"] == day["active_machines"]
    ]
    return CheckOutcome(
        "daily_predictions",
        "one_row_per_active_machine",
        passed=not unsound_days,
        metadata={"days_checked": len(per_day), "unsound_days": unsound_days},
    )


def _failure_share_stable(shares: dict[date, float], days: list[date]) -> CheckOutcome:
    """Each day's predicted-failure share against the mean of the week before; the days of that week
    that were never scored are named, not guessed."""
    drifts = share_drifts(shares, days, MAX_FAILURE_SHARE_CHANGE)
    earlier_days = [days[0] - timedelta(days=n) for n in range(TRAILING_DAYS, 0, -1)]
    return CheckOutcome(
        "daily_predictions",
        "failure_share_stable",
        passed=not drifts,
        warn_only=True,
        metadata={
            "days_outside": drifts,
            "trailing_days_not_scored": [day.isoformat() for day in earlier_days if day not in shares],
        },
    )


def predictions(features: DataFrame, model: TrainedModel, trailing: DataFrame, days: list[date]) -> StepOutcome:
    """Score the feature rows of `days` with `model`; check one row per active machine, valid probabilities,
    and each day's predicted-failure share against the `trailing` week of earlier predictions."""
    scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    rows = score(model.pipeline, features, model.version, scored_at).persist(StorageLevel.MEMORY_AND_DISK)
    per_day = prediction_counts_per_day(rows, features)
    if not any(day["predictions"] for day in per_day):
        raise StepFailed(
            f"Nothing to score for {day_span(days)}: features has no rows for those days. "
            "Materialize raw_telemetry and features for them first."
        )
    # the run's own days win over what an earlier run stored for them
    shares = {**failure_shares(trailing.where(F.col("date") < F.lit(days[0]))), **failure_shares(rows)}
    LOG.info(
        "daily_predictions: %s machine-days of %s scored with model %s",
        f"{sum(day['predictions'] for day in per_day):,}",
        day_span(days),
        model.version,
    )
    metadata = {
        "model_version": model.version,
        "scored_at": scored_at.isoformat(sep=" "),
    }
    figures = {
        str(day["date"]): {
            ROW_COUNT_KEY: day["predictions"],
            "predicted_failure_share": round(shares[day["date"]], 3),
        }
        for day in per_day
        if day["predictions"]
    }
    invalid = invalid_probability_rows(rows)
    checks = [
        _one_row_per_active_machine(per_day),
        CheckOutcome("daily_predictions", "probabilities_valid", invalid == 0, {"invalid_rows": invalid}),
        _failure_share_stable(shares, days),
    ]
    produced = Produced("daily_predictions", rows, metadata, PREDICTIONS_SCHEMA, day_keys(days), per_day=figures)
    return StepOutcome([produced], checks)


def worklist_threshold(configured: float | None, model_manifest: dict) -> tuple[float, str]:
    """The worklist's threshold and where it comes from: the configured one, else the one chosen with the model
    on its validation days (the default for a model trained before thresholds were chosen)."""
    if configured is not None:
        return configured, "configured"
    chosen = model_manifest.get("worklist", {})
    if "chosen" not in chosen:
        return DEFAULT_MIN_FAILURE_PROBABILITY, f"the default (model {model_manifest['version']} chose none)"
    return chosen["threshold"], f"model {model_manifest['version']}: {chosen['chosen']}"


def maintenance_worklist(
    predictions: DataFrame, days: list[date], configured_threshold: float | None, model_manifest: dict
) -> StepOutcome:
    """The crews' list for `days`, as a table and as one CSV file per day."""
    min_failure_probability, threshold_source = worklist_threshold(configured_threshold, model_manifest)
    rows = worklist(predictions, min_failure_probability).persist(StorageLevel.MEMORY_AND_DISK)
    counts = rows_by_day(rows, day_keys(days))
    LOG.info(
        "maintenance_worklist: %s machine-days of %s at failure probability >= %s",
        f"{sum(counts.values()):,}",
        day_span(days),
        min_failure_probability,
    )
    metadata = {
        "min_failure_probability": float(min_failure_probability),
        "threshold_from": threshold_source,
        "most_urgent": preview(rows.where(F.col("date") == F.lit(days[-1])).orderBy("rank"), TOP_WORKLIST_ROWS),
    }
    return StepOutcome(
        [
            Produced(
                "maintenance_worklist",
                rows,
                metadata,
                WORKLIST_SCHEMA,
                day_keys(days),
                per_day={day: {ROW_COUNT_KEY: n, "machines_listed": n} for day, n in counts.items()},
            ),
            Produced(
                "maintenance_worklist_csv",
                crew_csv_rows(rows),
                schema=CREW_CSV_SCHEMA,
                partitions=day_keys(days),
                stored_as="csv",
            ),
        ]
    )


def crew_pages(worklist: DataFrame, predictions: DataFrame, features: DataFrame, days: list[date]) -> StepOutcome:
    """The crews' page of each of `days`: the listed machines with their history (`lib.crew_page`)."""
    rows = page_rows(worklist, predictions, features, days).persist(StorageLevel.MEMORY_AND_DISK)
    counts = rows_by_day(rows, day_keys(days))
    LOG.info(
        "maintenance_worklist_page: %s machine-days on the pages of %s", f"{sum(counts.values()):,}", day_span(days)
    )
    return StepOutcome(
        [
            Produced(
                "maintenance_worklist_page",
                rows,
                partitions=day_keys(days),
                stored_as="html",
                per_day={day: {"machines_listed": n} for day, n in counts.items()},
            )
        ]
    )


# ---- outcomes


def _figures_metadata(figures: Mapping[str, object]) -> dict[str, object]:
    return {
        "worklist_precision": _rounded(figures["precision"]),
        "worklist_recall": _rounded(figures["recall"]),
        "machine_days_listed": figures["listed"],
        "machine_days_failing": figures["failing"],
    }


def _worklist_holds_up(recent: Mapping[str, object], days_judged: int, held_out: Mapping | None) -> CheckOutcome:
    """The lists' realized precision and recall over the recent days of outcomes against the model's hold-out
    figures: a warning when either falls clearly below, judged only on enough machine-days."""
    metadata = {**_figures_metadata(recent), "days_judged": days_judged}
    if not held_out or held_out.get("precision") is None:
        return CheckOutcome(
            "prediction_outcomes",
            OUTCOMES_CHECK,
            passed=True,
            warn_only=True,
            metadata=metadata,
            description="Not judged: the newest usable model records no hold-out figures of its worklists",
        )
    metadata.update(held_out_precision=_rounded(held_out["precision"]), held_out_recall=_rounded(held_out["recall"]))
    shortfalls, too_few = [], []
    for figure, base in (("precision", "listed"), ("recall", "failing")):
        if recent[base] < MIN_OUTCOME_MACHINE_DAYS:
            too_few.append(f"{figure} ({recent[base]} {base} machine-days)")
        elif held_out[figure] is not None and held_out[figure] - recent[figure] > MAX_OUTCOME_SHORTFALL:
            shortfalls.append(f"{figure} {recent[figure]:.2f} against {held_out[figure]:.2f} held out")
    said = [f"below the hold-out by more than {MAX_OUTCOME_SHORTFALL}: " + ", ".join(shortfalls)] if shortfalls else []
    said += [f"not judged, too few outcomes: {', '.join(too_few)}"] if too_few else []
    return CheckOutcome(
        "prediction_outcomes",
        OUTCOMES_CHECK,
        passed=not shortfalls,
        warn_only=True,
        metadata=metadata,
        description=f"The last {days_judged} days of outcomes: " + ("; ".join(said) or "as good as held out"),
    )


def outcomes(
    predictions: DataFrame,
    worklist: DataFrame,
    failures: DataFrame,
    earlier_outcomes: DataFrame,
    model_manifest: Mapping[str, object],
    days: list[date],
) -> StepOutcome:
    """The outcomes of the predictions whose 7 days ended on `days` (`lib.outcomes`), the lists' realized figures,
    and the check of the recent days' figures against the newest usable model's hold-out."""
    rows = prediction_outcomes(predictions, worklist, failures, days[-1]).persist(StorageLevel.MEMORY_AND_DISK)
    counts = outcome_counts(rows)
    run_counts = [counts[day] for day in days if day in counts]
    recent_days = [days[0] - timedelta(days=n) for n in range(RECENT_OUTCOME_DAYS - len(days), 0, -1)] + days
    earlier = outcome_counts(earlier_outcomes.where(F.col("date") < F.lit(days[0])))
    recent_counts = [counts.get(day) or earlier[day] for day in recent_days if day in counts or day in earlier]
    figures = worklist_figures(run_counts)
    LOG.info(
        "prediction_outcomes: %s machine-days predicted %s .. %s, their 7 days ended %s",
        f"{figures['machine_days']:,}",
        days[0] - timedelta(days=OUTCOME_DELAY_DAYS),
        days[-1] - timedelta(days=OUTCOME_DELAY_DAYS),
        day_span(days),
    )
    metadata = {
        **_figures_metadata(figures),
        "by_component": records(
            [
                {**row, "precision": _rounded(row["precision"]), "recall": _rounded(row["recall"])}
                for row in figures["by_component"]
            ],
            [
                ("component", "string"),
                ("listed", "int"),
                ("failed", "int"),
                ("listed_and_failed", "int"),
                ("precision", "float"),
                ("recall", "float"),
            ],
        ),
        "days_without_predictions": [day.isoformat() for day in days if day not in counts],
    }
    per_day = {
        day.isoformat(): {
            ROW_COUNT_KEY: counts[day]["machine_days"],
            **_figures_metadata(worklist_figures([counts[day]])),
        }
        for day in days
        if day in counts
    }
    check = _worklist_holds_up(worklist_figures(recent_counts), len(recent_counts), model_manifest.get("worklist"))
    return StepOutcome(
        [Produced("prediction_outcomes", rows, metadata, OUTCOMES_SCHEMA, day_keys(days), per_day=per_day)], [check]
    )
