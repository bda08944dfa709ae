"""hpsearch's benchmarks: one entry point for every suite.

    python -m tests.benchmarks                 # the full run (about 45 minutes on 2 cores)
    python -m tests.benchmarks --quick         # every suite, small (CI: checks they run)
    python -m tests.benchmarks --suites storage memory

Writes ``results.json`` and ``results.md`` (the table the README carries) into ``--out``
(default ``tests/benchmarks/results``, or ``tests/benchmarks/results-quick`` with --quick) and
prints the table. Needs the ``bench`` extra (keras-tuner, optuna-integration) and the
PostgreSQL and MariaDB servers of the README's Development section. The quick mode asserts no
timing: the machine is shared and noisy; it checks that every suite runs and produces numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ROOT, write_study

SUITES = ("quality", "pruning", "fixed_cost", "overhead", "storage", "memory", "scaling")

FULL = {
    "seeds": [0, 1, 2], "max_epochs": 30, "epoch_budget": 450, "pruning_trials": 40,
    "overhead_configs": 10, "overhead_epochs": 10, "storage_trials": 1000,
    "memory_trials": 100, "scaling_study": ROOT / "studies" / "digits.yaml",
}
QUICK = {
    "seeds": [0], "max_epochs": 3, "epoch_budget": 12, "pruning_trials": 4,
    "overhead_configs": 2, "overhead_epochs": 3, "storage_trials": 30,
    "memory_trials": 12, "scaling_study": None,
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs of every suite")
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--update", action="store_true",
                        help="keep the other suites' results already in OUT/results.json")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    out = args.out or ROOT / "tests" / "benchmarks" / ("results-quick" if args.quick
                                                       else "results")
    out.mkdir(parents=True, exist_ok=True)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick,
                               "date": datetime.date.today().isoformat(), "suites": {}}
    if args.update and (out / "results.json").exists():
        earlier = json.loads((out / "results.json").read_text())
        results["suites"] = {k: v for k, v in earlier["suites"].items() if k not in args.suites}
    trial_rows: list[dict[str, Any]] = []
    for suite in args.suites:
        start = time.perf_counter()
        print(f"== {suite}", file=sys.stderr, flush=True)
        result = run_suite(suite, settings, trial_rows, out)
        result["suite_seconds"] = round(time.perf_counter() - start, 1)
        results["suites"][suite] = result
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    table = markdown(results)
    (out / "results.md").write_text(table)
    print(table)
    check_numbers(results)
    return results


def run_suite(suite: str, s: dict[str, Any], trial_rows: list[dict[str, Any]],
              out: Path) -> dict[str, Any]:
    if suite == "quality":
        from tests.benchmarks.quality import run_quality

        return run_quality(s["seeds"], s["max_epochs"], s["epoch_budget"])
    if suite == "pruning":
        from tests.benchmarks.quality import run_pruning

        result = run_pruning(s["seeds"], s["max_epochs"], s["pruning_trials"])
        trial_rows.extend(result.pop("trial_rows"))
        return result
    if suite == "fixed_cost":
        from tests.benchmarks.trial_cost import fixed_cost

        if not trial_rows:  # run alone: take the trials of a short pruning run
            from tests.benchmarks.quality import run_pruning

            trial_rows.extend(run_pruning(s["seeds"][:1], s["max_epochs"],
                                          s["pruning_trials"])["trial_rows"])
        return fixed_cost(trial_rows)
    if suite == "overhead":
        from tests.benchmarks.trial_cost import overhead

        return overhead(s["overhead_configs"], s["overhead_epochs"])
    if suite == "storage":
        from tests.benchmarks.storage_overhead import ALL, measure

        return {kind: measure(kind, s["storage_trials"]) for kind in ALL}
    if suite == "memory":
        from tests.benchmarks.workers import memory

        return memory(s["memory_trials"])
    if suite == "scaling":
        from tests.benchmarks.workers import scaling

        study = s["scaling_study"]
        if study is None:
            study = write_study(out, name="scaling", seed=0, max_epochs=3, n_trials=4)
        return scaling(Path(study))
    raise ValueError(suite)


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from search.runner import package_versions

    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "versions": package_versions()}


# --------------------------------------------------------------------------------------------
# The table.

def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, met?) for every target of issue 6 that was measured."""
    s = results["suites"]
    rows: list[tuple[str, str, str, bool | None]] = []
    if "quality" in s:
        a, b, c = s["quality"]["a"], s["quality"]["b"], s["quality"]["c"]
        rows.append(("1. best val loss, hpsearch vs Optuna by hand", "<= (b)",
                     f"{a['best_val_loss']:.4f} vs {b['best_val_loss']:.4f}",
                     a["best_val_loss"] <= b["best_val_loss"]))
        rows.append(("1. wall time, hpsearch / Optuna by hand", "<= 0.80",
                     f"{a['wall_s'] / b['wall_s']:.2f}", a["wall_s"] / b["wall_s"] <= 0.8))
        rows.append(("1. wall time, hpsearch / KerasTuner", "<= 0.35",
                     f"{a['wall_s'] / c['wall_s']:.2f}", a["wall_s"] / c["wall_s"] <= 0.35))
    if "pruning" in s:
        hb = s["pruning"]["hyperband"]
        rows.append(("2. epochs, no pruning / Hyperband", ">= 5x",
                     f"{hb['epoch_reduction_x']:.1f}x", hb["epoch_reduction_x"] >= 5))
        rows.append(("2. Hyperband's relative regret (best val loss)", "<= 1 %",
                     f"{100 * hb['relative_regret']:.1f} %", hb["relative_regret"] <= 0.01))
    if "fixed_cost" in s:
        fc = s["fixed_cost"]
        rows.append(("3. per-trial fixed cost (p50)", "<= 0.25 s", f"{fc['fixed_s_p50']:.2f} s",
                     fc["fixed_s_p50"] <= 0.25))
    if "overhead" in s:
        ov = s["overhead"]
        rows.append(("4. hpsearch trial vs bare fit (p50)", "<= 5 %",
                     f"{100 * ov['overhead_p50']:+.1f} %", ov["overhead_p50"] <= 0.05))
    if "storage" in s:
        pg = s["storage"]["postgresql"]
        rows.append((f"5. PostgreSQL ms per trial (p50, {pg['trials']} trials)", "<= 50 ms",
                     f"{pg['p50_ms']:.1f} ms", pg["p50_ms"] <= 50))
    if "memory" in s:
        m = s["memory"]
        rows.append((f"6. RSS growth per 100 trials ({m['trials']} trials)", "<= 50 MB",
                     f"{m['growth_mb_per_100_trials']:.1f} MB",
                     m["growth_mb_per_100_trials"] <= 50))
    if "scaling" in s and "speedup_2_vs_1" in s["scaling"]:
        sp = s["scaling"]["speedup_2_vs_1"]
        rows.append(("7. trials/min, 2 workers / 1 (PostgreSQL)", ">= 1.6x", f"{sp:.2f}x",
                     sp >= 1.6))
    return rows


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    tf_version = m["versions"].get("tensorflow") or m["versions"].get("tensorflow-cpu")
    quick = " (quick mode: sizes too small to judge)" if results["quick"] else ""
    lines = [
        f"Run of {results['date']}{quick}"
        f" on {m['cores']} cores ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, "
        f"TensorFlow {tf_version}, Keras "
        f"{m['versions'].get('keras', '?')}, Optuna {m['versions'].get('optuna', '?')}.",
        "",
        "| target | goal | measured | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {what} | {goal} | {got} | {_verdict(ok)} |"
              for what, goal, got, ok in targets(results)]
    s = results["suites"]
    if "quality" in s:
        q = s["quality"]
        lines += ["", "Time to quality (median over seeds):", "",
                  "| arm | wall s | trials | epochs | best val loss | time to (c)'s best, s "
                  "| test accuracy |", "|---|---|---|---|---|---|---|"]
        names = {"a": "(a) hpsearch", "b": "(b) Optuna by hand", "c": "(c) KerasTuner"}
        for arm in ("a", "b", "c"):
            r = q[arm]
            lines.append(f"| {names[arm]} | {_f(r['wall_s'])} | {_f(r['trials'], 0)} | "
                         f"{_f(r['epochs'], 0)} | {_f(r['best_val_loss'], 4)} | "
                         f"{_f(r['time_to_c_best_s'])} ({r['reached_c_best']}) | "
                         f"{_f(100 * r['test_accuracy'], 2)} % |")
    if "pruning" in s:
        p = s["pruning"]
        lines += ["", "Pruning payoff (median over seeds):", "",
                  "| pruner | wall s | trials | pruned | epochs | best val loss | "
                  "epochs vs none | regret vs none | test accuracy |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for arm in ("none", "median", "hyperband"):
            r = p[arm]
            lines.append(f"| {arm} | {_f(r['wall_s'])} | {_f(r['trials'], 0)} | "
                         f"{_f(r['pruned'], 0)} | {_f(r['epochs'], 0)} | "
                         f"{_f(r['best_val_loss'], 4)} | {_f(r['epoch_reduction_x'])}x | "
                         f"{_f(100 * r['relative_regret'])} % | "
                         f"{_f(100 * r['test_accuracy'], 2)} % |")
    if "fixed_cost" in s:
        fc = s["fixed_cost"]
        lines += ["", f"Per-trial fixed cost over {fc['trials']} trials of 3+ epochs (p50): "
                      f"{_f(fc['fixed_s_p50'], 3)} s, of which the first epoch's excess "
                      f"{_f(fc['first_epoch_excess_s_p50'], 3)} s; outside `fit` "
                      f"{_f(fc['outside_fit_s_p50'], 3)} s."]
    if "overhead" in s:
        ov = s["overhead"]
        lines += ["", f"Overhead: {ov['configs']} configurations x {ov['epochs']} epochs, "
                      f"{ov.get('repeats', 1)} alternating pairs each: "
                      f"hpsearch trial {_f(ov['hpsearch_s_p50'], 3)} s vs bare fit "
                      f"{_f(ov['bare_s_p50'], 3)} s (p50); same best val loss in "
                      f"{ov['same_val_loss']}/{ov['configs']}."]
    if "storage" in s:
        lines += ["", "Storage, trivial objective (10 params, 20 reports):", "",
                  "| storage | trials | p50 ms | p95 ms | cold load s |", "|---|---|---|---|---|"]
        for kind, r in s["storage"].items():
            if not isinstance(r, dict):
                continue
            lines.append(f"| {kind} | {r['trials']} | {_f(r['p50_ms'])} | {_f(r['p95_ms'])} | "
                         f"{_f(r['cold_load_s'], 2)} |")
    if "memory" in s:
        mem = s["memory"]
        lines += ["", f"Memory: one worker, {mem['trials']} digits trials: RSS "
                      f"{_f(mem['rss_after_first_mb'], 0)} MB after the first trial, "
                      f"{_f(mem['rss_last_mb'], 0)} MB after the last (max "
                      f"{_f(mem['rss_max_mb'], 0)} MB)."]
    if "scaling" in s:
        sc = s["scaling"]
        parts = [f"{k.split('_')[1]} worker(s): {_f(v['trials_per_min'])} trials/min "
                 f"({v['trials']} trials, {_f(v['span_s'])} s)"
                 for k, v in sc.items() if k.startswith("workers_")]
        lines += ["", "Scaling on PostgreSQL: " + "; ".join(parts) + "."]
    return "\n".join(lines) + "\n"


def check_numbers(results: dict[str, Any]) -> None:
    """Every suite produced finite, positive numbers (no timing is asserted)."""
    problems = []
    for suite, result in results["suites"].items():
        for key, value in _numbers(result):
            if isinstance(value, float) and not math.isfinite(value) and \
                    "cold_load" not in key and "time_to" not in key:
                problems.append(f"{suite}: {key} = {value}")
    for _, _, got, _ in targets(results):
        if "nan" in got:
            problems.append(f"target value {got}")
    if problems:
        raise SystemExit("benchmarks produced no number for: " + ", ".join(problems))


def _numbers(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() if k != "runs"
                for pair in _numbers(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), obj)] if isinstance(obj, (int, float)) else []


if __name__ == "__main__":
    main()
