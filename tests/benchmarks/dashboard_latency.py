"""optuna-dashboard's API response time on a study of many trials, served by `hpsearch dashboard`.

The study mimics an hpsearch study: 10 params, 20 intermediate values and hpsearch's user
attributes per trial, in SQLite. Times GET /api/studies/ID?after=0 (what the study page loads)
and GET /api/studies.

    python tests/benchmarks/dashboard_latency.py               # 1000 trials, 30 requests
    python tests/benchmarks/dashboard_latency.py --quick       # 100 trials, 5 requests
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution


def make_study(url: str, n: int) -> None:
    rng = random.Random(0)
    study = optuna.create_study(study_name="bench", storage=url)
    dists = {f"x{i}": FloatDistribution(1e-4, 1.0, log=True) for i in range(6)}
    dists |= {f"n{i}": IntDistribution(1, 256) for i in range(3)}
    dists["activation"] = CategoricalDistribution(["relu", "tanh", "elu"])
    trials = []
    for _ in range(n):
        params = {k: (d.choices[rng.randrange(3)] if isinstance(d, CategoricalDistribution)
                      else rng.randint(d.low, d.high) if isinstance(d, IntDistribution)
                      else rng.uniform(d.low, d.high)) for k, d in dists.items()}
        curve = {step: 1.0 / step + rng.random() * 0.1 for step in range(1, 21)}
        trials.append(optuna.trial.create_trial(
            params=params, distributions=dists, value=min(curve.values()),
            intermediate_values=curve,
            user_attrs={"seed": 1, "epochs_run": 20, "best_epoch": 20, "n_params": 1000,
                        "fit_seconds": 1.0, "val_metrics": {"val_loss": 0.1}}))
    study.add_trials(trials)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n, requests = (100, 5) if args.quick else (args.trials, args.requests)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        make_study(url, n)
        port = free_port()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.Popen([sys.executable, "-m", "search", "dashboard", "--storage", url,
                                 "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    timed_get(f"{base}/api/studies")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            first = timed_get(f"{base}/api/studies/1?after=0")
            study_ms = sorted(timed_get(f"{base}/api/studies/1?after=0")
                              for _ in range(requests))
            list_ms = sorted(timed_get(f"{base}/api/studies") for _ in range(requests))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {
        "trials": n,
        "requests": requests,
        "study_first_ms": round(first, 1),
        "study_p50_ms": round(statistics.median(study_ms), 1),
        "study_p95_ms": round(study_ms[int(0.95 * (len(study_ms) - 1))], 1),
        "list_p50_ms": round(statistics.median(list_ms), 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
