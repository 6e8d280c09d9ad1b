"""The failure model: a Spark MLlib pipeline, its temporal evaluation, and the scoring of features.

Pure Spark: no Dagster. The pipeline holds every fitted step (the machine-model indexer, the
assembler, the forest), so scoring applies what training learnt and never refits anything on the
data it scores (the reference architecture refitted its indexers at scoring time). Class indices
are fixed by `CLASSES`, not learnt from the data, so a class absent from a training window keeps
its index and its probability column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark import StorageLevel
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import RandomForestClassificationModel, RandomForestClassifier
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from batch_scoring.lib.features import (
    CATEGORICAL_FEATURES,
    CLASSES,
    HORIZON_HOURS,
    NUMERIC_FEATURES,
    label_observations,
)

FAILURE_CLASSES = CLASSES[1:]
PROBABILITY_COLUMNS = [f"probability_{c}" for c in CLASSES]
INDEXED = {name: f"{name}_index" for name in CATEGORICAL_FEATURES}
CALIBRATION_BANDS = 10  # of predicted failure probability, 0.1 wide
# the worklist's threshold when the validation days cannot choose one: machines whose failure probability
# (1 - probability of none) reaches it are listed
DEFAULT_MIN_FAILURE_PROBABILITY = 0.5
# the worklist thresholds tried on the validation days: 0.05, 0.10, .. 0.95
CANDIDATE_THRESHOLDS = [round(step / 20, 2) for step in range(1, 20)]
LEAD_DAYS = (1, 3, 5)  # how many days before a failure the crews should have seen it on their list
MODEL_INPUTS = [*NUMERIC_FEATURES, *INDEXED.values()]
# memory for the split statistics of the nodes the forest splits in one pass over the data (MLlib's default: 256)
FOREST_AGGREGATE_MB = 1024


# how rows are weighted by class, as a power of the balanced weight: each class present counting as much as the
# others (failures are rare), the square root of that (rare classes count more, not as much), or every row alike
CLASS_WEIGHT_POWERS = {"balanced": 1.0, "square_root": 0.5, "none": 0.0}
CLASS_WEIGHTINGS = tuple(CLASS_WEIGHT_POWERS)


@dataclass(frozen=True)
class ForestParams:
    num_trees: int = 60
    max_depth: int = 10
    min_instances_per_node: int = 5
    seed: int = 42
    class_weighting: str = "balanced"
    # rows of class none fitted on per failure row, drawn at random; None: every row
    none_rows_per_failure_row: float | None = 3.0


def failure_probability() -> Column:
    """The probability that some component fails within 7 days: 1 - the probability of none."""
    return 1.0 - F.col("probability_none")


def class_index(column: Column) -> Column:
    """The fixed index of a class name, as a nominal column MLlib reads the number of classes from."""
    index = F.lit(None).cast("double")
    for position, name in reversed(list(enumerate(CLASSES))):
        index = F.when(column == name, F.lit(float(position))).otherwise(index)
    metadata = {"ml_attr": {"type": "nominal", "name": "label_index", "vals": list(CLASSES)}}
    return index.alias("label_index", metadata=metadata)


def training_rows(labelled: DataFrame, params: ForestParams) -> DataFrame:
    """The rows a forest is fitted on, with a `class_weight` as `params.class_weighting` (of `CLASS_WEIGHTINGS`,
    checked with the config) says over all of `labelled`. Failures are rare: every failure row is kept, and rows of
    class none are drawn at random (seeded) up to `params.none_rows_per_failure_row` per failure row, each weighing
    more in proportion, so each class keeps its total weight while the fitting time follows the failures, not the
    fleet's healthy days."""
    counts = {row["label"]: row["count"] for row in labelled.groupBy("label").count().collect()}
    total = sum(counts.values())
    none_rows, failure_rows = counts.get(CLASSES[0], 0), total - counts.get(CLASSES[0], 0)
    none_share = 1.0
    if params.none_rows_per_failure_row and none_rows and failure_rows:
        none_share = min(1.0, params.none_rows_per_failure_row * failure_rows / none_rows)
    power = CLASS_WEIGHT_POWERS[params.class_weighting]
    weight = F.lit(None).cast("double")
    for label, count in counts.items():
        share = none_share if label == CLASSES[0] else 1.0
        weight = F.when(F.col("label") == label, F.lit((total / (len(counts) * count)) ** power / share)).otherwise(
            weight
        )
    if none_share < 1.0:
        fractions = {label: none_share if label == CLASSES[0] else 1.0 for label in counts}
        labelled = labelled.sampleBy("label", fractions, seed=params.seed)
    return labelled.withColumn("class_weight", weight)


