"""Storage URLs -> Optuna storages that survive long trials, restarts and dead workers.

Precedence: the ``--storage`` flag, then ``HPSEARCH_STORAGE``, then ``sqlite:///hpsearch.db`` in
the current directory. Supported:

- ``sqlite:///PATH``: one worker (plus readers such as the dashboard); WAL and a busy timeout.
- ``journal:PATH``: Optuna's journal file, for several worker processes on one machine.
- ``postgresql+psycopg://USER:PASS@HOST/DB`` and ``mysql+pymysql://USER:PASS@HOST/DB``: many
  workers on many machines.

RDB storages run Optuna's heartbeat: a trial whose worker died is failed after the grace period
and re-run with the same params (up to ``max_retry`` times). A storage call that loses its
connection (a database restart) is retried on a new connection for a while instead of failing
the trial. Trial writes go through :mod:`search.fast_rdb`. Passwords are never shown: see
:func:`mask_url`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import HpsearchError, SpecError

if TYPE_CHECKING:
    import optuna

DEFAULT_URL = "sqlite:///hpsearch.db"
ENV_VAR = "HPSEARCH_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 10
# How long a storage call keeps retrying while the database is unreachable.
RECONNECT_WINDOW_S = 180.0

_log = logging.getLogger("hpsearch.storage")


class StorageError(HpsearchError):
    """The storage cannot be used: unreachable, refused, unknown database, bad URL."""


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's heartbeat settings for RDB storages.

    A worker records a heartbeat every ``interval`` seconds while a trial runs; a RUNNING trial
    whose last heartbeat is older than ``grace_period`` is failed by the next worker that starts
    a trial, and re-run with the same params up to ``max_retry`` times. The defaults suit trials
    of seconds to hours: one small write a minute per worker, and a dead worker's trial is
    picked up again within about three minutes.
    """

    interval: int = 60
    grace_period: int = 180
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.interval < 1 or self.grace_period <= self.interval or self.max_retry < 0:
            raise SpecError(None, "--heartbeat-interval/--grace-period/--max-retry",
                            "interval >= 1, grace period > interval, max retry >= 0",
                            f"<{self.interval}, {self.grace_period}, {self.max_retry}>")


def resolve_url(flag: str | None = None) -> str:
    """The storage URL: the flag, else $HPSEARCH_STORAGE, else the default SQLite file."""
    return flag or os.environ.get(ENV_VAR) or DEFAULT_URL


def kind(url: str) -> str:
    """sqlite, journal, postgresql, mysql or the URL's scheme."""
    scheme = url.split(":", 1)[0]
    return scheme.split("+", 1)[0]


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def mask_text(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (and the URL itself) masked wherever it appears."""
    text = text.replace(url, mask_url(url))
    password = _password(url)
    if password:
        from urllib.parse import quote

        for form in {password, quote(password, safe="")}:
            text = text.replace(form, "***")
    return text


def _password(url: str) -> str | None:
    match = re.search(r"://[^/@:]*:([^@/]*)@", url)
    if not match:
        return None
    from urllib.parse import unquote

    return unquote(match.group(1)) or None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for in-memory or other databases)."""
    if kind(url) != "sqlite":
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:PATH`` URL."""
    if kind(url) != "journal":
        return None
    return Path(url.split(":", 1)[1].removeprefix("//"))


def check_url(url: str) -> None:
    """Raise a SpecError for a URL we cannot use: unparsable, or no driver installed."""
    if kind(url) == "journal":
        if not url.split(":", 1)[1]:
            raise SpecError(None, "--storage", "journal:PATH", url)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise SpecError(
            None, "--storage", "a storage URL: sqlite:///PATH, journal:PATH, "
            "postgresql+psycopg://USER:PASS@HOST/DB or mysql+pymysql://USER:PASS@HOST/DB",
            mask_url(url),
        ) from e
    except ImportError as e:
        raise SpecError(
            None, "--storage", f"an installed driver for {mask_url(url)} (pip install "
            "'hpsearch[postgres]' or 'hpsearch[mysql]')", f"<{e}>",
        ) from e


def describe_db_error(error: BaseException, url: str) -> str:
    """The first line of the database's own message, with the password masked."""
    cause: BaseException | None = error
    while cause is not None:
        orig = getattr(cause, "orig", None)
        if orig is not None:
            cause = orig
            break
        if cause.__cause__ is None:
            break
        cause = cause.__cause__
    lines = str(cause or error).strip().splitlines()
    return mask_text(lines[0] if lines else type(error).__name__, url)


# --------------------------------------------------------------------------------------------
# Opening.


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine settings per database kind."""
    if kind(url) == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    settings: dict[str, Any] = {
        # A worker needs one connection (two while a heartbeat is written): keep pools small
        # so that many workers fit in the server's connection limit.
        "pool_size": 2,
        "max_overflow": 2,
        # No pre-ping: it costs a round trip on every storage call. A connection dropped by a
        # restart or a firewall fails its call instead, is discarded by the pool, and
        # RetryingStorage repeats the call on a new connection.
        "pool_pre_ping": False,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
    }
    if kind(url) == "postgresql":
        # A commit returns without waiting for its WAL flush (PostgreSQL still flushes within
        # ~0.6 s, and a crash cannot corrupt the database). Trial writes are many and small;
        # what a server crash can lose is the last fraction of a second of them, after which the
        # heartbeat fails and re-runs the trial. Measured: README, Performance.
        settings["connect_args"]["options"] = "-c synchronous_commit=off"
    return settings


def open_storage(
    url: str, *, must_exist: bool = False, heartbeat: Heartbeat | None = None
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``.

    With ``must_exist``, a missing SQLite or journal file is an error instead of being created.
    Raises SpecError for a bad URL and StorageError for a database that cannot be used.
    """
    check_url(url)
    heartbeat = heartbeat or Heartbeat()
    if kind(url) == "journal":
        return _open_journal(url, must_exist)
    path = sqlite_path(url)
    if path is not None:
        if must_exist and not path.exists():
            raise StorageError(None, "--storage", "an existing study storage (run `hpsearch "
                               "run SPEC` first, or pass --storage / $HPSEARCH_STORAGE)",
                               f"<no file {path}>")
        path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(path)
    return RetryingStorage(_open_rdb(url, heartbeat), url)


def _open_rdb(url: str, heartbeat: Heartbeat) -> optuna.storages.BaseStorage:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from search.fast_rdb import FastRDBStorage

    # Several workers starting at once may race to create the tables; the losers retry.
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                # Heartbeat and its retry callback are marked experimental; they are the
                # documented way to recover trials of dead workers.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = FastRDBStorage(
                    url,
                    engine_kwargs=engine_kwargs(url),
                    heartbeat_interval=heartbeat.interval,
                    grace_period=heartbeat.grace_period,
                    heartbeat_stale_trial_callback=optuna.storages
                    .RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry),
                )
            return optuna.storages._CachedStorage(storage)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            if not _is_creation_race(e) or attempt == 4:
                raise StorageError(None, "--storage", "a database that accepts the "
                                   "connection", f"<{mask_url(url)}: "
                                   f"{describe_db_error(e, url)}>") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _open_journal(url: str, must_exist: bool) -> optuna.storages.BaseStorage:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = journal_path(url)
    assert path is not None
    if must_exist and not path.exists():
        raise StorageError(None, "--storage", "an existing journal file", f"<no file {path}>")
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return optuna.storages.JournalStorage(backend)


