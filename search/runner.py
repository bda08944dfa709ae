"""Run a study: check everything, then create or load it, then optimize to a global budget.

Everything that can be wrong with the user's input (spec, data, builder, sampler and pruner
options, storage URL) is checked in :func:`prepare` before the storage is touched, so bad input
leaves nothing behind. The budget is global: ``n_trials`` counts the study's finished trials
(complete + pruned), whoever ran them, so a rerun resumes and a finished study adds nothing.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import SpecError
from search.space import max_epochs
from search.storage import Heartbeat, mask_url, open_storage, resolve_url

if TYPE_CHECKING:
    from search.data import SearchData
    from search.model import Builder
    from search.spec import StudySpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Keys of the spec a rerun may change without creating a different study.
_MUTABLE_KEYS = {"study.n_trials", "study.timeout", "study.name"}


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; no trial of this process is left RUNNING."""


class TooManyFailures(Exception):
    """Trials kept failing (diverging); the run stopped instead of looping."""


@dataclass(frozen=True)
class Prepared:
    """Everything a worker needs, checked: spec, search data, builder, sampler, pruner."""

    spec: StudySpec
    data: SearchData
    builder: Builder | None
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner


@dataclass(frozen=True)
class Progress:
    """What the run looks like after one more trial ended."""

    trial: FrozenTrial
    finished: int
    target: int
    pruned: int
    failed: int
    best_value: float | None
    best_number: int | None
    elapsed: float


@dataclass
class RunResult:
    """The outcome of :func:`run_study`."""

    study_name: str
    storage: str  # masked
    target: int
    counts: dict[str, int]
    best_value: float | None
    best_number: int | None
    best_params: dict[str, Any]
    trials_run: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)


# --------------------------------------------------------------------------------------------
# Sampler and pruner.


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded with ``study.seed`` unless its options give a seed."""
    name = spec.study.sampler.name
    options = dict(spec.study.sampler.options)
    options.setdefault("seed", spec.study.seed)
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": optuna.samplers.GPSampler,
        "qmc": optuna.samplers.QMCSampler,
    }
    _require_extra(spec, name)
    return _construct(classes[name], options, spec, "study.sampler.options")


def _require_extra(spec: StudySpec, name: str) -> None:
    needs = {"gp": ("torch", "gp"), "cmaes": ("cmaes", None)}
    if name not in needs:
        return
    module, extra = needs[name]
    try:
        __import__(module)
    except ImportError:
        hint = f"pip install 'hpsearch[{extra}]'" if extra else f"pip install {module}"
        raise SpecError(spec.path, "study.sampler.name",
                        f"a sampler whose packages are installed ({hint})", name) from None


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; Hyperband's maximum resource defaults to the largest epoch count."""
    name = spec.study.pruner.name
    options = dict(spec.study.pruner.options)
    if name == "none":
        if options:
            raise SpecError(spec.path, "study.pruner.options", "no options for pruner none",
                            options)
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        options.setdefault("min_resource", 1)
        options.setdefault("max_resource", max_epochs(spec.search))
    if name == "percentile":
        options.setdefault("percentile", 25.0)
    classes = {
        "hyperband": optuna.pruners.HyperbandPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    }
    return _construct(classes[name], options, spec, "study.pruner.options")


def _construct(cls: type, options: dict[str, Any], spec: StudySpec, key: str) -> Any:
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SpecError(spec.path, f"{key}.{unknown[0]}",
                        f"an option of {cls.__name__}: " + ", ".join(accepted), "<unknown option>")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise SpecError(spec.path, key, f"options that {cls.__name__} accepts", f"<{e}>") from e


# --------------------------------------------------------------------------------------------
# Preparing and opening.


def prepare(spec: StudySpec) -> Prepared:
    """Load the data and check every part of the spec. Touches no storage."""
    from search.data import load_search_data

    data = load_search_data(spec)
    spec.check_metric_for(data.task)
    builder = None
    if spec.model.builder:
        from search.model import resolve_builder

        builder = resolve_builder(spec.model.builder, spec.path)
    return Prepared(spec=spec, data=data, builder=builder,
                    sampler=make_sampler(spec), pruner=make_pruner(spec))


