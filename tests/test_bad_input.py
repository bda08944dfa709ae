"""Bad input: a clear error naming the file, the key, what was expected and what was given;
exit code 2; nothing created or changed in the storage."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest

from search.cli import main


def _spec(**sections: str) -> str:
    """A small valid study file with whole top-level sections replaced."""
    parts = {"study": "{name: bad, n_trials: 2}", "data": "{source: sklearn:iris}",
             "search": "{epochs: 2}"}
    parts.update(sections)
    return "\n".join(f"{k}: {v}" for k, v in parts.items()) + "\n"


CSV_HEADER = "a,b,label\n"
CSV_ROWS = "".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(30))

# (case id, study file text, extra files, pinned message regex)
CASES = [
    ("unknown key", _spec(search="{learnin_rate: 0.01}"), {},
     r"study\.yaml: search\.learnin_rate: expected one of the keys learning_rate, epochs, "
     r".*got <unknown key>"),
    ("wrong type", _spec(study="{name: bad, n_trials: many}"), {},
     r"study\.yaml: study\.n_trials: expected a valid integer.*got 'many'"),
    ("low > high", _spec(search="{learning_rate: {low: 0.1, high: 0.001}}"), {},
     r"study\.yaml: search\.learning_rate\.low: expected low <= high \(high is 0\.001\), "
     r"got 0\.1"),
    ("log with low <= 0", _spec(search="{l2: {low: 0.0, high: 0.01, log: true}}"), {},
     r"study\.yaml: search\.l2\.low: expected low > 0 when log is true, got 0\.0"),
    ("empty choices", _spec(search="{batch_size: {choices: []}}"), {},
     r"study\.yaml: search\.batch_size\.choices: expected a non-empty list of choices, got \[\]"),
    ("unknown activation", _spec(search="{activation: {choices: [relu, swoosh]}}"), {},
     r"study\.yaml: search\.activation\.choices\[1\]: expected one of relu, tanh, .*"
     r"got 'swoosh'"),
    ("unknown optimizer", _spec(search="{optimizer: adamm}"), {},
     r"study\.yaml: search\.optimizer: expected one of adam, adamw, .*got 'adamm'"),
    ("unknown sampler", _spec(study="{name: bad, sampler: tpee}"), {},
     r"study\.yaml: study\.sampler\.name: expected 'tpe', 'random', 'cmaes', 'gp' or 'qmc', "
     r"got 'tpee'"),
    ("unknown sampler option", _spec(study="{name: bad, sampler: {name: tpe, options: "
                                     "{n_startup: 3}}}"), {},
     r"study\.yaml: study\.sampler\.options\.n_startup: expected an option of TPESampler: "
     r".*n_startup_trials.*got <unknown option>"),
    ("unknown pruner", _spec(study="{name: bad, pruner: {name: patient}}"), {},
     r"study\.yaml: study\.pruner\.name: expected 'hyperband', 'median', 'percentile', "
     r"'successive_halving' or 'none', got 'patient'"),
    ("metric the task does not produce", _spec(study="{name: bad, metric: val_mae}"), {},
     r"study\.yaml: study\.metric: expected a metric that a multiclass task produces: "
     r"val_loss, val_accuracy, got 'val_mae'"),
    ("metric the inferred task does not produce",
     _spec(study="{name: bad, metric: val_rmse}", data="{source: 'csv:data.csv', target: label}"),
     {"data.csv": CSV_HEADER + CSV_ROWS},
     r"study\.yaml: study\.metric: expected a metric that a binary task produces: val_loss, "
     r"val_accuracy, val_auc, got 'val_rmse'"),
    ("missing data file", _spec(data="{source: 'csv:nowhere.csv'}"), {},
     r"study\.yaml: data\.source: expected an existing file, got <csv:nowhere\.csv: no such "
     r"file .*nowhere\.csv>"),
    ("csv with non-numeric features", _spec(data="{source: 'csv:data.csv', target: label}"),
     {"data.csv": CSV_HEADER + CSV_ROWS + "7,seven,yes\n"},
     r"data\.csv: column 'b', line 32: expected a number \(features must be numeric; encode "
     r"categories first\), got 'seven'"),
    ("csv with missing values", _spec(data="{source: 'csv:data.csv', target: label}"),
     {"data.csv": CSV_HEADER + CSV_ROWS.replace("4,1,no", "4,,no")},
     r"data\.csv: column 'b': expected no missing or infinite values, got <1 in line 6>"),
    ("csv without the target column", _spec(data="{source: 'csv:data.csv', target: y}"),
     {"data.csv": CSV_HEADER + CSV_ROWS},
     r"study\.yaml: data\.target: expected a column of data\.csv \(a, b, label\), got 'y'"),
    ("yaml that is not a mapping", "- study\n- data\n", {},
     r"study\.yaml: expected a mapping with keys study, data, model, search, got <list: "),
    ("yaml with a python tag", "!!python/object/apply:os.system ['echo owned']\n", {},
     r"study\.yaml: line 1, column 1: expected plain YAML \(tags such as !!python/\.\.\. are "
     r"not allowed\), got <could not determine a constructor for the tag "
     r"'tag:yaml\.org,2002:python/object/apply:os\.system'>"),
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def existing_storage(tmp_path: Path) -> Path:
    """A SQLite storage that already holds a study, to show bad input changes nothing."""
    path = tmp_path / "existing.db"
    study = optuna.create_study(study_name="keep", storage=f"sqlite:///{path}")
    study.add_trial(optuna.trial.create_trial(value=1.0))
    return path


@pytest.mark.parametrize(("text", "files", "message"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_input_exits_2_with_a_pinned_message_and_leaves_storage_alone(
    runner, tmp_path, existing_storage, command, text, files, message
):
    spec = tmp_path / "study.yaml"
    spec.write_text(text)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    before = _digest(existing_storage)
    fresh = tmp_path / "fresh.db"

    for storage in ([f"sqlite:///{existing_storage}", f"sqlite:///{fresh}"]
                    if command == "run" else [None]):
        args = [command, "study.yaml"] + (["--storage", storage] if storage else [])
        result = runner.invoke(main, args)
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
        assert len(lines) == 1, result.output
        assert re.search(message, lines[0]), lines[0]

    assert not fresh.exists()
    assert _digest(existing_storage) == before
    assert optuna.get_all_study_names(f"sqlite:///{existing_storage}") == ["keep"]


def test_validate_checks_test_rows_that_run_does_not_read(runner, tmp_path):
    # Missing values in the test split: `validate` reports them; the search never looks there.
    from search.data import load_dataset, split_indices
    from search.spec import load_spec

    x, y = np.random.default_rng(0).normal(size=(60, 3)), np.arange(60) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "study.yaml").write_text("data: {source: 'npz:d.npz'}\n")
    spec = load_spec(tmp_path / "study.yaml")
    test_rows = split_indices(load_dataset(spec), spec.data).test
    x[test_rows[0], 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=y)

    result = runner.invoke(main, ["validate", "study.yaml"])
    assert result.exit_code == 2
    assert f"column 'x1': expected no missing or infinite values, got <1 in row " \
           f"{test_rows[0]}>" in result.output


def test_a_missing_study_file_is_named(runner):
    result = runner.invoke(main, ["run", "nope.yaml"])
    assert result.exit_code == 2
    assert "nope.yaml: expected an existing study file, got <no such file>" in result.output


def test_several_problems_are_all_reported(runner, tmp_path):
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""
        data: {source: sklearn:iris}
        search: {dropout: 1.5, optimizer: adamm}
    """))
    result = runner.invoke(main, ["validate", "study.yaml"])
    assert result.exit_code == 2
    assert "search.optimizer: expected one of adam" in result.output
    assert "search.dropout: expected a number >= 0 and < 1, got 1.5" in result.output
