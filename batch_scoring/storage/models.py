"""Versions of the trained failure model: each training is kept, the newest is what scoring uses.

Layout under `<warehouse>/failure_model/`, written with Spark only, so it works on any storage Spark
writes to (a local folder, a cloud bucket, a Unity Catalog volume):
- `versions/<version>/pipeline/`: the fitted Spark PipelineModel, loadable with `PipelineModel.load`;
- `registry/`: a Delta table with one row per complete version (its manifest: training window, the
  Delta versions of the tables it learnt from, metrics and the verdict of its check). A version is
  registered, in one commit, only once its pipeline is written, so a crash leaves no half version.

Scoring refuses a newest version whose check failed rather than quietly using an older one.
"""

from __future__ import annotations

import json

from pyspark.ml import PipelineModel
from pyspark.ml.classification import RandomForestClassificationModel
from pyspark.sql import functions as F
from pyspark.sql import types as T

from batch_scoring.lib.model import TrainedModel
from batch_scoring.storage.delta import DeltaTables

REGISTRY_SCHEMA = T.StructType(
    [
        T.StructField("version", T.StringType(), nullable=False),
        T.StructField("usable", T.BooleanType(), nullable=False),
        T.StructField("manifest", T.StringType(), nullable=False),  # JSON
    ]
)


class ModelNotUsable(RuntimeError):
    """There is no trained model to score with, or the newest one failed its check, or it cannot be loaded."""


class ModelStore:
    def __init__(self, tables: DeltaTables, name: str):
        self.tables = tables
        self.name = name
        self.registry = f"{name}/registry"

    @property
    def location(self) -> str:
        return self.tables.path(self.name)

    def pipeline_location(self, version: str) -> str:
        return f"{self.location}/versions/{version}/pipeline"

    def save(self, trained: TrainedModel, note: str = "") -> str:
        """Write a new version's pipeline, then register it; return where the pipeline is."""
        target = self.pipeline_location(trained.version)
        trained.pipeline.write().save(target)  # fails if the version exists already
        entry = [(trained.version, bool(trained.manifest["check"]["passed"]), json.dumps(trained.manifest))]
        self.tables.append(
            self.registry, self.tables.spark.createDataFrame(entry, REGISTRY_SCHEMA), REGISTRY_SCHEMA, note
        )
        return target

    def load_latest_usable(self) -> TrainedModel:
        """The newest version, provided its check passed; otherwise say what to materialize."""
        manifest = self.latest_usable_manifest()
        return TrainedModel(self._load_pipeline(manifest["version"]), manifest)

    def latest_usable_manifest(self) -> dict:
        """The newest version's manifest, on the same terms as `load_latest_usable`, without loading its pipeline
        (about a dozen small Spark jobs): what the worklist's threshold and the outcomes' comparison need."""
        newest = (
            self.tables.read(self.registry, REGISTRY_SCHEMA).orderBy(F.desc("version")).limit(1).collect()
            if self.tables.exists(self.registry)
            else []
        )
        if not newest:
            raise ModelNotUsable(
                f"No trained failure_model in {self.location}: materialize failure_model first "
                "(it trains on the features partitions of its training window)."
            )
        manifest = json.loads(newest[0].manifest)
        version = manifest["version"]
        if not newest[0].usable:
            raise ModelNotUsable(
                f"The newest failure_model (version {version}) failed its check usable_for_scoring: "
                f"{manifest['check']['reason']}. Materialize failure_model again (more training days, "
                "other settings) until its check passes; scoring does not fall back to older versions."
            )
        return manifest

    def _load_pipeline(self, version: str) -> PipelineModel:
        """A version's fitted pipeline, checked to end in the random forest scoring needs; a version whose files
        are damaged or missing is named with its path and what to do, not left to fail inside Spark."""
        path = self.pipeline_location(version)
        remedy = (
            "Materialize failure_model again to register a new version (scoring uses only the newest), "
            "or restore the version's files from a backup."
        )
        try:
            pipeline = PipelineModel.load(path)
        except Exception as error:  # Spark raises Py4J, analysis or Python errors for damaged files alike
            cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelNotUsable(
                f"failure_model version {version} at {path} cannot be loaded ({cause}). {remedy}"
            ) from error
        if not pipeline.stages or not isinstance(pipeline.stages[-1], RandomForestClassificationModel):
            raise ModelNotUsable(
                f"failure_model version {version} at {path} holds no fitted random forest as its last stage. {remedy}"
            )
        return pipeline