def study_attrs(prepared: Prepared) -> dict[str, Any]:
    """The user attrs written when the study is created."""
    from search import __version__

    spec = prepared.spec
    import yaml

    return {
        "spec": spec.canonical(),
        "spec_yaml": yaml.safe_dump(spec.canonical(), sort_keys=False),
        "data_source_resolved": resolved_source(spec),
        "n_classes": prepared.data.task.n_classes,
        "state": "created",
        "spec_hash": spec.search_hash(),
        "data_fingerprint": prepared.data.fingerprint,
        "task": prepared.data.task.kind,
        "metric": spec.study.metric,
        "n_trials": spec.study.n_trials,
        "hpsearch_version": __version__,
        "versions": package_versions(),
    }


def resolved_source(spec: StudySpec) -> str:
    """The data source with an absolute path (a study file's relative path means nothing later)."""
    if spec.data.kind == "sklearn":
        return spec.data.source
    return f"{spec.data.kind}:{(spec.base_dir / spec.data.location).resolve()}"


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a trial's result (read without importing them)."""
    from importlib import metadata

    versions = {}
    for name in ("hpsearch", "optuna", "keras", "tensorflow", "tensorflow-cpu", "numpy",
                 "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def open_study(prepared: Prepared, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study, or load it and check that it is the same search.

    Many workers may start at once: exactly one creates the study and writes its attributes,
    marking it ready last; the others load it, waiting for that mark.
    """
    spec = prepared.spec
    kwargs = dict(storage=storage, study_name=spec.name, sampler=prepared.sampler,
                  pruner=prepared.pruner)
    try:
        study = optuna.create_study(direction=spec.study.resolved_direction, **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
        _wait_until_ready(study)
        check_same_search(study, prepared)
        if study.user_attrs.get("n_trials") != spec.study.n_trials:
            study.set_user_attr("n_trials", spec.study.n_trials)
        return study
    for key, value in study_attrs(prepared).items():
        study.set_user_attr(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.study.metric])
    _save_note(study, prepared)
    study.set_user_attr(_READY, True)
    return study


def _save_note(study: optuna.Study, prepared: Prepared) -> None:
    """A markdown note for optuna-dashboard: what the study searches, on what data."""
    import optuna_dashboard

    from search.space import describe_space

    spec, data = prepared.spec, prepared.data
    rows = "\n".join(f"| `{name}` | {text} |" for name, text in describe_space(spec.search))
    note = (
        f"# {spec.name}\n\n"
        f"{spec.study.resolved_direction.capitalize()} **{spec.study.metric}** over "
        f"{spec.study.n_trials} trials; sampler `{spec.study.sampler.name}`, pruner "
        f"`{spec.study.pruner.name}`, seed {spec.study.seed}.\n\n"
        f"**Data** `{spec.data.source}`: {data.summary()}; fingerprint "
        f"`{data.fingerprint}`.\n\n"
        f"**Model** `{spec.model.builder or spec.model.type}`.\n\n"
        f"| hyperparameter | search |\n|---|---|\n{rows}\n\n"
        "Each trial's value is its best epoch's value; its learning curve is the intermediate "
        "values; its artifacts hold the per-epoch history (CSV) and, for the best trials, the "
        "model. The resolved study file is the study's user attribute `spec_yaml`.\n"
    )
    optuna_dashboard.save_note(study, note)


_READY = "hpsearch_ready"


def _wait_until_ready(study: optuna.Study, timeout: float = 60.0) -> None:
    """Wait (briefly) for the worker that created the study to finish writing its attributes."""
    deadline = time.monotonic() + timeout
    while not study.user_attrs.get(_READY) and time.monotonic() < deadline:
        time.sleep(0.2)


def check_same_search(study: optuna.Study, prepared: Prepared) -> None:
    """Refuse to add trials of a different search (spec or data) to an existing study."""
    attrs = study.user_attrs
    spec = prepared.spec
    if "spec" not in attrs:
        raise SpecError(spec.path, "study.name", "the name of an hpsearch study or a new name",
                        f"<{spec.name}: a study that hpsearch did not create>")
    differences = _differences(attrs["spec"], spec.canonical())
    if differences:
        raise SpecError(
            spec.path, ", ".join(differences[:5]),
            f"the values stored with study {spec.name!r} (use another study.name or "
            "--study-name for a different search)", "<different values>",
        )
    if attrs.get("data_fingerprint") != prepared.data.fingerprint:
        raise SpecError(
            spec.path, "data", f"the data of study {spec.name!r} (fingerprint "
            f"{attrs.get('data_fingerprint')})", f"<data with fingerprint "
            f"{prepared.data.fingerprint}>",
        )


def _differences(stored: Any, ours: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(ours, dict):
        keys = sorted(set(stored) | set(ours))
        found: list[str] = []
        for key in keys:
            found += _differences(stored.get(key), ours.get(key), f"{prefix}{key}.")
        return found
    key = prefix.rstrip(".")
    if key in _MUTABLE_KEYS:
        return []
    return [] if json.dumps(stored, sort_keys=True) == json.dumps(ours, sort_keys=True) else [key]


# --------------------------------------------------------------------------------------------
# Running.


def count_states(study: optuna.Study) -> dict[str, int]:
    """Trials of the study by state name."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


_STOP = threading.Event()


def request_stop() -> None:
    """Ask this worker to stop (Ctrl-C, SIGTERM); see :func:`stop_requested`.

    The signal handler also raises KeyboardInterrupt to stop the current trial at once; Python
    drops that exception when it lands inside a finalizer or weakref callback, so the flag makes
    sure the worker still stops at its next trial boundary.
    """
    _STOP.set()


def _raise_if_stop_requested() -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt


class BudgetReached(Exception):
    """The study has its budget of finished trials: this worker is done."""


class _Progress:
    """After each trial: count, stop on too many failures, report progress."""

    def __init__(self, target: int, max_failures: int, start: float,
                 on_trial: Callable[[Progress], None] | None) -> None:
        self.target = target
        self.max_failures = max_failures
        self.failed_here = 0
        self.start = start
        self.on_trial = on_trial

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        counts = count_states(study)
        finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        if trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason") != \
                "interrupted":
            self.failed_here += 1
        if finished >= self.target or self.failed_here >= self.max_failures:
            study.stop()
        if self.on_trial is not None:
            best = _best(study)
            self.on_trial(Progress(
                trial=trial, finished=finished, target=self.target,
                pruned=counts.get("PRUNED", 0), failed=counts.get("FAIL", 0),
                best_value=best.value if best else None,
                best_number=best.number if best else None,
                elapsed=time.perf_counter() - self.start,
            ))


class BudgetedStudy(optuna.Study):
    """A Study whose ``ask`` enforces the global budget across all workers.

    Under a lock shared by every worker (a database advisory lock, or a file lock on one
    machine), a new trial is started only while finished + running trials are fewer than the
    target. When the remaining slots are all held by other workers' running trials, the worker
    waits: if one of them dies, its trial is failed (heartbeat) and re-run here. ``optimize``
    calls ``ask``, so this keeps Optuna's own loop, heartbeat and retry of stale trials.
    """

    def __init__(self, study: optuna.Study, url: str, target: int, poll: float,
                 max_retry: int) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage,
                         sampler=study.sampler, pruner=study.pruner)
        self._url = url
        self._target = target
        self._poll = poll
        self._max_retry = max_retry

    def ask(self, fixed_distributions: Any = None) -> optuna.Trial:
        from search.storage import budget_lock

        while True:
            _raise_if_stop_requested()
            reap_dead_local_trials(self, self._max_retry)
            with budget_lock(self._url, self._storage, self._study_id):
                counts = count_states(self)
                finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
                if finished >= self._target:
                    raise BudgetReached
                if finished + counts.get("RUNNING", 0) < self._target:
                    return super().ask(fixed_distributions)
            # Every remaining slot is held by a running trial elsewhere; wait for it to end,
            # failing it if its worker stopped sending heartbeats.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self)
            time.sleep(self._poll)
            _raise_if_stop_requested()