def build_pipeline(params: ForestParams) -> Pipeline:
    indexers = [
        # a machine model unseen in training gets its own index instead of failing the scoring
        StringIndexer(inputCol=name, outputCol=indexed, handleInvalid="keep", stringOrderType="alphabetAsc")
        for name, indexed in INDEXED.items()
    ]
    assembler = VectorAssembler(inputCols=MODEL_INPUTS, outputCol="model_features")
    forest = RandomForestClassifier(
        featuresCol="model_features",
        labelCol="label_index",
        weightCol="class_weight",
        numTrees=params.num_trees,
        maxDepth=params.max_depth,
        minInstancesPerNode=params.min_instances_per_node,
        maxBins=32,
        seed=params.seed,
        # how it is fitted, not what: each row's node kept between passes over the data instead of found again from
        # the root, and more nodes split per pass (1.4 to 1.6x faster at 1,000 machines x 365 days, the same F1)
        cacheNodeIds=True,
        maxMemoryInMB=FOREST_AGGREGATE_MB,
    )
    return Pipeline(stages=[*indexers, assembler, forest])


def fit(train: DataFrame, params: ForestParams) -> PipelineModel:
    """Fit the pipeline on labelled feature rows."""
    indexed = training_rows(train, params).withColumn("label_index", class_index(F.col("label")))
    return build_pipeline(params).fit(indexed)


def predict(model: PipelineModel, features: DataFrame) -> DataFrame:
    """Feature rows plus `predicted_component` and one `probability_<class>` column per class."""
    scored = model.transform(features)
    probabilities = vector_to_array(F.col("probability"))
    predicted = F.element_at(F.array(*[F.lit(c) for c in CLASSES]), F.col("prediction").cast("int") + 1)
    return scored.select(
        *features.columns,
        predicted.alias("predicted_component"),
        *[probabilities[i].alias(name) for i, name in enumerate(PROBABILITY_COLUMNS)],
    )


@dataclass(frozen=True)
class TemporalSplit:
    train: DataFrame
    holdout: DataFrame
    train_last_day: date
    holdout_first_day: date


