"""Merges result files into CSV tables and one self-contained HTML report.

``build_report(result_paths, out_dir)`` writes:

- ``results.csv``: one row per (model, benchmark, metric), with the baseline value and the
  delta when the result carries a forgetting check;
- ``groups.csv``: one row per (model, benchmark, group key, group) with n, accuracy and a
  seeded percentile-bootstrap 95% confidence interval computed from the predictions;
- ``report.html``, self-contained (figures as base64 PNG, the map as inline SVG; no CDN,
  no network): a **leaderboard** (models × benchmarks, main metric with its 95% CI and a
  chance row), a summary of every result (data, n, skipped, wall time), the skipped items,
  a **world map** per benchmark and model (a choropleth of accuracy by country, drawn from
  the ISO-keyed world SVG of the ``pygal_maps_world`` package, installed with
  ``cultureclip[report]``; continent tiles when it is missing), before/after deltas of
  fine-tuned models against their baselines, and per benchmark its metrics (with the
  chance level) and, per group key (continent, country, category, question type,
  language, zero-shot class), one table with the models as columns (accuracy and CI) and a
  horizontal bar figure with a dashed chance line (groups with a single value get the
  table only). Country values are normalised through :mod:`cultureclip.data.taxonomy`
  (``KR`` and ``South Korea`` are one country).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from cultureclip.core.errors import MissingInputError
from cultureclip.data.taxonomy import country as lookup_country
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


def country_name(value: str) -> str:
    """The taxonomy's name of a country code or name (``KR`` -> ``South Korea``); else as given."""
    entry = lookup_country(value) if value and value != "unknown" else None
    return entry.name if entry else value


def _group_value(key: str, value: Any) -> str:
    text = str(value or "unknown")
    return country_name(text) if key == "country" else text


def main_metric(result: EvalResult) -> str:
    """The metric a leaderboard shows for a result."""
    for name in ("accuracy", "acc1", "MR"):
        if name in result.metrics:
            return name
    return next(iter(result.metrics), "")


def _predictions(result: EvalResult) -> list[dict[str, Any]]:
    try:
        return result.predictions()
    except (ValueError, FileNotFoundError):
        return []


def main_ci(result: EvalResult, *, n_resamples: int = 1000, seed: int = 42) -> tuple[float, float]:
    """Bootstrap 95% CI of the main metric when it is a per-item accuracy, else (nan, nan)."""
    metric = main_metric(result)
    predictions = _predictions(result)
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
    predictions = _predictions(result)
    flags: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for record in predictions:
        for key in result.per_group:
            flags[(key, _group_value(key, record.get(key)))].append(bool(record.get("correct")))
    merged: dict[tuple[str, str], list[float]] = {}
    for key, groups in result.per_group.items():
        for value, stats in groups.items():
            name = _group_value(key, value)
            n, correct = merged.get((key, name), [0.0, 0.0])
            merged[(key, name)] = [n + stats["n"], correct + stats.get("correct", 0.0)]
    rows = []
    for (key, value), (n, correct) in merged.items():
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


def _country_continents(result: EvalResult) -> dict[str, str]:
    try:
        predictions = result.predictions()
    except (ValueError, FileNotFoundError):
        return {}
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for record in predictions:
        if record.get("country"):
            name = country_name(str(record["country"]))
            votes[name][str(record.get("continent") or "Unknown")] += 1
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


