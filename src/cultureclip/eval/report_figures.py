"""The report's figures (``<img>`` with the PNG inline): per-group bars, continent tiles,
before/after deltas; and the data of the world map its template draws."""

from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from cultureclip.data.taxonomy import country as lookup_country
from cultureclip.eval.results import EvalResult

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


def country_name(value: str) -> str:
    """The taxonomy's name of a country code or name (``KR`` -> ``South Korea``); else as given."""
    entry = lookup_country(value) if value and value != "unknown" else None
    return entry.name if entry else value


def _map_code(value: str) -> str:
    """The lowercase ISO code the world map knows a country by ("" when unknown)."""
    entry = lookup_country(value) if value and value != "unknown" else None
    return entry.iso2.lower() if entry else ""


def _figure_to_img(fig: Any, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def predictions_of(result: EvalResult) -> list[dict[str, Any]]:
    """The result's scored prediction records (not those of withheld answers); none when it
    has no predictions file."""
    try:
        records = result.predictions()
    except (ValueError, FileNotFoundError):
        return []
    return [r for r in records if "correct" not in r or r["correct"] is not None]


def merged_counts(
    groups: dict[str, dict[str, float]], name: Callable[[str], str]
) -> dict[str, list[float]]:
    """``{name(group): [n, correct]}``: groups of one name (``KR``, ``South Korea``) added up."""
    merged: dict[str, list[float]] = {}
    for value, stats in groups.items():
        n, correct = merged.get(name(value), [0.0, 0.0])
        merged[name(value)] = [n + stats["n"], correct + stats.get("correct", 0.0)]
    return merged


def _country_continents(result: EvalResult) -> dict[str, str]:
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for record in predictions_of(result):
        if record.get("country"):
            name = country_name(str(record["country"]))
            votes[name][str(record.get("continent") or "Unknown")] += 1
    return {country: counter.most_common(1)[0][0] for country, counter in votes.items()}


def group_figure(rows: list[dict[str, Any]], key: str, benchmark: str, chance: float | None) -> str:
    """Horizontal bars per group and model, labelled with their value, CI whiskers, chance line."""
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    groups = sorted({r["group"] for r in rows}, key=lambda g: (g == "unknown", g))
    by = {(r["model"], r["group"]): r for r in rows}
    bar = 0.8 / max(1, len(models))
    height = max(2.2, 0.22 * len(groups) * len(models) + 0.25 * len(groups) + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height))
    y = np.arange(len(groups))
    for m, model in enumerate(models):
        values, lows, highs = (
            np.array([by[(model, g)][field] if (model, g) in by else np.nan for g in groups])
            for field in ("accuracy", "ci_low", "ci_high")
        )
        err = np.nan_to_num(np.clip([values - lows, highs - values], 0.0, None))
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


def country_tiles(result: EvalResult) -> str | None:
    """The fallback map (no map geometry) of a result with country groups: tiles by continent."""
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    countries = {
        name: 100.0 * correct / n if n else 0.0
        for name, (n, correct) in merged_counts(result.per_group["country"], country_name).items()
    }
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
    centred = {"ha": "center", "va": "center", "fontsize": 6}
    for col, continent in enumerate(order):
        for row, country in enumerate(columns[continent]):
            value = countries[country]
            ax.add_patch(plt.Rectangle((col, -row), 0.95, 0.9, color=cmap(norm(value))))
            label, colour = f"{country[:12]}\n{value:.0f}%", "white" if value < 60 else "black"
            ax.text(col + 0.47, -row + 0.45, label, color=colour, **centred)
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
    A country is filled with ``var(--<iso2>, grey)``: one copy of the geometry serves every
    map, each setting its colours as CSS variables on a ``<use>``."""
    try:
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


def country_map(result: EvalResult, codes: frozenset[str]) -> dict[str, Any] | None:
    """What the report draws as a choropleth of accuracy by country (2+ countries), or None."""
    raw = result.per_group["country"]
    unplaced = [value for value in raw if _map_code(value) not in codes]
    merged = {code: v for code, v in merged_counts(raw, _map_code).items() if code in codes}
    if len(merged) + len(unplaced) < 2 or not merged:
        return None
    style = ";".join(
        f"--{code}:{_viridis(100.0 * correct / n if n else 0.0)}"
        for code, (n, correct) in sorted(merged.items())
    )
    # The numbers behind the colours are listed too (folded): a map is read at a glance, a list is not.
    countries = [
        (country_name(code.upper()), 100.0 * c / n, int(n))
        for code, (n, c) in sorted(merged.items())
    ]
    return {
        "model": result.model,
        "benchmark": result.benchmark,
        "label": f"accuracy by country, {result.model}, {result.benchmark}",
        "style": style,
        "countries": countries,
        "unplaced": sorted(unplaced),
    }


def before_after(results: Sequence[EvalResult]) -> str | None:
    import matplotlib.pyplot as plt

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
