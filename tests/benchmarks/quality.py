"""Suites "quality" (time to quality, three arms) and "pruning" (pruning payoff).

Quality: the digits data, one split, the nine hyperparameters, one epoch budget, per seed and
arm in turn (a, b, c, a, b, c, ...):

(a) hpsearch with its defaults (TPE, Hyperband, SQLite storage) through ``run_study``;
(b) Optuna wired to Keras by hand as its documentation shows: TPE + HyperbandPruner,
    ``clear_session`` per trial, ``optuna_integration.KerasPruningCallback``, numpy arrays into
    ``fit``, the score from ``model.evaluate`` (plus the same EarlyStopping as (a));
(c) KerasTuner Hyperband (max_epochs, factor 3, one iteration) with the same EarlyStopping.

Every arm builds the same MLP (``search.model.build_model``) from the same nine values, and (a)
and (b) stop asking for trials once the budget of epochs is spent (the trial running then
finishes). (c) runs one Hyperband iteration, whose size KerasTuner decides.

Pruning: hpsearch on the same study with a fixed number of trials, pruner none / median /
hyperband, per seed in turn.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import (
    PATIENCE,
    SPACE,
    Timeline,
    digits_data,
    final_test_accuracy,
    median,
    write_study,
)


def arm_hpsearch(folder: Path, seed: int, max_epochs: int, epoch_budget: int | None,
                 pruner: str = "", n_trials: int = 10_000, name: str = "a") -> dict[str, Any]:
    """One hpsearch run; stops at the epoch budget (if any) or after ``n_trials``."""
    from optuna.trial import FixedTrial, TrialState

    from search.runner import BudgetReached, run_study
    from search.space import suggest_params
    from search.spec import load_spec

    spec = load_spec(write_study(folder, name=name, seed=seed, max_epochs=max_epochs,
                                 pruner=pruner, n_trials=n_trials))
    url = f"sqlite:///{folder / (name + '.db')}"
    timeline = Timeline()
    epochs = 0

    def on_trial(progress: Any) -> None:
        nonlocal epochs
        trial = progress.trial
        epochs += int(trial.user_attrs.get("epochs_run", 0))
        timeline.add(trial.value if trial.state == TrialState.COMPLETE else None)
        if epoch_budget is not None and epochs >= epoch_budget:
            raise BudgetReached  # run_study's own way out: the worker stops asking

    start = time.perf_counter()
    run_study(spec, url, on_trial=on_trial)
    wall = time.perf_counter() - start
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    best = study.best_trial
    params = suggest_params(FixedTrial(best.params), spec.search)
    finished = [t for t in study.trials if t.state.is_finished()]
    return {
        "wall_s": wall, "trials": len(finished), "epochs": epochs,
        "pruned": sum(t.state == TrialState.PRUNED for t in finished),
        "best_val_loss": float(best.value), "timeline": timeline,
        "params": params, "best_epoch": int(best.user_attrs["best_epoch"]),
        "trial_rows": [_trial_row(t) for t in finished],
    }


def _trial_row(trial: Any) -> dict[str, Any]:
    """What the fixed-cost suite needs from an hpsearch trial."""
    return {
        "wall_s": (trial.datetime_complete - trial.datetime_start).total_seconds(),
        "epochs_run": trial.user_attrs.get("epochs_run", 0),
        "fit_s": trial.user_attrs.get("fit_seconds"),
        "first_epoch_s": trial.user_attrs.get("first_epoch_seconds"),
    }


def arm_optuna(data: Any, seed: int, max_epochs: int, epoch_budget: int) -> dict[str, Any]:
    """Optuna + Keras wired by hand, as in Optuna's keras example."""
    import keras
    import numpy as np
    import optuna
    from optuna_integration import KerasPruningCallback

    from search.model import build_model

    epochs_low = max(1, max_epochs // 3)
    counter = _EpochCounter()
    timeline = Timeline()

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        n_layers = trial.suggest_int("n_layers", *SPACE["n_layers"])
        params = {
            "learning_rate": trial.suggest_float("learning_rate", *SPACE["learning_rate"],
                                                 log=True),
            "n_layers": n_layers,
            "units": [trial.suggest_int("units", *SPACE["units"], log=True)] * n_layers,
            "activation": trial.suggest_categorical("activation", SPACE["activation"]),
            "optimizer": trial.suggest_categorical("optimizer", SPACE["optimizer"]),
            "dropout": trial.suggest_float("dropout", *SPACE["dropout"]),
            "l2": trial.suggest_float("l2", *SPACE["l2"], log=True),
            "batch_size": trial.suggest_categorical("batch_size", SPACE["batch_size"]),
            "epochs": trial.suggest_int("epochs", epochs_low, max_epochs, step=epochs_low),
        }
        model = build_model(params, data.input_shape, data.task)
        history = keras.callbacks.History()
        model.fit(data.x_train, data.y_train, batch_size=params["batch_size"],
                  epochs=params["epochs"], validation_data=(data.x_val, data.y_val),
                  callbacks=[counter, history, KerasPruningCallback(trial, "val_loss"),
                             keras.callbacks.EarlyStopping(monitor="val_loss",
                                                           patience=PATIENCE,
                                                           restore_best_weights=True)],
                  verbose=0)
        trial.set_user_attr("best_epoch", int(np.argmin(history.history["val_loss"])) + 1)
        return float(model.evaluate(data.x_val, data.y_val, verbose=0)[0])

    def stop_at_budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        timeline.add(trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None)
        if counter.epochs >= epoch_budget:
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs,
                                              reduction_factor=3))
    start = time.perf_counter()
    study.optimize(objective, n_trials=10_000, callbacks=[stop_at_budget])
    wall = time.perf_counter() - start
    best = study.best_trial
    params = dict(best.params)
    params["units"] = [params["units"]] * params["n_layers"]
    finished = [t for t in study.trials if t.state.is_finished()]
    return {
        "wall_s": wall, "trials": len(finished), "epochs": counter.epochs,
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in finished),
        "best_val_loss": float(best.value), "timeline": timeline, "params": params,
        "best_epoch": int(best.user_attrs["best_epoch"]),
    }


