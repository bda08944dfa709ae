"""The objective: custom builders, divergence, a missing metric, the returned value."""

from __future__ import annotations

import keras
import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from search.data import load_search_data
from search.objective import MetricMissingError, Objective
from search.runner import _catchable
from search.spec import Task, parse_spec
from conftest import SMALL_STUDY

BUILT: list[dict] = []


def build_tiny(params: dict, input_shape: tuple[int, ...], task: Task) -> keras.Model:
    """A custom builder, as a user would write it: uncompiled, output fitting the task."""
    BUILT.append({"params": dict(params), "input_shape": input_shape, "task": task})
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(params["width"], activation="relu")(inputs)
    outputs = keras.layers.Dense(task.n_classes, activation="softmax")(hidden)
    return keras.Model(inputs, outputs)


def build_compiled_without_metrics(params, input_shape, task):
    model = build_tiny(params, input_shape, task)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_a_custom_builder_from_a_test_module_runs_in_a_study(runner, write_spec, sqlite_url):
    BUILT.clear()
    spec = write_spec("""
        study: {name: custom, n_trials: 3, seed: 1, pruner: none, metric: val_accuracy}
        data: {source: sklearn:wine}
        model: {builder: "test_objective:build_tiny"}
        search:
          epochs: 3
          learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
          extra: {width: {choices: [4, 8, 16]}}
    """)
    result = runner.invoke(main, ["run", str(spec), "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="custom", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(BUILT) == 3
    for call, trial in zip(BUILT, study.trials, strict=True):
        assert call["params"]["width"] == trial.params["width"]
        assert call["input_shape"] == (13,)
        assert call["task"] == Task("multiclass", n_classes=3)
        assert trial.user_attrs["n_params"] == 13 * call["params"]["width"] + \
            call["params"]["width"] + call["params"]["width"] * 3 + 3
        assert trial.value == max(trial.intermediate_values.values())


def test_a_metric_missing_from_the_logs_fails_loudly(runner, write_spec, sqlite_url):
    spec = write_spec("""
        study: {name: nometric, n_trials: 2, metric: val_accuracy}
        data: {source: sklearn:iris}
        model: {builder: "test_objective:build_compiled_without_metrics"}
        search: {epochs: 2, extra: {width: 4}}
    """)
    result = runner.invoke(main, ["run", str(spec), "--storage", sqlite_url])
    assert result.exit_code == 2
    assert ("study.metric: the study metric 'val_accuracy' is not in the epoch logs (they hold:"
            " loss, val_loss)") in result.output
    study = optuna.load_study(study_name="nometric", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.FAIL]


DIVERGING = """
study: {name: diverge, n_trials: 1, seed: 0, sampler: random, pruner: none}
data: {source: sklearn:diabetes, scaling: standard}
search:
  learning_rate: {choices: [10000.0, 0.01]}
  optimizer: sgd
  epochs: 3
"""


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(write_spec):
    spec = parse_spec(DIVERGING, str(write_spec(DIVERGING)))
    objective = Objective(spec, load_search_data(spec))
    study = optuna.create_study()
    study.enqueue_trial({"learning_rate": 10000.0})
    study.enqueue_trial({"learning_rate": 0.01})
    study.optimize(objective, n_trials=2, catch=_catchable())
    diverged, fine = study.trials
    assert diverged.state == TrialState.FAIL
    assert diverged.user_attrs["fail_reason"].startswith("diverged: training loss ")
    assert "at epoch 1" in diverged.user_attrs["fail_reason"]
    assert fine.state == TrialState.COMPLETE and fine.value > 0


def test_a_study_of_diverging_trials_stops_instead_of_looping(runner, write_spec, sqlite_url):
    spec = write_spec(DIVERGING.replace("{choices: [10000.0, 0.01]}", "10000.0"))
    result = runner.invoke(main, ["run", str(spec), "--storage", sqlite_url])
    assert result.exit_code == 1
    assert "stopped: 10 trials failed in this run" in result.output
    assert "failed: diverged: training loss" in result.output
    study = optuna.load_study(study_name="diverge", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 10


def test_the_monitor_raises_instead_of_warning():
    from search.objective import PruningMonitor

    study = optuna.create_study()
    monitor = PruningMonitor(study.ask(), "val_auc")
    with pytest.raises(MetricMissingError, match="'val_auc' is not in the epoch logs"):
        monitor.on_epoch_end(0, {"loss": 0.3, "val_loss": 0.4})


def _alive_func_graphs() -> int:
    import gc

    gc.collect()
    return sum(type(o).__name__ == "FuncGraph" for o in gc.get_objects())


def test_finished_trials_do_not_keep_their_graphs_alive(write_spec, sqlite_url, monkeypatch):
    """TensorFlow's gradient registry would keep every trial's traced graph (~3 MB) alive."""
    from search import objective as objective_module
    from search.runner import run_study
    from search.spec import load_spec

    spec = load_spec(write_spec())  # 6 trials
    before = _alive_func_graphs()
    run_study(spec, sqlite_url)
    kept = _alive_func_graphs() - before
    assert kept <= 2, kept  # the last trial's, at most

    # Without the release, every trial's graph stays: the check above can fail.
    monkeypatch.setattr(objective_module, "release_graph_references", lambda: 0)
    spec2 = load_spec(write_spec(SMALL_STUDY.replace("name: small", "name: leaky")))
    before = _alive_func_graphs()
    run_study(spec2, sqlite_url)
    assert _alive_func_graphs() - before >= 5
