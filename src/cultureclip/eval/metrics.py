"""Metrics shared by every benchmark, in percent. Ties are pessimistic (a wrong candidate
scoring as high as the right one ranks ahead of it); a query with several correct targets
hits at K when any of them is in the top K."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

RECALL_KS = (1, 5, 10)
GROUP_KEYS = ("continent", "country", "category", "question_type")


def best_correct_rank(scores: Tensor, correct: Sequence[Sequence[int]]) -> Tensor:
    """Per query of ``scores [Q, C]``, how many wrong candidates score at least as high as
    its best correct one (``correct[q]``, at least one)."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be [queries, candidates], got shape {tuple(scores.shape)}")
    if len(correct) != scores.shape[0]:
        raise ValueError(f"{len(correct)} answer lists for {scores.shape[0]} queries")
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for query, targets in enumerate(correct):
        if not targets:
            raise ValueError(f"query {query} has no correct candidate")
        mask[query, list(targets)] = True
    best = scores.masked_fill(~mask, float("-inf")).max(dim=1, keepdim=True).values
    return ((scores >= best) & ~mask).sum(dim=1)  # the wrong candidates ahead


def retrieval_metrics(
    sim: Tensor | np.ndarray, text_to_images: Sequence[Sequence[int]], ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Recall@K both ways and MR (their mean) of ``sim [n_images, n_texts]``; text ``t``
    describes the images ``text_to_images[t]``, and each of those texts is a right answer for
    such an image. An image no text describes is a candidate, never a query."""
    sim_t = torch.as_tensor(sim, dtype=torch.float64)
    n_images, n_texts = sim_t.shape
    if len(text_to_images) != n_texts:
        raise ValueError(
            f"sim has {n_texts} text columns but text_to_images has {len(text_to_images)} rows"
        )
    image_to_texts: list[list[int]] = [[] for _ in range(n_images)]
    for t, images in enumerate(text_to_images):
        bad = [i for i in images if not 0 <= i < n_images]
        if bad:
            raise ValueError(f"text {t} refers to image index(es) {bad} outside 0..{n_images - 1}")
        for i in images:
            image_to_texts[i].append(t)
    queried_images = [i for i in range(n_images) if image_to_texts[i]]
    t2i_rank = best_correct_rank(sim_t.T, text_to_images)
    i2t_rank = best_correct_rank(sim_t[queried_images], [image_to_texts[i] for i in queried_images])
    metrics: dict[str, float] = {}
    for direction, ranks in (("t2i", t2i_rank), ("i2t", i2t_rank)):
        for k in ks:
            metrics[f"{direction}_R@{k}"] = 100.0 * float((ranks < k).double().mean())
    metrics["MR"] = float(np.mean([metrics[f"{d}_R@{k}"] for d in ("t2i", "i2t") for k in ks]))
    return metrics


def mcq_decisions(scores: Tensor, answers: Tensor) -> tuple[Tensor, Tensor]:
    """Predictions and correctness of ``[items, options]`` scores (padding ``-inf``): right
    only when the answer scores above every other option, else the best other option."""
    answer_scores = scores.gather(1, answers[:, None]).squeeze(1)
    others = scores.scatter(1, answers[:, None], float("-inf"))
    correct = answer_scores > others.max(dim=1).values
    return torch.where(correct, answers, others.argmax(dim=1)), correct


def mcq_decision(scores: Sequence[float] | Tensor, answer: int) -> tuple[int, bool]:
    values = torch.as_tensor(scores, dtype=torch.float64)
    predicted, correct = mcq_decisions(values[None], torch.tensor([answer]))
    return int(predicted[0]), bool(correct[0])


def accuracy(correct: Sequence[bool]) -> float:
    return 100.0 * sum(bool(c) for c in correct) / len(correct) if correct else 0.0


def role_accuracy(
    predictions: Sequence[Mapping[str, Any]], roles: Sequence[str]
) -> dict[str, float]:
    """``accuracy``, ``{role}_accuracy`` per role and ``both_accuracy``: the share of groups
    (records sharing a ``group_id``: a CROPE item, a twin pair) whose every record is right."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for record in predictions:
        groups[record["group_id"]].append(bool(record["correct"]))
    metrics = {"accuracy": accuracy([p["correct"] for p in predictions])}
    for role in roles:
        in_role = [p["correct"] for p in predictions if p.get("role") == role]
        metrics[f"{role}_accuracy"] = accuracy(in_role)
    metrics["both_accuracy"] = accuracy([all(flags) for flags in groups.values()])
    return metrics


def bootstrap_draws(
    values: Sequence[Any] | np.ndarray, *, n_resamples: int = 1000, rng: np.random.Generator
) -> np.ndarray:
    """Means (percent) of ``n_resamples`` resamples of the rows with replacement:
    ``[n_resamples]`` for one value per row, ``[n_resamples, columns]`` for several."""
    rows = np.asarray(values, dtype=np.float64)
    return rows[rng.integers(0, len(rows), size=(n_resamples, len(rows)))].mean(axis=1) * 100.0


def bootstrap_ci(
    values: Sequence[Any] | np.ndarray | None = None,
    *,
    draws: np.ndarray | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 42,
) -> Any:
    """Percentile bootstrap interval of a per-item score (percent), seeded: ``(low, high)``,
    one per column for 2-D ``values``; or the interval of given ``draws``. The one bootstrap
    of the toolkit (the report's accuracies, retrieval-eval's recalls)."""
    if draws is None:
        if values is None or len(values) == 0:
            return (0.0, 0.0)
        draws = bootstrap_draws(values, n_resamples=n_resamples, rng=np.random.default_rng(seed))
    tail = round((1.0 - level) / 2.0, 10)
    low, high = np.quantile(draws, [tail, 1.0 - tail], axis=0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return [(float(a), float(b)) for a, b in zip(low, high, strict=True)]


def group_accuracy(
    predictions: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = GROUP_KEYS,
    correct_key: str = "correct",
) -> dict[str, dict[str, dict[str, float]]]:
    """``{key: {value: {n, correct, accuracy}}}``; a record without a value is ``unknown``."""
    grouped: dict[str, dict[str, dict[str, float]]] = {}
    for key in keys:
        if not any(record.get(key) for record in predictions):
            continue
        buckets: dict[str, list[bool]] = {}
        for record in predictions:
            value = str(record.get(key) or "unknown")
            buckets.setdefault(value, []).append(bool(record[correct_key]))
        grouped[key] = {
            value: {"n": len(flags), "correct": sum(flags), "accuracy": accuracy(flags)}
            for value, flags in sorted(buckets.items())
        }
    return grouped
