"""The CulTwin dataset format: one record per twin pair.

A record holds a culture-specific concept (``pos_*``) and its visually similar but
culturally different twin (``neg_*``), each with context, key visual features,
captions and one image::

    {id, country, category,
     pos_concept, pos_context, pos_features, pos_captions[], pos_image,
     neg_concept, neg_context, neg_features, neg_captions[], neg_image,
     quality{...}, source}

Stored as JSONL (``cultwin.jsonl``) or Parquet (``cultwin.parquet``) with images
beside it (paths are relative to the file's directory), as WebDataset tar shards
(``cultwin-000000.tar``, ... plus ``cultwin-shards.json``, written with the
``webdataset`` library) that carry the images inside them (:func:`write_cultwin_shards`),
or as a hub dataset (``data/train-*.parquet`` with the images embedded, and a card:
``cultureclip.publish.write_cultwin_dataset``). :func:`read_cultwin` validates every record
and collects bad ones by line number instead of stopping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.identity import file_hash
from cultureclip.core.io import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    parse_json_line,
    stable_hash,
)

CULTWIN_FILES = ("cultwin.jsonl", "cultwin.parquet")
SHARD_GLOB = "cultwin-*.tar"
SHARD_MANIFEST = "cultwin-shards.json"
SHARD_CACHE = ".cultwin-cache"
#: the hub dataset layout (``cultureclip.publish.write_cultwin_dataset``): Parquet shards
#: with the images embedded as ``datasets.Image`` columns, under ``data/``
HUB_DATA_DIR = "data"
HUB_SHARD_PATTERN = "train-{index:05d}-of-{total:05d}.parquet"
#: the columns of that layout and what each holds (``extra``: other keys, as JSON)
TWIN_FIELDS = {
    "id": "text",
    "country": "text",
    "category": "text",
    "pos_concept": "text",
    "pos_context": "text",
    "pos_features": "text",
    "pos_captions": "captions",
    "pos_image": "image",
    "neg_concept": "text",
    "neg_context": "text",
    "neg_features": "text",
    "neg_captions": "captions",
    "neg_image": "image",
    "neg_country": "text",
    "quality": "json",
    "source": "text",
    "extra": "json",
}


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


@dataclass
class BadRecord:
    line: int  # 1-based line (JSONL), row (Parquet) or sample number (shards, across all shards)
    error: str
    raw: str = ""
    where: str = ""  # ``shard:member`` for shards (also named at the start of ``error``)


@dataclass
class CulTwinLoad:
    """Loaded records. For shards, ``shard_images`` maps an image field value (a member
    name such as ``abc.pos.png``) to the shard holding it; :meth:`image_path` extracts
    that shard's images into ``cache_dir`` on first use and returns a path there."""

    records: list[TwinRecord]
    errors: list[BadRecord] = field(default_factory=list)
    root: Path = Path(".")
    shard_images: dict[str, Path] = field(default_factory=dict, repr=False)
    cache_dir: Path | None = None
    _extracted: dict[Path, Path] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __iter__(self) -> Iterator[TwinRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, relative: str | None) -> Path | None:
        if relative is None:
            return None
        shard = self.shard_images.get(relative)
        if shard is not None:
            directory = self._extracted.get(shard)
            if directory is None:
                directory = _extract_shard_images(
                    shard, self.cache_dir or _cache_root(shard.parent)
                )
                self._extracted[shard] = directory
            return directory / relative
        return self.root / relative  # an absolute path stays as it is

    def error_report(self) -> str:
        return "\n".join(f"line {bad.line}: {bad.error}" for bad in self.errors)


class CulTwinFormatError(InputError):
    """Raised when ``strict=True`` and some records are bad; the message names the lines."""


class CulTwinShardError(CulTwinFormatError):
    """A shard file is unreadable (truncated, corrupt) or disagrees with ``cultwin-shards.json``.

    Raised whatever ``strict`` says: the records lost with a damaged shard cannot be
    named, so loading the rest would silently shrink the set."""