def temporal_split(labelled: DataFrame, last_day: date, holdout_days: int) -> TemporalSplit:
    """Hold out the last `holdout_days` observation days; train on days whose labels end before them.

    A training observation at the end of day t sees failures until t + 1 + 7 days, so training stops
    7 days before the hold-out (the gap) and no hold-out failure leaks into a training label.
    """
    holdout_first = last_day - timedelta(days=holdout_days - 1)
    train_last = holdout_first - timedelta(days=HORIZON_HOURS // 24 + 1)
    return TemporalSplit(
        train=labelled.where(F.col("date") <= F.lit(train_last)),
        holdout=labelled.where(F.col("date") >= F.lit(holdout_first)),
        train_last_day=train_last,
        holdout_first_day=holdout_first,
    )


def confusion_counts(
    predictions: DataFrame, predicted_column: str = "predicted_component"
) -> dict[tuple[str, str], int]:
    """(true label, predicted label) -> rows; at most len(CLASSES)^2 entries are collected."""
    grouped = predictions.groupBy("label", predicted_column).count().collect()
    return {(row["label"], row[predicted_column]): row["count"] for row in grouped}


def classification_report(confusion: dict[tuple[str, str], int]) -> dict[str, object]:
    """Per-class precision, recall, F1 and support; macro F1 over the failure classes; accuracy."""
    per_class = {}
    for name in CLASSES:
        true_positive = confusion.get((name, name), 0)
        predicted = sum(n for (_, p), n in confusion.items() if p == name)
        support = sum(n for (t, _), n in confusion.items() if t == name)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    total = sum(confusion.values())
    correct = sum(n for (t, p), n in confusion.items() if t == p)
    return {
        "per_class": per_class,
        "macro_f1": sum(per_class[c]["f1"] for c in FAILURE_CLASSES) / len(FAILURE_CLASSES),
        "accuracy": correct / total if total else 0.0,
    }


def precision_recall_auc(predictions: DataFrame, supports: dict[str, int]) -> dict[str, float | None]:
    """Each failure class's area under its precision-recall curve, the class against the rest: how well its
    probability ranks the rows whatever the threshold (ranking at random scores the class's share of rows).
    None for a class without rows in `predictions` (`supports`: rows per true class)."""
    evaluator = BinaryClassificationEvaluator(metricName="areaUnderPR", labelCol="is_class", rawPredictionCol="score")
    return {
        name: evaluator.evaluate(
            predictions.select(
                (F.col("label") == name).cast("double").alias("is_class"),
                F.col(f"probability_{name}").alias("score"),
            )
        )
        if supports.get(name)
        else None
        for name in FAILURE_CLASSES
    }


def calibration_bands(predictions: DataFrame, bands: int = CALIBRATION_BANDS) -> list[dict]:
    """Rows by band of predicted failure probability (1 - probability of none), with the band's mean prediction and
    the share of its rows that did fail within 7 days: where a calibrated model's two agree. Bands without rows are
    left out (at most `bands` rows are collected)."""
    failing = failure_probability()
    band = F.least(F.floor(failing * bands), F.lit(bands - 1)).cast("int")
    grouped = (
        predictions.groupBy(band.alias("band"))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.avg(failing).alias("mean_predicted"),
            F.avg((F.col("label") != CLASSES[0]).cast("double")).alias("observed"),
        )
        .orderBy("band")
        .collect()
    )
    return [
        {
            "failure_probability": f"{row['band'] / bands:.1f} .. {(row['band'] + 1) / bands:.1f}",
            "rows": row["rows"],
            "mean_predicted": row["mean_predicted"],
            "observed_failure_share": row["observed"],
        }
        for row in grouped
    ]


