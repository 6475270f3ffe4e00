"""The multiple-choice item format every MCQ benchmark reads (docs/eval.md, "The
multiple-choice item format"); ``answer`` is stored as the 0-based option index."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cultureclip.core.config import describe
from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import atomic_path, atomic_write_text, jsonl_lines
from cultureclip.data.pairs import load_image
from cultureclip.data.taxonomy import continent_of
from cultureclip.eval.metrics import GROUP_KEYS
from cultureclip.eval.source import apply_columns, image_value, read_records

QUESTION_TYPES = ("recognition", "knowledge", "scene")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class MCQItem(BaseModel):
    """One multiple-choice item; extra keys (``reason``, ``concept``…) are kept."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    image: str | bytes
    question: str = ""
    options: list[str] = Field(min_length=2)
    answer: int
    country: str = ""
    continent: str = ""
    category: str = ""
    question_type: str = "recognition"
    language: str = "en"

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("id") is not None and not isinstance(data["id"], str):
            data["id"] = str(data["id"])
        if isinstance(data.get("image"), dict | bytearray | memoryview):
            # the {bytes, path} struct of a datasets.Image column (parquet, arrow, hub)
            data["image"] = image_value(data["image"])
        options = data.get("options")
        if isinstance(options, str):
            # Parquet/CSV exports sometimes store the list as a JSON string.
            try:
                data["options"] = options = json.loads(options)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"options is a string that is not a JSON list: {options[:60]!r}"
                ) from exc
        if "answer" in data and isinstance(options, list):
            data["answer"] = resolve_answer(data["answer"], [str(o) for o in options])
        return data

    @model_validator(mode="after")
    def _check(self) -> MCQItem:
        if not 0 <= self.answer < len(self.options):
            raise InputError(f"answer index {self.answer} outside 0..{len(self.options) - 1}")
        blank = [i for i, option in enumerate(self.options) if not option.strip()]
        if blank:
            raise InputError(f"option(s) {blank} are blank: {self.options}")
        if len(set(self.options)) != len(self.options):
            raise InputError(f"options are not distinct: {self.options}")
        if self.question_type not in QUESTION_TYPES:
            raise InputError(
                f"question_type {self.question_type!r} is not one of {', '.join(QUESTION_TYPES)}"
            )
        return self

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    def group_fields(self) -> dict[str, str]:
        return self.model_dump(include=set(GROUP_KEYS))


def resolve_answer(answer: Any, options: Sequence[str]) -> int:
    """Index of ``answer`` given as an int index, the option text, or a letter (A, B, …)."""
    if isinstance(answer, bool):
        raise InputError("answer must be an option index, text or letter, not a boolean")
    if isinstance(answer, int):
        return answer
    if isinstance(answer, float) and answer.is_integer():
        return int(answer)
    if not isinstance(answer, str):
        raise InputError(
            f"answer must be an index, option text or letter, got {type(answer).__name__}"
        )
    text = answer.strip()
    if text in options:
        return list(options).index(text)
    lowered = [o.strip().lower() for o in options]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return LETTERS.index(text.upper())
    if text.isdigit():
        return int(text)
    raise InputError(
        f"answer {answer!r} is neither an option, a letter nor an index of {list(options)}"
    )


@dataclass
class BadItem:
    """A skipped item: its id when it had one, else only the line/row number."""

    line: int
    id: str | None
    error: str

    def __str__(self) -> str:
        where = f"item {self.id!r} (line {self.line})" if self.id else f"line {self.line}"
        return f"{where}: {self.error}"


@dataclass
class ItemSet:
    """Valid items plus the ones skipped, and the directory relative image paths start from."""

    items: list[MCQItem]
    errors: list[BadItem] = field(default_factory=list)
    root: Path = Path(".")
    name: str = ""
    #: records whose answer the release withholds (not scored)
    hidden: int = 0

    def __iter__(self) -> Iterator[MCQItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, item: MCQItem) -> Image.Image:
        """The item's image, cropped to its ``crop_box`` ``[x0, y0, x1, y1]`` (pixels) if any."""
        image = load_image(item.image, self.root)
        box = (item.model_extra or {}).get("crop_box")
        if box:
            x0, y0, x1, y1 = (float(v) for v in box)
            x0, y0 = max(0.0, x0), max(0.0, y0)
            x1, y1 = min(float(image.width), x1), min(float(image.height), y1)
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise ValueError(f"crop box {list(box)} is outside the {image.size} image")
            image = image.crop((round(x0), round(y0), round(x1), round(y1)))
        return image


def validate_items(rows: Sequence[tuple[int, Any]], *, root: Path, name: str = "") -> ItemSet:
    """Validates ``(line, raw)`` rows into an :class:`ItemSet`; bad rows become :class:`BadItem`."""
    items: list[MCQItem] = []
    errors: list[BadItem] = []
    seen: set[str] = set()
    for line, raw in rows:
        raw_id = str(raw["id"]) if isinstance(raw, dict) and raw.get("id") is not None else None
        if isinstance(raw, Exception):  # a line that did not read as an object
            errors.append(BadItem(line, None, str(raw)))
            continue
        if not isinstance(raw, dict):
            errors.append(BadItem(line, None, f"expected an object, got {type(raw).__name__}"))
            continue
        if "_error" in raw:  # a benchmark loader could not build this item from its source record
            errors.append(BadItem(line, raw_id, str(raw["_error"])))
            continue
        try:
            item = MCQItem.model_validate(raw)
        except (ValidationError, ValueError) as exc:
            message = describe(exc, "<item>") if isinstance(exc, ValidationError) else str(exc)
            errors.append(BadItem(line, raw_id, message))
            continue
        if item.id in seen:
            errors.append(BadItem(line, item.id, "duplicate id"))
            continue
        if not item.continent and item.country:
            item.continent = continent_of(item.country)
        seen.add(item.id)
        items.append(item)
    return ItemSet(items=items, errors=errors, root=root, name=name)


def read_items(path: str | Path, columns: dict[str, str] | None = None) -> ItemSet:
    """An items file (``.jsonl``, ``.json``, ``.parquet``) or a directory with ``items.*``;
    ``columns`` maps item fields to the file's columns (``{"answer": "Label"}``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("items.jsonl", "items.parquet", "items.json"):
            if (path / candidate).exists():
                path = path / candidate
                break
        else:
            raise MissingInputError(f"no items.jsonl / items.parquet / items.json in {path}")
    if not path.exists():
        raise MissingInputError(f"items file not found: {path}")
    if path.suffix not in (".parquet", ".json"):  # a bad line costs its own item only
        rows: list[tuple[int, Any]] = [
            (number, parsed if isinstance(parsed, dict) else ValueError(parsed))
            for number, parsed, _ in jsonl_lines(path)
        ]
    else:
        rows = list(enumerate(read_records(path), start=1))
    if columns:
        rows = [(n, apply_columns(r, columns) if isinstance(r, dict) else r) for n, r in rows]
    return validate_items(rows, root=path.parent, name=path.stem)


def write_items(path: str | Path, items: Sequence[MCQItem | dict[str, Any]]) -> Path:
    """Writes items atomically as JSONL or Parquet (by suffix), answers as indices."""
    path = Path(path)
    rows = []
    for entry in items:
        item = entry if isinstance(entry, MCQItem) else MCQItem.model_validate(entry)
        row = item.model_dump()
        if isinstance(row["image"], bytes):  # in-memory images travel inline
            row["image"] = "data:image/png;base64," + base64.b64encode(row["image"]).decode("ascii")
        rows.append(row)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        return path
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
