"""Merges result files into CSV tables and one self-contained HTML report.

``build_report(result_paths, out_dir)`` writes:

- ``results.csv``: one row per (model, benchmark, metric), with the baseline value and the
  delta when the result carries a forgetting check;
- ``groups.csv``: one row per (model, benchmark, group key, group) with n, accuracy and a
  seeded percentile-bootstrap 95% confidence interval computed from the predictions;
- ``report.html``, self-contained (figures as base64 PNG, the map as inline SVG; no CDN,
  no network): a leaderboard (main metric with its 95% CI, a chance row), a summary and
  the skipped items of every result, a world map of accuracy by country per benchmark and
  model (the ISO-keyed SVG of ``pygal_maps_world``, from ``cultureclip[report]``; continent
  tiles without it), before/after deltas, and per benchmark and group key a table with the
  models as columns and a bar figure with the chance line. Country values are normalised
  through :mod:`cultureclip.data.taxonomy` (``KR`` and ``South Korea`` are one country).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from cultureclip.core.errors import MissingInputError
from cultureclip.eval.metrics import GROUP_KEYS, bootstrap_ci
from cultureclip.eval.report_figures import (
    MAP_LEGEND,
    before_after,
    country_map,
    country_name,
    country_tiles,
    group_figure,
    merged_counts,
    predictions_of,
    world_geometry,
)
from cultureclip.eval.results import EvalResult, find_results, load_result
from cultureclip.utils.io import atomic_write_text


def _group_value(key: str, value: Any) -> str:
    text = str(value or "unknown")
    return country_name(text) if key == "country" else text


def main_metric(result: EvalResult) -> str:
    """The metric a leaderboard shows for a result."""
    for name in ("accuracy", "acc1", "MR"):
        if name in result.metrics:
            return name
    return next(iter(result.metrics), "")


def main_ci(result: EvalResult, *, n_resamples: int = 1000, seed: int = 42) -> tuple[float, float]:
    """Bootstrap 95% CI of the main metric when it is a per-item accuracy, else (nan, nan)."""
    metric = main_metric(result)
    predictions = predictions_of(result)
    if metric not in ("accuracy", "acc1") or not predictions:
        return (math.nan, math.nan)
    if result.config.get("protocol") == "cultureclip" and any(
        p.get("role") == "main" for p in predictions
    ):  # CROPE, our protocol: accuracy counts the main images only
        predictions = [p for p in predictions if p.get("role") == "main"]
    flags = [bool(p.get("correct")) for p in predictions]
    return bootstrap_ci(flags, n_resamples=n_resamples, seed=seed)


def group_rows(
    result: EvalResult, *, n_resamples: int = 1000, seed: int = 42
) -> list[dict[str, Any]]:
    """Per-group accuracy with bootstrap CIs, from the result's predictions when available.

    Countries are merged under their taxonomy name, so ``KR`` and ``South Korea`` are one row.
    """
    predictions = predictions_of(result)
    flags: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for record in predictions:
        for key in result.per_group:
            flags[(key, _group_value(key, record.get(key)))].append(bool(record.get("correct")))
    rows = []
    for key, groups in result.per_group.items():
        for value, (n, correct) in merged_counts(groups, partial(_group_value, key)).items():
            low, high = (
                bootstrap_ci(flags[(key, value)], n_resamples=n_resamples, seed=seed)
                if flags.get((key, value))
                else (math.nan, math.nan)
            )
            rows.append(
                {
                    "model": result.model,
                    "benchmark": result.benchmark,
                    "group_key": key,
                    "group": value,
                    "n": int(n),
                    "accuracy": round(100.0 * correct / n, 4) if n else 0.0,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return rows


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.2f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1250px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}
table.leaderboard td,table.leaderboard th{font-size:1.05em;padding:4px 12px}
table.leaderboard tr.chance td{color:#777;font-style:italic}
td.best{font-weight:bold}
img.figure{display:block;margin:0.5em 0 1.5em;max-width:100%}
.note{color:#666;font-size:0.85em}
.maps{display:flex;flex-wrap:wrap;gap:1em}
figure.map{margin:0;width:600px}figure.map figcaption{font-weight:600;font-size:0.9em}
svg.worldmap{width:600px;height:336px;background:#f7fbff;border:1px solid #ddd}
.legend{display:flex;align-items:center;gap:0.4em;font-size:0.8em;color:#555;margin:0.3em 0}
.legend .ramp{display:inline-block;width:160px;height:10px;
background:linear-gradient(to right,#440154,#3b528b,#21918c,#5ec962,#fde725)}
.legend .swatch{display:inline-block;width:14px;height:10px;background:#e4e4e4;margin-left:1em}
details{margin:0.2em 0}
"""


def _chance(results: Iterable[EvalResult]) -> float | None:
    """The chance level of a benchmark: the first of its results that has one."""
    return next((r.chance for r in results if r.chance is not None), None)