def lead_times(
    predictions: DataFrame, failures: DataFrame, held_out: tuple[date, date], threshold: float
) -> dict[str, object]:
    """How the hold-out's worklists (machine-days at failure probability >= `threshold`) met its failures.

    A failure on day F is on the list k days before when its machine is listed on day F - k (the list of a day
    reaches the crews the next morning); for each k of `LEAD_DAYS`, of the failures whose day F - k was held out,
    the share listed then. A failure is caught when its machine is listed on any of the 7 days before it (the
    horizon), counted over the failures whose day before lies in the hold-out; a false alarm is a listed
    machine-day without a failure within its 7 days. The list's precision and recall by machine-day: of the
    listed machine-days, the share with a failure within 7 days; of the machine-days with one, the share listed.
    A few figures per k are collected, nothing per row."""
    first, last = held_out
    horizon_days = HORIZON_HOURS // 24
    on_list = failure_probability() >= threshold
    listed = predictions.where(on_list).select("machine_id", "date", F.lit(True).alias("listed"))
    failure_days = failures.select("machine_id", F.to_date("datetime").alias("failure_day")).distinct()
    run_up = failure_days.withColumn("days_before", F.explode(F.sequence(F.lit(1), F.lit(horizon_days)))).withColumn(
        "date", F.date_sub("failure_day", F.col("days_before"))
    )
    looked_at = run_up.where(F.col("date").between(first, last)).join(listed, ["machine_id", "date"], "left")
    per_failure = looked_at.groupBy("machine_id", "failure_day").agg(
        *[F.max(F.when(F.col("days_before") == k, F.lit(1))).alias(f"seen_{k}") for k in LEAD_DAYS],
        *[
            F.max(F.when(F.col("days_before") == k, F.col("listed").isNotNull())).alias(f"on_list_{k}")
            for k in LEAD_DAYS
        ],
        F.max(F.col("days_before") == 1).alias("day_before_held_out"),
        F.max(F.col("listed").isNotNull()).alias("caught"),
    )
    figures = per_failure.agg(
        *[F.count(f"seen_{k}").alias(f"failures_{k}") for k in LEAD_DAYS],
        *[F.count(F.when(F.col(f"on_list_{k}"), 1)).alias(f"listed_{k}") for k in LEAD_DAYS],
        F.count(F.when(F.col("day_before_held_out"), 1)).alias("failures"),
        F.count(F.when(F.col("day_before_held_out") & F.col("caught"), 1)).alias("caught"),
    ).first()
    failing = F.col("label") != CLASSES[0]
    machine_days = predictions.agg(
        F.count(F.when(on_list, 1)).alias("listed"),
        F.count(F.when(on_list & failing, 1)).alias("listed_failing"),
        F.count(F.when(failing, 1)).alias("failing"),
    ).first()
    listed, listed_failing, failing_days = machine_days
    false_alarms = listed - listed_failing
    caught = figures["caught"]
    return {
        "threshold": threshold,
        "by_days_before": [
            {
                "days_before": k,
                "failures": figures[f"failures_{k}"],
                "on_list": figures[f"listed_{k}"],
                "share": figures[f"listed_{k}"] / figures[f"failures_{k}"] if figures[f"failures_{k}"] else None,
            }
            for k in LEAD_DAYS
        ],
        "failures": figures["failures"],
        "caught": caught,
        "false_alarms": false_alarms,
        "false_alarms_per_caught_failure": false_alarms / caught if caught else None,
        "machine_days_listed": listed,
        "machine_days_failing": failing_days,
        "precision": listed_failing / listed if listed else None,
        "recall": listed_failing / failing_days if failing_days else None,
    }


def majority_class(labelled: DataFrame) -> str:
    return labelled.groupBy("label").count().orderBy(F.desc("count"), "label").first()["label"]


def feature_importances(model: PipelineModel) -> list[tuple[str, float]]:
    """The forest's feature importances by input name, largest first."""
    forest = model.stages[-1]
    assert isinstance(forest, RandomForestClassificationModel)
    importances = forest.featureImportances.toArray()
    return sorted(zip(MODEL_INPUTS, (float(x) for x in importances)), key=lambda pair: -pair[1])


@dataclass(frozen=True)
class WorklistTarget:
    """What the crews ask of their list: this share of listed machine-days to fail within 7 days, and at most
    `capacity` machines on one day's list (None: no limit)."""

    precision: float
    capacity: int | None = None


def threshold_table(predictions: DataFrame, thresholds: list[float] = CANDIDATE_THRESHOLDS) -> list[dict]:
    """For each threshold, the lists it would have given on the days of `predictions` (labelled): machine-days
    listed, of them with a failure within 7 days, machine-days with a failure, the longest day's list, and the
    precision and recall by machine-day. One query; a row per day and threshold band is collected."""
    failing_probability = failure_probability()
    reached = sum(((failing_probability >= F.lit(t)).cast("int") for t in thresholds), F.lit(0))
    failing = (F.col("label") != CLASSES[0]).cast("int")
    per_day_band = (
        predictions.groupBy("date", reached.alias("band"))
        .agg(F.count(F.lit(1)).alias("rows"), F.sum(failing).alias("failing"))
        .collect()
    )
    failing_days = sum(row["failing"] for row in per_day_band)
    table = []
    for step, threshold in enumerate(thresholds, start=1):
        listed_rows = [row for row in per_day_band if row["band"] >= step]
        listed = sum(row["rows"] for row in listed_rows)
        listed_failing = sum(row["failing"] for row in listed_rows)
        per_day: dict[date, int] = {}
        for row in listed_rows:
            per_day[row["date"]] = per_day.get(row["date"], 0) + row["rows"]
        table.append(
            {
                "threshold": threshold,
                "machine_days_listed": listed,
                "listed_failing": listed_failing,
                "machine_days_failing": failing_days,
                "most_listed_on_a_day": max(per_day.values(), default=0),
                "precision": listed_failing / listed if listed else None,
                "recall": listed_failing / failing_days if failing_days else None,
            }
        )
    return table


