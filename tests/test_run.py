"""End to end: real Keras training on small data, real SQLite, stock Optuna reading the result."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from search.runner import run_study
from search.spec import load_spec

from conftest import HPSEARCH, python_env


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_cli_run_leaves_a_study_that_stock_optuna_reads(runner, write_spec, sqlite_url):
    spec = write_spec()
    result = runner.invoke(main, ["run", str(spec), "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "[6/6]" in result.output and "study 'small': 6/6 finished" in result.output

    study = optuna.load_study(study_name="small", storage=sqlite_url)
    states = {t.state for t in study.trials}
    assert len(_finished(study)) == 6
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states, states
    for trial in study.trials:
        attrs = trial.user_attrs
        assert {"seed", "n_params", "epochs_run", "fit_seconds", "best_epoch"} <= set(attrs)
        assert attrs["seed"] == 3 + trial.number
        assert attrs["epochs_run"] == len(trial.intermediate_values)
        assert attrs["n_params"] > 0 and attrs["fit_seconds"] > 0
        best_step = min(trial.intermediate_values, key=trial.intermediate_values.get)
        assert attrs["best_epoch"] == best_step
        if trial.state == TrialState.COMPLETE:
            assert trial.value == min(trial.intermediate_values.values())
        else:
            assert attrs["pruned_at_epoch"] == max(trial.intermediate_values)
    assert study.user_attrs["spec"]["data"]["source"] == "sklearn:iris"
    assert len(study.user_attrs["data_fingerprint"]) == 16
    assert study.user_attrs["n_trials"] == 6
    versions = study.user_attrs["versions"]
    assert versions["optuna"] == optuna.__version__ and "keras" in versions
    assert "tensorflow" in versions or "tensorflow-cpu" in versions


def test_rerun_of_a_finished_study_adds_no_trials(runner, write_spec, sqlite_url):
    spec = write_spec()
    assert runner.invoke(main, ["run", str(spec), "--storage", sqlite_url, "--n-trials", "2"]
                         ).exit_code == 0
    again = runner.invoke(main, ["run", str(spec), "--storage", sqlite_url, "--n-trials", "2"])
    assert again.exit_code == 0, again.output
    assert "nothing to run" in again.output and "0 trials run" in again.output
    assert len(optuna.load_study(study_name="small", storage=sqlite_url).trials) == 2


SLOW_STUDY = """
study: {name: slow, n_trials: 4, seed: 0, pruner: none}
data: {source: sklearn:digits}
search: {epochs: 40, batch_size: 16, n_layers: 2, units: 128, early_stopping: {patience: 40}}
"""


def test_sigint_leaves_nothing_running_and_a_rerun_finishes_exactly_the_rest(
    write_spec, sqlite_url
):
    spec = write_spec(SLOW_STUDY)
    command = HPSEARCH + ["run", str(spec), "--storage", sqlite_url]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=python_env())
    seen = []
    for line in proc.stderr:  # progress lines go to stderr
        seen.append(line)
        if line.startswith("[1/4]"):
            break
    else:
        pytest.fail("no trial finished: " + "".join(seen))
    time.sleep(1.5)  # well inside trial 1 (each trial trains for several seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    message = [ln for ln in err.splitlines() if ln.startswith("hpsearch: interrupted")]
    assert message == [
        "hpsearch: interrupted: study 'slow' has 1/4 finished trials, trial 1 marked FAIL; "
        "rerun the same command to finish the remaining 3"
    ], err

    study = optuna.load_study(study_name="slow", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["fail_reason"] == "interrupted"

    rerun = subprocess.run(command, capture_output=True, text=True, env=python_env(),
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="slow", storage=sqlite_url)
    assert len(_finished(study)) == 4
    assert len(study.trials) == 5  # 4 finished + the interrupted one, nothing more
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert "3 trials run" in rerun.stdout


DETERMINISTIC_STUDY = """
study:
  name: same
  n_trials: 4
  seed: 11
  pruner: {name: median, options: {n_startup_trials: 1}}
data: {source: 'npz:data.npz', validation_fraction: 0.25, test_fraction: 0.25, seed: 5}
search:
  learning_rate: {low: 1.0e-3, high: 1.0e-1, log: true}
  epochs: 6
  batch_size: {choices: [8, 16]}
  units: {low: 4, high: 12, per_layer: true}
  n_layers: {low: 1, high: 2}
  dropout: {low: 0.0, high: 0.2}
"""


def _make_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(160, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3] > 0).astype(int)
    np.savez(path, x=x, y=y)
    return x, y


def _trials(url: str) -> list[tuple]:
    study = optuna.load_study(study_name="same", storage=url)
    return [(t.number, t.state.name, t.params, t.value, dict(t.intermediate_values))
            for t in study.trials]


def test_same_spec_and_seed_give_identical_trials_and_the_test_split_is_never_seen(tmp_path):
    _make_npz(tmp_path / "data.npz")
    (tmp_path / "study.yaml").write_text(DETERMINISTIC_STUDY)
    spec = load_spec(tmp_path / "study.yaml")
    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    run_study(spec, first)
    run_study(spec, second)
    reference = _trials(first)
    assert len(reference) == 4 and any(t[1] == "COMPLETE" for t in reference)
    assert _trials(second) == reference

    # Replace every test row's features with NaN: the search must not notice.
    from search.data import load_dataset, split_indices

    test_rows = split_indices(load_dataset(spec), spec.data).test
    assert len(test_rows) == 40
    x, y = _make_npz(tmp_path / "data.npz")
    x[test_rows] = np.nan
    np.savez(tmp_path / "poisoned.npz", x=x, y=y)
    (tmp_path / "poisoned.yaml").write_text(
        DETERMINISTIC_STUDY.replace("npz:data.npz", "npz:poisoned.npz"))
    poisoned = load_spec(tmp_path / "poisoned.yaml")
    third = f"sqlite:///{tmp_path / 'c.db'}"
    run_study(poisoned, third)
    assert _trials(third) == reference
    study = optuna.load_study(study_name="same", storage=third)
    assert all(math.isfinite(t.value) for t in study.trials if t.value is not None)


def test_help_status_and_report_do_not_import_tensorflow(sqlite_url):
    optuna.create_study(study_name="tiny", storage=sqlite_url).add_trial(
        optuna.trial.create_trial(value=0.5, params={"x": 1.0},
                                  distributions={"x": optuna.distributions.FloatDistribution(0, 2)})
    )
    probe = (
        "import sys\n"
        "from search.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('imported:', heavy)\n"
    )
    report = str(Path(sqlite_url.removeprefix("sqlite:///")).with_name("r.html"))
    for args in (["--help"], ["status", "--storage", sqlite_url],
                 ["status", "tiny", "--storage", sqlite_url], ["dashboard", "--help"],
                 ["report", "tiny", "--storage", sqlite_url, "-o", report]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                              env=python_env(), timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("imported: []"), (args, done.stdout)
    status = subprocess.run([sys.executable, "-c", probe, "status", "--storage", sqlite_url],
                            capture_output=True, text=True, env=python_env(), timeout=60)
    assert "study tiny: minimize value, 1/? finished (1 complete" in status.stdout