def _ci_text(low: float, high: float) -> str:
    return "" if math.isnan(low) else f" [{low:.1f}–{high:.1f}]"


def _leaderboard(results: Sequence[EvalResult], n_resamples: int, seed: int) -> str:
    labels = sorted({r.benchmark for r in results})
    models = sorted({r.model for r in results})
    by = {(r.model, r.benchmark): r for r in results}
    metric_of = {
        label: main_metric(next(r for r in results if r.benchmark == label)) for label in labels
    }
    best = {
        label: max(
            by[(m, label)].metrics.get(metric_of[label], -1.0) for m in models if (m, label) in by
        )
        for label in labels
    }
    head = "".join(
        f"<th title='{html.escape(metric_of[label])}'>{html.escape(label)}</th>" for label in labels
    )
    rows = []
    for model in models:
        cells = [f"<td>{html.escape(model)}</td>"]
        values = []
        for label in labels:
            result = by.get((model, label))
            if result is None:
                cells.append("<td>–</td>")
                continue
            value = result.metrics.get(metric_of[label], math.nan)
            values.append(value)
            low, high = main_ci(result, n_resamples=n_resamples, seed=seed)
            mark = " class='best'" if len(models) > 1 and value == best[label] else ""
            cells.append(
                f"<td{mark}>{value:.2f}<span class='note'>{_ci_text(low, high)}</span></td>"
            )
        mean = sum(values) / len(values) if values else math.nan
        cells.append(f"<td>{mean:.2f}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    chances = [_chance(r for r in results if r.benchmark == label) for label in labels]
    chance_cells = "".join("<td>–</td>" if c is None else f"<td>{c:.2f}</td>" for c in chances)
    rows.append(f"<tr class='chance'><td>chance</td>{chance_cells}<td></td></tr>")
    metrics = ", ".join(f"{label}: {metric_of[label]}" for label in labels)
    return (
        "<h2>Leaderboard</h2><p class='note'>Main metric per benchmark ("
        + html.escape(metrics)
        + "), 95% bootstrap CI in brackets; best per column in bold; the last row is a uniform "
        "random guess.</p>"
        f"<table class='leaderboard'><thead><tr><th>model</th>{head}<th>mean</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _models_as_columns(rows: list[dict[str, Any]], models: list[str]) -> str:
    groups = sorted({r["group"] for r in rows}, key=lambda g: (g == "unknown", g))
    by = {(r["model"], r["group"]): r for r in rows}
    table_rows = []
    for group in groups:
        n = max((by[(m, group)]["n"] for m in models if (m, group) in by), default=0)
        cells = [group, n]
        for model in models:
            row = by.get((model, group))
            cells.append(
                "–"
                if row is None
                else f"{row['accuracy']:.2f}{_ci_text(row['ci_low'], row['ci_high'])}"
            )
        table_rows.append(cells)
    return _table(["group", "n", *models], table_rows)


def build_report(
    result_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    n_resamples: int = 1000,
    seed: int = 42,
) -> Path:
    """Writes ``results.csv``, ``groups.csv`` and ``report.html`` to ``out_dir``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    files = find_results(list(result_paths))
    if not files:
        raise MissingInputError(f"no result.json under {', '.join(map(str, result_paths))}")
    results = [load_result(f) for f in files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric_rows = [row for r in results for row in _metric_rows(r)]
    write_csv(out / "results.csv", metric_rows, list(metric_rows[0]) if metric_rows else ["model"])
    groups = [row for r in results for row in group_rows(r, n_resamples=n_resamples, seed=seed)]
    write_csv(
        out / "groups.csv",
        groups,
        ["model", "benchmark", "group_key", "group", "n", "accuracy", "ci_low", "ci_high"],
    )
    sections = [
        "<h1>cultureclip evaluation report</h1>",
        f"<p class='note'>{len(results)} result(s). Metrics in percent; confidence intervals are "
        f"{n_resamples}-sample percentile bootstrap, seed {seed}.</p>",
        _leaderboard(results, n_resamples, seed),
        _summary_section(results),
        _skipped_section(results),
        _maps_section(results),
        _before_after_section(results),
        *(
            _benchmark_section(results, groups, name)
            for name in sorted({r.benchmark for r in results})
        ),
    ]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cultureclip report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    return atomic_write_text(out / "report.html", page)


def _metric_rows(r: EvalResult) -> list[dict[str, Any]]:
    """The ``results.csv`` rows of one result: one per metric."""
    rows = []
    for metric, value in r.metrics.items():
        base = r.baseline.metrics.get(metric) if r.baseline else None
        rows.append(
            {
                "model": r.model,
                "benchmark": r.benchmark,
                "task": r.task,
                "metric": metric,
                "value": round(value, 4),
                "n": r.n,
                "n_skipped": r.n_skipped,
                "chance": "" if r.chance is None or metric != main_metric(r) else r.chance,
                "baseline_model": r.baseline.model if r.baseline else "",
                "baseline_value": "" if base is None else round(base, 4),
                "delta": "" if base is None else round(value - base, 4),
                "data": r.data or r.config.get("data", ""),
                "seconds": r.seconds,
            }
        )
    return rows


def _summary_section(results: Sequence[EvalResult]) -> str:
    summary = [
        (
            r.model,
            r.benchmark,
            r.task,
            r.data or r.config.get("data", ""),
            r.n,
            r.n_skipped,
            f"{r.seconds:.1f}",
            *[f"{k}={v:.2f}" for k, v in r.metrics.items()][:1],
        )
        for r in results
    ]
    headers = ["model", "benchmark", "task", "data", "n", "skipped", "wall s", "main metric"]
    return "<h2>Results</h2>" + _table(headers, summary)


def _skipped_section(results: Sequence[EvalResult]) -> str:
    parts = []
    for r in results:
        if not r.n_skipped:
            continue
        shown = "".join(f"<li>{html.escape(s)}</li>" for s in r.skipped[:20])
        more = r.n_skipped - min(20, len(r.skipped))
        tail = f"<li>… and {more} more (see result.json)</li>" if more > 0 else ""
        parts.append(
            f"<details><summary>{html.escape(r.model)} · {html.escape(r.benchmark)}: "
            f"{r.n_skipped} skipped of {r.n + r.n_skipped}</summary><ul>{shown}{tail}</ul></details>"
        )
    if not parts:
        return ""
    return (
        "<h2>Skipped items</h2><p class='note'>Malformed items and unreadable images are "
        "left out of every metric.</p>" + "".join(parts)
    )


def _maps_section(results: Sequence[EvalResult]) -> str:
    geometry = world_geometry()
    with_countries = (r for r in results if r.per_group.get("country"))
    ordered = sorted(with_countries, key=lambda r: (r.benchmark, r.model))
    drawn = [country_map(r, geometry[1]) if geometry else country_tiles(r) for r in ordered]
    maps = [m for m in drawn if m]
    if not maps:
        return ""
    if geometry:
        return (
            geometry[0] + "<h2>Accuracy by country</h2><p class='note'>Choropleth of accuracy per "
            "country (map geometry: pygal_maps_world). Grey: no items from that country.</p>"
            + MAP_LEGEND
            + f"<div class='maps'>{''.join(maps)}</div>"
        )
    return (
        "<h2>Accuracy by country</h2><p class='note'>Install cultureclip[report] "
        "(pygal_maps_world) for a world map; tiles grouped by continent meanwhile.</p>"
        + "".join(maps)
    )


def _before_after_section(results: Sequence[EvalResult]) -> str:
    figure = before_after(results)
    if not figure:
        return ""
    rows = [
        (
            r.model,
            r.benchmark,
            m,
            r.baseline.model,
            r.baseline.metrics[m],
            v,
            v - r.baseline.metrics[m],
        )
        for r in results
        if r.baseline
        for m, v in r.metrics.items()
        if m in r.baseline.metrics
    ]
    headers = ["model", "benchmark", "metric", "baseline", "before", "after", "delta"]
    return "<h2>Before / after fine-tuning</h2>" + figure + _table(headers, rows)


def _benchmark_section(
    results: Sequence[EvalResult], groups: list[dict[str, Any]], benchmark: str
) -> str:
    """One benchmark: its metrics per model, then a figure and a table per group key."""
    runs = sorted((r for r in results if r.benchmark == benchmark), key=lambda r: r.model)
    models = [r.model for r in runs]
    chance = _chance(runs)
    names = sorted({m for r in runs for m in r.metrics})
    sections = [
        f"<h2>{html.escape(benchmark)}</h2>",
        _table(
            ["model", *names, "n", "skipped", "chance"],
            [
                (
                    r.model,
                    *[r.metrics.get(m, math.nan) for m in names],
                    r.n,
                    r.n_skipped,
                    math.nan if r.chance is None else r.chance,
                )
                for r in runs
            ],
        ),
    ]
    bench_groups = [g for g in groups if g["benchmark"] == benchmark]
    keys = [k for k in GROUP_KEYS if any(g["group_key"] == k for g in bench_groups)]
    keys += sorted({g["group_key"] for g in bench_groups} - set(keys))
    for key in keys:
        rows = [g for g in bench_groups if g["group_key"] == key]
        n_groups = len({g["group"] for g in rows})
        title = f"<h3>per {html.escape(key.replace('_', ' '))}</h3>"
        figure = group_figure(rows, key, benchmark, chance) if n_groups >= 2 else ""
        table = _models_as_columns(rows, models)
        if n_groups > 12:  # long lists: the figure, and the table folded away
            table = f"<details><summary>table ({n_groups} groups)</summary>{table}</details>"
        sections.append(title + figure + table)
    return "".join(sections)
