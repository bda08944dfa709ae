"""The ``hpsearch`` command. Thin: parse, call one function, format the result.

Nothing here imports TensorFlow at import time: ``--help``, ``status`` and ``validate`` stay fast;
``run`` loads it when it starts training.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click

from search.errors import HpsearchError

if TYPE_CHECKING:
    import optuna

    from search.runner import Progress, RunResult
    from search.spec import StudySpec

STORAGE_HELP = "Study storage URL [env HPSEARCH_STORAGE; default sqlite:///hpsearch.db]."


class InputError(click.ClickException):
    """Bad input: one clear message, exit code 2."""

    exit_code = 2


def _fail_input(error: Exception, url: str | None = None) -> NoReturn:
    from search.storage import mask_text

    message = str(error)
    raise InputError(mask_text(message, url) if url else message) from error


def _load(path: str, **overrides: Any) -> StudySpec:
    from search.spec import load_spec

    try:
        return load_spec(path).with_overrides(**overrides)
    except HpsearchError as e:
        _fail_input(e)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in params.items())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpsearch", prog_name="hpsearch")
def main() -> None:
    """Hyperparameter search for Keras models, on Optuna.

    A study file (YAML) declares the data, the model and the search space; `hpsearch run`
    searches it, storing every trial in a database that many workers and optuna-dashboard
    can share.
    """


# --------------------------------------------------------------------------------------------
# run, worker, create


def _study_options(func: Any) -> Any:
    """The options shared by run, worker and create."""
    options = [
        click.option("--storage", envvar="HPSEARCH_STORAGE", help=STORAGE_HELP),
        click.option("--n-trials", type=click.IntRange(min=1),
                     help="Finished trials the study should have (overrides study.n_trials)."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Stop starting trials after this many seconds (overrides "
                          "study.timeout)."),
        click.option("--study-name", help="Study name (overrides study.name)."),
        click.option("--heartbeat-interval", type=click.IntRange(min=1), default=60,
                     show_default=True, envvar="HPSEARCH_HEARTBEAT_INTERVAL",
                     help="Seconds between a running trial's heartbeats (RDB storages)."),
        click.option("--grace-period", type=click.IntRange(min=2), default=180,
                     show_default=True, envvar="HPSEARCH_GRACE_PERIOD",
                     help="Seconds without a heartbeat after which a trial is failed and "
                          "re-run elsewhere."),
        click.option("--max-retry", type=click.IntRange(min=0), default=3, show_default=True,
                     envvar="HPSEARCH_MAX_RETRY",
                     help="How many times the params of a dead worker's trial are re-run."),
    ]
    for option in reversed(options):
        func = option(func)
    return click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))(func)


def _artifact_options(func: Any) -> Any:
    func = click.option("--keep-models", type=click.IntRange(min=0), default=1,
                        show_default=True, envvar="HPSEARCH_KEEP_MODELS",
                        help="Keep the models of this many best trials as artifacts.")(func)
    return click.option("--artifacts", envvar="HPSEARCH_ARTIFACTS",
                        help="Artifact store: a folder or s3://BUCKET [default: beside the "
                             "SQLite/journal file, else ./hpsearch-artifacts].")(func)


def _threads_option(default_help: str) -> Any:
    return click.option("--threads", type=click.IntRange(min=1), envvar="HPSEARCH_THREADS",
                        help=f"TensorFlow intra-op threads per worker [default: {default_help}].")


def _heartbeat(interval: int, grace: int, retry: int) -> Any:
    from search.storage import Heartbeat

    try:
        return Heartbeat(interval=interval, grace_period=grace, max_retry=retry)
    except HpsearchError as e:
        _fail_input(e)


@main.command()
@_study_options
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine (>1 needs a journal: or server storage).")
@_threads_option("cores / workers")
@_artifact_options
def run(spec_file: str, storage: str | None, n_trials: int | None, timeout: float | None,
        study_name: str | None, heartbeat_interval: int, grace_period: int, max_retry: int,
        workers: int, threads: int | None, artifacts: str | None, keep_models: int) -> None:
    """Run the study in SPEC until it has its budget of finished trials.

    A rerun resumes: trials already finished (complete or pruned) count toward the budget.
    With --workers K, K worker processes share the budget.
    """
    heartbeat = _heartbeat(heartbeat_interval, grace_period, max_retry)
    if workers == 1:
        _work(spec_file, storage, n_trials, timeout, study_name, heartbeat,
              threads or os.cpu_count() or 1, artifacts, keep_models)
        return
    from search.runner import run_workers
    from search.storage import resolve_url

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = _load(spec_file, n_trials=n_trials, timeout=timeout, name=study_name)
    url = resolve_url(storage)
    overrides = {"--n-trials": n_trials, "--timeout": timeout, "--study-name": study_name,
                 "--artifacts": artifacts, "--keep-models": keep_models}
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result, code = _guarded(url, spec_file, lambda: run_workers(
            spec_file, spec, url, workers, threads, heartbeat, overrides,
            echo=lambda line: click.echo(line, err=True)))
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_result(result)
    if code:
        sys.exit(code)


@main.command()
@_study_options
@_threads_option("all cores")
@_artifact_options
def worker(spec_file: str, storage: str | None, n_trials: int | None, timeout: float | None,
           study_name: str | None, heartbeat_interval: int, grace_period: int, max_retry: int,
           threads: int | None, artifacts: str | None, keep_models: int) -> None:
    """Join the study in SPEC as one worker (on any machine that reaches the storage).

    Creates the study if no worker has yet, runs trials while the study's budget lasts, and
    exits 0 when the study has its budget of finished trials.
    """
    _work(spec_file, storage, n_trials, timeout, study_name,
          _heartbeat(heartbeat_interval, grace_period, max_retry), threads, artifacts,
          keep_models)


@main.command()
@_study_options
def create(spec_file: str, storage: str | None, n_trials: int | None, timeout: float | None,
           study_name: str | None, heartbeat_interval: int, grace_period: int,
           max_retry: int) -> None:
    """Create the study in SPEC (checking spec and data) without running trials.

    For deployments that bootstrap the study before starting workers. Creating a study that
    exists checks that it is the same search.
    """
    import optuna

    from search.runner import create_study
    from search.storage import mask_url, resolve_url

    optuna.logging.set_verbosity(optuna.logging.ERROR)

    spec = _load(spec_file, n_trials=n_trials, timeout=timeout, name=study_name)
    url = resolve_url(storage)
    heartbeat = _heartbeat(heartbeat_interval, grace_period, max_retry)
    study = _guarded(url, spec_file, lambda: create_study(spec, url, heartbeat))
    click.echo(f"study {study.study_name!r} ready in {mask_url(url)}: "
               f"{len(study.trials)} trials so far, budget {spec.study.n_trials}")


def _work(spec_file: str, storage: str | None, n_trials: int | None, timeout: float | None,
          study_name: str | None, heartbeat: Any, threads: int | None,
          artifacts: str | None = None, keep_models: int = 1) -> None:
    """One worker: the code path of both `run` and `worker`."""
    import optuna

    from search.runner import Interrupted, TooManyFailures, run_study
    from search.storage import mask_url, resolve_url

    spec = _load(spec_file, n_trials=n_trials, timeout=timeout, name=study_name)
    url = resolve_url(storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    click.echo(f"study {spec.name!r}: {spec.study.resolved_direction} {spec.study.metric}, "
               f"{spec.study.n_trials} trials, storage {mask_url(url)}, "
               f"threads {threads or 'default'}", err=True)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    previous_int = signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    try:
        result = _guarded(url, spec_file, lambda: run_study(
            spec, url, on_trial=_print_progress(spec.study.metric), heartbeat=heartbeat,
            threads=threads, artifacts=artifacts, keep_models=keep_models))
    except Interrupted as e:
        click.echo(f"hpsearch: {e}", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("hpsearch: interrupted before any trial started", err=True)
        sys.exit(130)
    except TooManyFailures as e:
        raise click.ClickException(str(e)) from e
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    _print_result(result)


def _guarded(url: str, spec_file: str, call: Any) -> Any:
    """Run ``call``, turning input and storage errors into one-line, password-free errors."""
    try:
        return call()
    except HpsearchError as e:
        _fail_input(e, url)
    except Exception as e:
        if type(e).__name__ == "MetricMissingError":  # a spec/builder mismatch, not a crash
            raise InputError(f"{spec_file}: study.metric: {e}") from e
        if _is_storage_error(e):
            raise _storage_error(e, url) from e
        raise


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    from search.runner import request_stop

    request_stop()
    raise KeyboardInterrupt


def _is_storage_error(error: Exception) -> bool:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(error, (SQLAlchemyError, optuna.exceptions.StorageInternalError))


def _storage_error(error: Exception, url: str) -> InputError:
    from search.storage import describe_db_error, mask_url

    return InputError(f"cannot use storage {mask_url(url)}: {describe_db_error(error, url)}")


def _print_progress(metric: str) -> Any:
    def show(p: Progress) -> None:
        t = p.trial
        if t.state.name == "COMPLETE":
            outcome = f"{metric}={_fmt(t.value)}"
        elif t.state.name == "PRUNED":
            outcome = f"pruned at epoch {t.user_attrs.get('pruned_at_epoch', '?')}"
        else:
            outcome = f"failed: {t.user_attrs.get('fail_reason', 'see logs')}"
        best = f"best={_fmt(p.best_value)} (#{p.best_number})" if p.best_number is not None \
            else "best=-"
        click.echo(
            f"[{p.finished}/{p.target}] trial {t.number:>3} {t.state.name:<8} {outcome:<28} "
            f"{best}  epochs={t.user_attrs.get('epochs_run', '-')} pruned={p.pruned} "
            f"failed={p.failed}  {p.elapsed:.0f}s",
            err=True,
        )

    return show


def _print_result(result: RunResult) -> None:
    counts = result.counts
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(
        f"study {result.study_name!r}: {result.finished}/{result.target} finished "
        f"({counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
        f"{counts.get('FAIL', 0)} failed); {result.trials_run} trials run in "
        f"{result.seconds:.1f} s"
    )
    if result.best_number is None:
        click.echo("best: no complete trial yet")
        return
    click.echo(f"best: {_fmt(result.best_value)} (trial {result.best_number})")
    click.echo(f"best params: {_fmt_params(result.best_params)}")
    click.echo(f"storage: {result.storage}")


# --------------------------------------------------------------------------------------------
# validate


@main.command()
@click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))
def validate(spec_file: str) -> None:
    """Check SPEC and its data; print the resolved study and search space."""
    from search.data import check_all_rows
    from search.runner import prepare
    from search.space import describe_space

    spec = _load(spec_file)
    try:
        check_all_rows(spec)
        prepared = prepare(spec)
    except HpsearchError as e:
        _fail_input(e)
    s = spec.study
    click.echo(f"{spec_file}: valid")
    click.echo(f"study:  {spec.name}: {s.resolved_direction} {s.metric}, {s.n_trials} trials"
               f"{f', timeout {s.timeout:g} s' if s.timeout else ''}, seed {s.seed}, "
               f"sampler {s.sampler.name}, pruner {s.pruner.name}")
    click.echo(f"data:   {spec.data.source}: {prepared.data.summary()}, "
               f"fingerprint {prepared.data.fingerprint}")
    click.echo(f"model:  {spec.model.builder or spec.model.type}")
    click.echo("search space:")
    for name, text in describe_space(spec.search):
        click.echo(f"  {name:<20} {text}")


def _load_study(url: str, study_name: str) -> optuna.Study:
    """An existing study by name, or an input error listing the studies there."""
    import optuna

    from search.storage import open_storage

    store = open_storage(url, must_exist=True)
    names = optuna.get_all_study_names(storage=store)
    if study_name not in names:
        raise InputError(f"STUDY: expected one of {', '.join(names) or '(none)'}, got "
                         f"{study_name!r}")
    return optuna.load_study(study_name=study_name, storage=store)


# --------------------------------------------------------------------------------------------
# dashboard and report


@main.command()
@click.option("--storage", envvar="HPSEARCH_STORAGE", help=STORAGE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes an unauthenticated UI.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--artifacts", envvar="HPSEARCH_ARTIFACTS",
              help="Artifact store of the studies [default: beside the SQLite/journal file].")
def dashboard(storage: str | None, host: str, port: int, artifacts: str | None) -> None:
    """Serve optuna-dashboard on the study storage and its artifacts."""
    from search.dashboard import NO_AUTH_WARNING, is_loopback, serve
    from search.storage import mask_url, resolve_url

    url = resolve_url(storage)
    if not is_loopback(host):
        click.echo(NO_AUTH_WARNING.format(host=host), err=True)
    click.echo(f"dashboard for {mask_url(url)} on http://{host}:{port}/ (Ctrl-C stops it)",
               err=True)
    try:
        _guarded(url, "", lambda: serve(url, host, port, artifacts))
    except KeyboardInterrupt:
        sys.exit(0)


@main.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--storage", envvar="HPSEARCH_STORAGE", help=STORAGE_HELP)
@click.option("-o", "--output", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rows in the table of best trials.")
def report(study_name: str, storage: str | None, output: str, top: int) -> None:
    """Write one self-contained HTML report of STUDY (opens offline)."""
    import optuna

    from search.report import write_report
    from search.storage import resolve_url

    url = resolve_url(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def build() -> str:
        return write_report(_load_study(url, study_name), output, top=top)

    summary = _guarded(url, "", build)
    click.echo(f"wrote {output}: {summary}")


# --------------------------------------------------------------------------------------------
# export and train


@main.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--storage", envvar="HPSEARCH_STORAGE", help=STORAGE_HELP)
@click.option("-o", "--output", default="best.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="best.yaml or best.json.")
@click.option("--trial", type=click.IntRange(min=0), help="Export this trial, not the best.")
@click.option("--top", type=click.IntRange(min=1), help="Export the K best trials as a list.")
def export(study_name: str, storage: str | None, output: str, trial: int | None,
           top: int | None) -> None:
    """Export the best trial of STUDY: complete params, epochs, data settings, provenance."""
    import optuna

    from search.export import export_best
    from search.storage import resolve_url

    if trial is not None and top is not None:
        raise InputError("--trial and --top: expected one of them, got both")
    url = resolve_url(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def build() -> Any:
        return export_best(_load_study(url, study_name), output, trial=trial, top=top)

    exports = _guarded(url, "", build)
    for e in exports:
        click.echo(f"trial {e.trial}: {e.metric}={e.value:.6g}, best epoch {e.best_epoch}")
    click.echo(f"wrote {output}")


@main.command()
@click.argument("export_file", metavar="EXPORT", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="model", show_default=True,
              type=click.Path(file_okay=False), help="Directory for the model and its files.")
@click.option("--data", "data_source", help="Another data source (same columns), e.g. csv:PATH.")
@click.option("--fit-on", type=click.Choice(["train+val", "train"]), default="train+val",
              show_default=True, help="Rows to train the final model on.")
@click.option("--strict", is_flag=True, help="Refuse (not just warn) when the data differ.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output directory.")
def train(export_file: str, output: str, data_source: str | None, fit_on: str, strict: bool,
          force: bool) -> None:
    """Train the final model from EXPORT alone and evaluate it once on the test split."""
    from search.export import load_export, train_final

    try:
        loaded = load_export(export_file)
        if isinstance(loaded, list):
            raise InputError(f"{export_file}: expected one export (from `hpsearch export` "
                             f"without --top), got a list of {len(loaded)}")
        metrics = train_final(loaded, output, data_source=data_source, fit_on=fit_on,
                              strict=strict, force=force,
                              warn=lambda m: click.echo(m, err=True))
    except HpsearchError as e:
        _fail_input(e)
    shown = " ".join(f"{k}={v:.4g}" for k, v in metrics["test"].items())
    click.echo(f"trained on {fit_on} for {metrics['epochs']} epochs; test: {shown}")
    click.echo(f"wrote {output}/model.keras, metrics.json, history.csv, MODEL_CARD.md")


# --------------------------------------------------------------------------------------------
# status


@main.command()
@click.argument("study_name", metavar="[STUDY]", required=False)
@click.option("--storage", envvar="HPSEARCH_STORAGE", help=STORAGE_HELP)
@click.option("--grace-period", type=click.IntRange(min=2), default=180, show_default=True,
              envvar="HPSEARCH_GRACE_PERIOD",
              help="A running trial without a heartbeat for this long is shown as stale.")
def status(study_name: str | None, storage: str | None, grace_period: int) -> None:
    """Show the studies in the storage (or one STUDY): trial counts, best value, running trials.

    Running trials show their worker (host:pid) and age; STALE marks those whose worker sent no
    heartbeat within the grace period (the next worker to start a trial fails and re-runs them).
    """
    import optuna

    from search.storage import Heartbeat, mask_url, open_storage, resolve_url

    url = resolve_url(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    heartbeat = Heartbeat(interval=min(60, grace_period - 1), grace_period=grace_period)
    try:
        store = open_storage(url, must_exist=True, heartbeat=heartbeat)
        names = optuna.get_all_study_names(storage=store)
    except HpsearchError as e:
        _fail_input(e, url)
    except Exception as e:
        if _is_storage_error(e):
            raise _storage_error(e, url) from e
        raise
    click.echo(f"storage: {mask_url(url)}")
    if study_name is not None and study_name not in names:
        raise InputError(f"{mask_url(url)}: STUDY: expected one of {', '.join(names) or '(none)'}"
                         f", got {study_name!r}")
    if not names:
        click.echo("no studies yet")
        return
    for name in [study_name] if study_name else names:
        _print_study(optuna.load_study(study_name=name, storage=store),
                     detailed=study_name is not None)


def _print_study(study: optuna.Study, detailed: bool) -> None:
    from optuna.trial import TrialState

    from search.runner import count_states

    counts = count_states(study)
    attrs = study.user_attrs
    target = attrs.get("n_trials")
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    metric = attrs.get("metric", "value")
    click.echo(
        f"\nstudy {study.study_name}: {study.direction.name.lower()} {metric}, "
        f"{finished}/{target if target else '?'} finished "
        f"({counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
        f"{counts.get('FAIL', 0)} failed, {counts.get('RUNNING', 0)} running)"
    )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        extra = best.user_attrs.get("val_metrics", {})
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in extra.items() if k != metric)
        click.echo(f"  best: {metric}={_fmt(best.value)} (trial {best.number}, epoch "
                   f"{best.user_attrs.get('best_epoch', '?')}) {shown}".rstrip())
        click.echo(f"  best params: {_fmt_params(best.params)}")
    else:
        click.echo("  best: no complete trial yet")
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = _stale_trial_ids(study) if running else set()
    now = datetime.now()
    for trial in running:
        age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0
        host, _, pid = str(trial.user_attrs.get("worker", "?:?")).rpartition(":")
        mark = "  STALE: no heartbeat within the grace period" if trial._trial_id in stale else ""
        click.echo(f"  running: trial {trial.number} on host {host or '?'} pid {pid}, "
                   f"for {age:.0f} s{mark}")
    if detailed:
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        for trial in failed[-5:]:
            click.echo(f"  failed: trial {trial.number}: "
                       f"{trial.user_attrs.get('fail_reason', 'see the worker log')}")



def _stale_trial_ids(study: optuna.Study) -> set[int]:
    """Running trials whose heartbeat is older than the grace period (RDB storages only)."""
    from search.storage import unwrap

    backend = unwrap(study._storage)
    finder = getattr(backend, "_get_stale_trial_ids", None)
    if finder is None or backend.get_heartbeat_interval() is None:
        return set()
    return set(finder(study._study_id))
