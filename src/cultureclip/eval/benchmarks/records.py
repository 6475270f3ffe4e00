"""Reading the annotation files public benchmarks ship (JSON, JSONL, CSV/TSV, Parquet).

Released datasets disagree on file type and key names; :func:`read_records` reads any of
these into a list of dicts and :func:`pick` finds a field under its known aliases, so a
loader states the aliases it accepts in one place and reports a missing field clearly.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.utils.io import iter_jsonl, read_json

RECORD_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def find_annotation_file(path: Path, preferred: Sequence[str] = ()) -> Path:
    """``path`` itself, or in a directory the first of ``preferred`` names, else the only annotation file."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise MissingInputError(f"benchmark data not found: {path}")
    for name in preferred:
        if (path / name).exists():
            return path / name
    candidates = sorted(
        p for p in path.iterdir() if p.suffix in RECORD_SUFFIXES and not p.name.startswith(".")
    )
    if len(candidates) == 1:
        return candidates[0]
    names = ", ".join(p.name for p in candidates) or "none"
    raise MissingInputError(
        f"cannot tell which annotation file in {path} to use (found: {names}); pass the file itself"
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON (list, ``{"data": [...]}`` or ``{id: record}``), JSONL, CSV/TSV or Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".jsonl":
        return [record for _, record in iter_jsonl(path)]
    data = read_json(path)
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("data", "annotations", "items", "images"):
            if isinstance(data.get(key), list):
                return data[key]
        if all(isinstance(v, dict) for v in data.values()):
            return [{"id": key, **value} for key, value in data.items()]
    raise InputError(f"{path}: expected a list of records (or {{'data': [...]}} / {{id: record}})")


def pick(
    record: dict[str, Any], aliases: Sequence[str], what: str, *, required: bool = True
) -> Any:
    """The first present, non-empty alias of a field; a clear error when required and absent."""
    for alias in aliases:
        value = record.get(alias)
        if value not in (None, ""):
            return value
    if required:
        raise InputError(
            f"record has no {what} (looked for keys {', '.join(aliases)}): {str(record)[:160]}"
        )
    return None