def choose_threshold(table: list[dict], target: WorklistTarget) -> tuple[float, str]:
    """The lowest threshold of `table` (ascending) whose lists reach the target precision within the capacity,
    and why; without one, the most precise threshold within the capacity (the lowest of equals), said so."""
    if not table or not table[0]["machine_days_failing"]:
        return DEFAULT_MIN_FAILURE_PROBABILITY, "the default: no failure within 7 days of a validation day"
    within = [row for row in table if target.capacity is None or row["most_listed_on_a_day"] <= target.capacity]
    capacity = "" if target.capacity is None else f", at most {target.capacity} machines a day"
    reaching = [row for row in within if row["precision"] is not None and row["precision"] >= target.precision]
    if reaching:
        row = reaching[0]
        return row["threshold"], (
            f"the lowest threshold reaching precision {target.precision:g}{capacity} on the validation days "
            f"(precision {row['precision']:.2f}, recall {row['recall']:.2f})"
        )
    listing = [row for row in within if row["precision"] is not None]
    if not listing:
        return DEFAULT_MIN_FAILURE_PROBABILITY, f"the default: no threshold listed a machine{capacity}"
    best = max(listing, key=lambda row: (row["precision"], -row["threshold"]))
    return best["threshold"], (
        f"no threshold reached precision {target.precision:g}{capacity} on the validation days: the most precise "
        f"(precision {best['precision']:.2f}, recall {best['recall']:.2f})"
    )


@dataclass(frozen=True)
class WorklistChoice:
    """The worklist's threshold, chosen on validation days before the hold-out, and the search behind it."""

    threshold: float
    reason: str
    validated_on: tuple[date, date] | None  # None: no validation was possible (see `reason`)
    table: list[dict]  # `threshold_table` of the validation days


@dataclass(frozen=True)
class ValidationChoice:
    """What the validation days chose: the forest's parameters (by macro F1 over comp1..comp4, the check's figure)
    with every candidate's result, and the worklist's threshold for the chosen forest."""

    params: ForestParams
    search: list[dict]  # per candidate: max_depth, class_weighting, macro_f1 on the validation days
    worklist: WorklistChoice


