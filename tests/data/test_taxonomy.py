"""Country and category taxonomies shipped as data files."""

from __future__ import annotations

from collections import Counter

import pytest

from cultureclip.data.taxonomy import (
    CONTINENTS,
    categories,
    continent_of,
    countries,
    country,
    region_of,
    taxonomy_names,
)


def test_all_iso_countries_with_unique_codes() -> None:
    entries = countries()
    assert len(entries) == 249
    assert (
        len({c.iso2 for c in entries})
        == len({c.iso3 for c in entries})
        == len({c.name for c in entries})
        == 249
    )
    assert all(len(c.iso2) == 2 and len(c.iso3) == 3 and c.region for c in entries)
    assert {c.continent for c in entries} == set(CONTINENTS)
    per_continent = Counter(c.continent for c in entries)
    assert per_continent["Africa"] >= 54 and per_continent["South America"] >= 12


@pytest.mark.parametrize(
    ("reference", "continent"),
    [
        ("JP", "Asia"),
        ("jpn", "Asia"),
        ("japan", "Asia"),
        ("MX", "North America"),
        ("Brazil", "South America"),
        ("NA", "Africa"),  # Namibia, not a missing value
        ("Russia", "Europe"),
        ("Russian Federation", "Europe"),
        ("Korea, Republic of", "Asia"),
        ("AQ", "Antarctica"),
        ("NZ", "Oceania"),
        ("Atlantis", "Unknown"),
        ("", "Unknown"),
    ],
)
def test_continent_of(reference: str, continent: str) -> None:
    assert continent_of(reference) == continent


def test_country_lookup() -> None:
    china = country(" cn ")
    assert china is not None and china.iso3 == "CHN" and china.name == "China"
    assert china.region == "Eastern Asia" == region_of("CHN")
    assert country("Côte d'Ivoire") == country("CI")
    assert country("nowhere") is None
    assert region_of("nowhere") == "Unknown"


def test_categories() -> None:
    assert categories() == [
        "Cuisine", "Clothing", "Animals & Plants", "Art", "Architecture", "Daily Life", "Symbol", "Festival",
    ]  # fmt: skip
    verse = categories("cultureverse")
    assert len(verse) == 15 and verse[0] == "Food" and "Music and Dance" in verse
    assert set(taxonomy_names()) >= {"cultwin", "cultureverse"}
    with pytest.raises(KeyError, match="available: cultureverse, cultwin"):
        categories("nope")
    # Callers get a copy: changing it does not change the taxonomy.
    categories().append("Extra")
    assert len(categories()) == 8
