"""Merges result files into CSV tables and one self-contained HTML report.

``build_report(result_paths, out_dir)`` writes:

- ``results.csv``: one row per (model, benchmark, metric), with the baseline value and the
  delta when the result carries a forgetting check;
- ``groups.csv``: one row per (model, benchmark, group key, group) with n, accuracy and a
  seeded percentile-bootstrap 95% confidence interval computed from the predictions;
- ``report.html``: the tables and figures (matplotlib, embedded as base64 PNG; no CDN,
  no network): accuracy per continent / country / category / question type with CI error
  bars, accuracy by country as **tiles grouped by continent** (a schematic stand-in for a
  world map: no map geometry ships offline, and the figure says so), and before/after
  bars for fine-tuned models against their baselines.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cultureclip.core.errors import MissingInputError
from cultureclip.eval.metrics import GROUP_KEYS, bootstrap_ci
from cultureclip.eval.results import EvalResult, find_results, load_result
from cultureclip.utils.io import atomic_write_text

CONTINENT_ORDER = (
    "Africa",
    "Asia",
    "Europe",
    "North America",
    "South America",
    "Oceania",
    "Antarctica",
    "Unknown",
)


def _figure_to_img(fig: Any, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def group_rows(
    result: EvalResult, *, n_resamples: int = 1000, seed: int = 42
) -> list[dict[str, Any]]:
    """Per-group accuracy with bootstrap CIs, from the result's predictions when available."""
    try:
        predictions = result.predictions()
    except (ValueError, FileNotFoundError):
        predictions = []
    flags: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for record in predictions:
        for key in result.per_group:
            flags[(key, str(record.get(key) or "unknown"))].append(bool(record.get("correct")))
    rows = []
    for key, groups in result.per_group.items():
        for value, stats in groups.items():
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
                    "n": int(stats["n"]),
                    "accuracy": float(stats["accuracy"]),
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return rows


def _country_continents(result: EvalResult) -> dict[str, str]:
    try:
        predictions = result.predictions()
    except (ValueError, FileNotFoundError):
        return {}
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for record in predictions:
        if record.get("country"):
            votes[str(record["country"])][str(record.get("continent") or "Unknown")] += 1
    return {country: counter.most_common(1)[0][0] for country, counter in votes.items()}


def _group_figure(rows: list[dict[str, Any]], key: str, benchmark: str) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    models = sorted({r["model"] for r in rows})
    groups = sorted({r["group"] for r in rows})
    by = {(r["model"], r["group"]): r for r in rows}
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(groups) * max(1, len(models)) + 2), 3.4))
    x = np.arange(len(groups))
    for m, model in enumerate(models):
        values = [by[(model, g)]["accuracy"] if (model, g) in by else np.nan for g in groups]
        lows = [by[(model, g)]["ci_low"] if (model, g) in by else np.nan for g in groups]
        highs = [by[(model, g)]["ci_high"] if (model, g) in by else np.nan for g in groups]
        err = np.array(
            [
                [max(0.0, v - lo) for v, lo in zip(values, lows, strict=True)],
                [max(0.0, hi - v) for v, hi in zip(values, highs, strict=True)],
            ]
        )
        err = np.nan_to_num(err)
        ax.bar(x + m * width - 0.4 + width / 2, values, width, yerr=err, capsize=2, label=model)
    ax.set_xticks(
        x,
        groups,
        rotation=45 if len(groups) > 4 else 0,
        ha="right" if len(groups) > 4 else "center",
    )
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{benchmark}: accuracy per {key.replace('_', ' ')} (95% bootstrap CI)")
    ax.legend(fontsize=7, loc="upper right")
    return _figure_to_img(fig, f"{benchmark} accuracy per {key}")


def _country_tiles(result: EvalResult) -> str | None:
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    countries = result.per_group.get("country")
    if not countries:
        return None
    continents = _country_continents(result)
    columns: dict[str, list[str]] = defaultdict(list)
    for country in sorted(countries):
        columns[continents.get(country, "Unknown")].append(country)
    order = [c for c in CONTINENT_ORDER if c in columns] + sorted(
        set(columns) - set(CONTINENT_ORDER)
    )
    height = max(len(v) for v in columns.values())
    fig, ax = plt.subplots(figsize=(1.5 * len(order) + 1.2, 0.42 * height + 1.3))
    cmap, norm = colormaps["viridis"], Normalize(0, 100)
    for col, continent in enumerate(order):
        for row, country in enumerate(columns[continent]):
            value = countries[country]["accuracy"]
            ax.add_patch(plt.Rectangle((col, -row), 0.95, 0.9, color=cmap(norm(value))))
            colour = "white" if value < 60 else "black"
            ax.text(
                col + 0.47,
                -row + 0.45,
                f"{country[:12]}\n{value:.0f}%",
                ha="center",
                va="center",
                fontsize=6,
                color=colour,
            )
    ax.set_xlim(0, len(order))
    ax.set_ylim(-height + 0.9, 1.0)
    ax.set_xticks([i + 0.47 for i in range(len(order))], order, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, label="accuracy (%)"
    )
    ax.set_title(
        f"{result.model} on {result.benchmark}: accuracy by country\n"
        "(tiles grouped by continent, a schematic — not a geographic map)",
        fontsize=8,
    )
    return _figure_to_img(fig, f"accuracy by country, {result.model}, {result.benchmark}")


