"""Paired comparison of two runs on the same items (docs/eval.md, "Comparing two runs"):
the accuracy difference B − A with an exact McNemar p-value (a two-sided binomial test on
the items exactly one of them got right) and a paired bootstrap interval, overall and per
group, on the items both answered. Two overlapping confidence intervals say little; the
paired test uses that both models saw the same items."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from cultureclip.core.errors import InputError
from cultureclip.eval.metrics import bootstrap_ci, bootstrap_draws
from cultureclip.eval.results import EvalResult, load_result


@dataclass
class PairedStats:
    """Two models on the same ``n`` items; accuracies and the difference in percent."""

    n: int
    accuracy_a: float
    accuracy_b: float
    #: ``accuracy_b − accuracy_a``
    difference: float
    #: items only A got right, and only B
    only_a: int
    only_b: int
    #: exact McNemar (two-sided binomial on the discordant items); 1.0 when there are none
    p_value: float
    #: paired percentile-bootstrap interval of the difference
    ci_low: float
    ci_high: float


@dataclass
class Comparison:
    model_a: str
    model_b: str
    benchmark: str
    overall: PairedStats
    #: group key -> group -> the same numbers on that group's items
    groups: dict[str, dict[str, PairedStats]] = field(default_factory=dict)
    #: items one run answered and the other did not (left out)
    unpaired: int = 0
    level: float = 0.95


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: ``P(X ≤ min)`` doubled for ``X ~ Bin(only_a +
    only_b, 1/2)``, capped at 1; computed with integers, so exact for any count."""
    n, low = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    term, tail = 1, 0  # term = C(n, k), built up exactly
    for k in range(low + 1):
        tail += term
        term = term * (n - k) // (k + 1)
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def paired_stats(
    correct_a: Sequence[bool],
    correct_b: Sequence[bool],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 42,
) -> PairedStats:
    """The paired numbers of two equally long per-item correctness lists."""
    if len(correct_a) != len(correct_b) or not correct_a:
        raise ValueError("paired_stats needs two non-empty lists of the same items")
    pairs = np.array([correct_a, correct_b], dtype=np.float64).T  # [items, 2]
    only_a = int(((pairs[:, 0] == 1) & (pairs[:, 1] == 0)).sum())
    only_b = int(((pairs[:, 0] == 0) & (pairs[:, 1] == 1)).sum())
    accuracy_a, accuracy_b = (float(v) for v in pairs.mean(axis=0) * 100.0)
    # resampling items (both columns together) keeps the pairing
    draws = bootstrap_draws(pairs, n_resamples=n_resamples, rng=np.random.default_rng(seed))
    low, high = bootstrap_ci(draws=draws[:, 1] - draws[:, 0], level=level)
    return PairedStats(
        n=len(pairs),
        accuracy_a=accuracy_a,
        accuracy_b=accuracy_b,
        difference=accuracy_b - accuracy_a,
        only_a=only_a,
        only_b=only_b,
        p_value=mcnemar_exact(only_a, only_b),
        ci_low=low,
        ci_high=high,
    )


def answered(result: EvalResult, records: list[dict[str, Any]] | None = None) -> dict[str, dict]:
    """A run's records by id, of the items it answered: scored (not a withheld answer), not
    lost to an error, and of the role its accuracy counts (CROPE's main images)."""
    records = result.predictions() if records is None else records
    role = result.config.get("accuracy_role")
    kept = {}
    for record in records:
        if record.get("correct") is None or record.get("error") is not None:
            continue
        if role is not None and record.get("role", role) != role:
            continue
        kept[str(record["id"])] = record
    return kept


def compare_results(
    run_a: EvalResult | str | Path,
    run_b: EvalResult | str | Path,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 42,
    records: tuple[list[dict], list[dict]] | None = None,
) -> Comparison:
    """B against A on the items both answered (result directories, ``result.json`` files or
    loaded results); groups are the result's group keys, read off A's records."""
    a = run_a if isinstance(run_a, EvalResult) else load_result(run_a)
    b = run_b if isinstance(run_b, EvalResult) else load_result(run_b)
    by_a = answered(a, records[0] if records else None)
    by_b = answered(b, records[1] if records else None)
    shared = [item for item in by_a if item in by_b]
    if not shared:
        raise InputError(
            f"{a.model} ({a.benchmark}) and {b.model} ({b.benchmark}) answered no item in "
            "common: compare two runs of one benchmark on the same data"
        )
    settings = {"n_resamples": n_resamples, "level": level, "seed": seed}

    def stats(ids: list[str]) -> PairedStats:
        flags_a = [bool(by_a[i]["correct"]) for i in ids]
        return paired_stats(flags_a, [bool(by_b[i]["correct"]) for i in ids], **settings)

    groups: dict[str, dict[str, PairedStats]] = {}
    for key in dict.fromkeys([*a.per_group, *b.per_group]):
        members: dict[str, list[str]] = defaultdict(list)
        for item in shared:
            members[str(by_a[item].get(key) or "unknown")].append(item)
        groups[key] = {value: stats(ids) for value, ids in sorted(members.items())}
    return Comparison(
        model_a=a.model,
        model_b=b.model,
        benchmark=a.benchmark if a.benchmark == b.benchmark else f"{a.benchmark} / {b.benchmark}",
        overall=stats(shared),
        groups=groups,
        unpaired=len(set(by_a) ^ set(by_b)),
        level=level,
    )
