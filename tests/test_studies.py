"""Every example study file is valid as is, and the reference study runs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.cli import main

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_example_study_validates(runner, path):
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: valid" in result.output
    assert "search space:" in result.output


def test_the_reference_study_runs_two_trials(runner, sqlite_url):
    path = Path(__file__).parent.parent / "studies" / "digits.yaml"
    result = runner.invoke(main, ["run", str(path), "--storage", sqlite_url, "--n-trials", "2"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="digits", storage=sqlite_url)
    assert len(study.trials) == 2
    assert study.user_attrs["n_trials"] == 2
    status = runner.invoke(main, ["status", "digits", "--storage", sqlite_url])
    assert status.exit_code == 0 and "study digits: minimize val_loss, 2/2 finished" in \
        status.output
