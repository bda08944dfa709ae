"""The study file: defaults, ranges, choices, per-layer units, extras, overrides."""

from __future__ import annotations

import optuna
import pytest

from search.errors import SpecError
from search.space import describe_space, suggest_params
from search.spec import load_spec, parse_spec

REFERENCE = "studies/digits.yaml"


def test_defaults_fill_a_minimal_spec():
    spec = parse_spec("data: {source: sklearn:iris}\n", "min.yaml")
    assert spec.name == "min"
    assert spec.study.metric == "val_loss" and spec.study.resolved_direction == "minimize"
    assert spec.study.sampler.name == "tpe" and spec.study.pruner.name == "hyperband"
    assert [hp.searched for _, hp in spec.search.items()] == [False] * 11


def test_the_reference_study_searches_all_nine_hyperparameters(request):
    spec = load_spec(request.config.rootpath / REFERENCE)
    searched = {name for name, hp in spec.search.items() if hp.searched}
    assert {"learning_rate", "epochs", "batch_size", "n_layers", "units", "activation",
            "optimizer", "dropout", "l2", "patience"} <= searched
    assert spec.study.sampler.name == "tpe" and spec.study.pruner.name == "hyperband"


def test_yaml_exponents_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-4 as a string; users mean the number.
    spec = parse_spec("data: {source: sklearn:iris}\nsearch: {learning_rate: {low: 1e-4, "
                      "high: 1e-1, log: true}}\n")
    assert spec.search.learning_rate.low == 1e-4


def test_per_layer_units_depend_on_the_number_of_layers():
    spec = parse_spec("""
data: {source: sklearn:iris}
search:
  n_layers: {low: 1, high: 3}
  units: {low: 4, high: 64, log: true, per_layer: true}
  extra: {kernel: {choices: [3, 5]}}
""")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        params = suggest_params(trial, spec.search)
        n = params["n_layers"]
        seen.add(n)
        assert len(params["units"]) == n
        assert params["units"] == [trial.params[f"units_{i}"] for i in range(n)]
        assert all(4 <= u <= 64 for u in params["units"])
        assert params["kernel"] in (3, 5)
        assert params["learning_rate"] == 1e-3 and "learning_rate" not in trial.params
        study.tell(trial, 0.0)
    assert seen == {1, 2, 3}
    rows = dict(describe_space(spec.search))
    assert rows["units_i (per layer)"] == "int in [4, 64] log"
    assert rows["kernel"] == "choice of 3, 5"


def test_shared_units_rebuild_from_fixed_params():
    spec = parse_spec("data: {source: sklearn:iris}\nsearch: {n_layers: 3, units: {low: 8, "
                      "high: 32}}\n")
    params = suggest_params(optuna.trial.FixedTrial({"units": 16}), spec.search)
    assert params["units"] == [16, 16, 16]


def test_overrides_and_search_hash():
    spec = parse_spec("data: {source: sklearn:iris}\n", "a.yaml")
    changed = spec.with_overrides(n_trials=7, timeout=30.0, name="other")
    assert (changed.study.n_trials, changed.study.timeout, changed.name) == (7, 30.0, "other")
    assert changed.search_hash() == spec.search_hash()
    different = parse_spec("data: {source: sklearn:iris}\nsearch: {epochs: 3}\n", "a.yaml")
    assert different.search_hash() != spec.search_hash()


@pytest.mark.parametrize(("text", "message"), [
    ("study: {metric: val_accuracy, direction: minimize}",
     r"study\.direction: expected maximize for metric val_accuracy, got 'minimize'"),
    ("search: {epochs: {low: 1, high: 9, log: true, step: 2}}",
     r"search\.epochs\.step: expected no step when log is true"),
    ("search: {units: {choices: [8, 8]}}", r"search\.units\.choices: expected distinct choices"),
    ("search: {dropout: {low: 0.1, high: 0.2, per_layer: true}}",
     r"search\.dropout\.per_layer: expected no per_layer key \(only units takes per_layer\)"),
    ("search: {activation: {low: 1, high: 2}}",
     r"search\.activation: expected a fixed value or \{choices: \[\.\.\.\]\}"),
    ("search: {extra: {epochs: 3}}",
     r"search\.extra\.epochs: expected a new identifier that is not a built-in"),
    ("model: {builder: 'not a ref'}",
     r"model\.builder: expected 'package\.module:function', got 'not a ref'"),
    ("data: {source: sklearn:iris, validation_fraction: 0.5, test_fraction: 0.5}",
     r"data\.test_fraction: expected validation_fraction \+ test_fraction < 1, got 1\.0"),
])
def test_more_bad_values(text, message):
    if not text.startswith("data:"):
        text = "data: {source: sklearn:iris}\n" + text
    with pytest.raises(SpecError, match=message):
        parse_spec(text + "\n", "s.yaml")
