"""Storage URLs -> Optuna storages; passwords never shown.

Precedence: the ``--storage`` flag, then ``HPSEARCH_STORAGE``, then ``sqlite:///hpsearch.db`` in
the current directory. SQLite gets WAL and a busy timeout so that one worker and a dashboard can
share it; server databases get ``pool_pre_ping``. RDB storages run Optuna's heartbeat, so a trial
whose worker died is failed (and retried) instead of staying RUNNING forever.
"""

from __future__ import annotations

import os
import re
import sqlite3
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from search.errors import SpecError

if TYPE_CHECKING:
    import optuna

DEFAULT_URL = "sqlite:///hpsearch.db"
ENV_VAR = "HPSEARCH_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 60
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 180
MAX_RETRY = 3


def resolve_url(flag: str | None = None) -> str:
    """The storage URL: the flag, else $HPSEARCH_STORAGE, else the default SQLite file."""
    return flag or os.environ.get(ENV_VAR) or DEFAULT_URL


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def mask_text(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (and the URL itself) masked wherever it appears."""
    text = text.replace(url, mask_url(url))
    password = _password(url)
    return text.replace(password, "***") if password else text


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:  # an unparsable URL has no password we can find
        match = re.search(r"://[^/@:]*:([^@/]*)@", url)
        return match.group(1) if match else None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for in-memory or other databases)."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


def check_url(url: str) -> None:
    """Raise a SpecError for a URL that SQLAlchemy cannot parse or has no driver for."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise SpecError(
            None, "--storage", "a database URL such as sqlite:///hpsearch.db or "
            "postgresql+psycopg://user:pass@host/db", mask_url(url),
        ) from e
    except ImportError as e:
        raise SpecError(
            None, "--storage", f"an installed driver for {mask_url(url)} (pip install "
            "'hpsearch[postgres]' or 'hpsearch[mysql]')", f"<{e}>",
        ) from e


def open_storage(url: str, *, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; with ``must_exist``, a missing SQLite file is an error."""
    import optuna

    check_url(url)
    engine_kwargs: dict[str, object] = {}
    path = sqlite_path(url)
    if url.startswith("sqlite:"):
        if path is not None:
            if must_exist and not path.exists():
                raise SpecError(None, "--storage", "an existing study storage (run `hpsearch "
                                "run SPEC` first, or pass --storage / $HPSEARCH_STORAGE)",
                                f"<no file {path}>")
            path.parent.mkdir(parents=True, exist_ok=True)
            _enable_wal(path)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        # Heartbeat and its retry callback are marked experimental; they are the documented way.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRY
            ),
        )


def _enable_wal(path: Path) -> None:
    # WAL lets readers (the dashboard, `status`) read while a worker writes; it is a property
    # of the database file, so setting it once is enough.
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