def _group_figure(
    rows: list[dict[str, Any]], key: str, benchmark: str, chance: float | None
) -> str:
    """Horizontal bars per group and model, labelled with their value, CI whiskers, chance line."""
    import matplotlib.pyplot as plt
    import numpy as np

    models = sorted({r["model"] for r in rows})
    groups = sorted({r["group"] for r in rows}, key=lambda g: (g == "unknown", g))
    by = {(r["model"], r["group"]): r for r in rows}
    bar = 0.8 / max(1, len(models))
    height = max(2.2, 0.22 * len(groups) * len(models) + 0.25 * len(groups) + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height))
    y = np.arange(len(groups))
    for m, model in enumerate(models):
        values = [by[(model, g)]["accuracy"] if (model, g) in by else np.nan for g in groups]
        lows = [by[(model, g)]["ci_low"] if (model, g) in by else np.nan for g in groups]
        highs = [by[(model, g)]["ci_high"] if (model, g) in by else np.nan for g in groups]
        err = np.nan_to_num(
            np.array(
                [
                    [max(0.0, v - lo) for v, lo in zip(values, lows, strict=True)],
                    [max(0.0, hi - v) for v, hi in zip(values, highs, strict=True)],
                ]
            )
        )
        positions = y - 0.4 + bar * (m + 0.5)
        ax.barh(positions, values, bar, xerr=err, capsize=2, label=model, error_kw={"lw": 0.8})
        for position, value in zip(positions, values, strict=True):
            if not np.isnan(value):  # a 0% bar is drawn as its number, never as nothing
                ax.text(value + 1, position, f"{value:.0f}", va="center", fontsize=7)
    if chance is not None:
        ax.axvline(chance, color="#444", linestyle="--", linewidth=1, label=f"chance {chance:.0f}%")
    ax.set_yticks(y, [g if len(g) <= 40 else g[:39] + "…" for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(
        f"{benchmark}: accuracy per {key.replace('_', ' ')} (95% bootstrap CI)", fontsize=9
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _figure_to_img(fig, f"{benchmark} accuracy per {key}")


def _country_tiles(result: EvalResult) -> str | None:
    """The fallback map: countries as tiles grouped by continent (when no map geometry)."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    raw = result.per_group.get("country")
    if not raw:
        return None
    countries: dict[str, dict[str, float]] = {}
    for value, stats in raw.items():
        name = country_name(value)
        n, correct = countries.get(name, {"n": 0.0, "correct": 0.0}).values()
        countries[name] = {"n": n + stats["n"], "correct": correct + stats.get("correct", 0.0)}
    for stats in countries.values():
        stats["accuracy"] = 100.0 * stats["correct"] / stats["n"] if stats["n"] else 0.0
    if len(countries) < 2:
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


# ---- world map ------------------------------------------------------------------------
MAP_EMPTY = "#e4e4e4"


@cache
def world_geometry() -> tuple[str, frozenset[str]] | None:
    """``(svg <g> of every country, ISO codes)`` from ``pygal_maps_world``; None if absent.

    Each country gets ``fill: var(--<iso2>, grey)``: one copy of the geometry serves every
    map on the page, each map setting its colours as CSS variables on a ``<use>``.
    """
    try:
        from importlib import resources

        source = resources.files("pygal_maps_world").joinpath("worldmap.svg")
        text = source.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return None
    parts, codes = [], set()
    for match in re.finditer(r'<g class="([a-z]{2}) country map-element">(.*?)</g>', text, re.S):
        code, paths = match.group(1), match.group(2)
        codes.add(code)
        parts.append(f'<g style="fill:var(--{code},{MAP_EMPTY})">{paths.strip()}</g>')
    if not parts:
        return None
    view = re.search(r'viewBox="([^"]+)"', text)
    box = view.group(1) if view else "0 0 2475 1388"
    group = (
        f'<svg width="0" height="0" style="position:absolute" aria-hidden="true" viewBox="{box}">'
        f'<defs><g id="world" stroke="#ffffff" stroke-width="0.6">{"".join(parts)}</g></defs></svg>'
    )
    return group, frozenset(codes)


def _viridis(value: float) -> str:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return str(to_hex(colormaps["viridis"](max(0.0, min(100.0, value)) / 100.0)))


def _country_map(result: EvalResult, codes: frozenset[str]) -> str | None:
    """A choropleth of accuracy by country (needs 2+ countries), or None."""
    raw = result.per_group.get("country")
    if not raw:
        return None
    merged: dict[str, list[float]] = {}
    unplaced: list[str] = []
    for value, stats in raw.items():
        entry = lookup_country(value) if value and value != "unknown" else None
        code = entry.iso2.lower() if entry else ""
        if code not in codes:
            unplaced.append(value)
            continue
        n, correct = merged.get(code, [0.0, 0.0])
        merged[code] = [n + stats["n"], correct + stats.get("correct", 0.0)]
    if len(merged) + len(unplaced) < 2 or not merged:
        return None
    style = ";".join(
        f"--{code}:{_viridis(100.0 * correct / n if n else 0.0)}"
        for code, (n, correct) in sorted(merged.items())
    )
    label = f"accuracy by country, {result.model}, {result.benchmark}"
    listed = ", ".join(
        f"{country_name(code.upper())} {100.0 * c / n:.0f}% (n={int(n)})"
        for code, (n, c) in sorted(merged.items())
    )
    # The numbers behind the colours, folded away: a map is read at a glance, a list is not.
    note = (
        f"<details class='note'><summary>{len(merged)} countries: values</summary>"
        f"<p>{html.escape(listed)}"
    )
    if unplaced:
        note += f"; not on the map: {html.escape(', '.join(sorted(unplaced)))}"
    note += "</p></details>"
    return (
        f"<figure class='map'><figcaption>{html.escape(result.model)} · "
        f"{html.escape(result.benchmark)}</figcaption>"
        f"<svg class='worldmap' role='img' aria-label='{html.escape(label)}' "
        f"viewBox='0 0 2475 1388' style='{style}'><title>{html.escape(label)}</title>"
        f"<use href='#world'/></svg>{note}</figure>"
    )


MAP_LEGEND = (
    "<div class='legend'><span>0%</span><span class='ramp'></span><span>100%</span>"
    "<span class='swatch'></span><span>no data</span></div>"
)


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
            (
                by[(m, label)].metrics.get(metric_of[label], -1.0)
                for m in models
                if (m, label) in by
            ),
            default=None,
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
    chance_cells = ["<td>chance</td>"]
    for label in labels:
        chances = [r.chance for r in results if r.benchmark == label and r.chance is not None]
        chance_cells.append(f"<td>{chances[0]:.2f}</td>" if chances else "<td>–</td>")
    chance_cells.append("<td></td>")
    rows.append("<tr class='chance'>" + "".join(chance_cells) + "</tr>")
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
                    "chance": "" if r.chance is None or metric != main_metric(r) else r.chance,
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
        _leaderboard(results, n_resamples, seed),
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
        "<h2>Results</h2>"
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
    geometry = world_geometry()
    maps = []
    for r in sorted(results, key=lambda r: (r.benchmark, r.model)):
        drawn = _country_map(r, geometry[1]) if geometry else _country_tiles(r)
        if drawn:
            maps.append(drawn)
    if maps:
        if geometry:
            sections.append(
                geometry[0]
                + "<h2>Accuracy by country</h2><p class='note'>Choropleth of accuracy per "
                "country (map geometry: pygal_maps_world). Grey: no items from that country.</p>"
                + MAP_LEGEND
                + f"<div class='maps'>{''.join(maps)}</div>"
            )
        else:
            sections.append(
                "<h2>Accuracy by country</h2><p class='note'>Install cultureclip[report] "
                "(pygal_maps_world) for a world map; tiles grouped by continent meanwhile.</p>"
                + "".join(maps)
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
        runs = sorted((r for r in results if r.benchmark == benchmark), key=lambda r: r.model)
        models = [r.model for r in runs]
        chance = next((r.chance for r in runs if r.chance is not None), None)
        sections.append(f"<h2>{html.escape(benchmark)}</h2>")
        names = sorted({m for r in runs for m in r.metrics})
        sections.append(
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
            )
        )
        bench_groups = [g for g in groups if g["benchmark"] == benchmark]
        keys = [k for k in GROUP_KEYS if any(g["group_key"] == k for g in bench_groups)]
        keys += sorted({g["group_key"] for g in bench_groups} - set(keys))
        for key in keys:
            rows = [g for g in bench_groups if g["group_key"] == key]
            n_groups = len({g["group"] for g in rows})
            title = f"<h3>per {html.escape(key.replace('_', ' '))}</h3>"
            figure = _group_figure(rows, key, benchmark, chance) if n_groups >= 2 else ""
            if n_groups > 12:  # long lists: the figure, and the table folded away
                table = (
                    f"<details><summary>table ({n_groups} groups)</summary>"
                    f"{_models_as_columns(rows, models)}</details>"
                )
            else:
                table = _models_as_columns(rows, models)
            sections.append(title + figure + table)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cultureclip report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    return atomic_write_text(out / "report.html", page)
