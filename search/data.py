"""Data: load once per process, split deterministically, scale on the train split only.

The search path gets a :class:`SearchData`, which holds the train and validation splits and
nothing else: the test rows are dropped as soon as the split is known, and are not even checked
for missing values here (``hpsearch validate`` checks every row). The final training reads the
test split through :func:`final_splits`, the one place that does.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import DataError
from search.spec import SKLEARN_DATASETS, DataSpec, StudySpec, Task

_MISSING = {"", "na", "nan", "null", "none", "n/a", "?"}
# Integer-valued targets with at most this many distinct values are read as classes.
_MAX_INFERRED_CLASSES = 50


@dataclass(frozen=True)
class Dataset:
    """Everything read from the source, labels encoded, before any split."""

    x: np.ndarray
    y: np.ndarray
    task: Task
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    file: str  # what to name in errors: the data file, or the sklearn source
    row_names: str  # "line" for CSV (1-based, header is line 1), "row" otherwise


@dataclass(frozen=True)
class Splits:
    """Row indices of the three splits."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class SearchData:
    """What a search may see: the scaled train and validation splits, never the test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: Task
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    fingerprint: str
    n_test: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def summary(self) -> str:
        """One line: rows per split, features, task."""
        classes = f", {self.task.n_classes} classes" if self.task.n_classes else ""
        return (
            f"{len(self.x_train)} train / {len(self.x_val)} val / {self.n_test} test rows"
            f" (test held out), {self.input_shape} features, {self.task.kind}{classes}"
        )


# --------------------------------------------------------------------------------------------
# Public entry points.

_cache: dict[tuple[Any, ...], Any] = {}


def load_search_data(spec: StudySpec) -> SearchData:
    """The train and validation splits of ``spec``'s data, scaled; cached per process."""
    key = ("search", _source_key(spec), _settings_json(spec.data))
    if key not in _cache:
        _cache[key] = _build_search_data(spec)
    return _cache[key]


def check_all_rows(spec: StudySpec) -> Dataset:
    """Load the data and check every row, test split included (for ``hpsearch validate``)."""
    dataset = load_dataset(spec)
    _check_finite(dataset, np.arange(len(dataset.x)))
    return dataset


@dataclass(frozen=True)
class FinalSplits:
    """The rows of the final training and of the one test evaluation, scaled."""

    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str
    task: Task

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_fit.shape[1:])


def final_splits(spec: StudySpec, fit_on: str) -> FinalSplits:
    """The training rows (train, or train + val) and the test split, for the final model.

    This is the one place in hpsearch that reads the test rows. Scaling is fitted on the rows
    the final model trains on.
    """
    dataset = _read_dataset(spec)
    splits = split_indices(dataset, spec.data, spec.path)
    fit_rows = splits.train if fit_on == "train" else np.concatenate([splits.train, splits.val])
    _check_finite(dataset, np.concatenate([fit_rows, splits.val, splits.test]))
    scale = fit_scaler(dataset.x[fit_rows], spec.data.scaling)
    y_dtype = np.float32 if dataset.task.kind != "multiclass" else np.int64
    keep_val = fit_on == "train"
    return FinalSplits(
        x_fit=scale(dataset.x[fit_rows]), y_fit=dataset.y[fit_rows].astype(y_dtype),
        x_val=scale(dataset.x[splits.val]) if keep_val else None,
        y_val=dataset.y[splits.val].astype(y_dtype) if keep_val else None,
        x_test=scale(dataset.x[splits.test]), y_test=dataset.y[splits.test].astype(y_dtype),
        fingerprint=fingerprint(dataset, spec.data),
        task=dataset.task,
    )


def load_dataset(spec: StudySpec) -> Dataset:
    """Read the source of ``spec.data`` and encode its labels (cached per process)."""
    key = ("dataset", _source_key(spec), spec.data.target, spec.data.task)
    if key not in _cache:
        _cache[key] = _read_dataset(spec)
    return _cache[key]


def split_indices(dataset: Dataset, data: DataSpec, spec_file: str | None = None) -> Splits:
    """Deterministic train/val/test indices from ``data.seed``; stratified for classification."""
    from sklearn.model_selection import train_test_split

    n = len(dataset.y)
    stratify = dataset.y if dataset.task.kind != "regression" else None
    all_rows = np.arange(n)
    val_share = data.validation_fraction / (1.0 - data.test_fraction)
    try:
        rest, test = train_test_split(
            all_rows, test_size=data.test_fraction, random_state=data.seed, stratify=stratify
        )
        train, val = train_test_split(
            rest, test_size=val_share, random_state=data.seed,
            stratify=None if stratify is None else stratify[rest],
        )
    except ValueError as e:
        raise DataError(
            spec_file, "data.validation_fraction / data.test_fraction",
            "fractions that leave every split at least one row of each class",
            f"<{e}>",
        ) from e
    return Splits(train=train, val=val, test=test)


