from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cultureclip.synth.mining import embed_concepts, mine_twins

CONCEPTS = [
    {"key": "kimono", "country": "JP", "category": "Clothing"},
    {"key": "sari", "country": "IN", "category": "Clothing"},
    {"key": "hanbok", "country": "KR", "category": "Clothing"},
    {"key": "yukata", "country": "JP", "category": "Clothing"},
    {"key": "dumpling", "country": "CN", "category": "Cuisine"},
    {"key": "gyoza", "country": "JP", "category": "Cuisine"},
    {"key": "taco", "country": "MX", "category": "Cuisine"},
]
EMBEDDINGS = np.array(
    [
        [1.0, 0.0, 0.0],  # kimono
        [0.6, 0.8, 0.0],  # sari
        [0.8, 0.6, 0.0],  # hanbok
        [1.0, 0.01, 0.0],  # yukata: nearest overall to kimono, but the same country
        [0.0, 0.0, 1.0],  # dumpling
        [0.0, 0.1, 1.0],  # gyoza
        [1.0, 0.0, 0.0],  # taco: looks like kimono, other category
    ]
)


def test_nearest_other_country_same_category() -> None:
    pairs = {
        CONCEPTS[t.pos]["key"]: CONCEPTS[t.neg]["key"] for t in mine_twins(CONCEPTS, EMBEDDINGS)
    }
    assert pairs["kimono"] == "hanbok"  # yukata is closer but Japanese; taco is closer but Cuisine
    assert pairs["yukata"] == "hanbok"
    assert pairs["dumpling"] == "gyoza" and pairs["gyoza"] == "dumpling"
    assert pairs["taco"] in {"dumpling", "gyoza"}
    for twin in mine_twins(CONCEPTS, EMBEDDINGS):
        pos, neg = CONCEPTS[twin.pos], CONCEPTS[twin.neg]
        assert pos["category"] == neg["category"] and pos["country"] != neg["country"]


def test_ties_break_by_key_whatever_the_input_order() -> None:
    concepts = [
        {"key": "a", "country": "JP", "category": "Symbol"},
        {"key": "c", "country": "FR", "category": "Symbol"},
        {"key": "b", "country": "DE", "category": "Symbol"},
    ]
    same = np.ones((3, 4))
    first = {concepts[t.pos]["key"]: concepts[t.neg]["key"] for t in mine_twins(concepts, same)}
    reversed_concepts = concepts[::-1]
    second = {
        reversed_concepts[t.pos]["key"]: reversed_concepts[t.neg]["key"]
        for t in mine_twins(reversed_concepts, same)
    }
    assert first == second == {"a": "b", "b": "a", "c": "a"}


def test_threshold_and_bad_inputs() -> None:
    assert len(mine_twins(CONCEPTS, EMBEDDINGS, min_similarity=0.999)) == 0
    with pytest.raises(ValueError, match="shape"):
        mine_twins(CONCEPTS, EMBEDDINGS[:3])
    with pytest.raises(ValueError, match="all zeros"):
        mine_twins(CONCEPTS, np.zeros((7, 3)))


def test_embed_concepts_averages_images_with_a_registered_model(tiny_model) -> None:
    red, blue = Image.new("RGB", (32, 32), (220, 20, 20)), Image.new("RGB", (32, 32), (20, 20, 220))
    embeddings = embed_concepts(
        tiny_model, [[red], [blue, lambda: blue], [red, blue]], batch_size=2
    )
    assert embeddings.shape == (3, tiny_model.embed_dim)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0)
    single_red = tiny_model.embed_images([red])[0].numpy()
    assert np.allclose(embeddings[0], single_red / np.linalg.norm(single_red), atol=1e-5)
    with pytest.raises(ValueError, match="at least one image"):
        embed_concepts(tiny_model, [[red], []])


def test_mining_across_another_grouping_field() -> None:
    """Twins differ in the field named by ``across`` (a group within one country)."""
    concepts = [
        {"key": "miao-1", "country": "CN", "group": "miao", "category": "Clothing"},
        {"key": "miao-2", "country": "CN", "group": "miao", "category": "Clothing"},
        {"key": "dong-1", "country": "CN", "group": "dong", "category": "Clothing"},
    ]
    embeddings = np.array([[1.0, 0.0], [1.0, 0.01], [0.6, 0.8]])
    assert mine_twins(concepts, embeddings) == []  # one country: no candidate at all
    pairs = {
        concepts[t.pos]["key"]: concepts[t.neg]["key"]
        for t in mine_twins(concepts, embeddings, across="group")
    }
    assert pairs == {"miao-1": "dong-1", "miao-2": "dong-1", "dong-1": "miao-2"}


def test_embed_concepts_reports_progress_against_a_total(tiny_model) -> None:
    """The mining bar had no total: progress now counts images, batch by batch."""
    red = Image.new("RGB", (32, 32), (220, 20, 20))
    seen: list[int] = []
    embed_concepts(tiny_model, [[red], [red, red], [red]], batch_size=3, on_progress=seen.append)
    assert seen == [3, 1]
