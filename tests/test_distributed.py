"""Many workers on one study: real PostgreSQL and MariaDB servers, real processes, real faults."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import HPSEARCH, python_env

# Trials of a second or two; the search space is wide enough that params differ per trial.
STUDY = """
study: {{name: dist, n_trials: {n}, seed: 5, pruner: {pruner}}}
data: {{source: sklearn:{data}}}
search:
  learning_rate: {{low: 1.0e-3, high: 1.0e-1, log: true}}
  epochs: {epochs}
  batch_size: {{choices: [16, 32]}}
  n_layers: {{low: 1, high: 2}}
  units: {{low: {units_low}, high: {units_high}, per_layer: true}}
  activation: {{choices: [relu, tanh]}}
  dropout: {{low: 0.0, high: 0.2}}
  early_stopping: {{patience: 50}}
"""


def study_file(tmp_path: Path, n: int, *, epochs: int = 4, data: str = "iris",
               pruner: str = "{name: median, options: {n_startup_trials: 2}}",
               units: tuple[int, int] = (4, 16), name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(STUDY.format(n=n, epochs=epochs, data=data, pruner=pruner,
                                 units_low=units[0], units_high=units[1]))
    return path


def hpsearch(*args: str, url: str | None = None, timeout: float = 600,
             **kwargs) -> subprocess.CompletedProcess[str]:
    env = python_env()
    if url:
        env["HPSEARCH_STORAGE"] = url
    return subprocess.run(HPSEARCH + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout, **kwargs)


def start_worker(spec: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    env = dict(python_env(), HPSEARCH_STORAGE=url)
    return subprocess.Popen(HPSEARCH + ["worker", str(spec), "--threads", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def load(url: str, name: str = "dist") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def assert_exact_budget(study: optuna.Study, n: int) -> None:
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == n, [(t.number, t.state.name) for t in study.trials]
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    for trial in study.trials:
        for name, value in trial.params.items():
            dist = trial.distributions[name]
            assert dist._contains(dist.to_internal_repr(value)), (trial.number, name, value)


def wait_for(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(step)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def running_trial_of(url: str, pid: int) -> optuna.trial.FrozenTrial | None:
    try:
        study = load(url)
    except KeyError:
        return None
    for trial in study.get_trials(states=(TrialState.RUNNING,)):
        if str(trial.user_attrs.get("worker", "")).endswith(f":{pid}"):
            return trial
    return None


# --------------------------------------------------------------------------------------------


def test_four_workers_finish_exactly_the_budget(server_url, tmp_path):
    spec = study_file(tmp_path, n=12)
    done = hpsearch("run", str(spec), "--workers", "4", url=server_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "starting 4 workers, 1 TensorFlow threads each" in done.stderr
    study = load(server_url)
    assert_exact_budget(study, 12)
    assert sorted(t.number for t in study.trials) == list(range(12))
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) >= 2, workers
    assert {t.user_attrs["threads"] for t in study.trials} == {1}


def test_journal_file_workers_share_one_machine(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    spec = study_file(tmp_path, n=8)
    done = hpsearch("run", str(spec), "--workers", "2", url=url)
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(
        study_name="dist",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    assert_exact_budget(study, 8)
    assert sorted(t.number for t in study.trials) == list(range(8))


def test_sqlite_refuses_several_workers_and_names_the_alternatives(tmp_path):
    spec = study_file(tmp_path, n=2)
    done = hpsearch("run", str(spec), "--workers", "2", "--storage",
                    f"sqlite:///{tmp_path / 's.db'}")
    assert done.returncode == 2
    assert ("--workers: expected 1 worker on a SQLite storage (SQLite serializes writers); for "
            "several workers use --storage journal:hpsearch.journal on one machine, or "
            "PostgreSQL or MySQL, got 2") in done.stderr
    assert not (tmp_path / "s.db").exists()


def test_workers_starting_at_once_create_exactly_one_study(server_url, tmp_path):
    spec = study_file(tmp_path, n=3)
    env = dict(python_env(), HPSEARCH_STORAGE=server_url)
    procs = [subprocess.Popen(HPSEARCH + ["create", str(spec)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0, 0, 0, 0], results
    for out, err, _ in results:
        assert "study 'dist' ready in" in out
        assert "Traceback" not in err
    assert optuna.get_all_study_names(server_url) == ["dist"]
    study = load(server_url)
    assert study.trials == [] and study.user_attrs["hpsearch_ready"] is True


def test_kill_9_one_worker_mid_trial_and_the_survivor_reruns_its_params(pg_url, tmp_path):
    spec = study_file(tmp_path, n=5, data="digits", epochs=12, pruner="none",
                      units=(64, 128))
    fast = ["--heartbeat-interval", "1", "--grace-period", "4"]
    assert hpsearch("create", str(spec), url=pg_url).returncode == 0
    victim = start_worker(spec, pg_url, *fast)
    doomed = wait_for(lambda: running_trial_of(pg_url, victim.pid), 120, "a running trial")
    survivor = start_worker(spec, pg_url, *fast)
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out

    study = load(pg_url)
    assert_exact_budget(study, 5)
    dead = study.trials[doomed.number]
    assert dead.state == TrialState.FAIL
    reruns = [t for t in study.trials if t.system_attrs.get("failed_trial") == doomed.number]
    assert len(reruns) == 1 and reruns[0].params == dead.params
    assert reruns[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_every_worker_killed_shows_stale_trials_and_the_next_run_reruns_them(pg_url, tmp_path):
    spec = study_file(tmp_path, n=3, data="digits", epochs=12, pruner="none",
                      units=(64, 128))
    fast = ["--heartbeat-interval", "1", "--grace-period", "3"]
    assert hpsearch("create", str(spec), url=pg_url).returncode == 0
    workers = [start_worker(spec, pg_url, *fast) for _ in range(2)]
    for proc in workers:
        wait_for(lambda proc=proc: running_trial_of(pg_url, proc.pid), 120, "running trials")
    for proc in workers:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    orphans = load(pg_url).get_trials(states=(TrialState.RUNNING,))
    assert len(orphans) == 2
    time.sleep(4)  # past the grace period

    status = hpsearch("status", "dist", "--grace-period", "3", url=pg_url)
    assert status.returncode == 0, status.stderr
    stale_lines = [ln for ln in status.stdout.splitlines() if "STALE" in ln]
    assert len(stale_lines) == 2, status.stdout
    for trial in orphans:
        pid = trial.user_attrs["worker"].rpartition(":")[2]
        assert any(f"running: trial {trial.number} on host " in ln and f" pid {pid}, " in ln
                   for ln in stale_lines), status.stdout
    assert {t.user_attrs["worker"].rpartition(":")[2] for t in orphans} == \
        {str(p.pid) for p in workers}

    rerun = hpsearch("run", str(spec), *fast, url=pg_url)
    assert rerun.returncode == 0, rerun.stderr
    study = load(pg_url)
    assert_exact_budget(study, 3)
    for orphan in orphans:
        assert study.trials[orphan.number].state == TrialState.FAIL
        assert any(t.system_attrs.get("failed_trial") == orphan.number and
                   t.params == orphan.params for t in study.trials)


def _pg_cluster() -> str:
    return sorted(os.listdir("/etc/postgresql"))[-1]


def test_postgres_restart_mid_study_loses_nothing(pg_url, tmp_path):
    spec = study_file(tmp_path, n=8, data="digits", epochs=10, pruner="none", units=(32, 64))
    assert hpsearch("create", str(spec), url=pg_url).returncode == 0
    workers = [start_worker(spec, pg_url) for _ in range(2)]
    wait_for(lambda: len(load(pg_url).get_trials(states=(TrialState.COMPLETE,))) >= 1, 180,
             "a first complete trial")
    restart = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _pg_cluster(),
                              "main", "restart"], capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    outputs = [proc.communicate(timeout=400)[0] for proc in workers]
    assert [proc.returncode for proc in workers] == [0, 0], outputs
    # The restart hit the workers mid-study: their storage calls failed and were retried.
    assert any("storage unreachable" in out for out in outputs), outputs
    study = load(pg_url)
    assert_exact_budget(study, 8)
    assert not study.get_trials(states=(TrialState.FAIL,)), outputs
    assert sorted(t.number for t in study.trials) == list(range(8))


def test_a_worker_with_a_different_spec_or_data_is_refused(pg_url, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(80, 3)), y=np.arange(80) % 2)
    text = "study: {name: guarded, n_trials: 2}\ndata: {source: 'npz:d.npz'}\n" \
           "search: {epochs: 2, learning_rate: {low: 0.001, high: 0.1, log: true}}\n"
    (tmp_path / "a.yaml").write_text(text)
    assert hpsearch("create", str(tmp_path / "a.yaml"), url=pg_url).returncode == 0
    before = load(pg_url, "guarded")

    (tmp_path / "b.yaml").write_text(text.replace("high: 0.1", "high: 0.5"))
    other_spec = hpsearch("worker", str(tmp_path / "b.yaml"), url=pg_url)
    assert other_spec.returncode == 2
    assert ("b.yaml: search.learning_rate.high: expected the values stored with study 'guarded'"
            in other_spec.stderr), other_spec.stderr

    np.savez(tmp_path / "d.npz", x=rng.normal(size=(80, 3)), y=np.arange(80) % 2)
    other_data = hpsearch("worker", str(tmp_path / "a.yaml"), url=pg_url)
    assert other_data.returncode == 2
    assert (f"a.yaml: data: expected the data of study 'guarded' (fingerprint "
            f"{before.user_attrs['data_fingerprint']}), got <data with fingerprint"
            in other_data.stderr), other_data.stderr

    after = load(pg_url, "guarded")
    assert after.trials == [] and after.user_attrs == before.user_attrs


@pytest.mark.parametrize("case", ["wrong password", "unreachable host", "unknown database"])
@pytest.mark.parametrize("command", ["run", "status", "create"])
def test_connection_problems_are_one_line_with_the_password_masked(tmp_path, case, command):
    import pymysql

    secret = "Wr0ng-Secret-42"
    if case == "wrong password":
        conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("CREATE USER IF NOT EXISTS 'hp_pw'@'%' IDENTIFIED BY 'right-one'")
            cur.execute("CREATE USER IF NOT EXISTS 'hp_pw'@'localhost' IDENTIFIED BY "
                        "'right-one'")
        conn.close()
        url = f"mysql+pymysql://hp_pw:{secret}@127.0.0.1:3306/test"
        reason = "Access denied for user 'hp_pw'"
    elif case == "unreachable host":
        url = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:9/test"
        reason = "Connection refused"
    else:
        url = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/no_such_db_hp"
        reason = 'database "no_such_db_hp" does not exist'
    spec = study_file(tmp_path, n=2)
    args = [command] + ([str(spec)] if command != "status" else []) + ["--storage", url]
    done = hpsearch(*args, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert secret not in output
    errors = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and reason in errors[0], output
    assert url.replace(secret, "***") in errors[0]
    assert "Traceback" not in output


def test_the_thread_cap_takes_effect(tmp_path, sqlite_url):
    """With --threads 1 a worker's training uses one core: CPU time stays near wall time."""
    spec = tmp_path / "wide.yaml"
    spec.write_text("study: {name: wide, n_trials: 1, pruner: none}\n"
                    "data: {source: sklearn:digits}\n"
                    "search: {epochs: 6, batch_size: 256, n_layers: 3, units: 1024}\n")
    for threads, limit in (("1", 1.3),):
        proc = subprocess.Popen(HPSEARCH + ["worker", str(spec), "--threads", threads,
                                            "--storage", sqlite_url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=python_env())
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        trial = optuna.load_study(study_name="wide", storage=sqlite_url).trials[0]
        assert trial.user_attrs["threads"] == int(threads)
        cpu = trial.user_attrs["fit_cpu_seconds"] / trial.user_attrs["fit_seconds"]
        assert cpu <= limit, (threads, cpu)


def test_interrupting_run_with_workers_leaves_nothing_running(tmp_path):
    journal = tmp_path / "study.journal"
    url = f"journal:{journal}"
    spec = study_file(tmp_path, n=20, data="digits", epochs=12, pruner="none", units=(64, 128))
    env = dict(python_env(), HPSEARCH_STORAGE=url)
    parent = subprocess.Popen(HPSEARCH + ["run", str(spec), "--workers", "2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))

    def two_running() -> bool:
        try:
            study = optuna.load_study(study_name="dist", storage=storage)
        except KeyError:
            return False
        return len(study.get_trials(states=(TrialState.RUNNING,))) == 2

    wait_for(two_running, 120, "both workers running a trial", step=0.5)
    parent.send_signal(signal.SIGTERM)  # as `docker stop` would: only the parent gets it
    out, err = parent.communicate(timeout=180)
    assert parent.returncode == 130, err
    assert err.count("hpsearch: interrupted: study 'dist' has") == 2, err
    study = optuna.load_study(study_name="dist", storage=storage)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # A worker's trial is either stopped (FAIL, reason "interrupted") or, when the interrupt
    # landed where Python drops it (a finalizer), finished before the worker stopped.
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert 1 <= len(failed) <= 2
    assert all(t.user_attrs.get("fail_reason") == "interrupted" for t in failed)
