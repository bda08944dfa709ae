"""From a finished search to a production model: the export file, final training, and the one
evaluation on the test split.

An export is self-contained: the complete params of one trial (searched values merged with the
spec's fixed ones), how many epochs to train (the trial's best epoch), the data settings, and
provenance. Training from it needs no study storage and no Optuna.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from search.errors import DataError, SpecError
from search.spec import DataSpec, ModelSpec, StudySpec, _one_error

FORMAT = "hpsearch-export/1"
FIT_POLICIES = ("train+val", "train")


class Export(BaseModel):
    """One trial, ready for production training. Unknown keys are rejected on load."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["hpsearch-export/1"] = FORMAT
    study: str
    trial: int = Field(ge=0)
    metric: str
    direction: Literal["minimize", "maximize"]
    value: float
    best_epoch: int = Field(ge=1)
    seed: int
    deterministic: bool = True
    params: dict[str, Any]
    model: ModelSpec
    data: DataSpec
    task: Literal["binary", "multiclass", "regression"]
    n_classes: int = Field(ge=0)
    data_fingerprint: str
    val_metrics: dict[str, float] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Export (reads the study; no TensorFlow).


def export_trials(study: Any, trial: int | None = None, top: int | None = None) -> list[Export]:
    """Exports of the best trial, of trial number ``trial``, or of the ``top`` best trials."""
    from optuna.trial import FrozenTrial, TrialState

    from search.spec import validate_spec

    attrs = study.user_attrs
    if "spec" not in attrs:
        raise SpecError(None, "STUDY", "a study created by hpsearch", f"<{study.study_name}>")
    complete: list[FrozenTrial] = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SpecError(None, "STUDY", "a study with at least one complete trial to export",
                        f"<{study.study_name}: no complete trial>")
    spec = validate_spec(attrs["spec"], f"<study {study.study_name}>")
    if trial is not None:
        chosen = [t for t in complete if t.number == trial]
        if not chosen:
            raise SpecError(None, "--trial", "the number of a complete trial ("
                            + ", ".join(str(t.number) for t in complete[:20]) + ")", trial)
    else:
        reverse = spec.study.resolved_direction == "maximize"
        chosen = sorted(complete, key=lambda t: t.value, reverse=reverse)[: top or 1]
    return [_export_one(study, spec, t) for t in chosen]


def _export_one(study: Any, spec: StudySpec, trial: Any) -> Export:
    from optuna.trial import FixedTrial

    from search.space import suggest_params

    attrs = study.user_attrs
    params = suggest_params(FixedTrial(dict(trial.params)), spec.search)
    source = attrs.get("data_source_resolved", spec.data.source)
    return Export(
        study=study.study_name, trial=trial.number, metric=spec.study.metric,
        direction=spec.study.resolved_direction, value=float(trial.value),
        best_epoch=int(trial.user_attrs["best_epoch"]),
        seed=int(trial.user_attrs.get("seed", spec.study.seed + trial.number)),
        deterministic=spec.study.deterministic, params=params, model=spec.model,
        data=spec.data.model_copy(update={"source": source, "task": attrs["task"]}),
        task=attrs["task"], n_classes=int(attrs.get("n_classes", 0)),
        data_fingerprint=attrs["data_fingerprint"],
        val_metrics=trial.user_attrs.get("val_metrics", {}),
        versions=attrs.get("versions", {}),
    )


def export_best(study: Any, path: str | Path | None = None, trial: int | None = None,
                top: int | None = None) -> list[Export]:
    """Export the best trial (or ``trial``, or the ``top`` best) and write it if ``path``."""
    exports = export_trials(study, trial=trial, top=top)
    if path is not None:
        write_exports(exports, path, as_list=top is not None)
    return exports


def write_exports(exports: list[Export], path: str | Path, as_list: bool) -> None:
    """Write one export (a mapping) or several (a list) as YAML or JSON, by the file's suffix."""
    data: Any = [e.model_dump(mode="json") for e in exports]
    if not as_list:
        data = data[0]
    path = Path(path)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))