def arm_kerastuner(data: Any, seed: int, max_epochs: int) -> dict[str, Any]:
    """KerasTuner Hyperband, one iteration."""
    import keras
    import keras_tuner as kt

    from search.model import build_model

    def params_of(hp: Any) -> dict[str, Any]:
        n_layers = hp.Int("n_layers", *SPACE["n_layers"])
        return {
            "learning_rate": hp.Float("learning_rate", *SPACE["learning_rate"],
                                      sampling="log"),
            "n_layers": n_layers,
            "units": [hp.Int("units", *SPACE["units"], sampling="log")] * n_layers,
            "activation": hp.Choice("activation", SPACE["activation"]),
            "optimizer": hp.Choice("optimizer", SPACE["optimizer"]),
            "dropout": hp.Float("dropout", *SPACE["dropout"]),
            "l2": hp.Float("l2", *SPACE["l2"], sampling="log"),
        }

    class HyperMLP(kt.HyperModel):
        def build(self, hp: Any) -> keras.Model:
            return build_model(params_of(hp), data.input_shape, data.task)

        def fit(self, hp: Any, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
            return model.fit(*args, batch_size=hp.Choice("batch_size", SPACE["batch_size"]),
                             **kwargs)

    counter = _EpochCounter()
    timeline = Timeline()
    with tempfile.TemporaryDirectory() as tmp:
        tuner = kt.Hyperband(HyperMLP(), objective="val_loss", max_epochs=max_epochs, factor=3,
                             hyperband_iterations=1, seed=seed, directory=tmp,
                             project_name="c", overwrite=True)
        start = time.perf_counter()
        tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                     callbacks=[counter, _FitEnd(timeline),
                                keras.callbacks.EarlyStopping(monitor="val_loss",
                                                              patience=PATIENCE)],
                     verbose=0)
        wall = time.perf_counter() - start
        best = tuner.oracle.get_best_trials(1)[0]
        hp = best.hyperparameters
        params = {**params_of(hp), "batch_size": hp.get("batch_size")}
        trials = len(tuner.oracle.trials)
    return {
        "wall_s": wall, "trials": trials, "epochs": counter.epochs, "pruned": None,
        "best_val_loss": float(best.score), "timeline": timeline, "params": params,
        "best_epoch": int(best.best_step) + 1,
    }


