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
