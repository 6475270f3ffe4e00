"""The CulTwin dataset format: one record per twin pair.

A record holds a culture-specific concept (``pos_*``) and its visually similar but
culturally different twin (``neg_*``), each with context, key visual features,
captions and one image::

    {id, country, category,
     pos_concept, pos_context, pos_features, pos_captions[], pos_image,
     neg_concept, neg_context, neg_features, neg_captions[], neg_image,
     quality{...}, source}

Stored as JSONL (``cultwin.jsonl``) or Parquet (``cultwin.parquet``) with images
beside it (paths are relative to the file's directory). :func:`read_cultwin`
validates every record and collects bad ones by line number instead of stopping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cultureclip.utils.io import atomic_path, atomic_write_text


class TwinRecord(BaseModel):
    """One twin pair. Extra keys are kept (``extra="allow"``) so pipelines can annotate."""

    model_config = ConfigDict(extra="allow")

    id: str
    country: str
    category: str
    pos_concept: str = Field(min_length=1)
    pos_context: str = ""
    pos_features: str = ""
    pos_captions: list[str] = Field(default_factory=list)
    pos_image: str | None = None
    neg_concept: str = Field(min_length=1)
    neg_context: str = ""
    neg_features: str = ""
    neg_captions: list[str] = Field(default_factory=list)
    neg_image: str | None = None
    neg_country: str | None = None
    quality: dict[str, Any] = Field(default_factory=dict)
    source: str = ""

    @field_validator("pos_features", "neg_features", mode="before")
    @classmethod
    def _join_feature_lists(cls, value: Any) -> Any:
        # LLMs often answer features as a list; the format stores one string.
        if isinstance(value, list):
            return "; ".join(str(v) for v in value)
        return value

    @field_validator("quality", mode="before")
    @classmethod
    def _decode_quality(cls, value: Any) -> Any:
        # Parquet stores the free-form quality dict as a JSON string.
        if isinstance(value, str):
            try:
                return json.loads(value) if value else {}
            except json.JSONDecodeError:
                return {"raw": value}
        return value

    def side(self, which: str) -> dict[str, Any]:
        """The ``pos`` or ``neg`` half as ``{concept, context, features, captions, image}``."""
        if which not in ("pos", "neg"):
            raise ValueError("which must be 'pos' or 'neg'")
        return {
            key: getattr(self, f"{which}_{key}")
            for key in ("concept", "context", "features", "captions", "image")
        }


@dataclass
class BadRecord:
    line: int  # 1-based line (JSONL) or row (Parquet) number
    error: str
    raw: str = ""


@dataclass
class CulTwinLoad:
    records: list[TwinRecord]
    errors: list[BadRecord] = field(default_factory=list)
    root: Path = Path(".")

    def __iter__(self) -> Iterator[TwinRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, relative: str | None) -> Path | None:
        if relative is None:
            return None
        path = Path(relative)
        return path if path.is_absolute() else self.root / path

    def error_report(self) -> str:
        return "\n".join(f"line {bad.line}: {bad.error}" for bad in self.errors)


class CulTwinFormatError(ValueError):
    """Raised only when ``strict=True`` and some records are bad; the message names the lines."""


def _format_validation_error(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in exc.errors()
    )


def _resolve_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("cultwin.parquet", "cultwin.jsonl", "manifest.parquet"):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"no cultwin.jsonl or cultwin.parquet in {path}")
    if not path.exists():
        raise FileNotFoundError(f"CulTwin file not found: {path}")
    return path


def read_cultwin(
    path: str | Path, *, strict: bool = False, check_images: bool = False
) -> CulTwinLoad:
    """Loads and validates a CulTwin file (JSONL or Parquet) or a directory holding one.

    Bad records are collected in ``result.errors`` with their line number and the
    good ones still load. ``strict=True`` raises :class:`CulTwinFormatError` instead.
    ``check_images=True`` also flags records whose image files are missing.
    """
    file = _resolve_file(Path(path))
    root = file.parent
    rows: list[tuple[int, Any, str]] = []
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(file).to_pylist(), start=1):
            rows.append((number, row, ""))
    else:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((number, json.loads(line), line.strip()))
                except json.JSONDecodeError as exc:
                    rows.append((number, exc, line.strip()))
    records: list[TwinRecord] = []
    errors: list[BadRecord] = []
    seen: set[str] = set()
    for number, data, raw in rows:
        if isinstance(data, Exception):
            errors.append(BadRecord(number, f"not valid JSON: {data}", raw[:200]))
            continue
        if not isinstance(data, dict):
            errors.append(
                BadRecord(number, f"expected an object, got {type(data).__name__}", raw[:200])
            )
            continue
        try:
            record = TwinRecord.model_validate(data)
        except ValidationError as exc:
            errors.append(BadRecord(number, _format_validation_error(exc), raw[:200]))
            continue
        if record.id in seen:
            errors.append(BadRecord(number, f"duplicate id {record.id!r}", raw[:200]))
            continue
        if check_images:
            missing = [
                img
                for img in (record.pos_image, record.neg_image)
                if img is not None
                and not (Path(img) if Path(img).is_absolute() else root / img).exists()
            ]
            if missing:
                errors.append(
                    BadRecord(number, f"image file(s) missing: {', '.join(missing)}", raw[:200])
                )
                continue
        seen.add(record.id)
        records.append(record)
    result = CulTwinLoad(records=records, errors=errors, root=root)
    if strict and errors:
        raise CulTwinFormatError(f"{len(errors)} bad record(s) in {file}:\n{result.error_report()}")
    return result


def write_cultwin(path: str | Path, records: Sequence[TwinRecord | dict[str, Any]]) -> Path:
    """Writes records atomically; the format follows the suffix (``.jsonl`` or ``.parquet``)."""
    path = Path(path)
    rows = [
        (r if isinstance(r, TwinRecord) else TwinRecord.model_validate(r)).model_dump(mode="json")
        for r in records
    ]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for row in rows:
            row["quality"] = json.dumps(row.get("quality", {}), ensure_ascii=False)
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        return path
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