def is_cultwin_path(path: str | Path) -> bool:
    """Whether ``path`` is a CulTwin set: a directory holding ``cultwin.jsonl``/``.parquet``
    or tar shards, a shard, or a JSONL/Parquet file whose records are twin records
    (``pos_concept``). The one detection every stage uses, so a plain image–text JSONL is
    "pairs" everywhere."""
    path = Path(path)
    if path.is_dir():
        names = (*CULTWIN_FILES, SHARD_MANIFEST)
        return (
            any((path / n).exists() for n in names)
            or any(path.glob(SHARD_GLOB))
            or _hub_shards(path) is not None
        )
    if path.suffix == ".tar" or path.name in CULTWIN_FILES:
        return True
    if path.suffix == ".jsonl" and path.is_file():
        with open(path, "rb") as handle:
            return b'"pos_concept"' in next((line for line in handle if line.strip()), b"")
    if path.suffix == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        return "pos_concept" in pq.read_schema(path).names
    return False


def _resolve_file(path: Path) -> Path:
    """The file to read, or the directory itself when it holds tar shards."""
    if path.is_dir():
        for name in ("cultwin.parquet", "cultwin.jsonl"):
            if (path / name).exists():
                return path / name
        if (path / SHARD_MANIFEST).exists() or any(path.glob(SHARD_GLOB)):
            return path
        if _hub_shards(path) is not None:
            return path / HUB_DATA_DIR
        raise MissingInputError(
            f"no cultwin.jsonl, cultwin.parquet, {SHARD_GLOB} shards or "
            f"{HUB_DATA_DIR}/train-*.parquet in {path}"
        )
    if not path.exists():
        raise MissingInputError(f"CulTwin file not found: {path}")
    return path


@dataclass
class _Row:
    number: int
    data: dict[str, Any] | str  # the parsed record, or why it is not one
    raw: str = ""
    where: str = ""  # ``shard:member`` for shards
    shard: Path | None = None
    # The sample's other members (its images): only these names point into the shard,
    # any other image value is an ordinary path, relative to the shard directory.
    members: frozenset[str] = frozenset()


def read_cultwin(
    path: str | Path,
    *,
    strict: bool = False,
    check_images: bool = False,
    cache_dir: str | Path | None = None,
) -> CulTwinLoad:
    """Loads and validates a CulTwin set: a JSONL or Parquet file, a directory holding
    one, a directory of ``cultwin-*.tar`` shards, or a single shard.

    Bad records are collected in ``result.errors`` with their line number (for shards:
    the sample's running number, and ``shard:member`` in the error) and the good ones
    still load. ``strict=True`` raises :class:`CulTwinFormatError` instead.
    ``check_images=True`` also flags records whose image files (or members) are missing.
    A shard that cannot be read raises :class:`CulTwinShardError` naming it. Shard
    images are extracted on first use into ``cache_dir`` (default
    ``<shard dir>/.cultwin-cache``), see :meth:`CulTwinLoad.image_path`.
    """
    file = _resolve_file(Path(path))
    root = file if file.is_dir() else file.parent
    result = CulTwinLoad(
        records=[], root=root, cache_dir=Path(cache_dir) if cache_dir is not None else None
    )
    seen: set[str] = set()
    for row in _read_rows(file):
        record = _validated(row, root, seen, check_images)
        if isinstance(record, str):
            prefix = f"{row.where}: " if row.where else ""
            result.errors.append(BadRecord(row.number, prefix + record, row.raw[:200], row.where))
            continue
        for image in (record.pos_image, record.neg_image):
            if row.shard is not None and image in row.members:
                result.shard_images[image] = row.shard
        seen.add(record.id)
        result.records.append(record)
    if strict and result.errors:
        raise CulTwinFormatError(
            f"{len(result.errors)} bad record(s) in {file}:\n{result.error_report()}"
        )
    return result