def _keras_callback_base() -> type:
    import keras

    return keras.callbacks.Callback


# KerasTuner deep-copies the callbacks of every trial: what they count lives here, by key.
_SHARED: dict[int, Any] = {}


class _EpochCounter(_keras_callback_base()):
    """Counts the epochs trained, across every fit it (or a deep copy of it) is passed to."""

    def __init__(self) -> None:
        super().__init__()
        self.key = len(_SHARED)
        _SHARED[self.key] = [0]

    @property
    def epochs(self) -> int:
        return _SHARED[self.key][0]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        _SHARED[self.key][0] += 1


class _FitEnd(_keras_callback_base()):
    """At the end of each fit (a KerasTuner trial), the best val_loss of that fit."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self.key = len(_SHARED)
        _SHARED[self.key] = timeline
        self.best: float | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.best = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get("val_loss")
        if value is not None and (self.best is None or value < self.best):
            self.best = float(value)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        _SHARED[self.key].add(self.best)


# --------------------------------------------------------------------------------------------


def run_quality(seeds: list[int], max_epochs: int, epoch_budget: int) -> dict[str, Any]:
    """Suite 1: every arm per seed, in turn; the summary is the median over seeds."""
    data = digits_data()
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": []}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs["a"].append(arm_hpsearch(Path(tmp), seed, max_epochs, epoch_budget))
        runs["b"].append(arm_optuna(data, seed, max_epochs, epoch_budget))
        runs["c"].append(arm_kerastuner(data, seed, max_epochs))
        target = runs["c"][-1]["best_val_loss"]
        for arm in runs.values():
            run = arm[-1]
            run["seed"] = seed
            run["time_to_c_best_s"] = run["timeline"].time_to(target)
            run["test_accuracy"] = final_test_accuracy(run["params"], run["best_epoch"], seed)
    return {arm: _summary(rows) for arm, rows in runs.items()}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "trials", "epochs", "best_val_loss", "test_accuracy")
    reached = [r["time_to_c_best_s"] for r in rows]
    return {
        **{k: median([float(r[k]) for r in rows]) for k in keys},
        "time_to_c_best_s": median([t for t in reached if t is not None]),
        "reached_c_best": f"{sum(t is not None for t in reached)}/{len(rows)}",
        "runs": [{k: v for k, v in r.items() if k not in ("timeline", "trial_rows")}
                 for r in rows],
    }


def run_pruning(seeds: list[int], max_epochs: int, n_trials: int) -> dict[str, Any]:
    """Suite 2: hpsearch with pruner none / median / hyperband, per seed in turn."""
    arms = ("none", "median", "hyperband")
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for seed in seeds:
        for arm in arms:
            with tempfile.TemporaryDirectory() as tmp:
                run = arm_hpsearch(Path(tmp), seed, max_epochs, None, pruner=arm,
                                   n_trials=n_trials, name=f"p_{arm}")
            run["seed"] = seed
            run["test_accuracy"] = final_test_accuracy(run["params"], run["best_epoch"], seed)
            runs[arm].append(run)
    summary: dict[str, Any] = {}
    for arm, rows in runs.items():
        summary[arm] = {
            **{k: median([float(r[k]) for r in rows])
               for k in ("wall_s", "trials", "pruned", "epochs", "best_val_loss",
                         "test_accuracy")},
            "runs": [{k: v for k, v in r.items() if k not in ("timeline", "trial_rows")}
                     for r in rows],
        }
    base = runs["none"]
    for arm in arms:
        regrets = [(r["best_val_loss"] - b["best_val_loss"]) / b["best_val_loss"]
                   for r, b in zip(runs[arm], base, strict=True)]
        ratios = [b["epochs"] / r["epochs"] for r, b in zip(runs[arm], base, strict=True)]
        summary[arm]["epoch_reduction_x"] = median(ratios)
        summary[arm]["relative_regret"] = median(regrets)
    summary["trial_rows"] = [row for rows in runs.values() for r in rows
                             for row in r["trial_rows"]]
    return summary
