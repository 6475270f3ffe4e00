"""The records the stages pass on (concept sides, concepts, twins) and taxonomy look-ups."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from cultureclip.core.io import stable_hash
from cultureclip.synth.corpus import CorpusRow


@functools.cache
def country_names() -> dict[str, str]:
    from cultureclip.data.taxonomy import countries

    return {c.iso2.upper(): c.name for c in countries()}


def country_code(value: str) -> str | None:
    """ISO2 for any code or name :func:`cultureclip.data.taxonomy.country` knows (ISO2, ISO3,
    short, ISO list and official names, case-insensitive); None if unknown."""
    from cultureclip.data.taxonomy import country

    entry = country(value) if value else None
    return entry.iso2.upper() if entry else None


def country_name(code: str) -> str:
    from cultureclip.data.taxonomy import country

    entry = country(code) if code else None
    return entry.name if entry else code


@dataclass(frozen=True)
class Side:
    """One concept as drawn and captioned: the pos or neg half of a twin."""

    concept: str
    context: str
    features: str
    category: str
    country: str
    image: str | None = None  # a given image (corpus); None: rendered by the images stage
    captions: tuple[str, ...] = ()  # given captions (corpus); empty: written by the captions stage
    glyph: str | None = None
    group: str = ""  # what twins are mined across (the country unless concepts.group_by says)

    @property
    def twin_group(self) -> str:
        """The value twins must differ in: the group, else the country."""
        return self.group or self.country

    @property
    def text_key(self) -> str:
        """The concept as text: sides sharing it share their (written) captions."""
        return stable_hash(
            "side", self.concept, self.context, self.features, self.category, self.country
        )

    @property
    def key(self) -> str:
        """The side as drawn: corpus rows of one concept with their own photos stay apart."""
        if self.image is None:
            return self.text_key
        return stable_hash("side-image", self.text_key, self.image, self.captions, self.group)


def side_variables(side: Side) -> dict[str, str]:
    """What the twins and captions prompts are told of a side."""
    return {
        "concept": side.concept,
        "country_name": country_name(side.country),
        "category": side.category,
        "context": side.context or "(none)",
        "features": side.features or "(none)",
    }


@dataclass(frozen=True)
class Concept:
    id: str
    root: str
    side: Side
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Twin:
    key: str
    root: str
    pos: Side
    neg: Side
    method: str
    provenance: dict[str, Any] = field(default_factory=dict)
    similarity: float | None = None


def corpus_root(row: CorpusRow) -> str:
    parts: list[Any] = [row.name, row.image, row.caption, row.country, row.category]
    if row.group and row.group != row.country:
        parts.append(row.group)
    return stable_hash("corpus", *parts)


def side_from_row(row: CorpusRow) -> Side:
    return Side(
        concept=row.name,
        context=row.context,
        features=row.features,
        category=row.category,
        country=row.country,
        image=row.image,
        captions=(row.caption,) if row.caption else (),
        glyph=row.glyph,
        group=row.group or row.country,
    )