def reap_dead_local_trials(study: optuna.Study, max_retry: int) -> list[int]:
    """Fail (and queue for a re-run) RUNNING trials of dead worker processes on this host.

    Storages with a heartbeat do this through Optuna after the grace period; the journal file
    has no heartbeat, and all its workers share one machine, so a dead pid is proof enough.
    """
    from search.objective import worker_host
    from search.storage import unwrap

    backend = unwrap(study._storage)
    if not isinstance(backend, optuna.storages.JournalStorage):
        return []
    host = worker_host()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            backend.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        backend.set_trial_user_attr(trial._trial_id, "fail_reason", f"worker {worker} died")
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        retry(study, study._storage.get_trial(trial._trial_id))
        reaped.append(trial.number)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _catchable() -> tuple[type[Exception], ...]:
    """Trial-level errors: the trial fails and the study goes on. Anything else stops the run."""
    import tensorflow as tf

    from search.objective import TrialDiverged

    return (TrialDiverged, MemoryError, tf.errors.ResourceExhaustedError)


def create_study(spec: StudySpec, storage: str | None = None,
                 heartbeat: Heartbeat | None = None) -> optuna.Study:
    """Check everything, then create the study (or check the existing one). Runs no trial."""
    url = resolve_url(storage)
    prepared = prepare(spec)
    return open_study(prepared, open_storage(url, heartbeat=heartbeat))


