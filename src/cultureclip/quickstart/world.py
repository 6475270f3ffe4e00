"""An emoji-and-flag CulTwin world built from real artwork that ships in PyPI packages.

Concepts come from three sources:
- ``culture``: emoji with a clear cultural home (``culture_emoji.csv``: Japanese castle,
  kimono, sari, dumpling, fortune cookie ...), with hand-written key visual features;
- ``flag``: every country flag the OpenMoji font draws, named from the ISO table,
  its key visual features read off the artwork (dominant colours, stripe direction);
- ``general``: the remaining single-code-point emoji, named by Unicode/CLDR names —
  the culture-neutral part used to align the towers and to check general ability.

Images are OpenMoji glyphs (CC BY-SA 4.0) rendered with Pillow. Captions come from a
template writer that always keeps the key visual features, as CulTwin's LLM captions do.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources

from PIL import Image

REGIONAL_INDICATOR_A = 0x1F1E6
# A colour no flag uses, so the flag's own white survives background removal.
KEY_BACKGROUND = (255, 0, 255)

BASIC_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "dark red": (120, 20, 30),
    "orange": (240, 130, 30),
    "yellow": (250, 210, 40),
    "green": (30, 140, 60),
    "light blue": (100, 170, 230),
    "blue": (20, 60, 160),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}


@dataclass
class Concept:
    key: str  # the emoji sequence that draws it
    name: str
    country: str  # ISO 3166-1 alpha-2, "" for culture-neutral concepts
    category: str
    features: str
    kind: str  # culture | flag | general
    country_name: str = ""
    image: str = ""  # path relative to the world directory
    captions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def flag_to_iso2(sequence: str) -> str | None:
    """'🇮🇩' → 'ID'; None if the sequence is not a regional-indicator pair."""
    codes = [ord(c) - REGIONAL_INDICATOR_A for c in sequence]
    if len(codes) == 2 and all(0 <= c < 26 for c in codes):
        return "".join(chr(ord("A") + c) for c in codes)
    return None


def culture_concepts() -> list[Concept]:
    from cultureclip.data.taxonomy import country

    text = (
        resources.files("cultureclip.quickstart").joinpath("culture_emoji.csv").read_text("utf-8")
    )
    concepts = []
    for row in csv.DictReader(text.splitlines()):
        info = country(row["country"])
        concepts.append(
            Concept(
                key=row["emoji"],
                name=row["concept"],
                country=row["country"],
                category=row["category"],
                features=row["features"],
                kind="culture",
                country_name=info.name if info else row["country"],
            )
        )
    return concepts


def _nearest_colour(rgb: Sequence[int]) -> str:
    return min(
        BASIC_COLOURS,
        key=lambda n: sum((a - b) ** 2 for a, b in zip(rgb, BASIC_COLOURS[n], strict=True)),
    )


def describe_flag(image: Image.Image, max_colours: int = 3) -> str:
    """Key visual features of a flag read off its artwork: main colours and stripe direction.

    ``image`` must be rendered on :data:`KEY_BACKGROUND` so the background can be dropped.
    """
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    background = np.all(np.abs(pixels - np.array(KEY_BACKGROUND)) < 60, axis=-1)
    flag_mask = ~background
    if flag_mask.sum() == 0:
        return "a flag"
    names = np.array(list(BASIC_COLOURS))
    palette = np.array(list(BASIC_COLOURS.values()))
    flat = pixels[flag_mask]
    nearest = ((flat[:, None, :] - palette[None, :, :]) ** 2).sum(-1).argmin(1)
    counts = Counter(names[nearest].tolist())
    counts.pop("black", None)  # OpenMoji draws a black outline around every flag
    total = sum(counts.values()) or 1
    colours = [name for name, n in counts.most_common(max_colours) if n / total > 0.08]
    ys, xs = np.nonzero(flag_mask)
    box = pixels[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    row_change = np.abs(np.diff(box.mean(axis=1), axis=0)).sum()
    col_change = np.abs(np.diff(box.mean(axis=0), axis=0)).sum()
    if len(colours) <= 1:
        layout = "plain field"
    elif row_change > 1.5 * col_change:
        layout = "horizontal bands"
    elif col_change > 1.5 * row_change:
        layout = "vertical bands"
    else:
        layout = "an emblem or pattern"
    colour_text = (
        ", ".join(colours[:-1]) + f" and {colours[-1]}"
        if len(colours) > 1
        else (colours or ["one colour"])[0]
    )
    return f"{colour_text} with {layout}"


def flag_concepts(size: int = 96) -> list[Concept]:
    import emoji

    from cultureclip.data.glyphs import glyph_available, render_glyph
    from cultureclip.data.taxonomy import country

    concepts = []
    for sequence in emoji.EMOJI_DATA:
        iso2 = flag_to_iso2(sequence)
        if iso2 is None:
            continue
        info = country(iso2)
        if info is None or not glyph_available(sequence):
            continue  # EU, UN and retired codes have no country row
        features = describe_flag(render_glyph(sequence, size=size, background=KEY_BACKGROUND))
        concepts.append(
            Concept(
                key=sequence,
                name=f"flag of {info.name}",
                country=iso2,
                category="Symbol",
                features=features,
                kind="flag",
                country_name=info.name,
            )
        )
    return sorted(concepts, key=lambda c: c.country)


def _clean_emoji_name(code: str) -> str:
    return code.strip(":").replace("_", " ")


def general_concepts(exclude: set[str]) -> list[Concept]:
    """Single-code-point, fully-qualified emoji that are not culture concepts or flags."""
    import emoji

    from cultureclip.data.glyphs import glyph_available

    concepts = []
    for sequence, data in emoji.EMOJI_DATA.items():
        if data.get("status") != emoji.STATUS["fully_qualified"] or sequence in exclude:
            continue
        if len(sequence.replace("\ufe0f", "")) != 1 or flag_to_iso2(sequence):
            continue
        if not glyph_available(sequence):
            continue
        name = _clean_emoji_name(data["en"])
        unicode_name = unicodedata.name(sequence[0], "").lower()
        features = unicode_name if unicode_name and unicode_name != name.lower() else ""
        concepts.append(
            Concept(
                key=sequence,
                name=name,
                country="",
                category="General",
                features=features,
                kind="general",
            )
        )
    return sorted(concepts, key=lambda c: c.key)


def write_captions(concept: Concept, n: int = 5, seed: int = 0) -> list[str]:
    """Template captions (< 15 words each) that keep the key visual features."""
    name, features = concept.name, concept.features
    place = concept.country_name
    templates = [
        "{name}",
        "an emoji of {name}",
        "{name}: {features}" if features else "a picture of {name}",
        "{features}, the {name}" if features else "the {name}, drawn simply",
        "{name} from {place}" if place else "a drawing of {name}",
        "a {name} typical of {place}, {features}"
        if place and features
        else "an icon showing {name}",
    ]
    captions = [t.format(name=name, features=features, place=place) for t in templates]
    captions = [" ".join(c.split()[:14]) for c in captions]
    rng = random.Random(f"{seed}:{concept.key}")
    head, tail = captions[:2], captions[2:]
    rng.shuffle(tail)
    return (head + tail)[:n]
