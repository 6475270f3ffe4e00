"""Where benchmark rows come from (docs/eval.md, "Benchmarks"): a local annotation file, a
local folder in the hub layout, a folder holding one annotation file, or a hub dataset
(images kept encoded; a path that looks local is never tried on the hub)."""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import iter_jsonl, read_json

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
RECORD_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
DATA_SUFFIXES = (*RECORD_SUFFIXES, ".arrow")
NOT_ON_DISK = (
    " (no local file or folder of that name either; offline? unset HF_HUB_OFFLINE "
    "with network access, or pass a local path)"
)


def looks_like_local_path(data: str) -> bool:
    """A string a user meant as a local path: a file suffix, ``./``, ``/``, ``~``, or 2+ slashes."""
    if data.startswith((".", "/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", data):
        return True
    if Path(data).suffix.lower() in DATA_SUFFIXES or data.count("/") >= 2 or "\\" in data:
        return True
    return not HUB_NAME.match(data)


def is_hub_layout(path: Path) -> bool:
    """A folder laid out like a hub dataset repo (as ``snapshot_download`` writes it)."""
    if not path.is_dir():
        return False
    data = path / "data"
    if data.is_dir() and any(p.suffix in (".parquet", ".arrow") for p in data.rglob("*")):
        return True
    readme = path / "README.md"
    if readme.is_file():
        head = readme.read_text(encoding="utf-8", errors="replace")[:20000]
        return head.startswith("---") and ("dataset_info:" in head or "configs:" in head)
    return False


def image_value(value: Any) -> Any:
    """An image cell (or a list of them) as items store it: encoded bytes or a path /
    ``data:`` URL; the ``{bytes, path}`` struct of ``datasets.Image`` gives its bytes first."""
    if isinstance(value, list):
        return [image_value(v) for v in value]
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return str(value["path"])
        return None
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format=value.format or "PNG")
        return buffer.getvalue()
    return value


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
    """Rows of a JSON (list, ``{"data": [...]}`` or ``{id: record}``), JSONL, CSV/TSV,
    Parquet or Arrow (stream or file) file."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".arrow"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        with open(path, "rb") as handle:
            try:
                return pa.ipc.open_stream(handle).read_all().to_pylist()
            except pa.ArrowInvalid:
                handle.seek(0)
                return pa.ipc.open_file(handle).read_all().to_pylist()
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


def _undecoded_features(features: Any) -> Any:
    """A copy of ``features`` with every ``datasets.Image`` (nested too) set to ``decode=False``."""
    import datasets

    def visit(feature: Any) -> Any:
        if isinstance(feature, datasets.Image):
            return datasets.Image(decode=False)
        if isinstance(feature, dict):
            return {key: visit(value) for key, value in feature.items()}
        if isinstance(feature, list):
            return [visit(value) for value in feature]
        if hasattr(feature, "feature"):
            clone = copy.copy(feature)
            clone.feature = visit(feature.feature)
            return clone
        return feature

    return datasets.Features({key: visit(value) for key, value in features.items()})


def load_dataset_rows(
    source: str,
    split: str | None,
    *,
    local: bool,
    label_names: bool = False,
    config: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``datasets.load_dataset(source, split=…)``, images undecoded (``{bytes, path}``);
    with ``label_names``, a ``ClassLabel`` column gives the class name, not its index."""
    wanted = split or "test"
    if local:
        # A local folder is read through a cache of its own, gone after: the shared cache
        # keys a folder by its name, and would serve a folder rewritten in place (or another
        # of the same name) from rows made of other bytes.
        with (
            tempfile.TemporaryDirectory(prefix="cultureclip-datasets-") as cache_dir,
            _quiet_datasets(),  # its bars would print on every run; the stage reports its own
        ):
            return _dataset_rows(source, wanted, config, label_names, local, cache_dir)
    # A hub dataset's cache is keyed by the commit it resolved to.
    return _dataset_rows(source, wanted, config, label_names, local, None)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """``datasets``' own progress bars off while a local folder is read, then as they were."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _dataset_rows(
    source: str,
    wanted: str,
    config: str | None,
    label_names: bool,
    local: bool,
    cache_dir: str | None,
) -> list[dict[str, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(source, config, split=wanted, cache_dir=cache_dir)
    except Exception as exc:  # network, offline mode, unknown name, wrong split: say it in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        where, hint = ("local dataset folder", "") if local else ("hub dataset", NOT_ON_DISK)
        raise InputError(
            f"cannot load {where} {source!r}, split {wanted!r}: {type(exc).__name__}: {first}{hint}"
        ) from exc
    undecoded = _undecoded_features(dataset.features)
    if undecoded != dataset.features:  # keep the encoded bytes: no decode, no PNG re-encode
        dataset = dataset.cast(undecoded)
    rows = list(dataset)
    for key, feature in dataset.features.items():
        if label_names and isinstance(feature, datasets.ClassLabel):
            for row in rows:
                if isinstance(row[key], int) and 0 <= row[key] < len(feature.names):
                    row[key] = feature.names[row[key]]
    return rows


def read_rows(
    data: str | Path,
    split: str | None = None,
    preferred: Sequence[str] = (),
    *,
    label_names: bool = False,
    config: str | None = None,
) -> tuple[list[dict[str, Any]], Path]:
    """Rows of a benchmark's data and the folder relative image paths start from."""
    hub = {"label_names": label_names, "config": config}
    text = str(data)
    path = Path(text).expanduser()
    if path.exists():
        own_file = any((path / name).is_file() for name in preferred)
        if path.is_dir() and not own_file and is_hub_layout(path):
            rows = load_dataset_rows(str(path), split, local=True, **hub)
            root = path
        else:
            file = find_annotation_file(path, preferred) if path.is_dir() else path
            rows = read_records(file)
            root = file.parent
    elif looks_like_local_path(text):
        raise MissingInputError(
            f"benchmark data not found: {text} (it looks like a local path, so it was not "
            "tried as a hub dataset name)"
        )
    else:
        rows, root = load_dataset_rows(text, split, local=False, **hub), Path(".")
    return [{key: image_value(value) for key, value in row.items()} for row in rows], root


def apply_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """``row`` with each of our fields filled from the user's column (``columns.answer=Label``)."""
    if not columns:
        return row
    mapped = dict(row)
    for ours, theirs in columns.items():
        if theirs in row:
            mapped[ours] = row[theirs]
        else:
            mapped["_error"] = (
                f"column {theirs!r} (mapped to {ours!r}) is not in the data; "
                f"columns are: {', '.join(map(str, row))}"
            )
    return mapped
