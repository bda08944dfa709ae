"""Storage URLs: precedence, masking, SQLite settings, clear errors."""

from __future__ import annotations

import sqlite3

import pytest

from search.cli import main
from search.errors import SpecError
from search.storage import (
    DEFAULT_URL,
    mask_text,
    mask_url,
    open_storage,
    resolve_url,
    unwrap,
)


def test_flag_beats_environment_beats_default(monkeypatch):
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///hpsearch.db"
    monkeypatch.setenv("HPSEARCH_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"
    assert resolve_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_passwords_are_masked():
    url = "postgresql+psycopg://alice:s3cr%40t@db.example:5432/hp"
    assert mask_url(url) == "postgresql+psycopg://alice:***@db.example:5432/hp"
    assert "s3cr" not in mask_text(f"could not connect to {url}: bad password s3cr@t", url)
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_gets_wal_and_a_busy_timeout(tmp_path):
    path = tmp_path / "deep" / "dir" / "s.db"
    storage = open_storage(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rdb = unwrap(storage)
    assert rdb.engine.dialect.name == "sqlite"
    connect_args = rdb.engine_kwargs["connect_args"]
    assert connect_args["timeout"] >= 30


def test_a_bad_url_is_an_input_error():
    with pytest.raises(SpecError, match=r"--storage: expected a storage URL: sqlite:///PATH, "
                                        r"journal:PATH"):
        open_storage("nosuchdb://x:pw@host/db")


def test_status_on_a_missing_sqlite_file_does_not_create_it(runner, tmp_path):
    result = runner.invoke(main, ["status", "--storage", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2
    assert "expected an existing study storage" in result.output
    assert not (tmp_path / "none.db").exists()


def test_status_never_prints_the_password(runner):
    url = "postgresql+psycopg://hp:TopSecret99@127.0.0.1:1/none"
    result = runner.invoke(main, ["status", "--storage", url])
    assert result.exit_code == 2, result.output
    assert "TopSecret99" not in result.output
    assert "postgresql+psycopg://hp:***@127.0.0.1:1/none" in result.output


def test_unknown_study_in_status_names_the_ones_there(runner, sqlite_url):
    import optuna

    optuna.create_study(study_name="one", storage=sqlite_url)
    result = runner.invoke(main, ["status", "two", "--storage", sqlite_url])
    assert result.exit_code == 2
    assert "STUDY: expected one of one, got 'two'" in result.output


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def any_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")


def test_fast_writes_store_what_optuna_reads_back(any_url):
    """The one-statement writes (search.fast_rdb) round-trip through Optuna's own reads."""
    import math

    import optuna

    from search.fast_rdb import FastRDBStorage

    storage = open_storage(any_url)
    assert isinstance(unwrap(storage), FastRDBStorage)
    study = optuna.create_study(storage=storage, study_name="fast")
    values = [0.5, float("nan"), float("inf"), float("-inf"), 0.25]
    for number in range(2):  # the second trial takes the fast path for params too
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("act", ["relu", "tanh"])
        for step, value in enumerate(values, start=1):
            trial.report(value, step=step)
        # Trial.report ignores a step reported twice; the storage itself overwrites.
        storage.set_trial_intermediate_value(trial._trial_id, 5, 0.125)
        trial.set_user_attr("seed", number)
        trial.set_user_attr("seed", {"again": [number]})  # overwritten, not duplicated
        study.tell(trial, 1.0 + number)
    fresh = optuna.load_study(study_name="fast", storage=open_storage(any_url))
    for number, frozen in enumerate(fresh.trials):
        got = frozen.intermediate_values
        assert got[1] == 0.5 and math.isnan(got[2]) and got[3] == math.inf
        assert got[4] == -math.inf and got[5] == 0.125 and len(got) == 5
        assert frozen.user_attrs == {"seed": {"again": [number]}}
        assert set(frozen.params) == {"lr", "act"}
        assert frozen.distributions["lr"] == optuna.distributions.FloatDistribution(
            1e-4, 1e-1, log=True)
    assert fresh.trials[1].params == study.trials[1].params


def test_fast_writes_refuse_a_finished_trial(any_url):
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    storage = open_storage(any_url)
    study = optuna.create_study(storage=storage, study_name="done")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    trial_id = study.trials[0]._trial_id
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial_id, 1, 0.5)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial_id, "late", 1)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_param(trial_id, "x", 0.5,
                                optuna.distributions.FloatDistribution(0, 1))
    frozen = optuna.load_study(study_name="done", storage=open_storage(any_url)).trials[0]
    assert frozen.intermediate_values == {} and frozen.user_attrs == {}


def test_sqlite_commits_do_not_wait_for_fsync(sqlite_url):
    storage = open_storage(sqlite_url)
    with unwrap(storage).engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
