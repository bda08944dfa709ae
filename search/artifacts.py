"""Artifacts in Optuna's artifact store: each trial's per-epoch history (CSV, a trial
artifact), and the models of the best trials (study artifacts, the top ``keep_models`` only,
so the disk stays bounded).

The store is a folder (by default beside the SQLite or journal file) or ``s3://BUCKET``.
optuna-dashboard shows and serves these artifacts from the same store.
"""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
from pathlib import Path
from typing import Any

from search.errors import SpecError
from search.storage import journal_path, sqlite_path

HISTORY_ATTR = "history_artifact"
MODELS_ATTR = "best_models"  # on the study: the models kept, best first


def default_artifact_dir(url: str) -> Path:
    """Beside a SQLite or journal file (``NAME-artifacts``), else ``./hpsearch-artifacts``."""
    path = sqlite_path(url) or journal_path(url)
    if path is not None:
        return path.with_name(path.stem + "-artifacts")
    return Path("hpsearch-artifacts")


def artifact_store(url: str, location: str | None = None) -> Any:
    """The artifact store at ``location`` (a folder or s3://BUCKET), default beside the storage."""
    from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

    location = location or str(default_artifact_dir(url))
    if location.startswith("s3://"):
        bucket = location.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise SpecError(None, "--artifacts", "s3://BUCKET", location)
        try:
            return Boto3ArtifactStore(bucket)
        except ImportError as e:
            raise SpecError(None, "--artifacts", "boto3 installed for s3:// locations "
                            "(pip install boto3)", location) from e
    folder = Path(location)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


class TrialArtifacts:
    """Writes a trial's history and, for the best trials, its model."""

    def __init__(self, store: Any, keep_models: int, direction: str) -> None:
        self.store = store
        self.keep_models = keep_models
        self.direction = direction

    def save_history(self, trial: Any, history: list[dict[str, float]]) -> str:
        """Upload the per-epoch logs as CSV; returns the artifact id."""
        from optuna.artifacts import upload_artifact

        columns = sorted({key for epoch in history for key in epoch})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial-{trial.number}-history.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["epoch", *columns])
                for i, epoch in enumerate(history, start=1):
                    writer.writerow([i, *(epoch.get(c, "") for c in columns)])
            artifact_id = upload_artifact(artifact_store=self.store, file_path=str(path),
                                          study_or_trial=trial, mimetype="text/csv")
        trial.set_user_attr(HISTORY_ATTR, artifact_id)
        return artifact_id

    def save_model_if_top(self, trial: Any, model: Any, value: float) -> str | None:
        """Upload the model if ``value`` ranks among the top ``keep_models``; drop the rest.

        Models are study artifacts (finished trials cannot be changed, and a model that falls
        out of the top must be removed); the study's ``best_models`` attribute lists them.
        """
        from optuna.artifacts import upload_artifact

        if self.keep_models < 1:
            return None
        study = trial.study
        kept = list(study.user_attrs.get(MODELS_ATTR, []))
        reverse = self.direction == "maximize"
        ranked = sorted([entry["value"] for entry in kept] + [value], reverse=reverse)
        if ranked.index(value) >= self.keep_models:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial-{trial.number}-model.keras"
            model.save(path)
            artifact_id = upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=study,
                mimetype="application/octet-stream")
        kept.append({"trial": trial.number, "value": value, "artifact_id": artifact_id})
        kept.sort(key=lambda entry: entry["value"], reverse=reverse)
        for entry in kept[self.keep_models:]:
            self._remove(study, entry["artifact_id"])
        # Listed on the study, not the trial: a finished trial cannot be updated when its model
        # later falls out of the top and is deleted.
        study.set_user_attr(MODELS_ATTR, kept[:self.keep_models])
        return artifact_id

    def _remove(self, study: Any, artifact_id: str) -> None:
        from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

        with contextlib.suppress(Exception):  # another worker removed it first
            self.store.remove(artifact_id)
        # The same marking optuna-dashboard uses when a user deletes a study artifact.
        study._storage.set_study_system_attr(study._study_id, ARTIFACTS_ATTR_PREFIX + artifact_id,
                                             json.dumps(None))
