"""The multiple-choice item format every MCQ benchmark reads (docs/eval.md, "The
multiple-choice item format"); ``answer`` is stored as the 0-based option index."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cultureclip.core.config import describe
from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import atomic_path, atomic_write_text, jsonl_lines, stable_hash
from cultureclip.data.pairs import load_image
from cultureclip.data.taxonomy import continent_of
from cultureclip.eval.metrics import GROUP_KEYS
from cultureclip.eval.source import apply_columns, image_value, read_records

logger = logging.getLogger(__name__)
#: the question types the shipped prompts know; others are kept as given (a release's own)
QUESTION_TYPES = ("recognition", "knowledge", "scene")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: fields read as text: a release's integer category or question type becomes "2"
TEXT_FIELDS = ("id", "question", "country", "continent", "category", "question_type", "language")
#: answers a release withholds (a hidden test split): predicted, not scored
HIDDEN_ANSWERS = (None, -1, "-1", "")


class MCQItem(BaseModel):
    """One multiple-choice item; extra keys (``reason``, ``concept``…) are kept."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    image: str | bytes
    question: str = ""
    options: list[str] = Field(min_length=2)
    #: the 0-based option index; none when the release withholds it (predicted, not scored)
    answer: int | None = None
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
        for name in TEXT_FIELDS:
            if data.get(name) is not None:
                data[name] = as_text(data[name])
        if isinstance(data.get("image"), dict | bytearray | memoryview):
            # the {bytes, path} struct of a datasets.Image column (parquet, arrow, hub)
            data["image"] = image_value(data["image"])
        options = data.get("options")
        if isinstance(options, str):
            data["options"] = options = parse_list(options)
        if isinstance(options, list | tuple):
            data["options"] = options = [as_text(o) for o in options]
        if data.get("answer") in HIDDEN_ANSWERS:
            data["answer"] = None
        elif isinstance(options, list):
            data["answer"] = resolve_answer(data["answer"], [str(o) for o in options])
        return data

    @model_validator(mode="after")
    def _check(self) -> MCQItem:
        if self.answer is not None and not 0 <= self.answer < len(self.options):
            raise InputError(f"answer index {self.answer} outside 0..{len(self.options) - 1}")
        blank = [i for i, option in enumerate(self.options) if not option.strip()]
        if blank:
            raise InputError(f"option(s) {blank} are blank: {self.options}")
        if len(set(self.options)) != len(self.options):
            raise InputError(f"options are not distinct: {self.options}")
        if not self.question_type.strip():
            raise InputError("question_type is blank")
        return self

    @property
    def hidden(self) -> bool:
        """Whether the release withholds this item's answer."""
        return self.answer is None

    @property
    def answer_text(self) -> str:
        if self.answer is None:
            raise ValueError(f"item {self.id!r} has no answer (the release withholds it)")
        return self.options[self.answer]

    def group_fields(self) -> dict[str, str]:
        return self.model_dump(include=set(GROUP_KEYS))


def as_text(value: Any) -> Any:
    """A number read as text (``2`` -> ``"2"``, ``2.0`` -> ``"2"``); other values as they are."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return value


def parse_list(text: str) -> Any:
    """Options stored as a JSON (or Python literal) list in a string, as exports often do."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(text)  # literals only: never executes code
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, list | tuple):
        raise InputError(f"options is a string that is not a JSON list: {text[:60]!r}")
    return list(value)


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
    #: ids a release reused for different items, kept apart with a ``#2``, ``#3``… suffix
    suffixed: int = 0
    #: exact duplicate rows, dropped
    duplicates: int = 0

    @property
    def hidden(self) -> int:
        """Items whose answer the release withholds (predicted, not scored)."""
        return sum(item.answer is None for item in self.items)

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


def content_hash(row: dict[str, Any]) -> str:
    """A stable hash of a row's content (image bytes by their digest, not their repr)."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes | bytearray | memoryview):
            return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return stable_hash(plain(row))


def map_values(row: dict[str, Any], value_maps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``row`` with each mapped field's value replaced (``question_type: {1: recognition}``);
    values are matched as text, so ``1`` and ``"1"`` are one key."""
    mapped = dict(row)
    for name, mapping in value_maps.items():
        if name in mapped and mapped[name] is not None:
            text = str(as_text(mapped[name]))
            if text in mapping:
                mapped[name] = mapping[text]
    return mapped


def validate_items(
    rows: Sequence[tuple[int, Any]],
    *,
    root: Path,
    name: str = "",
    value_maps: Mapping[str, Mapping[str, Any]] | None = None,
) -> ItemSet:
    """Validates ``(line, raw)`` rows into an :class:`ItemSet`; bad rows become :class:`BadItem`.

    A row without an id gets one from its content (``c-<hash>``, the same on every run);
    an exact duplicate of an earlier row is dropped; an id reused for a different row is
    kept apart with a suffix (``q1#2``). Both are counted in the item set."""
    items: list[MCQItem] = []
    errors: list[BadItem] = []
    seen: set[str] = set()
    contents: set[str] = set()
    suffixed = duplicates = 0
    for line, raw in rows:
        if isinstance(raw, Exception):  # a line that did not read as an object
            errors.append(BadItem(line, None, str(raw)))
            continue
        if not isinstance(raw, dict):
            errors.append(BadItem(line, None, f"expected an object, got {type(raw).__name__}"))
            continue
        raw_id = str(as_text(raw["id"])) if raw.get("id") not in (None, "") else None
        if "_error" in raw:  # a benchmark loader could not build this item from its source record
            errors.append(BadItem(line, raw_id, str(raw["_error"])))
            continue
        raw = map_values(raw, value_maps or {})
        digest = content_hash(raw)
        if digest in contents:
            duplicates += 1
            continue
        contents.add(digest)
        if raw_id is None:
            raw_id = "c-" + content_hash({k: v for k, v in raw.items() if k != "id"})
        item_id = raw_id
        if item_id in seen:
            number = 2
            while f"{raw_id}#{number}" in seen:
                number += 1
            item_id = f"{raw_id}#{number}"
            suffixed += 1
        try:
            item = MCQItem.model_validate({**raw, "id": item_id})
        except (ValidationError, ValueError) as exc:
            message = describe(exc, "<item>") if isinstance(exc, ValidationError) else str(exc)
            errors.append(BadItem(line, item_id, message.replace("Value error, ", "")))
            continue
        if not item.continent and item.country:
            item.continent = continent_of(item.country)
        seen.add(item.id)
        items.append(item)
    if suffixed or duplicates:
        logger.info(
            "%s: %d reused id(s) suffixed, %d exact duplicate row(s) dropped",
            name or root,
            suffixed,
            duplicates,
        )
    return ItemSet(
        items=items,
        errors=errors,
        root=root,
        name=name,
        suffixed=suffixed,
        duplicates=duplicates,
    )


def read_items(
    path: str | Path,
    columns: dict[str, str] | None = None,
    *,
    image_root: str | Path | None = None,
    value_maps: Mapping[str, Mapping[str, Any]] | None = None,
) -> ItemSet:
    """An items file (``.jsonl``, ``.json``, ``.parquet``) or a directory with ``items.*``;
    ``columns`` maps item fields to the file's columns (``{"answer": "Label"}``), relative
    image paths start at ``image_root`` (default: the file's folder), ``value_maps``
    rewrites field values (``{"question_type": {"1": "recognition"}}``)."""
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
    root = Path(image_root) if image_root is not None else path.parent
    return validate_items(rows, root=root, name=path.stem, value_maps=value_maps)


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
