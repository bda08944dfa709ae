"""Suites "memory" (RSS of one worker over many digits trials) and "scaling" (trials per minute
with 1 and 2 workers on PostgreSQL).

Memory runs the worker in a child process (``python -m tests.benchmarks.workers memory N DIR``)
so that the RSS is that of a worker alone; the child prints its RSS after every trial. The
growth per 100 trials is measured from trial 10 on (the first trials load TensorFlow's kernels
and the data set), scaled to 100 trials.

Scaling runs ``hpsearch run STUDY --workers K`` on a fresh PostgreSQL database for K = 1, 2;
trials per minute = finished trials / (last trial's end - first trial's start).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ROOT, median, rss_mb, write_study
from tests.benchmarks.storage_overhead import storage_url

def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("HPSEARCH_STORAGE", None)
    return env


def _memory_child(n_trials: int, folder: str) -> None:
    from search.runner import run_study
    from search.spec import load_spec

    spec = load_spec(write_study(Path(folder), name="memory", seed=0, max_epochs=9,
                                 n_trials=n_trials))
    rows = []

    def on_trial(progress: Any) -> None:
        rows.append(round(rss_mb(), 1))

    run_study(spec, f"sqlite:///{Path(folder) / 'memory.db'}", on_trial=on_trial)
    print(json.dumps(rows))


def memory(n_trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "tests.benchmarks.workers", "memory", str(n_trials), tmp],
            capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed:\n{done.stderr[-3000:]}")
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    warm = min(10, len(rss) - 1)
    per_100 = (rss[-1] - rss[warm - 1]) / (len(rss) - warm) * 100 if len(rss) > warm else 0.0
    return {
        "trials": len(rss),
        "rss_after_first_mb": rss[0],
        f"rss_after_trial_{warm}_mb": rss[warm - 1],
        "rss_last_mb": rss[-1],
        "rss_max_mb": max(rss),
        "growth_mb_per_100_trials": per_100,
        "rss_by_trial": rss,
    }


def scaling(study_file: Path, workers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    import optuna

    result: dict[str, Any] = {}
    for k in workers:
        with tempfile.TemporaryDirectory() as tmp, \
                storage_url("postgresql", Path(tmp)) as url:
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "search", "run", str(study_file), "--storage", url,
                 "--workers", str(k)],
                capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=3600)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"hpsearch run --workers {k} failed:\n{done.stderr[-3000:]}")
            summaries = optuna.get_all_study_summaries(url)
            study = optuna.load_study(study_name=summaries[0].study_name, storage=url)
            trials = [t for t in study.trials if t.state.is_finished()]
            span = (max(t.datetime_complete for t in trials)
                    - min(t.datetime_start for t in trials)).total_seconds()
            result[f"workers_{k}"] = {
                "trials": len(trials), "wall_s": wall, "span_s": span,
                "trials_per_min": len(trials) / span * 60,
                "epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials),
                "trial_wall_s_p50": median([(t.datetime_complete - t.datetime_start)
                                            .total_seconds() for t in trials]),
            }
    if "workers_1" in result and "workers_2" in result:
        result["speedup_2_vs_1"] = (result["workers_2"]["trials_per_min"]
                                    / result["workers_1"]["trials_per_min"])
    return result


if __name__ == "__main__":
    if sys.argv[1] == "memory":
        _memory_child(int(sys.argv[2]), sys.argv[3])
