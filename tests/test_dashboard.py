"""optuna-dashboard on hpsearch studies (a real server process, a real browser), and the
offline HTML report."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from search.cli import main
from search.runner import run_study
from search.spec import parse_spec

from conftest import HPSEARCH, SMALL_STUDY, python_env

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 30) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read(), response.headers.get("Content-Type", "")


def start_dashboard(url: str, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(HPSEARCH + ["dashboard", "--storage", url, "--port", str(port),
                                        *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=python_env())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(f"http://127.0.0.1:{port}/api/studies")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    pytest.fail("dashboard did not start: " + (proc.stdout.read() if proc.stdout else ""))


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> str:
    """A small finished study (complete and pruned trials, artifacts) in SQLite."""
    folder = tmp_path_factory.mktemp("finished")
    path = folder / "study.yaml"
    path.write_text(SMALL_STUDY)
    url = f"sqlite:///{folder / 'studies.db'}"
    run_study(parse_spec(SMALL_STUDY, str(path)), url, keep_models=1)
    return url


def test_the_dashboard_serves_the_study_its_learning_curves_and_artifacts(finished):
    port = free_port()
    proc = start_dashboard(finished, port)
    try:
        status, body, _ = get(f"http://127.0.0.1:{port}/api/studies")
        summaries = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["small"]
        study_id = summaries[0]["study_id"]
        detail = json.loads(get(f"http://127.0.0.1:{port}/api/studies/{study_id}?after=0")[1])
        trials = detail["trials"]
        assert len(trials) == 6
        assert detail["objective_names"] == ["val_loss"]
        assert "# small" in detail["note"]["body"]
        for trial in trials:
            assert trial["intermediate_values"], trial["number"]
            history = [a for a in trial["artifacts"] if a["filename"].endswith("history.csv")]
            assert len(history) == 1
        models = [a for a in detail["artifacts"] if a["filename"].endswith("model.keras")]
        assert len(models) == 1  # --keep-models 1: only the best trial's model
        best = optuna.load_study(study_name="small", storage=finished).best_trial
        assert models[0]["filename"] == f"trial-{best.number}-model.keras"
        # The best improved after the first complete trial, so an earlier best model was
        # removed: deleted from disk, not only hidden.
        values = [t.value for t in optuna.load_study(study_name="small", storage=finished).trials
                  if t.value is not None]
        assert sum(v < min(values[:i]) for i, v in enumerate(values) if i) >= 1
        folder = Path(finished.removeprefix("sqlite:///")).with_name("studies-artifacts")
        assert len(list(folder.iterdir())) == len(trials) + 1

        first = trials[0]
        artifact = first["artifacts"][0]
        status, body, kind = get(f"http://127.0.0.1:{port}/artifacts/{study_id}/"
                                 f"{first['trial_id']}/{artifact['artifact_id']}")
        assert status == 200 and kind.startswith("text/csv")
        lines = body.decode().splitlines()
        assert lines[0].split(",")[0] == "epoch" and "val_loss" in lines[0].split(",")
        assert len(lines) == 1 + len(first["intermediate_values"])
    finally:
        stop(proc)


def test_a_real_browser_shows_the_study(finished, tmp_path):
    from playwright.sync_api import sync_playwright

    port = free_port()
    proc = start_dashboard(finished, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1/trials")
            page.wait_for_selector("text=6 Trials", timeout=30000)
            text = page.inner_text("body")
            shot = Path(__file__).parent.parent / "tests" / "artifacts"
            shot.mkdir(exist_ok=True)
            page.screenshot(path=str(shot / "dashboard-trials.png"))
            browser.close()
        assert "small" in text and "6 Trials" in text
        assert (shot / "dashboard-trials.png").stat().st_size > 10_000
    finally:
        stop(proc)


def test_binding_beyond_loopback_warns(sqlite_url):
    optuna.create_study(study_name="x", storage=sqlite_url)
    quiet = start_dashboard(sqlite_url, free_port())
    loud = start_dashboard(sqlite_url, free_port(), "--host", "0.0.0.0")
    quiet_out, loud_out = stop(quiet), stop(loud)
    assert "no authentication" not in quiet_out
    assert ("warning: the dashboard has no authentication; binding 0.0.0.0 lets anyone who "
            "can reach this machine read and edit your studies") in loud_out


def test_the_report_holds_the_plots_and_the_table_and_opens_offline(finished, tmp_path,
                                                                    runner):
    storage = optuna.storages.RDBStorage(finished)
    study = optuna.load_study(study_name="small", storage=storage)
    out = tmp_path / "report.html"
    result = runner.invoke(main, ["report", "small", "--storage", finished, "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count("<section><h2>") == 6  # the table and five plots
    for title in ("Optimization history", "Parameter importances", "Intermediate values",
                  "Parallel coordinates", "Slices"):
        assert title in page
    assert re.search(r"<table id='top-trials'>.*?</table>", page, re.S)
    assert f"<td>{study.best_trial.number}</td>" in page
    # Nothing is loaded from elsewhere: no script or stylesheet by URL, no iframe, no image.
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=", page)
    assert "<iframe" not in page and "<img" not in page

    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        page_ = browser.new_page()
        page_.route("**/*", lambda route: (requests.append(route.request.url),
                                            route.continue_() if route.request.url.startswith(
                                                "file:") else route.abort()))
        page_.goto(out.as_uri())
        page_.wait_for_selector(".js-plotly-plot .main-svg", timeout=30000)
        plots = page_.locator(".js-plotly-plot").count()
        browser.close()
    assert plots == 5
    assert [u for u in requests if not u.startswith("file:")] == []


def test_a_report_of_a_study_without_complete_trials_says_so(runner, sqlite_url, tmp_path):
    study = optuna.create_study(study_name="empty", storage=sqlite_url)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    result = runner.invoke(main, ["report", "empty", "--storage", sqlite_url, "-o",
                                  str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert ("STUDY: expected a study with at least one complete trial to report on, got "
            "<empty: 1 fail>") in result.output
    assert not (tmp_path / "r.html").exists()


def test_a_worker_and_the_dashboard_share_sqlite_without_locking_errors(tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(SMALL_STUDY.replace("n_trials: 6", "n_trials: 10"))
    url = f"sqlite:///{tmp_path / 'live.db'}"
    assert subprocess.run(HPSEARCH + ["create", str(spec), "--storage", url],
                          env=python_env(), capture_output=True, timeout=120).returncode == 0
    port = free_port()
    dashboard = start_dashboard(url, port)
    worker = subprocess.Popen(HPSEARCH + ["worker", str(spec), "--storage", url],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=python_env())
    polls = 0
    try:
        while worker.poll() is None:
            for path in ("/api/studies", "/api/studies/1?after=0"):
                status, _, _ = get(f"http://127.0.0.1:{port}{path}")
                assert status == 200
                polls += 1
            time.sleep(0.05)
        worker_out = worker.communicate(timeout=60)[0]
    finally:
        dashboard_out = stop(dashboard)
    assert worker.returncode == 0, worker_out
    assert polls > 50
    assert "database is locked" not in worker_out, worker_out
    assert "database is locked" not in dashboard_out, dashboard_out
    study = optuna.load_study(study_name="small", storage=url)
    assert len(study.trials) == 10
