from __future__ import annotations

import pytest
import torch

from cultureclip.eval.metrics import (
    best_correct_rank,
    bootstrap_ci,
    group_accuracy,
    mcq_decision,
    retrieval_metrics,
)


def test_retrieval_metrics_hand_computed_with_several_images_per_text_and_ties() -> None:
    # rows: images, columns: texts. text 0 describes images 0 and 1; text 1 describes image 2.
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.5], [0.3, 0.5]])
    metrics = retrieval_metrics(sim, [[0, 1], [2]])
    # t2i: text 0 finds image 0 first (rank 0); text 1 ties with wrong image 1 -> pessimistic rank 1.
    assert metrics["t2i_R@1"] == pytest.approx(50.0)
    assert metrics["t2i_R@5"] == pytest.approx(100.0)
    # i2t: image 0 -> text 0 (rank 0), image 1 -> text 1 scores higher than its text 0 (rank 1),
    # image 2 -> text 1 (rank 0).
    assert metrics["i2t_R@1"] == pytest.approx(200.0 / 3)
    assert metrics["i2t_R@10"] == pytest.approx(100.0)
    assert metrics["MR"] == pytest.approx((50 + 100 + 100 + 200 / 3 + 100 + 100) / 6)


def test_other_correct_images_do_not_push_each_other_down() -> None:
    # both correct images outrank the wrong one; the best correct one is at rank 0
    assert best_correct_rank(torch.tensor([[0.7, 0.9, 0.1]]), [[0, 1]]).tolist() == [0]
    # a wrong candidate tied with the best correct one is ranked ahead (pessimistic)
    assert best_correct_rank(torch.tensor([[0.5, 0.5, 0.5]]), [[0]]).tolist() == [2]


def test_recall_at_k_boundaries() -> None:
    column = torch.tensor([0.5] + [0.6 + 0.01 * i for i in range(6)] + [0.1 * i for i in range(5)])
    metrics = retrieval_metrics(column[:, None], [[0]])
    assert (metrics["t2i_R@1"], metrics["t2i_R@5"], metrics["t2i_R@10"]) == (0.0, 0.0, 100.0)
    # only image 0 is described by a text, so it is the only image query; it has one text
    assert metrics["i2t_R@1"] == 100.0


def test_retrieval_metrics_rejects_bad_indices() -> None:
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.zeros(2, 1), [[3]])


def test_mcq_ties_are_wrong() -> None:
    assert mcq_decision([1.0, 1.0, 0.0], 0) == (1, False)
    assert mcq_decision([2.0, 1.0, 0.0], 0) == (0, True)
    assert mcq_decision([0.0, 3.0, 1.0], 2) == (1, False)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    flags = [True] * 30 + [False] * 10
    low, high = bootstrap_ci(flags, seed=1)
    assert (low, high) == bootstrap_ci(flags, seed=1)
    assert low < 75.0 < high
    assert bootstrap_ci([True] * 5) == (100.0, 100.0)


def test_group_counts_sum_to_total() -> None:
    records = [
        {"correct": True, "country": "JP", "continent": "Asia", "category": "Food"},
        {"correct": False, "country": "JP", "continent": "Asia", "category": ""},
        {"correct": True, "country": "FR", "continent": "Europe", "category": "Art"},
    ]
    groups = group_accuracy(records)
    for key in ("country", "continent", "category"):
        assert sum(g["n"] for g in groups[key].values()) == len(records)
    assert groups["country"]["JP"]["accuracy"] == 50.0
    assert groups["category"]["unknown"]["n"] == 1
    assert "question_type" not in groups
