"""The search space of a spec -> the values of one trial (define-by-run).

Fixed values pass through without touching the trial, so Optuna only sees what is searched.
Per-layer units are suggested as ``units_0 .. units_{n-1}`` after ``n_layers``, which is why
this is define-by-run rather than a static distribution dict. The same function rebuilds a
complete params dict from a finished trial's params (via ``optuna.trial.FixedTrial``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from search.spec import HParam, SearchSpace

if TYPE_CHECKING:
    from optuna.trial import BaseTrial


def suggest_params(trial: BaseTrial, space: SearchSpace) -> dict[str, Any]:
    """Sample every hyperparameter of ``space`` on ``trial``; return a plain dict of values.

    ``units`` comes back as a list with one entry per hidden layer.
    """
    params: dict[str, Any] = {}
    for name, hp in space.items():
        if name == "units":
            continue
        params[name] = suggest_one(trial, name, hp)
        if name == "n_layers":
            params["units"] = _suggest_units(trial, space.units, params["n_layers"])
    return params


def _suggest_units(trial: BaseTrial, hp: HParam, n_layers: int) -> list[int]:
    if hp.per_layer and hp.searched:
        return [int(suggest_one(trial, f"units_{i}", hp)) for i in range(n_layers)]
    if n_layers == 0:
        return []
    return [int(suggest_one(trial, "units", hp))] * n_layers


def suggest_one(trial: BaseTrial, name: str, hp: HParam) -> Any:
    """The value of one hyperparameter: fixed, or suggested with Optuna's matching method."""
    if hp.kind == "fixed":
        return hp.value
    if hp.kind == "categorical":
        return trial.suggest_categorical(name, list(hp.choices))
    if hp.kind == "int":
        return trial.suggest_int(name, int(hp.low), int(hp.high), step=int(hp.step or 1),
                                 log=hp.log)
    return trial.suggest_float(name, float(hp.low), float(hp.high), step=hp.step, log=hp.log)


def describe_space(space: SearchSpace) -> list[tuple[str, str]]:
    """(name, description) for every hyperparameter, searched or fixed, in a stable order."""
    rows = []
    for name, hp in space.items():
        label = name
        if name == "units" and hp.per_layer and hp.searched:
            label = "units_i (per layer)"
        rows.append((label, hp.describe()))
    return rows


def max_epochs(space: SearchSpace) -> int:
    """The largest number of epochs a trial can run (the pruners' maximum resource)."""
    return int(space.epochs.upper())
