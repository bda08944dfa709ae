"""Export the best trial, train the final model from the export alone, evaluate it once."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
import yaml

from search.cli import main
from search.errors import SpecError
from search.export import load_export
from search.runner import run_study
from search.spec import parse_spec

STUDY = """
study:
  name: exp
  n_trials: 5
  seed: 4
  pruner: none
data: {source: 'npz:data.npz', seed: 2}
search:
  learning_rate: {low: 1.0e-3, high: 5.0e-2, log: true}
  epochs: 12
  batch_size: {choices: [8, 16]}
  n_layers: {low: 1, high: 2}
  units: {low: 4, high: 16, per_layer: true}
  early_stopping: {patience: 4}
"""


def _data(path: Path, shift: float = 0.0) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 4)) + shift
    y = (x[:, 0] - x[:, 1] + 0.5 * x[:, 2] > shift).astype(int) + (x[:, 3] > 1).astype(int)
    np.savez(path, x=x, y=y)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("export")
    _data(folder / "data.npz")
    (folder / "study.yaml").write_text(STUDY)
    url = f"sqlite:///{folder / 'studies.db'}"
    run_study(parse_spec(STUDY, str(folder / "study.yaml")), url)
    return folder, url


def test_search_export_train_gives_the_best_trials_model_and_test_metrics(searched, runner,
                                                                            tmp_path):
    folder, url = searched
    best = optuna.load_study(study_name="exp", storage=url).best_trial
    result = runner.invoke(main, ["export", "exp", "--storage", url, "-o",
                                  str(tmp_path / "best.yaml")])
    assert result.exit_code == 0, result.output
    export = load_export(tmp_path / "best.yaml")
    assert export.trial == best.number and export.value == best.value
    assert export.best_epoch == best.user_attrs["best_epoch"]
    assert export.params["units"] == [best.params[f"units_{i}"]
                                      for i in range(best.params["n_layers"])]
    assert export.params["epochs"] == 12 and export.params["patience"] == 4  # fixed values
    assert export.data.source == f"npz:{folder / 'data.npz'}"  # absolute: self-contained

    for run in ("a", "b"):
        out = tmp_path / run
        trained = runner.invoke(main, ["train", str(tmp_path / "best.yaml"), "-o", str(out)])
        assert trained.exit_code == 0, trained.output
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert (tmp_path / "b" / "metrics.json").read_text() == \
        (tmp_path / "a" / "metrics.json").read_text()
    assert first["n_params"] == best.user_attrs["n_params"]
    assert set(first["test"]) == {"test_loss", "test_accuracy"}
    assert first["rows"] == {"fit": 120, "test": 30} and first["fit_on"] == "train+val"
    assert first["epochs"] == best.user_attrs["best_epoch"]
    assert {p.name for p in (tmp_path / "a").iterdir()} == \
        {"model.keras", "metrics.json", "history.csv", "MODEL_CARD.md"}
    history = (tmp_path / "a" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + first["epochs"]
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert f"trial {best.number}" in card and "test_accuracy" in card

    model = keras.models.load_model(tmp_path / "a" / "model.keras", safe_mode=True)
    assert model.count_params() == best.user_attrs["n_params"]
    assert model.predict(np.zeros((2, 4)), verbose=0).shape == (2, 3)


def test_fit_on_train_reproduces_the_trials_validation_metrics(searched, runner, tmp_path):
    _, url = searched
    best = optuna.load_study(study_name="exp", storage=url).best_trial
    runner.invoke(main, ["export", "exp", "--storage", url, "-o", str(tmp_path / "b.json")])
    result = runner.invoke(main, ["train", str(tmp_path / "b.json"), "-o", str(tmp_path / "m"),
                                  "--fit-on", "train"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["validation"] == pytest.approx(best.user_attrs["val_metrics"], abs=1e-6)
    assert metrics["rows"]["fit"] == 90


def test_json_and_yaml_exports_agree_and_trial_and_top_work(searched, runner, tmp_path):
    _, url = searched
    study = optuna.load_study(study_name="exp", storage=url)
    for name in ("t.yaml", "t.json"):
        assert runner.invoke(main, ["export", "exp", "--storage", url, "--trial", "2", "-o",
                                    str(tmp_path / name)]).exit_code == 0
    as_yaml, as_json = load_export(tmp_path / "t.yaml"), load_export(tmp_path / "t.json")
    assert as_yaml == as_json and as_yaml.trial == 2
    assert runner.invoke(main, ["export", "exp", "--storage", url, "--top", "3", "-o",
                                str(tmp_path / "top.yaml")]).exit_code == 0
    top = load_export(tmp_path / "top.yaml")
    ranked = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)),
                    key=lambda t: t.value)[:3]
    assert [e.trial for e in top] == [t.number for t in ranked]
    missing = runner.invoke(main, ["export", "exp", "--storage", url, "--trial", "99"])
    assert missing.exit_code == 2 and "--trial: expected the number of a complete trial" in \
        missing.output


def test_guards(searched, runner, tmp_path, sqlite_url):
    folder, url = searched
    best_file = tmp_path / "best.yaml"
    runner.invoke(main, ["export", "exp", "--storage", url, "-o", str(best_file)])

    # Different data: a warning, or a refusal with --strict.
    _data(tmp_path / "other.npz", shift=0.1)
    warned = runner.invoke(main, ["train", str(best_file), "-o", str(tmp_path / "w"), "--data",
                                  f"npz:{tmp_path / 'other.npz'}"])
    assert warned.exit_code == 0, warned.output
    assert "warning: the data differ from the search's (fingerprint " in warned.output
    strict = runner.invoke(main, ["train", str(best_file), "-o", str(tmp_path / "s"), "--data",
                                  f"npz:{tmp_path / 'other.npz'}", "--strict"])
    assert strict.exit_code == 2
    assert "--strict: expected the data the export was searched on, got <the data differ" in \
        strict.output
    assert not (tmp_path / "s").exists()

    # A non-empty output directory needs --force.
    again = runner.invoke(main, ["train", str(best_file), "-o", str(tmp_path / "w")])
    assert again.exit_code == 2
    assert f"-o: expected an empty or new directory (or --force to overwrite), got " \
           f"<{tmp_path / 'w'}: not empty>" in again.output

    # A study without a complete trial.
    study = optuna.create_study(study_name="nothing", storage=sqlite_url)
    study.set_user_attr("spec", {"data": {"source": "sklearn:iris"}})
    empty = runner.invoke(main, ["export", "nothing", "--storage", sqlite_url])
    assert empty.exit_code == 2
    assert "STUDY: expected a study with at least one complete trial to export, got " \
           "<nothing: no complete trial>" in empty.output

    # Unknown keys and bad values in an export.
    raw = yaml.safe_load(best_file.read_text())
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({**raw, "epochz": 3}))
    with pytest.raises(SpecError, match=r"extra\.yaml: epochz: expected one of the keys"):
        load_export(tmp_path / "extra.yaml")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**raw, "best_epoch": 0}))
    bad = runner.invoke(main, ["train", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert "bad.yaml: best_epoch: expected greater than or equal to 1, got 0" in bad.output


def test_the_test_split_is_read_in_exactly_one_place():
    """Only data.final_splits touches the `test` indices of a split."""
    readers = []
    for path in sorted((Path(__file__).parent.parent / "search").glob("*.py")):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Attribute) and node.attr == "test":
                    readers.append(f"{path.name}:{func.name}")
    assert sorted(set(readers)) == ["data.py:final_splits"]
