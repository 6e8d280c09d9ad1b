"""Versions of the trained failure model: each training is kept, the newest is what scoring uses.

Layout under `<warehouse>/failure_model/`:
- `versions/<version>/pipeline/`: the fitted Spark PipelineModel, loadable with `PipelineModel.load`;
- `versions/<version>/manifest.json`: training window, metrics and the verdict of its check;
- `LATEST`: the newest version's name, replaced atomically once the version is complete.

Scoring refuses a newest version whose check failed rather than quietly using an older one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.ml import PipelineModel


class ModelNotUsable(RuntimeError):
    """There is no trained model to score with, or the newest one failed its check."""


@dataclass(frozen=True)
class TrainedModel:
    pipeline: PipelineModel
    manifest: dict

    @property
    def version(self) -> str:
        return self.manifest["version"]


class ModelStore:
    def __init__(self, root: Path):
        self.root = Path(root).absolute()

    def version_path(self, version: str) -> Path:
        return self.root / "versions" / version

    def versions(self) -> list[str]:
        folder = self.root / "versions"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def save(self, trained: TrainedModel) -> Path:
        """Write a new version completely, then point LATEST at it."""
        target = self.version_path(trained.version)
        if target.exists():
            raise FileExistsError(f"model version {trained.version} exists already at {target}")
        staging = self.root / ".staging" / trained.version
        shutil.rmtree(staging, ignore_errors=True)
        trained.pipeline.write().save(str(staging / "pipeline"))
        (staging / "manifest.json").write_text(json.dumps(trained.manifest, indent=2, sort_keys=True))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
        pointer = self.root / f".LATEST.{trained.version}"
        pointer.write_text(trained.version)
        os.replace(pointer, self.root / "LATEST")
        return target

    def manifest(self, version: str) -> dict:
        return json.loads((self.version_path(version) / "manifest.json").read_text())

    def load(self, version: str) -> TrainedModel:
        return TrainedModel(PipelineModel.load(str(self.version_path(version) / "pipeline")), self.manifest(version))

    def load_latest_usable(self) -> TrainedModel:
        """The newest version, provided its check passed; otherwise say what to materialize."""
        latest = self.root / "LATEST"
        if not latest.exists():
            raise ModelNotUsable(
                f"No trained failure_model in {self.root}: materialize failure_model first "
                "(it trains on the features partitions of its training window)."
            )
        version = latest.read_text().strip()
        manifest = self.manifest(version)
        if not manifest["check"]["passed"]:
            raise ModelNotUsable(
                f"The newest failure_model (version {version}) failed its check usable_for_scoring: "
                f"{manifest['check']['reason']}. Materialize failure_model again (more training days, "
                "other settings) until its check passes; scoring does not fall back to older versions."
            )
        return self.load(version)
