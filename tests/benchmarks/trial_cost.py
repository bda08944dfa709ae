"""Suites "fixed cost" (a trial's time outside its epochs' compute) and "overhead" (hpsearch's
own cost against a bare ``model.fit`` of the same model).

Fixed cost, from the trials of the other hpsearch runs (trials of 3 or more epochs): the steady
epoch time is ``(fit_seconds - first_epoch_seconds) / (epochs_run - 1)``; the fixed cost is the
trial's wall time (Optuna's start to complete) minus ``epochs_run`` steady epochs. It holds the
session clearing, the model's build and compile, the first epoch's tracing, the sampler and the
storage calls. Its parts are reported too: the first epoch's excess over a steady epoch, and the
time outside ``fit``.

Overhead: the same configurations (fixed epochs, no early stop, no pruning), alternating in one
process (which arm goes first alternates too; ``repeats`` pairs per configuration, medians)
between an hpsearch trial (a real study on SQLite: sampler, budget lock, storage
writes, pruning monitor, user attrs) and a bare fit of the same model with the same seed, the
same input pipeline and the same Keras callbacks (early stopping and the NaN guard).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import SPACE, median, write_study


def fixed_cost(trial_rows: list[dict[str, Any]]) -> dict[str, Any]:
    fixed, first_excess, outside_fit = [], [], []
    for row in trial_rows:
        n, fit, first = row["epochs_run"], row["fit_s"], row["first_epoch_s"]
        if n < 3 or fit is None or first is None:
            continue
        steady = (fit - first) / (n - 1)
        fixed.append(row["wall_s"] - n * steady)
        first_excess.append(first - steady)
        outside_fit.append(row["wall_s"] - fit)
    return {
        "trials": len(fixed),
        "fixed_s_p50": median(fixed),
        "first_epoch_excess_s_p50": median(first_excess),
        "outside_fit_s_p50": median(outside_fit),
    }


def _configs(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    configs = []
    for _ in range(n):
        configs.append({
            "learning_rate": 10 ** rng.uniform(-3.5, -1.5),
            "batch_size": rng.choice(SPACE["batch_size"]),
            "n_layers": rng.randint(*SPACE["n_layers"]),
            "units": int(round(2 ** rng.uniform(5, 8))),
            "activation": rng.choice(SPACE["activation"]),
            "optimizer": rng.choice(SPACE["optimizer"]),
            "dropout": rng.uniform(*SPACE["dropout"]),
            "l2": 10 ** rng.uniform(-6, -2),
        })
    return configs


def overhead(n_configs: int, epochs: int, repeats: int = 3) -> dict[str, Any]:
    import keras
    import optuna

    from search.model import build_model
    from search.objective import NanGuard, Objective
    from search.runner import BudgetedStudy, open_study, prepare
    from search.spec import load_spec
    from search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Fixed epochs and no early stop, so that both arms run exactly the same epochs.
        spec = load_spec(write_study(Path(tmp), name="overhead", seed=0, max_epochs=epochs,
                                     pruner="none", fixed_epochs=True))
        url = f"sqlite:///{Path(tmp) / 'overhead.db'}"
        prepared = prepare(spec)
        study = open_study(prepared, open_storage(url))
        objective = Objective(spec, prepared.data, prepared.builder, None)
        def hpsearch_trial(config: dict[str, Any]) -> tuple[float, Any]:
            study.enqueue_trial(config)
            budgeted = BudgetedStudy(study, url, len(study.trials) + 1, poll=1.0,
                                     max_retry=0)
            start = time.perf_counter()
            budgeted.optimize(objective, n_trials=1, gc_after_trial=False)
            seconds = time.perf_counter() - start
            trial = study.trials[-1]
            assert trial.params["learning_rate"] == config["learning_rate"], trial.params
            assert trial.user_attrs["epochs_run"] == epochs
            return seconds, trial.value

        def bare_fit(config: dict[str, Any], seed: int) -> tuple[float, float]:
            start = time.perf_counter()
            keras.backend.clear_session(free_memory=False)
            keras.utils.set_random_seed(seed)
            params = {**config, "units": [config["units"]] * config["n_layers"]}
            model = build_model(params, prepared.data.input_shape, prepared.data.task)
            model.optimizer.build(model.trainable_variables)
            history = model.fit(
                objective._train_batches(config["batch_size"], seed),
                validation_data=objective._val, epochs=epochs, shuffle=False, verbose=0,
                callbacks=[NanGuard(), keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=10 * epochs, restore_best_weights=True)])
            seconds = time.perf_counter() - start
            assert len(history.history["loss"]) == epochs
            return seconds, min(history.history["val_loss"])

        for config in _configs(n_configs, seed=0):
            hp_times, bare_times, same = [], [], True
            for rep in range(repeats):
                # The trial about to run gets this number, hence this seed.
                seed = spec.study.seed + len(study.trials)
                if rep % 2 == 0:
                    hp_s, hp_value = hpsearch_trial(config)
                    bare_s, bare_value = bare_fit(config, seed)
                else:
                    bare_s, bare_value = bare_fit(config, seed)
                    hp_s, hp_value = hpsearch_trial(config)
                hp_times.append(hp_s)
                bare_times.append(bare_s)
                same = same and abs(hp_value - bare_value) < 1e-6
            rows.append({"hpsearch_s": median(hp_times), "bare_s": median(bare_times),
                         "overhead": median(hp_times) / median(bare_times) - 1,
                         "val_loss_equal": same})
    return {
        "configs": len(rows),
        "epochs": epochs,
        "repeats": repeats,
        "overhead_p50": median([r["overhead"] for r in rows]),
        "hpsearch_s_p50": median([r["hpsearch_s"] for r in rows]),
        "bare_s_p50": median([r["bare_s"] for r in rows]),
        "same_val_loss": sum(r["val_loss_equal"] for r in rows),
        "runs": rows,
    }
