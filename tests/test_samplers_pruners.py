"""Every sampler and pruner the study file offers builds and drives a real (tiny) search."""

from __future__ import annotations

import importlib.util

import optuna
import pytest
from optuna.trial import TrialState

from search.errors import SpecError
from search.runner import make_pruner, make_sampler, run_study
from search.spec import parse_spec

TINY = """
study: {{name: tiny, n_trials: 3, seed: 2, sampler: {sampler}, pruner: {pruner}}}
data: {{source: sklearn:iris}}
search:
  learning_rate: {{low: 1.0e-3, high: 1.0e-1, log: true}}
  units: {{low: 4, high: 8}}
  epochs: 3
"""

HAS_TORCH = importlib.util.find_spec("torch") is not None
SAMPLERS = [
    ("tpe", optuna.samplers.TPESampler),
    ("random", optuna.samplers.RandomSampler),
    ("cmaes", optuna.samplers.CmaEsSampler),
    ("qmc", optuna.samplers.QMCSampler),
]
PRUNERS = [
    ("hyperband", optuna.pruners.HyperbandPruner),
    ("median", optuna.pruners.MedianPruner),
    ("percentile", optuna.pruners.PercentilePruner),
    ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ("none", optuna.pruners.NopPruner),
]


def _spec(tmp_path, sampler="tpe", pruner="median"):
    text = TINY.format(sampler=sampler, pruner=pruner)
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return parse_spec(text, str(path))


@pytest.mark.parametrize(("name", "cls"), SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_sampler_runs_a_search(tmp_path, name, cls):
    spec = _spec(tmp_path, sampler=name)
    assert isinstance(make_sampler(spec), cls)
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = run_study(spec, url)
    assert result.finished == 3
    study = optuna.load_study(study_name="tiny", storage=url)
    assert len({t.params["learning_rate"] for t in study.trials}) == 3


def test_gp_sampler_needs_its_extra_or_runs(tmp_path):
    spec = _spec(tmp_path, sampler="gp")
    if not HAS_TORCH:
        with pytest.raises(SpecError, match=r"study\.sampler\.name: expected a sampler whose "
                                            r"packages are installed \(pip install "
                                            r"'hpsearch\[gp\]'\), got 'gp'"):
            make_sampler(spec)
        return
    assert isinstance(make_sampler(spec), optuna.samplers.GPSampler)
    assert run_study(spec, f"sqlite:///{tmp_path / 's.db'}").finished == 3


@pytest.mark.parametrize(("name", "cls"), PRUNERS, ids=[p[0] for p in PRUNERS])
def test_pruner_runs_a_search(tmp_path, name, cls):
    spec = _spec(tmp_path, pruner=name)
    assert isinstance(make_pruner(spec), cls)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run_study(spec, url).finished == 3
    study = optuna.load_study(study_name="tiny", storage=url)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


def test_hyperband_uses_the_largest_epoch_count_as_its_maximum_resource(tmp_path):
    spec = _spec(tmp_path, pruner="hyperband").model_copy()
    text = TINY.format(sampler="tpe", pruner="hyperband").replace(
        "epochs: 3", "epochs: {choices: [5, 30, 12]}")
    pruner = make_pruner(parse_spec(text, "x.yaml"))
    assert pruner._max_resource == 30
    assert spec.study.pruner.name == "hyperband"


def test_pruner_options_are_checked_against_the_pruner(tmp_path):
    text = TINY.format(sampler="tpe", pruner="{name: median, options: {warmup: 3}}")
    with pytest.raises(SpecError, match=r"study\.pruner\.options\.warmup: expected an option "
                                        r"of MedianPruner: n_startup_trials, n_warmup_steps"):
        make_pruner(parse_spec(text, "x.yaml"))
