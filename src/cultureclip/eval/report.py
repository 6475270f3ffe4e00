"""Merges result files into ``results.csv``, ``groups.csv`` and a self-contained
``report.html`` (``templates/report.html.jinja``); see docs/eval.md, "Report"."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import atomic_write_text
from cultureclip.eval.metrics import GROUP_KEYS, bootstrap_ci
from cultureclip.eval.report_figures import (
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

GROUP_FIELDS = ["model", "benchmark", "group_key", "group", "n", "accuracy", "ci_low", "ci_high"]
NO_CI = (math.nan, math.nan)


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
        return NO_CI
    role = result.config.get("accuracy_role")  # accuracy counts one role (CROPE, ours)
    if role is None and result.config.get("protocol") == "cultureclip":  # a result of 0.x
        role = "main" if any(p.get("role") == "main" for p in predictions) else None
    if role is not None:
        predictions = [p for p in predictions if p.get("role") == role]
    flags = [bool(p.get("correct")) for p in predictions]
    return bootstrap_ci(flags, n_resamples=n_resamples, seed=seed)


def group_rows(
    result: EvalResult, *, n_resamples: int = 1000, seed: int = 42
) -> list[dict[str, Any]]:
    """Per-group accuracy with bootstrap CIs (from the predictions when there are some);
    ``KR`` and ``South Korea`` are one row."""
    predictions = predictions_of(result)
    flags: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for record in predictions:
        for key in result.per_group:
            flags[(key, _group_value(key, record.get(key)))].append(bool(record.get("correct")))
    rows = []
    for key, groups in result.per_group.items():
        for value, (n, correct) in merged_counts(groups, partial(_group_value, key)).items():
            flagged = flags.get((key, value))
            ci = bootstrap_ci(flagged, n_resamples=n_resamples, seed=seed) if flagged else None
            row = (result.model, result.benchmark, key, value, int(n))
            accuracy = round(100.0 * correct / n, 4) if n else 0.0
            rows.append(dict(zip(GROUP_FIELDS, (*row, accuracy, *(ci or NO_CI)), strict=True)))
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _chance(results: Iterable[EvalResult]) -> float | None:
    """The chance level of a benchmark: the first of its results that has one."""
    return next((r.chance for r in results if r.chance is not None), None)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.2f}"
    return "–" if value is None else str(value)


def _ci(bounds: tuple[float, float]) -> str:
    return "" if math.isnan(bounds[0]) else f" [{bounds[0]:.1f}–{bounds[1]:.1f}]"


def _leaderboard(results: Sequence[EvalResult], n_resamples: int, seed: int) -> dict[str, Any]:
    benchmarks = sorted({r.benchmark for r in results})
    models = sorted({r.model for r in results})
    metric = {b: main_metric(next(r for r in results if r.benchmark == b)) for b in benchmarks}
    cells = {
        (r.model, r.benchmark): {
            "value": r.metrics.get(metric[r.benchmark], math.nan),
            "ci": main_ci(r, n_resamples=n_resamples, seed=seed),
        }
        for r in results
    }
    for b in benchmarks:
        column = [cells[(m, b)] for m in models if (m, b) in cells]
        best = max(c["value"] for c in column)
        for c in column:
            c["best"] = len(models) > 1 and c["value"] == best
    values = {m: [cells[(m, b)]["value"] for b in benchmarks if (m, b) in cells] for m in models}
    mean = {m: sum(v) / len(v) for m, v in values.items()}  # every model has a result
    chance = {b: _chance(r for r in results if r.benchmark == b) for b in benchmarks}
    return dict(
        benchmarks=benchmarks, models=models, metric=metric, cells=cells, mean=mean, chance=chance
    )


def _models_as_columns(rows: list[dict[str, Any]], models: list[str]) -> list[list[Any]]:
    groups = sorted({r["group"] for r in rows}, key=lambda g: (g == "unknown", g))
    by = {(r["model"], r["group"]): r for r in rows}
    table = []
    for group in groups:
        found = [by.get((m, group)) for m in models]
        n = max((r["n"] for r in found if r), default=0)
        cells = [
            "–" if r is None else f"{r['accuracy']:.2f}{_ci((r['ci_low'], r['ci_high']))}"
            for r in found
        ]
        table.append([group, n, *cells])
    return table


def build_report(
    result_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    n_resamples: int = 1000,
    seed: int = 42,
) -> Path:
    """Writes ``results.csv``, ``groups.csv`` and ``report.html`` to ``out_dir``; returns the HTML path."""
    import matplotlib
    from jinja2 import Environment, PackageLoader, select_autoescape

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
    write_csv(out / "groups.csv", groups, GROUP_FIELDS)
    env = Environment(
        loader=PackageLoader("cultureclip.eval", "templates"), autoescape=select_autoescape()
    )
    env.filters.update(cell=_cell, ci=_ci)
    page = env.get_template("report.html.jinja").render(
        results=results,
        n_resamples=n_resamples,
        seed=seed,
        board=_leaderboard(results, n_resamples, seed),
        summary=[_summary_row(r) for r in results],
        skipped=[r for r in results if r.n_skipped],
        geometry=(world_geometry() or ("",))[0],
        maps=_maps(results),
        before_after=_before_after(results),
        benchmarks=[_benchmark(results, groups, b) for b in sorted({r.benchmark for r in results})],
        paired=_paired(results, out, n_resamples, seed),
    )
    return atomic_write_text(out / "report.html", page)


PAIRED_FIELDS = ["benchmark", "model_a", "model_b", "group_key", "group", "n"]
PAIRED_FIELDS += ["accuracy_a", "accuracy_b", "difference", "ci_low", "ci_high", "p_value"]


def _paired(
    results: Sequence[EvalResult], out: Path, n_resamples: int, seed: int
) -> dict[str, Any] | None:
    """Every two models run on one benchmark over the same data: B − A on the items both
    answered (``eval/compare.py``), in the page and in ``paired.csv``."""
    from cultureclip.eval.compare import compare_results

    runs = sorted(results, key=lambda r: (r.benchmark, r.model))
    records = {id(r): predictions_of(r) for r in runs}
    found = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            same = a.benchmark == b.benchmark and a.key.get("data") == b.key.get("data")
            if not same or a.model == b.model or not records[id(a)] or not records[id(b)]:
                continue
            try:
                found.append(
                    compare_results(
                        a,
                        b,
                        n_resamples=n_resamples,
                        seed=seed,
                        records=(records[id(a)], records[id(b)]),
                    )
                )
            except InputError:  # no item answered by both
                continue
    if not found:
        return None
    csv_rows, rows, folds = [], [], []
    for c in found:
        head = (c.benchmark, c.model_a, c.model_b)
        rows.append((*head, *_paired_cells(c.overall)))
        fold = []
        for key, groups in [("overall", {"all": c.overall}), *c.groups.items()]:
            for value, stats in groups.items():
                shown = _group_value(key, value) if key != "overall" else value
                if key != "overall":
                    fold.append((key, shown, *_paired_cells(stats)))
                numbers = (stats.n, stats.accuracy_a, stats.accuracy_b, stats.difference)
                numbers += (stats.ci_low, stats.ci_high, stats.p_value)
                values = (*head, key, shown, *(round(v, 6) for v in numbers))
                csv_rows.append(dict(zip(PAIRED_FIELDS, values, strict=True)))
        folds.append({"title": f"{c.benchmark}: {c.model_b} vs {c.model_a}", "rows": fold})
    write_csv(out / "paired.csv", csv_rows, PAIRED_FIELDS)
    return {"rows": rows, "folds": folds}


def _paired_cells(stats: Any) -> tuple[Any, ...]:
    return (
        stats.n,
        stats.accuracy_a,
        stats.accuracy_b,
        f"{stats.difference:+.2f}",
        f"[{stats.ci_low:+.2f}, {stats.ci_high:+.2f}]",
        f"{stats.p_value:.3g}",
    )


METRIC_FIELDS = ["model", "benchmark", "task", "metric", "value", "n", "n_skipped", "chance"]
METRIC_FIELDS += ["baseline_model", "baseline_value", "delta", "data", "seconds"]


def _metric_rows(r: EvalResult) -> list[dict[str, Any]]:
    """The ``results.csv`` rows of one result: one per metric."""
    rows = []
    for metric, value in r.metrics.items():
        base = r.baseline.metrics.get(metric) if r.baseline else None
        chance = "" if r.chance is None or metric != main_metric(r) else r.chance
        versus = ("", "") if base is None else (round(base, 4), round(value - base, 4))
        row = (r.model, r.benchmark, r.task, metric, round(value, 4), r.n, r.n_skipped, chance)
        baseline = r.baseline.model if r.baseline else ""
        data = r.data or r.config.get("data", "")
        row += (baseline, *versus, data, r.seconds)
        rows.append(dict(zip(METRIC_FIELDS, row, strict=True)))
    return rows


def _summary_row(r: EvalResult) -> list[Any]:
    main = main_metric(r)
    value = f"{main}={r.metrics[main]:.2f}" if main in r.metrics else ""
    counts = (r.n, r.n_skipped, r.counts.failed, r.counts.refused, r.counts.hidden)
    where = r.data or r.config.get("data", "")
    return [r.model, r.benchmark, r.task, where, *counts, f"{r.seconds:.1f}", value]


def _maps(results: Sequence[EvalResult]) -> list[Any]:
    geometry = world_geometry()
    ordered = sorted(
        (r for r in results if r.per_group.get("country")), key=lambda r: (r.benchmark, r.model)
    )
    drawn = [country_map(r, geometry[1]) if geometry else country_tiles(r) for r in ordered]
    return [Markup(m) if isinstance(m, str) else m for m in drawn if m]


def _before_after(results: Sequence[EvalResult]) -> dict[str, Any] | None:
    figure = before_after(results)
    if not figure:
        return None
    rows = [
        (r.model, r.benchmark, m, r.baseline.model, base[m], v, v - base[m])
        for r in results
        if r.baseline
        for base in [r.baseline.metrics]
        for m, v in r.metrics.items()
        if m in base
    ]
    return {"figure": Markup(figure), "rows": rows}


def _benchmark(
    results: Sequence[EvalResult], groups: list[dict[str, Any]], benchmark: str
) -> dict[str, Any]:
    """One benchmark: its metrics per model, its published numbers, a figure and a table per group key."""
    runs = sorted((r for r in results if r.benchmark == benchmark), key=lambda r: r.model)
    models = [r.model for r in runs]
    chance = _chance(runs)
    names = sorted({m for r in runs for m in r.metrics})
    rows = [
        (r.model, *[r.metrics.get(m, math.nan) for m in names], r.n, r.n_skipped, r.chance)
        for r in runs
    ]
    reference = _reference(runs[0])
    bench_groups = [g for g in groups if g["benchmark"] == benchmark]
    keys = [k for k in GROUP_KEYS if any(g["group_key"] == k for g in bench_groups)]
    keys += sorted({g["group_key"] for g in bench_groups} - set(keys))
    sections = []
    for key in keys:
        key_rows = [g for g in bench_groups if g["group_key"] == key]
        n_groups = len({g["group"] for g in key_rows})
        figure = group_figure(key_rows, key, benchmark, chance) if n_groups >= 2 else ""
        table = _models_as_columns(key_rows, models)
        # long lists: the figure, and the table folded away
        sections.append(dict(key=key, figure=Markup(figure), rows=table, folded=n_groups > 12))
    published = [(m, *[v.get(n, math.nan) for n in names]) for m, v in reference.items()]
    return dict(
        name=benchmark,
        metrics=names,
        rows=rows,
        models=models,
        groups=sections,
        reference=published,
    )


def _reference(result: EvalResult) -> dict[str, dict[str, float]]:
    """The published numbers of a result's benchmark spec, when it is a known one."""
    from cultureclip.eval.spec import benchmark_specs

    spec = benchmark_specs().get(str(result.key.get("benchmark", result.benchmark)))
    return spec.reference if spec else {}