def fit_scaler(x_train: np.ndarray, scaling: str) -> Any:
    """A function that scales arrays with statistics of ``x_train`` only."""
    if scaling == "none":
        return lambda x: x.astype(np.float32)
    if scaling == "standard":
        shift = x_train.mean(axis=0)
        scale = x_train.std(axis=0)
    else:  # minmax
        shift = x_train.min(axis=0)
        scale = x_train.max(axis=0) - shift
    scale = np.where(scale > 0, scale, 1.0)
    return lambda x: ((x - shift) / scale).astype(np.float32)


def fingerprint(dataset: Dataset, data: DataSpec) -> str:
    """A hash of every row (test rows included) and of the split and scaling settings."""
    digest = hashlib.sha256()
    x = np.ascontiguousarray(dataset.x, dtype=np.float64)
    digest.update(str(x.shape).encode())
    digest.update(np.where(np.isnan(x), np.nan, x).tobytes())
    digest.update(np.ascontiguousarray(dataset.y).tobytes())
    digest.update(json.dumps(dataset.class_names).encode())
    digest.update(_split_settings_json(data).encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Building the search data.


def _build_search_data(spec: StudySpec) -> SearchData:
    # Read afresh rather than from the cache: once this returns, no copy of the test rows
    # stays reachable in this process.
    dataset = _read_dataset(spec)
    splits = split_indices(dataset, spec.data, spec.path)
    used = np.concatenate([splits.train, splits.val])
    _check_finite(dataset, used)
    scale = fit_scaler(dataset.x[splits.train], spec.data.scaling)
    y_dtype = np.float32 if dataset.task.kind != "multiclass" else np.int64
    return SearchData(
        x_train=scale(dataset.x[splits.train]),
        y_train=dataset.y[splits.train].astype(y_dtype),
        x_val=scale(dataset.x[splits.val]),
        y_val=dataset.y[splits.val].astype(y_dtype),
        task=dataset.task,
        feature_names=dataset.feature_names,
        class_names=dataset.class_names,
        fingerprint=fingerprint(dataset, spec.data),
        n_test=len(dataset.y) - len(used),  # counted, not read: see final_splits
    )


def _check_finite(dataset: Dataset, rows: np.ndarray) -> None:
    x = dataset.x[rows].reshape(len(rows), -1)
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    column = int(np.argmax(bad.any(axis=0)))
    bad_rows = np.sort(rows[bad[:, column]])
    offset = 2 if dataset.row_names == "line" else 0
    shown = ", ".join(str(int(r) + offset) for r in bad_rows[:5])
    more = f" and {len(bad_rows) - 5} more" if len(bad_rows) > 5 else ""
    name = dataset.feature_names[column] if column < len(dataset.feature_names) else column
    raise DataError(
        dataset.file, f"column {name!r}", "no missing or infinite values",
        f"<{len(bad_rows)} in {dataset.row_names} {shown}{more}>",
    )


# --------------------------------------------------------------------------------------------
# Reading sources.


def _source_path(spec: StudySpec) -> Path:
    return (spec.base_dir / spec.data.location).resolve()


def _source_key(spec: StudySpec) -> tuple[Any, ...]:
    if spec.data.kind == "sklearn":
        return (spec.data.source,)
    path = _source_path(spec)
    try:
        stat = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _settings_json(data: DataSpec) -> str:
    return json.dumps(data.model_dump(mode="json"), sort_keys=True)


def _split_settings_json(data: DataSpec) -> str:
    # What decides the rows and their scaling; not where the file lives or how it is named.
    keys = ("target", "validation_fraction", "test_fraction", "seed", "scaling")
    return json.dumps({k: getattr(data, k) for k in keys}, sort_keys=True)


def _read_dataset(spec: StudySpec) -> Dataset:
    data = spec.data
    if data.kind == "sklearn":
        x, y, names, file = _read_sklearn(data.location)
        raw_task = SKLEARN_DATASETS[data.location]
        row_names = "row"
    else:
        path = _source_path(spec)
        if not path.is_file():
            raise DataError(
                spec.path, "data.source", "an existing file", f"<{data.source}: no such file"
                f" {path}>",
            )
        file = str(path)
        if data.kind == "csv":
            x, y, names = _read_csv(path, data.target, spec.path)
            row_names = "line"
        else:
            x, y, names = _read_npz(path)
            row_names = "row"
        raw_task = None
    task_kind = _infer_task(y, data.task or raw_task, file, spec.path)
    if task_kind == "regression":
        y_enc = y.astype(np.float64)
        classes: tuple[str, ...] = ()
        task = Task("regression")
    else:
        labels, y_enc = np.unique(y, return_inverse=True)
        classes = tuple(_label_name(v) for v in labels)
        task = Task(task_kind, n_classes=len(labels))
    if len(y_enc) < 10:
        raise DataError(file, None, "at least 10 rows", f"<{len(y_enc)} rows>")
    return Dataset(x=x, y=y_enc, task=task, feature_names=names, class_names=classes,
                   file=file, row_names=row_names)


def _label_name(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _read_sklearn(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    names = tuple(str(n) for n in getattr(bunch, "feature_names",
                                          [f"x{i}" for i in range(bunch.data.shape[1])]))
    return bunch.data.astype(np.float64), np.asarray(bunch.target), names, f"sklearn:{name}"


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise DataError(str(path), None, "arrays named x and y",
                                f"<arrays {', '.join(arrays.files) or 'none'}>")
            x, y = arrays["x"], arrays["y"]
    except (ValueError, OSError) as e:
        raise DataError(str(path), None, "an .npz file with arrays x and y", f"<{e}>") from e
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(str(path), "x, y", "x with shape (rows, features...) and y with shape"
                        " (rows,)", f"<x {x.shape}, y {y.shape}>")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(str(path), "x", "numeric features", f"<dtype {x.dtype}>")
    names = tuple(f"x{i}" for i in range(int(np.prod(x.shape[1:]))))
    return x.astype(np.float64), y, names


def _read_csv(
    path: Path, target: str, spec_file: str | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise DataError(str(path), None, "a header row and data rows", "<empty file>")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise DataError(
            spec_file, "data.target", f"a column of {path.name} ({', '.join(header)})", target
        )
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    t = header.index(target)
    features: list[list[float]] = []
    labels: list[str] = []
    for offset, row in enumerate(body):
        line = offset + 2
        if len(row) != len(header):
            raise DataError(str(path), f"line {line}", f"{len(header)} fields like the header",
                            f"<{len(row)} fields>")
        values = []
        for j, cell in enumerate(row):
            if j == t:
                continue
            values.append(_number(cell, header[j], line, path))
        features.append(values)
        label = row[t].strip()
        if label.lower() in _MISSING:
            raise DataError(str(path), f"column {target!r}, line {line}", "a target value",
                            row[t])
        labels.append(label)
    names = tuple(h for j, h in enumerate(header) if j != t)
    x = np.array(features, dtype=np.float64).reshape(len(body), len(names))
    return x, _labels_array(labels), names


def _number(cell: str, column: str, line: int, path: Path) -> float:
    text = cell.strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(
            str(path), f"column {column!r}, line {line}",
            "a number (features must be numeric; encode categories first)", cell,
        ) from None


def _labels_array(labels: list[str]) -> np.ndarray:
    try:
        return np.array([float(v) for v in labels], dtype=np.float64)
    except ValueError:
        return np.array(labels, dtype=str)


def _infer_task(y: np.ndarray, given: str | None, file: str, spec_file: str | None) -> str:
    numeric = np.issubdtype(y.dtype, np.number)
    if numeric and not np.all(np.isfinite(y)):
        raise DataError(file, "target", "no missing or infinite target values",
                        f"<{int((~np.isfinite(y)).sum())} missing>")
    n_classes = len(np.unique(y))
    integral = numeric and bool(np.all(np.mod(y, 1) == 0))
    if given is None:
        if not numeric or (integral and n_classes <= _MAX_INFERRED_CLASSES):
            given = "binary" if n_classes == 2 else "multiclass"
        else:
            given = "regression"
    if given == "regression" and not numeric:
        raise DataError(spec_file, "data.task", "a task that fits a non-numeric target "
                        "(binary or multiclass)", given)
    if given == "binary" and n_classes != 2:
        raise DataError(spec_file, "data.task", f"multiclass or regression for a target with "
                        f"{n_classes} distinct values", given)
    if given == "multiclass" and n_classes < 2:
        raise DataError(spec_file, "data.task", "a target with at least 2 classes",
                        f"<{n_classes} class>")
    return given