def choose_on_validation(
    train: DataFrame,
    train_last_day: date,
    validation_days: int,
    candidates: list[ForestParams],
    target: WorklistTarget,
) -> ValidationChoice:
    """Fit each candidate on the training days before the last `validation_days` (with the 7-day gap), score those
    days, keep the best by macro F1 (the first of equals) and choose the worklist's threshold on its scores: the
    hold-out stays unseen until the final evaluation."""
    split = temporal_split(train, train_last_day, validation_days)
    if not split.train.where(F.col("label") != CLASSES[0]).limit(1).collect():
        reason = (
            f"the default: no failure in the training days before the validation days from {split.holdout_first_day}"
        )
        return ValidationChoice(candidates[0], [], WorklistChoice(DEFAULT_MIN_FAILURE_PROBABILITY, reason, None, []))
    search, best, best_scores = [], None, None
    for params in candidates:
        scores = predict(fit(split.train, params), split.holdout).persist(StorageLevel.MEMORY_AND_DISK)
        macro_f1 = classification_report(confusion_counts(scores))["macro_f1"]
        search.append({"max_depth": params.max_depth, "class_weighting": params.class_weighting, "macro_f1": macro_f1})
        if best is None or macro_f1 > best[0]:
            if best_scores is not None:
                best_scores.unpersist()
            best, best_scores = (macro_f1, params), scores
        else:
            scores.unpersist()
    table = threshold_table(best_scores)
    best_scores.unpersist()
    threshold, reason = choose_threshold(table, target)
    return ValidationChoice(
        best[1], search, WorklistChoice(threshold, reason, (split.holdout_first_day, train_last_day), table)
    )


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline and its manifest (version, training window, metrics, its check's verdict)."""

    pipeline: PipelineModel
    manifest: dict

    @property
    def version(self) -> str:
        return self.manifest["version"]


class TrainingError(ValueError):
    """The training window cannot give a model; the message says why and what to change."""


@dataclass(frozen=True)
class Evaluation:
    """A pipeline fitted on the training days and judged on the hold-out days, against a majority-class baseline."""

    pipeline: PipelineModel
    trained_on: tuple[date, date]
    held_out: tuple[date, date]
    train_label_counts: dict[str, int]
    confusion: dict[tuple[str, str], int]
    report: dict[str, object]
    baseline_report: dict[str, object]
    pr_auc: dict[str, float | None]  # per failure class
    calibration: list[dict]
    lead_time: dict[str, object]  # the hold-out's worklists at the chosen threshold against its failures
    validation: ValidationChoice

    @property
    def worklist(self) -> WorklistChoice:
        return self.validation.worklist

    @property
    def holdout_rows(self) -> int:
        return sum(self.confusion.values())


def train_and_evaluate(
    features: DataFrame,
    failures: DataFrame,
    first_day: date | None,
    last_day: date | None,
    holdout_days: int,
    candidates: list[ForestParams],
    validation_days: int,
    target: WorklistTarget,
) -> Evaluation:
    """Label the feature rows of [first_day, last_day] (default: all), hold out the last `holdout_days`
    with a 7-day gap before them, choose the forest among `candidates` and the worklist's threshold on the last
    `validation_days` of the rest, fit the chosen forest on the rest and evaluate it on the hold-out."""
    # failures are known as far as features (i.e. telemetry) reach: to the end of the last features day
    observed_until = features.agg(F.max("observed_at")).first()[0]
    if observed_until is None:
        raise TrainingError("No features to train on: materialize features for the training window first.")
    window = features
    if first_day:
        window = window.where(F.col("date") >= F.lit(first_day))
    if last_day:
        window = window.where(F.col("date") <= F.lit(last_day))
    labelled = label_observations(window, failures, observed_until).persist(StorageLevel.MEMORY_AND_DISK)
    last_labelled = labelled.agg(F.max("date")).first()[0]
    if last_labelled is None:
        raise TrainingError("No observation in the training window has its 7-day horizon observed yet.")
    split = temporal_split(labelled, last_labelled, holdout_days)
    train_labels = {row["label"]: row["count"] for row in split.train.groupBy("label").count().collect()}
    if not set(train_labels) & set(FAILURE_CLASSES):
        raise TrainingError(
            f"No failure in the training days up to {split.train_last_day}: widen the window "
            f"or shorten holdout_days ({holdout_days})."
        )
    validation = choose_on_validation(split.train, split.train_last_day, validation_days, candidates, target)
    pipeline = fit(split.train, validation.params)
    holdout = predict(pipeline, split.holdout).withColumn("baseline", F.lit(majority_class(split.train)))
    holdout = holdout.persist(StorageLevel.MEMORY_AND_DISK)
    confusion = confusion_counts(holdout)
    if not confusion:
        raise TrainingError(f"The hold-out period from {split.holdout_first_day} has no labelled rows.")
    report = classification_report(confusion)
    supports = {name: figures["support"] for name, figures in report["per_class"].items()}
    return Evaluation(
        pipeline=pipeline,
        trained_on=(split.train.agg(F.min("date")).first()[0], split.train_last_day),
        held_out=(split.holdout_first_day, last_labelled),
        train_label_counts=train_labels,
        confusion=confusion,
        report=report,
        baseline_report=classification_report(confusion_counts(holdout, "baseline")),
        pr_auc=precision_recall_auc(holdout, supports),
        calibration=calibration_bands(holdout),
        lead_time=lead_times(
            holdout, failures, (split.holdout_first_day, last_labelled), validation.worklist.threshold
        ),
        validation=validation,
    )
