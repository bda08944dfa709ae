"""Shared fixtures: small study files, isolated storages, a CLI runner."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

# Quiet TensorFlow in every test process, and keep its thread pools small on 2 cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TESTS_DIR = Path(__file__).parent
# A small study every test can afford: iris, a few epochs, a few trials.
SMALL_STUDY = """
study:
  name: small
  n_trials: 6
  seed: 3
  sampler: {name: tpe, options: {n_startup_trials: 3}}
  pruner: {name: median, options: {n_startup_trials: 2, n_warmup_steps: 1}}
data:
  source: sklearn:iris
  seed: 0
search:
  learning_rate: {low: 1.0e-4, high: 1.0e-1, log: true}
  epochs: 8
  batch_size: {choices: [16, 32]}
  n_layers: {low: 1, high: 2}
  units: {low: 4, high: 16}
  activation: {choices: [relu, tanh]}
  optimizer: {choices: [adam, sgd]}
  dropout: {low: 0.0, high: 0.3}
  l2: {low: 1.0e-6, high: 1.0e-3, log: true}
  early_stopping: {patience: {low: 2, high: 4}}
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test runs in its own directory with no storage from the environment."""
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a study file (YAML text, dedented) into the test's directory; return its path."""

    def write(text: str = SMALL_STUDY, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


def python_env() -> dict[str, str]:
    """Environment for hpsearch subprocesses (the tests' own interpreter and package)."""
    env = dict(os.environ)
    env.pop("HPSEARCH_STORAGE", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR.parent), env.get("PYTHONPATH", "")])
    return env


HPSEARCH = [sys.executable, "-m", "search"]


# --------------------------------------------------------------------------------------------
# Real database servers: a fresh database per test, dropped afterwards. No skipping: a server
# that is down fails the test (.ci/run starts the servers).

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
MYSQL_ADMIN = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def _db_name() -> str:
    import uuid

    return f"hp_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_url() -> str:
    import psycopg

    name = _db_name()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def mysql_url() -> str:
    import pymysql

    name = _db_name()
    conn = pymysql.connect(**MYSQL_ADMIN, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


@pytest.fixture(params=["postgresql", "mysql"])
def server_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")