def _hub_shards(directory: Path) -> list[Path] | None:
    """The Parquet shards of a hub-layout set in ``directory`` (None: not one)."""
    shards = sorted((directory / HUB_DATA_DIR).glob("train-*.parquet"))
    if not shards:
        return None
    import pyarrow.parquet as pq

    return shards if "pos_concept" in pq.read_schema(shards[0]).names else None


def _read_rows(file: Path) -> list[_Row]:
    if file.is_dir() and file.name == HUB_DATA_DIR and _hub_shards(file.parent) is not None:
        return _read_hub_rows(file.parent)
    if file.is_dir() or file.suffix == ".tar":
        return _read_shard_rows(file)
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [_Row(n, row) for n, row in enumerate(pq.read_table(file).to_pylist(), start=1)]
    # Line by line in bytes: one bad byte costs its own record, not the whole file.
    with open(file, "rb") as handle:
        return [
            _Row(number, parse_json_line(raw), raw.decode("utf-8", "replace").strip())
            for number, raw in enumerate(handle, start=1)
            if raw.strip()
        ]


def _hub_image_name(shard: Path, row: int, side: str, stored: str | None) -> str:
    """The name an embedded image gets in the extraction cache (unique per shard row)."""
    return f"{shard.stem}-{row:06d}.{side}{Path(stored or '').suffix.lower() or '.png'}"


def _read_hub_rows(directory: Path) -> list[_Row]:
    """The rows of a hub-layout set; image columns become names in the extraction cache
    (the bytes stay in the Parquet file until :meth:`CulTwinLoad.image_path` asks)."""
    import pyarrow.parquet as pq

    shards = _hub_shards(directory) or []
    rows: list[_Row] = []
    for shard in shards:
        table = pq.read_table(shard)
        images = [name for name, kind in TWIN_FIELDS.items() if kind == "image"]
        # Only the stored names: the image bytes are not needed to validate records.
        stored = {
            column: [v and v.get("path") for v in table.column(column).to_pylist()]
            if column in table.column_names
            else [None] * table.num_rows
            for column in images
        }
        rest = table.drop_columns([c for c in images if c in table.column_names]).to_pylist()
        for index, data in enumerate(rest):
            number = len(rows) + 1
            where = f"{HUB_DATA_DIR}/{shard.name}:{index + 1}"
            extra = data.pop("extra", None)
            try:
                data.update(json.loads(extra) if extra else {})
            except ValueError as exc:
                rows.append(_Row(number, f"extra: not valid JSON: {exc}", where=where))
                continue
            members = set()
            for column in images:
                side = column.removesuffix("_image")
                present = table.column(column)[index].is_valid if column in stored else False
                if present:
                    name = _hub_image_name(shard, index, side, stored[column][index])
                    data[column] = name
                    members.add(name)
                else:
                    data[column] = None
            rows.append(
                _Row(number, data, json.dumps(data)[:200], where, shard, frozenset(members))
            )
    return rows


def _validated(row: _Row, root: Path, seen: set[str], check_images: bool) -> TwinRecord | str:
    """The row's record, or what is wrong with it."""
    if isinstance(row.data, str):
        return row.data
    try:
        record = TwinRecord.model_validate(row.data)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in exc.errors()
        )
    if record.id in seen:
        return f"duplicate id {record.id!r}"
    if check_images:
        missing = [
            image
            for image in (record.pos_image, record.neg_image)
            if image is not None and image not in row.members and not (root / image).exists()
        ]
        if missing:
            return f"image file(s) missing: {', '.join(missing)}"
    return record


def write_cultwin(path: str | Path, records: Sequence[TwinRecord | dict[str, Any]]) -> Path:
    """Writes records atomically; the format follows the suffix (``.jsonl`` or ``.parquet``)."""
    path = Path(path)
    # model_validate returns a TwinRecord as it is and validates a dict.
    rows = [TwinRecord.model_validate(r).model_dump(mode="json") for r in records]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for row in rows:
            row["quality"] = json.dumps(row.get("quality", {}), ensure_ascii=False)
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        return path
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ---- tar shards (WebDataset layout) -----------------------------------------------------
_BLOCK = tarfile.BLOCKSIZE


