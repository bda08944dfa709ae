"""One self-contained HTML report of a study, for people who do not run the dashboard.

Plotly's JavaScript is embedded once, inline; the file references no external URL, so it opens
offline. Plots: optimization history, parameter importances, intermediate values (learning
curves), parallel coordinates, slices; then a table of the best trials.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.errors import SpecError


def _plots() -> list[tuple[str, Callable[[optuna.Study], Any]]]:
    from optuna import visualization as vis

    return [
        ("Optimization history", vis.plot_optimization_history),
        ("Parameter importances", vis.plot_param_importances),
        ("Intermediate values (learning curves)", vis.plot_intermediate_values),
        ("Parallel coordinates", vis.plot_parallel_coordinate),
        ("Slices", vis.plot_slice),
    ]


def write_report(study: optuna.Study, output: str | Path, top: int = 10) -> str:
    """Write the report; return a one-line summary. A study with no complete trial is an error."""
    from plotly.offline import get_plotlyjs

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    if not complete:
        raise SpecError(None, "STUDY", "a study with at least one complete trial to report on",
                        f"<{study.study_name}: {_counts_text(counts)}>")
    sections = []
    for title, plot in _plots():
        try:
            figure = plot(study)
            body = figure.to_html(full_html=False, include_plotlyjs=False)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            body = f"<p class='note'>Not available for this study: {html.escape(str(e))}</p>"
        sections.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")
    table = _top_table(study, complete, top)
    metric = study.user_attrs.get("metric", "value")
    page = _PAGE.format(
        title=html.escape(f"hpsearch report: {study.study_name}"),
        plotly=get_plotlyjs(),
        name=html.escape(study.study_name),
        summary=html.escape(
            f"{study.direction.name.lower()} {metric}; {_counts_text(counts)}; generated "
            f"{datetime.now():%Y-%m-%d %H:%M}"),
        best=html.escape(
            f"best {metric} = {study.best_value:.6g} (trial {study.best_trial.number})"),
        sections="\n".join(sections),
        table=table,
    )
    Path(output).write_text(page, encoding="utf-8")
    return f"{len(complete)} complete trials of {sum(counts.values())}, {len(sections)} plots"


def _counts_text(counts: dict[str, int]) -> str:
    shown = [f"{n} {state.lower()}" for state, n in counts.items() if n]
    return ", ".join(shown) or "no trials"


def _top_table(study: optuna.Study, complete: list[Any], top: int) -> str:
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = sorted(complete, key=lambda t: t.value, reverse=reverse)[:top]
    names = sorted({name for t in best for name in t.params})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in
                   ["rank", "trial", "value", "best epoch", "validation metrics", *names])
    rows = []
    for rank, t in enumerate(best, start=1):
        metrics = json.dumps(t.user_attrs.get("val_metrics", {}))
        cells = [rank, t.number, f"{t.value:.6g}", t.user_attrs.get("best_epoch", ""), metrics]
        cells += [_fmt(t.params.get(n, "")) for n in names]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (f"<table id='top-trials'><thead><tr>{head}</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
.note {{ color: #777; }}
</style>
<script type="text/javascript">{plotly}</script>
</head><body>
<h1>Study {name}</h1>
<p>{summary}</p>
<p><strong>{best}</strong></p>
<section><h2>Best trials</h2>{table}</section>
{sections}
</body></html>
"""
