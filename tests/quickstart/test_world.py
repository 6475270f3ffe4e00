"""The emoji-and-flag world: concepts, captions, twin splits."""

from __future__ import annotations

import pytest

from cultureclip.quickstart.world import (
    KEY_BACKGROUND,
    Concept,
    culture_concepts,
    describe_flag,
    flag_to_iso2,
    split_twins,
    write_captions,
)


def test_flag_sequences_map_to_iso_codes() -> None:
    assert flag_to_iso2("🇮🇩") == "ID"
    assert flag_to_iso2("🇯🇵") == "JP"
    assert flag_to_iso2("🏯") is None


def test_culture_concepts_have_countries_and_features() -> None:
    concepts = culture_concepts()
    names = {c.name for c in concepts}
    assert {"Japanese castle", "European castle", "kimono", "sari"} <= names
    assert all(c.country and c.features and c.country_name for c in concepts)


def test_flag_features_are_read_off_the_artwork() -> None:
    from cultureclip.data.glyphs import render_glyph

    indonesia = describe_flag(render_glyph("🇮🇩", size=96, background=KEY_BACKGROUND))
    assert indonesia == "red and white with horizontal bands"
    france = describe_flag(render_glyph("🇫🇷", size=96, background=KEY_BACKGROUND))
    assert "vertical bands" in france and "blue" in france


def test_cultural_captions_keep_features_and_never_are_the_bare_name() -> None:
    kimono = next(c for c in culture_concepts() if c.name == "kimono")
    captions = write_captions(kimono, n=5, seed=0)
    assert len(captions) == 5 and len(set(captions)) == 5
    assert all("kimono" in c and len(c.split()) <= 14 for c in captions)
    assert "kimono" not in captions  # the bare name is the concept term's job
    assert any(kimono.features.split()[0] in c for c in captions)
    assert write_captions(kimono, n=5, seed=0) == captions  # deterministic


def test_general_captions_include_the_bare_name() -> None:
    concept = Concept(
        key="🐢", name="turtle", country="", category="General", features="", kind="general"
    )
    assert "turtle" in write_captions(concept, n=5)


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_twin_split_never_shares_a_concept(fraction: float) -> None:
    # Two chains and some separate pairs: concepts 0-1-2-3 and 10-11-12 are linked.
    pairs = [(0, 1), (1, 2), (2, 3), (10, 11), (11, 12), (20, 21), (30, 31), (40, 41), (50, 51)]
    train, test = split_twins(pairs, fraction, seed=0)
    assert sorted(train + test) == list(range(len(pairs)))
    train_concepts = {c for i in train for c in pairs[i]}
    test_concepts = {c for i in test for c in pairs[i]}
    assert not train_concepts & test_concepts
    assert 0 < len(test) <= round(fraction * len(pairs))
    assert split_twins(pairs, fraction, seed=0) == (train, test)