def sample_key(record_id: str) -> str:
    """The WebDataset key of a record: its id with every character outside
    ``[A-Za-z0-9_-]`` replaced by ``_``, since WebDataset splits key from field at the
    first dot and a slash would make a directory."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", record_id) or "_"


def _split_member(name: str) -> tuple[str, str]:
    """(key, field) the WebDataset way: the key ends at the first dot of the basename."""
    directory, _, base = name.rpartition("/")
    stem, _, suffix = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), suffix


def write_cultwin_shards(
    records: Sequence[TwinRecord | dict[str, Any]],
    out_dir: str | Path,
    *,
    image_root: str | Path | CulTwinLoad,
    shard_size: int = 1000,
) -> list[Path]:
    """Writes records as WebDataset-style tar shards ``out_dir/cultwin-000000.tar``, ...

    A record becomes the sample ``{key}.json`` (the record, its image fields rewritten to
    the member names) + ``{key}.pos.<ext>`` / ``{key}.neg.<ext>`` (the image bytes, read
    from ``image_root / record.pos_image``; ``image_root`` may also be a loaded set, e.g.
    to re-shard shards). ``key`` is :func:`sample_key` of the id, suffixed ``_1``, ``_2``,
    ... when two ids sanitise alike. Each shard is written atomically;
    ``cultwin-shards.json`` (shards with record counts and sizes) is written last, so it
    only ever lists complete shards, and shards of an earlier, larger write are removed
    after it.
    """
    if shard_size < 1:
        raise InputError("shard_size must be at least 1")
    try:
        import webdataset
    except ImportError as exc:
        raise InputError(
            "writing shards needs the webdataset library: pip install 'cultureclip[datasets]'"
        ) from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    validated = [TwinRecord.model_validate(r) for r in records]
    if not isinstance(image_root, CulTwinLoad):  # a folder: images at image_root / relative
        image_root = CulTwinLoad([], root=Path(image_root))
    duplicates = [i for i, n in Counter(r.id for r in validated).items() if n > 1]
    if duplicates:
        raise InputError(f"duplicate record id(s): {', '.join(map(repr, duplicates[:10]))}")
    keys = _sample_keys(validated)
    shards: list[Path] = []
    entries: list[dict[str, Any]] = []
    for start in range(0, len(validated), shard_size):
        target = out / f"cultwin-{len(shards):06d}.tar"
        chunk = range(start, min(start + shard_size, len(validated)))
        # atomic_path fsyncs the shard once the tar and its file are closed. Fixed member
        # metadata makes a shard a pure function of its records: rewriting the same set
        # gives byte-identical files (cheap to compare, dedupe and cache).
        with (
            atomic_path(target) as tmp,
            open(tmp, "wb") as handle,
            webdataset.TarWriter(
                handle, encoder=False, mtime=0, mode=0o644, format="PAX_FORMAT"
            ) as writer,
        ):
            for index in chunk:
                writer.write(_sample(validated[index], keys[index], image_root))
        shards.append(target)
        entries.append({"name": target.name, "records": len(chunk), "bytes": target.stat().st_size})
    atomic_write_json(
        out / SHARD_MANIFEST,
        {"format": "cultwin-shards", "version": 1, "records": len(validated), "shards": entries},
    )
    names = {s.name for s in shards}
    for stale in out.glob(SHARD_GLOB):
        if stale.name not in names:
            stale.unlink()
    # Extracted images of the shards just replaced are keyed by their size and mtime and
    # so never reused; dropping them only frees the disk.
    shutil.rmtree(out / SHARD_CACHE, ignore_errors=True)
    return shards


def _sample_keys(records: Sequence[TwinRecord]) -> list[str]:
    """:func:`sample_key` of each id, suffixed ``_1``, ``_2``, ... where two ids sanitise alike."""
    keys: list[str] = []
    used: set[str] = set()
    for record in records:
        key = base = sample_key(record.id)
        number = 0
        while key in used:
            number += 1
            key = f"{base}_{number}"
        used.add(key)
        keys.append(key)
    return keys


def side_image_bytes(
    record: TwinRecord, row: dict[str, Any], images_of: CulTwinLoad
) -> Iterator[tuple[str, str, bytes]]:
    """``(side, stored path, bytes)`` of each image a record has, for writers that embed
    them (tar shards, the hub layout); an unreadable file is one line naming the record."""
    for side in ("pos", "neg"):
        relative = row[f"{side}_image"]
        if relative is None:
            continue
        path = images_of.image_path(relative)
        assert path is not None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MissingInputError(
                f"record {record.id!r}: cannot read {side} image {path}: {exc}"
            ) from exc
        yield side, relative, data


def _sample(record: TwinRecord, key: str, images_of: CulTwinLoad) -> dict[str, Any]:
    """One record's WebDataset sample: ``{"__key__": key, "json": record bytes,
    "pos.<ext>": image bytes, "neg.<ext>": image bytes}`` (``json`` sorts first, so a
    streaming reader meets the record before the images)."""
    row = record.model_dump(mode="json")
    sample: dict[str, Any] = {"__key__": key}
    for side, relative, data in side_image_bytes(record, row, images_of):
        field = f"{side}{Path(relative).suffix.lower() or '.bin'}"
        row[f"{side}_image"] = f"{key}.{field}"
        sample[field] = data
    sample["json"] = json.dumps(row, ensure_ascii=False).encode("utf-8")
    return sample


def _shard_manifest(directory: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest's entries by shard name, in shard order; None if there is none."""
    path = directory / SHARD_MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return {entry["name"]: entry for entry in manifest["shards"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise CulTwinShardError(f"{path}: not a valid shard manifest: {exc}") from exc


def _read_shard_rows(source: Path) -> list[_Row]:
    if source.is_dir():
        manifest = _shard_manifest(source)
        # The manifest is written last, so it is the list of complete shards; any other
        # cultwin-*.tar is a leftover of an interrupted rewrite.
        shards = (
            [source / name for name in manifest]
            if manifest is not None
            else sorted(source.glob(SHARD_GLOB))
        )
    else:
        manifest = _shard_manifest(source.parent)
        shards = [source]
    rows: list[_Row] = []
    first_shard_of_key: dict[str, str] = {}
    for shard in shards:
        if not shard.exists():
            raise CulTwinShardError(f"{shard}: listed in {SHARD_MANIFEST} but missing")
        entry = (manifest or {}).get(shard.name)
        if entry is not None and entry.get("bytes") not in (None, shard.stat().st_size):
            raise CulTwinShardError(
                f"{shard}: {shard.stat().st_size} bytes but {SHARD_MANIFEST} says "
                f"{entry['bytes']}: truncated or replaced (rewrite the shards, or delete "
                f"{SHARD_MANIFEST} if the change is intended)"
            )
        samples = _read_shard_samples(shard)
        if entry is not None and entry.get("records") not in (None, len(samples)):
            raise CulTwinShardError(
                f"{shard}: {len(samples)} samples but {SHARD_MANIFEST} says {entry['records']}"
            )
        for key, members in samples:
            where = f"{shard.name}:{key}.json"
            number = len(rows) + 1
            others = frozenset(name for name in members if name != f"{key}.json")
            if key in first_shard_of_key:
                problem = f"duplicate sample key {key!r} (first in {first_shard_of_key[key]})"
                rows.append(_Row(number, problem, where=where))
                continue
            first_shard_of_key[key] = shard.name
            if f"{key}.json" not in members:
                problem = f"sample has no {key}.json record (members: {', '.join(sorted(members))})"
                rows.append(_Row(number, problem, where=f"{shard.name}:{key}"))
                continue
            raw = members[f"{key}.json"]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                text, data = raw[:200].decode("utf-8", "replace"), f"not UTF-8: {exc}"
            else:
                data = parse_json_line(raw)
            rows.append(_Row(number, data, text.strip(), where, shard, others))
    return rows


def _read_shard_samples(shard: Path) -> list[tuple[str, dict[str, bytes]]]:
    """The samples of one shard in order: ``(key, {member: bytes for .json, b"" for others})``.

    Raises :class:`CulTwinShardError` naming the shard when it is not a complete tar.
    """
    samples: list[tuple[str, dict[str, bytes]]] = []
    try:
        with open(shard, "rb") as handle:
            end = 0
            with tarfile.open(fileobj=handle, mode="r:") as tar:
                for member in tar:
                    end = member.offset_data + -(-member.size // _BLOCK) * _BLOCK
                    if not member.isfile():
                        continue
                    key, suffix = _split_member(member.name)
                    if not samples or samples[-1][0] != key:
                        samples.append((key, {}))
                    # Only the record is read now; images stay in the shard until used.
                    content = b""
                    if suffix == "json":
                        extracted = tar.extractfile(member)
                        assert extracted is not None
                        content = extracted.read()
                    samples[-1][1][member.name] = content
            # tarfile stops quietly at a cut or garbled header; a complete archive ends
            # with a zero block right after its last member.
            handle.seek(end)
            block = handle.read(_BLOCK)
            if len(block) < _BLOCK or block.count(0) != _BLOCK:
                raise tarfile.ReadError(
                    f"no end-of-archive marker at byte {end} (file has {shard.stat().st_size})"
                )
    except (tarfile.TarError, EOFError) as exc:
        raise CulTwinShardError(
            f"{shard}: not a readable tar shard (truncated or corrupt): {exc}"
        ) from exc
    return samples


def _cache_root(directory: Path) -> Path:
    cache = directory / SHARD_CACHE
    try:
        cache.mkdir(exist_ok=True)
        return cache
    except OSError:
        # A read-only dataset directory: keep the cache in the temp dir, one per dataset.
        key = stable_hash(str(directory.resolve()), length=12)
        return Path(tempfile.gettempdir()) / "cultwin-cache" / key


def _safe_member(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _extract_shard_images(shard: Path, cache: Path) -> Path:
    """Extracts every non-record member of ``shard`` once and returns the directory.

    The directory is named after the shard's content hash (``core.identity.file_hash``) so
    a rewritten shard never reuses stale images, and it appears by one rename of a fully written temp directory,
    so a killed extraction leaves nothing under the final name and concurrent readers
    (DataLoader workers) cannot see a half one: the first rename wins, the rest discard
    their copy.
    """
    target = cache / f"{shard.stem}-{file_hash(shard)[:10]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{shard.stem}.", suffix=".tmp"))
    try:
        try:
            if shard.suffix == ".parquet":
                _extract_hub_images(shard, tmp)
            else:
                _extract_tar_images(shard, tmp)
        except (tarfile.TarError, EOFError) as exc:
            raise CulTwinShardError(
                f"{shard}: not a readable tar shard (truncated or corrupt): {exc}"
            ) from exc
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract_hub_images(shard: Path, into: Path) -> None:
    import pyarrow.parquet as pq

    images = [name for name, kind in TWIN_FIELDS.items() if kind == "image"]
    table = pq.read_table(shard, columns=images)
    for column in images:
        side = column.removesuffix("_image")
        for index, value in enumerate(table.column(column).to_pylist()):
            if value and value.get("bytes") is not None:
                name = _hub_image_name(shard, index, side, value.get("path"))
                (into / name).write_bytes(value["bytes"])


def _extract_tar_images(shard: Path, into: Path) -> None:
    with tarfile.open(shard, mode="r:") as tar:
        for member in tar:
            is_record = _split_member(member.name)[1] == "json"
            if is_record or not member.isfile() or not _safe_member(member.name):
                continue
            dest = into / member.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            extracted = tar.extractfile(member)
            assert extracted is not None
            with extracted, open(dest, "wb") as out:
                shutil.copyfileobj(extracted, out)