def run_study(
    spec: StudySpec,
    storage: str | None = None,
    *,
    on_trial: Callable[[Progress], None] | None = None,
    heartbeat: Heartbeat | None = None,
    threads: int | None = None,
    artifacts: str | None = None,
    keep_models: int = 1,
) -> RunResult:
    """Run one worker on ``spec`` until the study has ``study.n_trials`` finished trials.

    The budget is global: other workers (processes or machines) on the same storage share it.
    Raises SpecError/DataError/StorageError for bad input (before the storage is touched),
    Interrupted on Ctrl-C or SIGTERM, TooManyFailures when trials keep diverging.
    """
    from search.objective import Objective, configure_threads, worker_id

    _STOP.clear()
    url = resolve_url(storage)
    heartbeat = heartbeat or Heartbeat()
    prepared = prepare(spec)
    study = open_study(prepared, open_storage(url, heartbeat=heartbeat))
    start = time.perf_counter()
    target = spec.study.n_trials
    before = count_states(study)
    ran_before = sum(before.values())
    notes: list[str] = []
    if before.get("COMPLETE", 0) + before.get("PRUNED", 0) >= target:
        notes.append("the study already had its budget of finished trials; nothing to run")
    else:
        configure_threads(threads)
        progress = _Progress(target, max_failures=max(10, target), start=start,
                             on_trial=on_trial)
        from search.artifacts import TrialArtifacts, artifact_store

        store = TrialArtifacts(artifact_store(url, artifacts), keep_models,
                               spec.study.resolved_direction)
        objective = Objective(spec, prepared.data, prepared.builder, store)
        study.set_user_attr("state", "running")
        budgeted = BudgetedStudy(study, url, target,
                                 poll=min(5.0, max(0.5, heartbeat.interval / 2)),
                                 max_retry=heartbeat.max_retry)
        try:
            budgeted.optimize(objective, timeout=spec.study.timeout, catch=_catchable(),
                              callbacks=[progress], gc_after_trial=False)
        except BudgetReached:
            pass
        except KeyboardInterrupt:
            released = fail_running_trials(study, worker_id(), "interrupted")
            if objective.current_trial is not None and not released:
                last = study.trials[objective.current_trial]
                if last.user_attrs.get("fail_reason") == "interrupted":
                    released = [last.number]
            counts = count_states(study)
            done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
            raise Interrupted(
                f"interrupted: study {spec.name!r} has {done}/{target} finished trials"
                f"{f', trial {released[0]} marked FAIL' if released else ''}; rerun the same "
                f"command to finish the remaining {max(target - done, 0)}"
            ) from None
        if progress.failed_here >= progress.max_failures:
            raise TooManyFailures(
                f"stopped: {progress.failed_here} trials failed in this run (see `hpsearch "
                f"status {spec.name}`); narrow the search space, e.g. lower "
                f"learning_rate.high"
            )
        if spec.study.timeout is not None and count_finished(study) < target:
            notes.append(f"timeout of {spec.study.timeout:g} s reached")
    if count_finished(study) >= target and study.user_attrs.get("state") != "finished":
        study.set_user_attr("state", "finished")
    return summarize(study, url, target, ran_before, time.perf_counter() - start, notes)


