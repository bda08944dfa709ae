"""The benchmarks' quick (smoke) mode: they run, on every storage, and produce sane numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from conftest import python_env

BENCH = Path(__file__).parent / "benchmarks"


def test_storage_overhead_quick_mode_runs_on_every_storage():
    done = subprocess.run([sys.executable, str(BENCH / "storage_overhead.py"), "--quick"],
                          capture_output=True, text=True, env=python_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == {"memory", "sqlite", "journal", "postgresql", "mysql"}
    for kind, r in results.items():
        assert r["trials"] == 30
        assert 0 < r["p50_ms"] <= r["p95_ms"], (kind, r)
        assert kind == "memory" or (math.isfinite(r["cold_load_s"]) and r["cold_load_s"] > 0)


def test_dashboard_latency_quick_mode_runs():
    done = subprocess.run([sys.executable, str(BENCH / "dashboard_latency.py"), "--quick"],
                          capture_output=True, text=True, env=python_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["trials"] == 100 and result["requests"] == 5
    assert 0 < result["study_p50_ms"] <= result["study_p95_ms"]
