"""Recall@K / MR: agreement with brute force, and LACLIP sweeps next to global-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cultureclip.cli.retrieval import results_table
from cultureclip.data.collections import load_collection
from cultureclip.eval.metrics import retrieval_metrics
from cultureclip.retrieval import LaclipSettings, RetrievalEvalConfig, evaluate_retrieval
from cultureclip.retrieval.evaluate import METRIC_KEYS


def _brute_force(sim: np.ndarray, text_to_images: list[list[int]]) -> dict[str, float]:
    """Recall by sorting every row: a query hits at K if a correct item is among its top K."""
    n_images, n_texts = sim.shape
    out: dict[str, float] = {}
    for k in (1, 5, 10):
        hits = [
            bool(set(np.argsort(-sim[:, t], kind="stable")[:k]) & set(text_to_images[t]))
            for t in range(n_texts)
        ]
        out[f"t2i_R@{k}"] = 100 * np.mean(hits)
        hits = []
        for i in range(n_images):
            correct = {t for t in range(n_texts) if i in text_to_images[t]}
            if correct:
                hits.append(bool(set(np.argsort(-sim[i], kind="stable")[:k]) & correct))
        out[f"i2t_R@{k}"] = 100 * np.mean(hits)
    out["MR"] = float(np.mean([out[key] for key in METRIC_KEYS[:-1]]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_agrees_with_brute_force_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_images, n_texts = 40, 60
    sim = rng.standard_normal((n_images, n_texts))  # continuous: no ties
    # Texts with one to three correct images; a few images no text describes.
    text_to_images = [
        sorted(rng.choice(n_images - 3, size=rng.integers(1, 4), replace=False).tolist())
        for _ in range(n_texts)
    ]
    metrics = retrieval_metrics(sim, text_to_images)
    expected = _brute_force(sim, text_to_images)
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key
    assert 0 < metrics["t2i_R@1"] < metrics["t2i_R@10"] < 100


def test_evaluate_retrieval_matches_brute_force_on_model_embeddings(
    culti_dir, session_model
) -> None:
    collection = load_collection(culti_dir, "test")
    result = evaluate_retrieval(session_model, collection, [LaclipSettings(k=3)])
    images = session_model.embed_images(
        [collection.load_image(i) for i in range(len(collection.images))]
    )
    texts = session_model.embed_texts(collection.texts)
    expected = _brute_force((images @ texts.T).double().numpy(), collection.text_to_images)
    assert result.rows[0].label == "global"
    for key in METRIC_KEYS:
        assert result.rows[0].metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert (result.n_images, result.n_texts, result.dropped_texts) == (12, 25, 0)


def test_sweep_reuses_views_and_whole_image_crops_match_global(culti_dir, session_model) -> None:
    collection = load_collection(culti_dir, "test")
    whole = LaclipSettings(k=2, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    sweep = RetrievalEvalConfig(
        model="unused",
        data="unused",
        ks=[2, 3],
        taus=[0.05, 0.5],
        betas=[0.0, 0.5],
        weightings=["softmax", "uniform"],
    )
    grid = sweep.grid()
    # 2 k × (softmax: 2 τ + uniform: 1) × 2 β
    assert len(grid) == 12 and len({c.label() for c in grid}) == 12
    calls = {"n": 0}
    original = session_model.encode_image

    def counting(pixels, normalize=True):
        calls["n"] += 1
        return original(pixels, normalize)

    session_model.encode_image = counting
    try:
        result = evaluate_retrieval(session_model, collection, [whole, *grid], batch_size=32)
    finally:
        del session_model.encode_image
    assert calls["n"] == 3  # one encoding pass per crop setting (whole, k=2, k=3), not per row
    rows = {row.label: row for row in result.rows}
    assert len(rows) == 14
    for key in METRIC_KEYS:  # the toy images are square, so these crops are the whole image
        assert rows[whole.label()].metrics[key] == pytest.approx(result.rows[0].metrics[key])
    table = results_table(result, published=True)
    assert table.row_count == 14 + 1 + 4  # rows, chance, published


def test_texts_of_undecodable_images_are_not_queried(
    tmp_path, toy_collection, session_model
) -> None:
    collection = toy_collection(tmp_path)
    collection.images[0] = b"garbage"
    result = evaluate_retrieval(session_model, collection)
    assert [f["image_id"] for f in result.failed] == ["100"]
    # Image 0 had two captions of its own; the shared text still has image 3.
    assert result.n_images == 11 and result.dropped_texts == 2
    assert torch.isfinite(torch.tensor(result.rows[0].metrics["MR"]))


def test_chance_levels_bootstrap_and_an_80_column_table(culti_dir, session_model) -> None:
    import io

    from rich.console import Console

    from cultureclip.retrieval.evaluate import chance_levels, recall_intervals

    # One correct image among 20: a random ranking hits at K with probability K/20.
    chance = chance_levels(20, [[i] for i in range(20)])
    assert chance["t2i_R@1"] == pytest.approx(5.0) and chance["t2i_R@10"] == pytest.approx(50.0)
    assert chance["i2t_R@5"] == pytest.approx(25.0)
    # Two correct among 4 at K=1: 1/2; hypergeometric at K=2: 1 - C(2,2)/C(4,2) = 5/6.
    two = chance_levels(4, [[0, 1], [2, 3]], ks=(1, 2))
    assert two["t2i_R@1"] == pytest.approx(50.0) and two["t2i_R@2"] == pytest.approx(500 / 6)

    hits = np.zeros((40, 3), bool)
    hits[:10] = True  # 25% of queries hit at every K
    ci = recall_intervals(hits, hits)
    low, high = ci["t2i_R@1"]
    assert low < 25 < high and low >= 0 and high <= 100 and high - low > 10  # n=40 is noisy

    collection = load_collection(culti_dir, "test")
    result = evaluate_retrieval(session_model, collection, [LaclipSettings(k=3)])
    assert result.chance["t2i_R@10"] > 50  # 12 candidates: R@10 is nearly free
    for row in result.rows:
        for key in METRIC_KEYS:
            low, high = row.ci[key]
            assert low <= row.metrics[key] <= high
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(results_table(result, published=True))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "chance" in text and "bootstrap" in text and "1,145 pairs" in text
    assert "12 images" in text


def test_results_csv_quotes_what_needs_quoting(tmp_path: Path) -> None:
    import csv

    from cultureclip.retrieval.evaluate import METRIC_KEYS, SweepResult, SweepRow, write_results

    metrics = {key: 1.0 + n for n, key in enumerate(METRIC_KEYS)}
    label = 'laclip k=8, "softmax"'
    result = SweepResult([SweepRow("global", None, metrics), SweepRow(label, None, metrics)], 2, 2)
    write_results(result, tmp_path)
    rows = list(csv.reader((tmp_path / "results.csv").open(newline="")))
    assert rows[0] == ["label", *METRIC_KEYS]
    assert [row[0] for row in rows[1:]] == ["global", label]
    assert rows[2][1:] == [f"{v:.2f}" for v in metrics.values()]


def test_eval_and_retrieval_eval_share_one_evaluator(culti_dir, session_model) -> None:
    """``cultureclip eval -b retrieval`` is scored by retrieval-eval's evaluator: the same
    global row, and one query per text that still has an image."""
    from cultureclip.eval import evaluate

    collection = load_collection(culti_dir, "test")
    sweep = evaluate_retrieval(session_model, collection)
    result = evaluate(session_model, "retrieval", data=culti_dir, split="test", model_name="m")
    assert result.metrics == sweep.rows[0].metrics
    assert result.n == sweep.n_texts
