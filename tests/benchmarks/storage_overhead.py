"""Storage overhead per trial: a trivial objective, timed on each storage hpsearch supports.

Each trial suggests 10 params and reports 20 intermediate values, with a pruning check after
each, which is the storage traffic of a real hpsearch trial without its training. The sampler
is random so that the sampler's own cost does not grow with the study. ``--pruner none`` (the
default) measures the storage alone; ``--pruner median`` adds the reads a median pruner makes
(every check reads the other trials' values). Storages are opened with hpsearch's own
settings (heartbeat, pool, WAL, retries).

    python tests/benchmarks/storage_overhead.py                 # 1000 trials per storage
    python tests/benchmarks/storage_overhead.py --quick         # 30 trials (the CI smoke run)
    python tests/benchmarks/storage_overhead.py --storages sqlite journal --trials 200

PostgreSQL and MariaDB get a fresh database each (dropped afterwards), on 127.0.0.1 with the
servers' test users (see README, Development).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

from search.storage import open_storage

ALL = ("memory", "sqlite", "journal", "postgresql", "mysql")


def objective(trial: optuna.Trial) -> float:
    x = [trial.suggest_float(f"x{i}", -5.0, 5.0) for i in range(5)]
    n = [trial.suggest_int(f"n{i}", 1, 64, log=True) for i in range(3)]
    a = trial.suggest_categorical("activation", ["relu", "tanh", "elu"])
    b = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    value = sum(v * v for v in x) + sum(n) * 1e-3 + len(a) + len(b)
    for step in range(1, 21):
        trial.report(value / step, step=step)
        trial.should_prune()
    return value


@contextmanager
def storage_url(kind: str, folder: Path) -> Iterator[str | None]:
    """A fresh storage of ``kind``: a URL, or None for Optuna's in-memory storage."""
    if kind == "memory":
        yield None
    elif kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
    elif kind == "journal":
        yield f"journal:{folder / 'bench.journal'}"
    elif kind == "postgresql":
        import psycopg

        name = f"hp_bench_{uuid.uuid4().hex[:8]}"
        admin = "host=127.0.0.1 port=5432 user=postgres dbname=test"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    elif kind == "mysql":
        import pymysql

        name = f"hp_bench_{uuid.uuid4().hex[:8]}"
        conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        try:
            yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
        finally:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.close()
    else:
        raise ValueError(kind)


def measure(kind: str, n_trials: int, pruner: str = "none") -> dict[str, float]:
    """ms per trial (p50, p95, mean) and the cold load time of the finished study."""
    with tempfile.TemporaryDirectory() as tmp, storage_url(kind, Path(tmp)) as url:
        storage = open_storage(url) if url else optuna.storages.InMemoryStorage()
        study = optuna.create_study(
            storage=storage, study_name="bench", sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=optuna.pruners.MedianPruner() if pruner == "median"
            else optuna.pruners.NopPruner())
        stamps = [time.perf_counter()]
        study.optimize(objective, n_trials=n_trials,
                       callbacks=[lambda s, t: stamps.append(time.perf_counter())])
        per_trial = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
        load_s = float("nan")
        if url:
            start = time.perf_counter()
            loaded = optuna.load_study(study_name="bench", storage=open_storage(url))
            assert len(loaded.trials) == n_trials
            load_s = time.perf_counter() - start
    ordered = sorted(per_trial)
    return {
        "trials": n_trials,
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "last_100_p50_ms": round(statistics.median(per_trial[-100:]), 2),
        "cold_load_s": round(load_s, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="30 trials per storage")
    parser.add_argument("--storages", nargs="+", choices=ALL, default=list(ALL))
    parser.add_argument("--pruner", choices=("none", "median"), default="none")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = 30 if args.quick else args.trials
    results = {kind: measure(kind, n, args.pruner) for kind in args.storages}
    print(f"{'storage':<11} {'trials':>6} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} "
          f"{'last100 p50':>11} {'cold load s':>11}")
    for kind, r in results.items():
        print(f"{kind:<11} {r['trials']:>6} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['mean_ms']:>8} "
              f"{r['last_100_p50_ms']:>11} {r['cold_load_s']:>11}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