def load_export(path: str | Path) -> Export | list[Export]:
    """Read and validate an export file (YAML or JSON): one Export, or a list for ``--top``."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text) if file.lower().endswith(".json") else yaml.safe_load(text)
    except FileNotFoundError:
        raise SpecError(file, None, "an existing export file", "<no such file>") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise SpecError(file, None, "a YAML or JSON export", f"<{e}>") from e
    if isinstance(raw, list):
        return [_validate(item, file, f"[{i}]") for i, item in enumerate(raw)]
    return _validate(raw, file, "")


def _validate(raw: Any, file: str, prefix: str) -> Export:
    if not isinstance(raw, dict):
        raise SpecError(file, prefix or None, "an export mapping", f"<{type(raw).__name__}>")
    try:
        return Export.model_validate(raw)
    except ValidationError as e:
        error = _one_error(e.errors()[0], file)
        if prefix:
            error = SpecError(file, f"{prefix}.{error.key}" if error.key else prefix,
                              error.expected, error.given)
        raise error from None


# --------------------------------------------------------------------------------------------
# Final training (TensorFlow, no Optuna).


def train_final(
    export: Export,
    output_dir: str | Path | None = None,
    *,
    data_source: str | None = None,
    fit_on: str = "train+val",
    strict: bool = False,
    force: bool = False,
    warn: Any = print,
) -> dict[str, Any]:
    """Train the export's model, evaluate it once on the test split, and write the outputs.

    ``fit_on="train+val"`` (default) trains on the train and validation rows for the best
    epoch's number of epochs; ``"train"`` trains on the train rows and also reports validation
    metrics. Returns the metrics written to ``metrics.json``.
    """
    if fit_on not in FIT_POLICIES:
        raise SpecError(None, "--fit-on", " or ".join(FIT_POLICIES), fit_on)
    out = Path(output_dir) if output_dir else None
    if out is not None and out.exists() and any(out.iterdir()) and not force:
        raise SpecError(None, "-o", "an empty or new directory (or --force to overwrite)",
                        f"<{out}: not empty>")
    import keras

    from search.data import final_splits
    from search.model import build_with, resolve_builder

    data = export.data if data_source is None else export.data.model_copy(
        update={"source": data_source})
    spec = StudySpec(data=data)
    splits = final_splits(spec, fit_on)
    if splits.fingerprint != export.data_fingerprint:
        message = (f"the data differ from the search's (fingerprint {splits.fingerprint}, "
                   f"export {export.data_fingerprint})")
        if strict:
            raise DataError(None, "--strict", "the data the export was searched on", f"<{message}>")
        warn(f"warning: {message}")
    if splits.task.kind != export.task or (export.n_classes and
                                           splits.task.n_classes != export.n_classes):
        raise DataError(None, "--data", f"data for a {export.task} task like the export's",
                        f"<{splits.task.kind}, {splits.task.n_classes} classes>")
    import tensorflow as tf

    if export.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.backend.clear_session()
    keras.utils.set_random_seed(export.seed)
    builder = resolve_builder(export.model.builder) if export.model.builder else None
    model = build_with(builder, export.params, splits.input_shape, splits.task)
    # The same input pipeline as a search trial: with fit_on="train" the final model is the
    # trial's model at its best epoch (op determinism on).
    fit_rows = tf.data.Dataset.from_tensor_slices((splits.x_fit, splits.y_fit))
    batches = fit_rows.shuffle(len(splits.y_fit), seed=export.seed).batch(
        int(export.params["batch_size"])).prefetch(tf.data.AUTOTUNE)
    validation = None
    if splits.x_val is not None:
        validation = tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val)).batch(1024)
    history = model.fit(batches, epochs=export.best_epoch, validation_data=validation,
                        shuffle=False, verbose=0)
    test_rows = tf.data.Dataset.from_tensor_slices((splits.x_test, splits.y_test)).batch(1024)
    test = model.evaluate(test_rows, verbose=0, return_dict=True)  # the one test evaluation
    metrics = {
        "test": {f"test_{k}": round(float(v), 6) for k, v in test.items()},
        "validation": ({k: round(float(v[-1]), 6) for k, v in history.history.items()
                        if k.startswith("val_")} if splits.x_val is not None else {}),
        "search_validation": export.val_metrics,
        "fit_on": fit_on,
        "epochs": export.best_epoch,
        "seed": export.seed,
        "rows": {"fit": int(len(splits.y_fit)), "test": int(len(splits.y_test))},
        "n_params": int(model.count_params()),
        "data_fingerprint": splits.fingerprint,
        "export": {"study": export.study, "trial": export.trial},
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.keras")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _write_history(out / "history.csv", history.history)
        (out / "MODEL_CARD.md").write_text(_model_card(export, metrics))
    return metrics


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    columns = sorted(history)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *columns])
        for i in range(len(history[columns[0]]) if columns else 0):
            writer.writerow([i + 1, *(history[c][i] for c in columns)])


def _model_card(export: Export, metrics: dict[str, Any]) -> str:
    params = "\n".join(f"| `{k}` | {v} |" for k, v in export.params.items())
    test = "\n".join(f"| {k} | {v:.6g} |" for k, v in metrics["test"].items()
                     if isinstance(v, float) and math.isfinite(v))
    search = ", ".join(f"{k} {v:.6g}" for k, v in export.val_metrics.items())
    versions = ", ".join(f"{k} {v}" for k, v in export.versions.items())
    return f"""# Model card: {export.study}, trial {export.trial}

## Data
- source `{export.data.source}`, task {export.task}{f", {export.n_classes} classes"
  if export.n_classes else ""}
- split: validation {export.data.validation_fraction}, test {export.data.test_fraction},
  seed {export.data.seed}, scaling {export.data.scaling} (fitted on the rows trained on)
- data fingerprint `{metrics["data_fingerprint"]}` (search: `{export.data_fingerprint}`)

## Training
- fitted on {metrics["fit_on"]} ({metrics["rows"]["fit"]} rows) for {export.best_epoch} epochs
  (the trial's best epoch), seed {export.seed}, {metrics["n_params"]} parameters
- model `{export.model.builder or export.model.type}`

| param | value |
|---|---|
{params}

## Metrics
Test split ({metrics["rows"]["test"]} rows), evaluated once:

| metric | value |
|---|---|
{test}

Search: trial {export.trial} scored {export.metric} {export.value:.6g} on the validation split
({search}).

## Provenance
Study `{export.study}`, trial {export.trial}; versions at search time: {versions}.
"""
