"""Reading labelled or titled image-text corpora (JSONL or CSV) for the concepts stage.

One row per record. Columns (all optional but the name):

- ``concept`` or ``title``: the name (bottom-up: the title an LLM judges);
- ``caption``: the record's own caption; ``image``: path relative to the file (or absolute);
- ``country`` (ISO2 or name), ``category``, ``context``, ``features``;
- ``emoji`` or ``glyph``: an emoji/flag sequence that draws the concept (glyph backend);
- any column named by ``group_by`` (``culture``, ``group``, ``region``, ``period``...): the
  group twins are mined across (default: the country).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import iter_jsonl


@dataclass(frozen=True)
class CorpusRow:
    line: int
    name: str
    caption: str = ""
    image: str | None = None  # absolute path
    country: str = ""
    category: str = ""
    context: str = ""
    features: str = ""
    glyph: str | None = None
    group: str = ""  # the value of the grouping column (the country when grouping by country)


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, raw row) of a CSV or JSONL file; bad JSON names its line."""
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            return list(enumerate(csv.DictReader(handle), start=2))
    if path.suffix in (".jsonl", ".json"):
        return list(iter_jsonl(path, tolerate_torn_tail=False))
    raise InputError(f"corpus {path} must be .jsonl or .csv")


def read_corpus(path: str | Path, *, group_by: str = "country") -> list[CorpusRow]:
    """Reads a corpus file; a row without a name (or group) is an error that names its line."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"corpus file not found: {path}")
    raw_rows = read_rows(path)
    if raw_rows and group_by != "country" and all(group_by not in raw for _, raw in raw_rows):
        columns = sorted({key for _, raw in raw_rows for key in raw})
        raise InputError(
            f"{path}: concepts.group_by={group_by!r} names no column; columns: {columns}"
        )
    rows = []
    for number, raw in raw_rows:
        name = str(raw.get("concept") or raw.get("title") or "").strip()
        if not name:
            raise InputError(f"{path}:{number}: a corpus row needs 'concept' or 'title'")
        image = raw.get("image") or None
        if image is not None:
            image_path = Path(image)
            image = str(
                image_path if image_path.is_absolute() else (path.parent / image_path).resolve()
            )
        country = str(raw.get("country") or "").strip()
        group = country if group_by == "country" else str(raw.get(group_by) or "").strip()
        rows.append(
            CorpusRow(
                line=number,
                name=name,
                caption=str(raw.get("caption") or "").strip(),
                image=image,
                country=country,
                category=str(raw.get("category") or "").strip(),
                context=str(raw.get("context") or "").strip(),
                features=str(raw.get("features") or "").strip(),
                glyph=(raw.get("emoji") or raw.get("glyph") or None),
                group=group,
            )
        )
    return rows
