"""The Optuna objective: one trial = sample, build, fit with early stopping and pruning.

The objective holds the train and validation splits (never the test split) and is called once
per trial. It returns the best epoch's value of the study metric, which is also the best of the
values it reported, so the trial's value and its learning curve in the dashboard agree.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from search.model import Builder, build_with  # imports keras (and TensorFlow)

import keras  # noqa: E402  (after search.model, which quiets TensorFlow's start-up logs)
import optuna

from search.space import suggest_params

if TYPE_CHECKING:
    from search.artifacts import TrialArtifacts
    from search.data import SearchData
    from search.spec import StudySpec


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial fails and the study goes on."""


class MetricMissingError(RuntimeError):
    """The study metric is not in Keras' epoch logs: a configuration error, never silent."""


class NanGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that also remembers where the loss stopped being finite."""

    def __init__(self) -> None:
        super().__init__()
        self.diverged_at: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Same check as the parent, without its print to stdout (the CLI owns the terminal).
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = self.diverged_at or (
                f"training loss {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}"
            )
            self.model.stop_training = True


# A full garbage collection costs ~0.2 s with TensorFlow loaded; Keras' clear_session runs one
# by default. One every GC_EVERY trials saves that per trial; memory grew the same with a
# collection every trial or every 10th in a hand run of 50 trials (310 MB per 100 trials then,
# before release_graph_references).
GC_EVERY = 10


def release_graph_references() -> int:
    """Drop TensorFlow's registrations of per-trace custom gradients; returns how many.

    Every training step Keras traces on TensorFlow goes through ``tf.custom_gradient`` (the
    optimizer's replica all-reduce), which registers a gradient function, holding the whole
    traced graph, in TensorFlow's global gradient registry under a unique
    ``CustomGradient-N`` name, and never removes it: ~3 MB per trial that ``clear_session`` and
    garbage collection cannot free (benchmark "memory": 277 MB per 100 digits trials before,
    61 MB after; one fixed model in a loop: 310 MB before, 5 MB after). A finished trial's
    graph is never differentiated again, so its entries can go; the next trial traces and
    registers its own.
    """
    from tensorflow.python.framework import ops as tf_ops

    registry = tf_ops._gradient_registry._registry
    stale = [name for name in registry if name.startswith("CustomGradient-")]
    for name in stale:
        del registry[name]
    return len(stale)


class PruningMonitor(keras.callbacks.Callback):
    """Reports the monitored metric to Optuna every epoch and stops the fit when pruned.

    Steps are 1-based epoch counts. A missing metric raises :class:`MetricMissingError`
    (Optuna's own Keras callback only warns, and then never prunes).
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.history: list[dict[str, float]] = []
        self.pruned_at: int | None = None
        self.diverged_at: str | None = None
        self._epoch_start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._epoch_start
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if self.monitor not in logs:
            raise MetricMissingError(
                f"the study metric {self.monitor!r} is not in the epoch logs (they hold: "
                f"{', '.join(sorted(logs)) or 'nothing'}); a compiled custom model must report "
                f"it, or return the model uncompiled and let hpsearch compile it"
            )
        self.history.append({**logs, "epoch_seconds": round(seconds, 4)})
        value = logs[self.monitor]
        if not all(math.isfinite(v) for v in logs.values()):
            self.diverged_at = f"{self.monitor}={value}, loss={logs.get('loss')} at epoch " \
                               f"{epoch + 1}"
            self.model.stop_training = True
            return
        self.trial.report(value, step=epoch + 1)
        if self.trial.should_prune():
            self.pruned_at = epoch + 1
            self.model.stop_training = True


def worker_host() -> str:
    """This machine's name as recorded on trials ($HPSEARCH_HOST overrides, e.g. a pod name)."""
    return os.environ.get("HPSEARCH_HOST") or socket.gethostname()


def worker_id() -> str:
    """host:pid of this process, recorded on each trial so running trials can be traced."""
    return f"{worker_host()}:{os.getpid()}"


def configure_threads(threads: int | None) -> int:
    """Cap TensorFlow's intra-op threads (None: leave TensorFlow's default, all cores).

    Must run before TensorFlow executes its first op in this process. Returns the cap in force
    as TensorFlow reports it (0 means TensorFlow's default).
    """
    import tensorflow as tf

    if threads is not None and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:
            # TensorFlow already ran in this process (several studies in one Python session):
            # its thread pools are fixed now; the trials record the cap actually in force.
            pass
    return tf.config.threading.get_intra_op_parallelism_threads()


class Objective:
    """A callable for ``study.optimize`` holding the spec, the search data and the builder."""

    def __init__(self, spec: StudySpec, data: SearchData, builder: Builder | None = None,
                 artifacts: TrialArtifacts | None = None) -> None:
        self.spec = spec
        self.data = data
        self.builder = builder
        self.artifacts = artifacts
        self.metric = spec.study.metric
        self.current_trial: int | None = None
        self._trials_run = 0
        self.direction = spec.study.resolved_direction
        import tensorflow as tf

        # Retracing warnings are expected: every trial builds a new model.
        tf.get_logger().setLevel("ERROR")
        self.threads = tf.config.threading.get_intra_op_parallelism_threads()
        if spec.study.deterministic:
            tf.config.experimental.enable_op_determinism()
        # Datasets built once per worker; each trial only adds its shuffle and batch size.
        self._train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        self._val = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(1024)

    def _train_batches(self, batch_size: int, seed: int) -> Any:
        import tensorflow as tf

        n = len(self.data.x_train)
        return self._train.shuffle(n, seed=seed).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def __call__(self, trial: optuna.Trial) -> float:
        self.current_trial = trial.number
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            # Optuna marks the trial FAIL and re-raises; leave the reason where users look.
            trial.set_user_attr("fail_reason", "interrupted")
            raise

    def _run(self, trial: optuna.Trial) -> float:
        self._trials_run += 1
        release_graph_references()
        keras.backend.clear_session(free_memory=self._trials_run % GC_EVERY == 0)
        seed = self.spec.study.seed + trial.number
        keras.utils.set_random_seed(seed)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("threads", self.threads)
        params = suggest_params(trial, self.spec.search)
        model = build_with(self.builder, params, self.data.input_shape, self.data.task)
        trial.set_user_attr("n_params", int(model.count_params()))
        if model.optimizer is not None and not model.optimizer.built:
            # Built here, Keras traces the training step once; built inside the first step
            # (its default), the variables it creates make TensorFlow trace it twice, ~0.4 s.
            model.optimizer.build(model.trainable_variables)
        monitor = PruningMonitor(trial, self.metric)
        nan_guard = NanGuard()
        callbacks = [
            nan_guard,
            monitor,
            keras.callbacks.EarlyStopping(
                monitor=self.metric,
                mode="min" if self.direction == "minimize" else "max",
                patience=int(params["patience"]),
                min_delta=float(params["min_delta"]),
                restore_best_weights=True,
            ),
        ]
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            model.fit(
                self._train_batches(int(params["batch_size"]), seed),
                validation_data=self._val,
                epochs=int(params["epochs"]),
                callbacks=callbacks,
                shuffle=False,  # the dataset shuffles itself, seeded per trial
                verbose=0,
            )
        finally:
            trial.set_user_attr("fit_seconds", round(time.perf_counter() - start, 3))
            trial.set_user_attr("fit_cpu_seconds", round(time.process_time() - cpu_start, 3))
            trial.set_user_attr("epochs_run", len(monitor.history))
            if monitor.history:
                # The first epoch carries the tracing of the training and validation steps.
                trial.set_user_attr("first_epoch_seconds", monitor.history[0]["epoch_seconds"])
        return self._outcome(trial, model, monitor, nan_guard)

    def _outcome(self, trial: optuna.Trial, model: keras.Model, monitor: PruningMonitor,
                 guard: NanGuard) -> float:
        diverged = guard.diverged_at or monitor.diverged_at
        if diverged:
            trial.set_user_attr("fail_reason", f"diverged: {diverged}")
            raise TrialDiverged(f"trial {trial.number} diverged: {diverged}")
        if not monitor.history:
            raise MetricMissingError(f"trial {trial.number} ran no epoch")
        values = [epoch[self.metric] for epoch in monitor.history]
        pick = min if self.direction == "minimize" else max
        best = pick(range(len(values)), key=values.__getitem__)
        trial.set_user_attr("best_epoch", best + 1)
        trial.set_user_attr(
            "val_metrics",
            {k: round(v, 6) for k, v in monitor.history[best].items() if k.startswith("val_")},
        )
        if self.artifacts is not None:
            self.artifacts.save_history(trial, monitor.history)
        if monitor.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", monitor.pruned_at)
            raise optuna.TrialPruned(f"pruned at epoch {monitor.pruned_at}")
        if self.artifacts is not None:
            # EarlyStopping restored the best epoch's weights: this is the model scored.
            self.artifacts.save_model_if_top(trial, model, values[best])
        return values[best]