def _before_after(results: Sequence[EvalResult]) -> str | None:
    import matplotlib.pyplot as plt
    import numpy as np

    compared = [r for r in results if r.baseline is not None]
    if not compared:
        return None
    labels, before, after = [], [], []
    for result in compared:
        assert result.baseline is not None
        for metric, value in result.metrics.items():
            if metric in result.baseline.metrics and not metric.startswith("n_"):
                labels.append(f"{result.benchmark}\n{metric}\n{result.model[-24:]}")
                before.append(result.baseline.metrics[metric])
                after.append(value)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 1.5), 3.6))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, before, 0.4, label="baseline (before)", color="#999999")
    ax.bar(x + 0.2, after, 0.4, label="fine-tuned (after)", color="#1f77b4")
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        ax.text(i + 0.2, a + 1, f"{a - b:+.1f}", ha="center", fontsize=7)
    ax.set_xticks(x, labels, fontsize=6)
    ax.set_ylabel("%")
    ax.set_ylim(0, 110)
    ax.set_title("before / after fine-tuning (forgetting check: delta above bars)")
    ax.legend(fontsize=7)
    return _figure_to_img(fig, "before and after fine-tuning")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.2f}"
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
img.figure{display:block;margin:0.5em 0 1.5em;max-width:100%}
.note{color:#666;font-size:0.85em}
"""


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

    metric_rows = []
    for r in results:
        for metric, value in r.metrics.items():
            base = r.baseline.metrics.get(metric) if r.baseline else None
            metric_rows.append(
                {
                    "model": r.model,
                    "benchmark": r.benchmark,
                    "task": r.task,
                    "metric": metric,
                    "value": round(value, 4),
                    "n": r.n,
                    "n_skipped": r.n_skipped,
                    "baseline_model": r.baseline.model if r.baseline else "",
                    "baseline_value": "" if base is None else round(base, 4),
                    "delta": "" if base is None else round(value - base, 4),
                    "data": r.data or r.config.get("data", ""),
                    "seconds": r.seconds,
                }
            )
    _write_csv(out / "results.csv", metric_rows, list(metric_rows[0]) if metric_rows else ["model"])
    groups = [row for r in results for row in group_rows(r, n_resamples=n_resamples, seed=seed)]
    _write_csv(
        out / "groups.csv",
        groups,
        ["model", "benchmark", "group_key", "group", "n", "accuracy", "ci_low", "ci_high"],
    )

    sections = [
        "<h1>cultureclip evaluation report</h1>",
        f"<p class='note'>{len(results)} result(s). Metrics in percent; confidence intervals are "
        f"{n_resamples}-sample percentile bootstrap, seed {seed}.</p>",
    ]
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
    sections.append(
        "<h2>Summary</h2>"
        + _table(
            ["model", "benchmark", "task", "data", "n", "skipped", "wall s", "main metric"],
            summary,
        )
    )
    skipped = [r for r in results if r.n_skipped]
    if skipped:
        parts = []
        for r in skipped:
            shown = "".join(f"<li>{html.escape(s)}</li>" for s in r.skipped[:20])
            more = r.n_skipped - min(20, len(r.skipped))
            tail = f"<li>… and {more} more (see result.json)</li>" if more > 0 else ""
            parts.append(
                f"<details><summary>{html.escape(r.model)} · {html.escape(r.benchmark)}: "
                f"{r.n_skipped} skipped of {r.n + r.n_skipped}</summary><ul>{shown}{tail}</ul></details>"
            )
        sections.append(
            "<h2>Skipped items</h2><p class='note'>Malformed items and unreadable images are "
            "left out of every metric.</p>" + "".join(parts)
        )
    before_after = _before_after(results)
    if before_after:
        sections.append("<h2>Before / after fine-tuning</h2>" + before_after)
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
        sections.append(
            _table(["model", "benchmark", "metric", "baseline", "before", "after", "delta"], rows)
        )
    for benchmark in sorted({r.benchmark for r in results}):
        runs = [r for r in results if r.benchmark == benchmark]
        sections.append(f"<h2>{html.escape(benchmark)}</h2>")
        names = sorted({m for r in runs for m in r.metrics})
        sections.append(
            _table(
                ["model", *names],
                [(r.model, *[r.metrics.get(m, math.nan) for m in names]) for r in runs],
            )
        )
        bench_groups = [g for g in groups if g["benchmark"] == benchmark]
        for key in GROUP_KEYS:
            rows = [g for g in bench_groups if g["group_key"] == key]
            if rows:
                sections.append(
                    f"<h3>per {key.replace('_', ' ')}</h3>" + _group_figure(rows, key, benchmark)
                )
                sections.append(
                    _table(
                        ["model", "group", "n", "accuracy", "CI low", "CI high"],
                        [
                            (
                                g["model"],
                                g["group"],
                                g["n"],
                                g["accuracy"],
                                g["ci_low"],
                                g["ci_high"],
                            )
                            for g in rows
                        ],
                    )
                )
        for r in runs:
            tiles = _country_tiles(r)
            if tiles:
                sections.append(f"<h3>by country: {html.escape(r.model)}</h3>" + tiles)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cultureclip report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    return atomic_write_text(out / "report.html", page)
