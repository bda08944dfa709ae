"""Optuna's RDBStorage with one-statement writes for what a trial writes many times.

A trial of hpsearch reports its validation metric every epoch and sets a dozen params and user
attributes. Optuna's RDBStorage does each of these writes through the ORM: a session, a
``SELECT`` of the trial row, a ``SELECT`` of the existing value, an ``INSERT`` or ``UPDATE``, a
commit, and the Python of the ORM around them. On PostgreSQL that is 3-5 ms a write, which made
the storage traffic of a 20-epoch trial cost ~100 ms (benchmark suite "storage", README).

Here each of those writes is one ``INSERT ... SELECT ... WHERE <the trial is RUNNING>`` upsert
on a pooled connection, in its own transaction. The rows written are exactly Optuna's (same
tables, columns, encodings), so Optuna, the dashboard and other workers read them as usual.
When the statement writes nothing, the trial is missing or finished and the error raised is
Optuna's own (``KeyError``, ``UpdateFinishedTrialError``), from the original code path.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
import sqlalchemy as sa
from optuna import distributions
from optuna.storages._rdb import models
from optuna.trial import TrialState

_TRIALS = models.TrialModel.__table__
_VALUES = models.TrialIntermediateValueModel.__table__
_PARAMS = models.TrialParamModel.__table__
_USER_ATTRS = models.TrialUserAttributeModel.__table__


def _insert(engine_name: str, table: sa.Table) -> Any:
    if engine_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine_name == "mysql":
        from sqlalchemy.dialects.mysql import insert
    elif engine_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - open_storage accepts these three only
        raise ValueError(engine_name)
    return insert(table)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL (set on the file by open_storage) with synchronous=NORMAL: a commit does not wait for
    # fsync; the database stays consistent after a crash, and only a power loss can drop the
    # last commits.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class FastRDBStorage(optuna.storages.RDBStorage):
    """RDBStorage whose intermediate values, params and user attrs are single upserts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._configure_engine()

    def _configure_engine(self) -> None:
        self._statements: dict[tuple[str, tuple[str, ...]], Any] = {}
        if self.engine.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            self.engine.dispose()  # pooled connections were opened without the pragma

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_statements", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._configure_engine()

    def _upsert(self, table: sa.Table, trial_id: int, row: dict[str, Any],
                key: tuple[str, ...], update: tuple[str, ...]) -> bool:
        """Insert ``row`` for a RUNNING trial (updating ``update`` on a ``key`` conflict).

        Returns False when nothing was written: the trial is not RUNNING or does not exist.
        """
        stmt = self._statement(table, tuple(row), key, update)
        with self.engine.begin() as conn:
            # SQLAlchemy keeps an INSERT's rowcount only when asked to.
            written = conn.execute(stmt, {"trial_id": trial_id, **row},
                                   execution_options={"preserve_rowcount": True}).rowcount
        return written > 0

    def _statement(self, table: sa.Table, names: tuple[str, ...], key: tuple[str, ...],
                   update: tuple[str, ...]) -> Any:
        """The upsert for ``table`` with bound parameters, built once per storage."""
        cache_key = (table.name, names)
        if cache_key not in self._statements:
            source = sa.select(
                sa.bindparam("trial_id", type_=sa.Integer),
                *(sa.bindparam(name, type_=table.c[name].type) for name in names),
            ).where(sa.exists().where(_TRIALS.c.trial_id == sa.bindparam("trial_id"),
                                      _TRIALS.c.state == TrialState.RUNNING))
            stmt = _insert(self.engine.name, table).from_select(["trial_id", *names], source)
            if update:
                if self.engine.name == "mysql":
                    stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
                else:
                    stmt = stmt.on_conflict_do_update(
                        index_elements=list(key), set_={c: stmt.excluded[c] for c in update})
            self._statements[cache_key] = stmt
        return self._statements[cache_key]

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
            intermediate_value)
        row = {"step": step, "intermediate_value": stored, "intermediate_value_type": kind}
        if not self._upsert(_VALUES, trial_id, row, ("trial_id", "step"),
                            ("intermediate_value", "intermediate_value_type")):
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: distributions.BaseDistribution,
        previous_distribution: distributions.BaseDistribution | None,
    ) -> None:
        if previous_distribution is None:
            # The first trial to use this param: Optuna's path looks up the study's
            # distribution (and checks compatibility) in the database.
            super()._set_trial_param(trial_id, param_name, param_value_internal, distribution,
                                     previous_distribution)
            return
        distributions.check_distribution_compatibility(previous_distribution, distribution)
        row = {"param_name": param_name, "param_value": param_value_internal,
               "distribution_json": distributions.distribution_to_json(distribution)}
        if not self._upsert(_PARAMS, trial_id, row, ("trial_id", "param_name"), ()):
            super()._set_trial_param(trial_id, param_name, param_value_internal, distribution,
                                     previous_distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        row = {"key": key, "value_json": json.dumps(value)}
        if not self._upsert(_USER_ATTRS, trial_id, row, ("trial_id", "key"), ("value_json",)):
            super().set_trial_user_attr(trial_id, key, value)
