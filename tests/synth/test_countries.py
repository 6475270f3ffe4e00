"""One country lookup: every code or name the taxonomy knows passes synth validation."""

from __future__ import annotations

import pytest

from cultureclip.data.taxonomy import countries, country
from cultureclip.synth.records import country_code, country_name


def _names():
    for entry in countries():
        for name in (entry.iso2, entry.iso3, entry.name, entry.iso_name, entry.official_name):
            if name:
                yield entry.iso2, name


def test_every_name_the_taxonomy_accepts_is_accepted_by_synth() -> None:
    names = list(_names())
    assert len(names) > 700  # codes, short, ISO-list and official names of 249 countries
    wrong = [(iso2, name) for iso2, name in names if country_code(name) != iso2.upper()]
    assert wrong == []
    for iso2, name in names:
        assert country(name) is not None and country(name).iso2 == iso2


@pytest.mark.parametrize(
    ("answer", "code"),
    [("Viet Nam", "VN"), ("Korea, Republic of", "KR"), ("korea, republic of", "KR"), ("JPN", "JP")],
)
def test_names_an_llm_writes_resolve(answer: str, code: str) -> None:
    assert country_code(answer) == code
    assert country_name(code) == country(code).name


def test_unknown_countries_stay_unknown() -> None:
    assert country_code("Atlantis") is None and country_code("") is None