def _enable_wal(path: Path) -> None:
    # WAL lets readers (the dashboard, `status`) read while a worker writes; it is a property
    # of the database file, so setting it once is enough.
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


# --------------------------------------------------------------------------------------------
# Surviving a database restart.


def _is_creation_race(error: BaseException) -> bool:
    """True for errors of workers racing to create Optuna's tables (the loser retries)."""
    text = describe_db_error(error, "").lower()
    return any(word in text for word in ("already exists", "duplicate", "deadlock"))


def _is_connection_error(error: BaseException) -> bool:
    """True for errors that mean "the database is unreachable right now"."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (OperationalError, InterfaceError)):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RetryingStorage:
    """Delegates to an Optuna storage and retries calls that fail for lack of a connection.

    Registered as a virtual subclass of Optuna's BaseStorage and BaseHeartbeat (below), so that
    Optuna uses it as is and runs the heartbeat through it.
    """

    def __init__(self, backend: Any, url: str, window: float = RECONNECT_WINDOW_S) -> None:
        self._backend = backend
        self._url = url
        self._window = window

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method: Callable[..., Any] = getattr(self._backend, name)
        deadline = time.monotonic() + self._window
        delay = 0.25
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as e:
                if not _is_connection_error(e) or time.monotonic() > deadline:
                    raise
                _log.warning("storage unreachable (%s); retrying %s in %.1f s",
                             describe_db_error(e, self._url), name, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if not callable(attr) or name.startswith("__"):
            return attr
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _register_virtual_subclass() -> None:
    from optuna.storages import BaseStorage
    from optuna.storages._heartbeat import BaseHeartbeat

    BaseStorage.register(RetryingStorage)
    BaseHeartbeat.register(RetryingStorage)


_register_virtual_subclass()


def unwrap(storage: Any) -> Any:
    """The RDBStorage or JournalStorage behind our wrappers."""
    while True:
        inner = getattr(storage, "_backend", None)
        if inner is None or not hasattr(inner, "get_all_studies"):
            return storage
        storage = inner


# --------------------------------------------------------------------------------------------
# The budget lock: counting trials and asking for a new one is atomic across workers.


@contextlib.contextmanager
def budget_lock(url: str, storage: Any, study_id: int) -> Iterator[None]:
    """Hold a lock, shared by every worker of the study, while the budget is checked."""
    key = f"hpsearch:{study_id}"
    if kind(url) in ("postgresql", "mysql"):
        engine = unwrap(storage).engine
        with engine.connect() as conn:
            _acquire_server_lock(conn, kind(url), key)
            try:
                yield
            finally:
                _release_server_lock(conn, kind(url), key)
        return
    path = sqlite_path(url) or journal_path(url)
    if path is None:  # in-memory: one process
        yield
        return
    lock_file = path.with_name(path.name + ".budget.lock")
    with open(lock_file, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_number(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def _acquire_server_lock(conn: Any, db: str, key: str) -> None:
    from sqlalchemy import text

    if db == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _lock_number(key)})
    else:
        got = conn.execute(text("SELECT GET_LOCK(:k, 120)"), {"k": key}).scalar()
        if got != 1:
            raise TimeoutError(f"could not take the study's budget lock {key!r} in 120 s")
    conn.commit()


def _release_server_lock(conn: Any, db: str, key: str) -> None:
    from sqlalchemy import text

    with contextlib.suppress(Exception):  # a dropped connection has released it already
        if db == "postgresql":
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_number(key)})
        else:
            conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": key})
        conn.commit()
