"""Data: sources, task inference, deterministic stratified splits, scaling on train only."""

from __future__ import annotations

import numpy as np
import pytest

from search.data import fingerprint, load_dataset, load_search_data, split_indices
from search.errors import DataError
from search.spec import parse_spec


def _spec(tmp_path, data: str):
    path = tmp_path / "study.yaml"
    path.write_text(f"data: {data}\n")
    return parse_spec(path.read_text(), str(path))


@pytest.mark.parametrize(("name", "kind", "n_classes", "rows", "features"), [
    ("digits", "multiclass", 10, 1797, 64),
    ("iris", "multiclass", 3, 150, 4),
    ("wine", "multiclass", 3, 178, 13),
    ("breast_cancer", "binary", 2, 569, 30),
    ("diabetes", "regression", 0, 442, 10),
])
def test_sklearn_sources(tmp_path, name, kind, n_classes, rows, features):
    spec = _spec(tmp_path, f"{{source: 'sklearn:{name}'}}")
    data = load_search_data(spec)
    assert data.task.kind == kind and data.task.n_classes == n_classes
    assert data.input_shape == (features,)
    assert len(data.x_train) + len(data.x_val) + data.n_test == rows
    assert not hasattr(data, "x_test")


def test_csv_with_string_labels_is_encoded_and_split_stratified(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["f1,f2,species"]
    labels = ["cat"] * 60 + ["dog"] * 30 + ["eel"] * 30
    for label in labels:
        lines.append(f"{rng.normal():.4f},{rng.normal():.4f},{label}")
    (tmp_path / "pets.csv").write_text("\n".join(lines) + "\n")
    spec = _spec(tmp_path, "{source: 'csv:pets.csv', target: species, seed: 3}")
    dataset = load_dataset(spec)
    assert dataset.task.kind == "multiclass" and dataset.class_names == ("cat", "dog", "eel")
    assert dataset.feature_names == ("f1", "f2")
    splits = split_indices(dataset, spec.data)
    # Stratified: every split keeps the 2:1:1 class ratio.
    for rows in (splits.train, splits.val, splits.test):
        counts = np.bincount(dataset.y[rows], minlength=3)
        assert counts[0] == pytest.approx(2 * counts[1], abs=1)
        assert counts[1] == pytest.approx(counts[2], abs=1)
    together = np.concatenate([splits.train, splits.val, splits.test])
    assert sorted(together.tolist()) == list(range(120))
    # Deterministic: the same seed gives the same split; another seed does not.
    again = split_indices(dataset, spec.data)
    assert np.array_equal(again.test, splits.test) and np.array_equal(again.val, splits.val)
    other = split_indices(dataset, spec.data.model_copy(update={"seed": 4}))
    assert not np.array_equal(other.test, splits.test)


def test_scaling_is_fitted_on_the_train_split_only(tmp_path):
    x = np.arange(200, dtype=float).reshape(100, 2)
    y = np.arange(100) * 0.5  # regression
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = _spec(tmp_path, "{source: 'npz:d.npz', task: regression}")
    data = load_search_data(spec)
    splits = split_indices(load_dataset(spec), spec.data)
    assert data.x_train.mean(axis=0) == pytest.approx([0, 0], abs=1e-5)
    assert data.x_train.std(axis=0) == pytest.approx([1, 1], abs=1e-5)
    train = x[splits.train]
    expected_val = (x[splits.val] - train.mean(axis=0)) / train.std(axis=0)
    assert data.x_val == pytest.approx(expected_val.astype(np.float32), abs=1e-5)


def test_task_inference_and_its_errors(tmp_path):
    np.savez(tmp_path / "b.npz", x=np.ones((20, 2)), y=np.arange(20) % 2)
    np.savez(tmp_path / "r.npz", x=np.ones((20, 2)), y=np.linspace(0, 1, 20))
    assert load_dataset(_spec(tmp_path, "{source: 'npz:b.npz'}")).task.kind == "binary"
    assert load_dataset(_spec(tmp_path, "{source: 'npz:r.npz'}")).task.kind == "regression"
    with pytest.raises(DataError, match=r"data\.task: expected multiclass or regression for a "
                                        r"target with 20 distinct values, got 'binary'"):
        load_dataset(_spec(tmp_path, "{source: 'npz:r.npz', task: binary}"))


def test_npz_without_the_right_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.ones((20, 2)), y=np.zeros(20))
    with pytest.raises(DataError, match=r"d\.npz: expected arrays named x and y, got <arrays "
                                        r"features, y>"):
        load_dataset(_spec(tmp_path, "{source: 'npz:d.npz'}"))


def test_fingerprint_covers_every_row_and_the_split_settings(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 3))
    y = np.arange(40) % 2
    np.savez(tmp_path / "a.npz", x=x, y=y)
    x2 = x.copy()
    x2[-1, -1] += 1e-9
    np.savez(tmp_path / "b.npz", x=x2, y=y)
    a = _spec(tmp_path, "{source: 'npz:a.npz'}")
    b = _spec(tmp_path, "{source: 'npz:b.npz'}")
    a_seed = _spec(tmp_path, "{source: 'npz:a.npz', seed: 9}")
    prints = {fingerprint(load_dataset(s), s.data) for s in (a, b, a_seed)}
    assert len(prints) == 3
    assert fingerprint(load_dataset(a), a.data) == load_search_data(a).fingerprint