def summarize(study: optuna.Study, url: str, target: int, ran_before: int, seconds: float,
              notes: list[str]) -> RunResult:
    """A RunResult from the study as it is now."""
    counts = count_states(study)
    best = _best(study)
    return RunResult(
        study_name=study.study_name, storage=mask_url(url), target=target, counts=counts,
        best_value=best.value if best else None, best_number=best.number if best else None,
        best_params=best.params if best else {},
        trials_run=sum(counts.values()) - ran_before, seconds=seconds, notes=notes,
    )


def count_finished(study: optuna.Study) -> int:
    """Complete + pruned trials: what the budget counts."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def fail_running_trials(study: optuna.Study, worker: str, reason: str) -> list[int]:
    """Mark this worker's RUNNING trials FAIL with ``reason``; return their numbers."""
    released = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") != worker:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        study.tell(trial.number, state=TrialState.FAIL)
        released.append(trial.number)
    return released


def run_workers(
    spec_file: str,
    spec: StudySpec,
    url: str,
    workers: int,
    threads: int | None,
    heartbeat: Heartbeat,
    overrides: dict[str, Any],
    echo: Callable[[str], None],
) -> tuple[RunResult, int]:
    """Run ``workers`` worker processes of ``spec`` on this machine; wait for all of them.

    The study is created here first (so bad input is reported once, before any process starts);
    each worker is ``python -m search worker`` with the storage URL in its environment, not on
    its command line (where other users of the machine could read a password). Returns the
    study's result and the worst exit code of the workers.
    """
    import subprocess
    import sys
    import threading

    from search.storage import kind

    if kind(url) == "sqlite":
        raise SpecError(
            None, "--workers", "1 worker on a SQLite storage (SQLite serializes writers); for "
            "several workers use --storage journal:hpsearch.journal on one machine, or "
            "PostgreSQL or MySQL", workers,
        )
    study = create_study(spec, url, heartbeat)
    ran_before = len(study.trials)
    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    command = [sys.executable, "-m", "search", "worker", spec_file,
               "--threads", str(per_worker),
               "--heartbeat-interval", str(heartbeat.interval),
               "--grace-period", str(heartbeat.grace_period),
               "--max-retry", str(heartbeat.max_retry)]
    for flag, value in overrides.items():
        if value is not None:
            command += [flag, str(value)]
    env = dict(os.environ, HPSEARCH_STORAGE=url)
    start = time.perf_counter()
    echo(f"starting {workers} workers, {per_worker} TensorFlow threads each")
    procs = [subprocess.Popen(command, env=dict(env, HPSEARCH_WORKER_INDEX=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(workers)]

    def relay(index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            echo(f"[w{index}] {line.rstrip()}")

    relays = [threading.Thread(target=relay, args=(i, p), daemon=True)
              for i, p in enumerate(procs)]
    for thread in relays:
        thread.start()
    try:
        codes = [proc.wait() for proc in procs]
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the workers too; SIGTERM reaches only this process.
        # Give the workers a moment to stop on their own, then pass the interrupt on.
        time.sleep(2.0)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=120) for proc in procs]
        codes.append(130)
    for thread in relays:
        thread.join(timeout=5)
    study = optuna.load_study(study_name=study.study_name,
                              storage=open_storage(url, heartbeat=heartbeat))
    result = summarize(study, url, spec.study.n_trials, ran_before,
                       time.perf_counter() - start, [])
    return result, max(codes)
