"""Readers and writers of image–text collections, all returning a :class:`PairCollection`.

Layouts understood by :func:`load_collection`:

- **Chinese-CLIP / CulTi**: a directory with ``{split}_imgs.tsv`` (``image_id TAB base64``,
  standard or URL-safe alphabet) and ``{split}_texts.jsonl``
  (``{"text_id": 1, "text": "...", "image_ids": [1]}``). Images stay base64 bytes in
  memory and are decoded only when used. The CulTi samples as published replace the TSV
  by an image folder: ``sample_texts.jsonl`` beside ``sample_images/1.png`` … (files
  named by image id; ``{split}_images/``, ``{split}_imgs/`` or ``images/``).
- **Caption folder**: a directory of images plus ``captions.jsonl``, ``captions.csv`` or
  ``captions.tsv`` mapping a file name (relative to the directory) to a caption. A file may
  have several captions (several rows, or a ``captions`` list in JSONL).
- **CulTwin**: ``cultwin.jsonl`` / ``cultwin.parquet`` (or a directory holding one); each
  side of each twin pair contributes its image with its captions.

Collections without a split are split 7:1:2 (train/valid/test) with a fixed seed by
:func:`split_collection`, grouping images that share a text so nothing leaks across splits.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image, UnidentifiedImageError

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import atomic_path, atomic_write_bytes, iter_jsonl, write_jsonl
from cultureclip.data.cultwin import CULTWIN_FILES, is_cultwin_path, read_cultwin, write_cultwin
from cultureclip.data.pairs import (
    RAW_IMAGE_MAGIC,
    ImageSource,
    PairCollection,
    open_image,
    raw_image_bytes,
)

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid"}
CAPTION_FILES = ("captions.jsonl", "captions.csv", "captions.tsv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class CollectionFormatError(InputError):
    """A collection file that does not follow its layout; the message names file and line."""


class ImageDecodeError(InputError):
    """One image of a collection (or an upload) is not a decodable image."""


def normalize_split(split: str) -> str:
    """``val``/``validation``/``dev`` → ``valid`` (Chinese-CLIP's name); other names unchanged."""
    return SPLIT_ALIASES.get(split.lower(), split.lower())


# ---- Chinese-CLIP / CulTi -----------------------------------------------------------
def image_folder(root: str | Path, split: str) -> Path | None:
    """The image folder that stands in for ``{split}_imgs.tsv`` (CulTi samples layout)."""
    folders = (Path(root) / name for name in (f"{split}_images", f"{split}_imgs", "images"))
    return next((folder for folder in folders if folder.is_dir()), None)


def chinese_clip_splits(root: str | Path) -> list[str]:
    """Splits present in a Chinese-CLIP directory: ``{split}_texts.jsonl`` with its
    ``{split}_imgs.tsv`` or an image folder."""
    root = Path(root)
    found = []
    for texts in sorted(root.glob("*_texts.jsonl")):
        split = texts.name[: -len("_texts.jsonl")]
        if (root / f"{split}_imgs.tsv").exists() or image_folder(root, split) is not None:
            found.append(split)
    return found


def _convert_hint(root: Path) -> str:
    return (
        f"`cultureclip convert --from {root} --to OUT --format chinese-clip` writes any "
        f"supported layout as Chinese-CLIP TSV+JSONL; see docs/retrieval.md"
    )


def _folder_images(folder: Path) -> dict[str, Path]:
    seen: dict[str, Path] = {}
    for file in sorted(folder.iterdir(), key=lambda p: (len(p.stem), p.stem, p.suffix)):
        if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if file.stem in seen:
            raise CollectionFormatError(
                f"{folder}: {seen[file.stem].name} and {file.name} both give image id {file.stem!r}"
            )
        seen[file.stem] = file
    return seen


def _read_tsv(imgs_path: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with open(imgs_path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            image_id, sep, payload = line.partition(b"\t")
            if not sep or not payload:
                raise CollectionFormatError(
                    f"{imgs_path}:{number}: expected 'image_id<TAB>base64 image'"
                )
            key = image_id.decode("utf-8").strip()
            if key in found:
                raise CollectionFormatError(f"{imgs_path}:{number}: duplicate image id {key!r}")
            found[key] = payload
    return found


def read_chinese_clip(root: str | Path, split: str) -> PairCollection:
    """Reads ``{split}_imgs.tsv`` and ``{split}_texts.jsonl`` from ``root``.

    Image and text ids are kept as strings. A text that refers to an image id missing
    from the TSV is a format error (the file pair is inconsistent).
    """
    root = Path(root)
    split = normalize_split(split)
    imgs_path, texts_path = root / f"{split}_imgs.tsv", root / f"{split}_texts.jsonl"
    folder = None if imgs_path.exists() else image_folder(root, split)
    images_from = folder or imgs_path
    missing = [path for path in (images_from, texts_path) if not path.exists()]
    if missing:
        present = ", ".join(chinese_clip_splits(root)) or "none"
        raise MissingInputError(
            f"{missing[0]} not found (splits present in {root}: {present}); an image folder "
            f"{split}_images/ beside {texts_path.name} works too, or {_convert_hint(root)}"
        )

    images = _read_tsv(imgs_path) if folder is None else _folder_images(folder)
    position = {key: n for n, key in enumerate(images)}
    pairs = PairCollection(
        list(images),
        list(images.values()),
        name=f"{root.name}/{split}",
        meta={"layout": "chinese_clip" if folder is None else "chinese_clip_folder"},
    )
    for number, row in iter_jsonl(texts_path, tolerate_torn_tail=False):
        try:
            text_id, text, refs = str(row["text_id"]), str(row["text"]), row["image_ids"]
        except (KeyError, TypeError) as exc:
            raise CollectionFormatError(
                f"{texts_path}:{number}: expected {{'text_id', 'text', 'image_ids'}} ({exc})"
            ) from exc
        missing = [str(i) for i in refs if str(i) not in position]
        if missing:
            raise CollectionFormatError(
                f"{texts_path}:{number}: text {text_id} refers to image id(s) {missing[:5]} "
                f"that are not in {images_from.name}"
            )
        pairs.add_text(text_id, text, [position[str(i)] for i in refs])
    return pairs


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _as_base64(source: ImageSource, urlsafe: bool) -> bytes:
    if isinstance(source, Path) or source[:8].startswith(RAW_IMAGE_MAGIC):
        raw = raw_image_bytes(source)
        return base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    # already base64 text: change the alphabet only (bad payloads stay as they are)
    return bytes(source).translate(_TO_URLSAFE if urlsafe else _TO_STANDARD)


def _json_id(value: str) -> int | str:
    # Chinese-CLIP's own tools expect integer ids; keep other ids as strings.
    return int(value) if value.isdigit() else value


def write_chinese_clip(
    root: str | Path,
    split: str,
    collection: PairCollection,
    *,
    urlsafe: bool = False,
    folder: bool = False,
) -> tuple[Path, Path]:
    """Writes ``collection`` as ``{split}_imgs.tsv`` + ``{split}_texts.jsonl`` (atomically).

    ``urlsafe`` writes the URL-safe base64 alphabet (as Chinese-CLIP's own tools do);
    ``folder`` writes ``{split}_images/{image id}.png`` … instead of the TSV (the
    CulTi samples layout)."""
    root = Path(root)
    split = normalize_split(split)
    texts_path = root / f"{split}_texts.jsonl"
    if folder:
        imgs_path = root / f"{split}_images"
        for image_id in collection.image_ids:
            if _file_name(image_id, b"").rsplit(".", 1)[0] != image_id:
                raise CollectionFormatError(
                    f"image id {image_id!r} is not usable as a file name; use --format chinese-clip"
                )
        names = _write_images(imgs_path, collection)
        if len({n.rsplit(".", 1)[0] for n in names}) != len(names):
            raise CollectionFormatError("two image ids map to the same file name")
    else:
        imgs_path = root / f"{split}_imgs.tsv"
        with atomic_path(imgs_path) as tmp, open(tmp, "wb") as handle:
            for image_id, source in zip(collection.image_ids, collection.images, strict=True):
                if "\t" in image_id or "\n" in image_id:
                    raise CollectionFormatError(f"image id {image_id!r} contains a tab or newline")
                handle.write(image_id.encode("utf-8") + b"\t" + _as_base64(source, urlsafe) + b"\n")
    write_jsonl(
        texts_path,
        (
            {
                "text_id": _json_id(text_id),
                "text": text,
                "image_ids": [_json_id(collection.image_ids[i]) for i in refs],
            }
            for text_id, text, refs in zip(
                collection.text_ids, collection.texts, collection.text_to_images, strict=True
            )
        ),
    )
    return imgs_path, texts_path


# ---- caption folders ----------------------------------------------------------------
_FILE_KEYS = ("image", "file", "file_name", "filename", "path")
_TEXT_KEYS = ("caption", "text")


def _pick(row: dict[str, Any], keys: Sequence[str], where: str) -> Any:
    for key in keys:
        if row.get(key) not in (None, ""):
            return row[key]
    raise CollectionFormatError(f"{where}: needs one of the columns {', '.join(keys)}")


class _CaptionRow(NamedTuple):
    name: str  # the image file, relative to the folder
    captions: list[str]
    where: str  # file:line, for messages
    # optional JSONL keys that ``cultureclip convert`` writes
    image_id: str | None = None
    text_ids: list[str] | None = None


def _caption_rows(path: Path) -> list[_CaptionRow]:
    rows: list[_CaptionRow] = []
    if path.suffix == ".jsonl":
        for number, row in iter_jsonl(path, tolerate_torn_tail=False):
            where = f"{path}:{number}"
            name = str(_pick(row, _FILE_KEYS, where))
            captions = row.get("captions")
            if captions is None:
                captions = [_pick(row, _TEXT_KEYS, where)]
            if not isinstance(captions, list) or not captions:
                raise CollectionFormatError(f"{where}: 'captions' must be a non-empty list")
            text_ids = row.get("text_ids")
            if text_ids is not None and (
                not isinstance(text_ids, list) or len(text_ids) != len(captions)
            ):
                raise CollectionFormatError(
                    f"{where}: 'text_ids' must be a list as long as 'captions'"
                )
            image_id = row.get("image_id")
            rows.append(
                _CaptionRow(
                    name,
                    [str(c) for c in captions],
                    where,
                    None if image_id is None else str(image_id),
                    None if text_ids is None else [str(t) for t in text_ids],
                )
            )
        return rows
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as handle:
        sample = handle.readline()
        handle.seek(0)
        header = [h.strip().lower() for h in sample.rstrip("\r\n").split(delimiter)]
        has_header = any(h in _FILE_KEYS for h in header)
        reader = csv.reader(handle, delimiter=delimiter)
        if has_header:
            next(reader)
        for number, cells in enumerate(reader, start=2 if has_header else 1):
            if not any(c.strip() for c in cells):
                continue
            where = f"{path}:{number}"
            if has_header:
                row = dict(zip(header, cells, strict=False))
                name = str(_pick(row, _FILE_KEYS, where))
                rows.append(_CaptionRow(name, [str(_pick(row, _TEXT_KEYS, where))], where))
            elif len(cells) >= 2:
                rows.append(_CaptionRow(cells[0], [delimiter.join(cells[1:])], where))
            else:
                raise CollectionFormatError(f"{where}: expected 'file{delimiter}caption'")
    return rows


def read_caption_folder(directory: str | Path) -> PairCollection:
    """Reads a folder of images with a captions file (see module docstring).

    Image ids are the file names relative to the folder; each caption is one text.
    A caption row naming a file that does not exist is a format error.
    """
    directory = Path(directory)
    captions_file = next((directory / n for n in CAPTION_FILES if (directory / n).exists()), None)
    if captions_file is None:
        raise MissingInputError(f"no {', '.join(CAPTION_FILES)} in {directory}")
    root = directory.resolve()
    pairs = PairCollection(name=directory.name, meta={"layout": "caption_folder"})
    position: dict[str, int] = {}
    text_row: dict[str, int] = {}
    for name, captions, where, image_id, given_text_ids in _caption_rows(captions_file):
        file = (directory / name).resolve()
        if not file.is_relative_to(root):
            raise CollectionFormatError(f"{where}: {name!r} points outside {directory}")
        if not file.is_file():
            raise CollectionFormatError(f"{where}: image file {name!r} not found in {directory}")
        key = image_id if image_id is not None else file.relative_to(root).as_posix()
        if key not in position:
            position[key] = pairs.add_image(key, file)
        for number, caption in enumerate(captions):
            text_id = given_text_ids[number] if given_text_ids else str(len(pairs.texts))
            if given_text_ids and text_id in text_row:  # one text describing several images
                pairs.text_to_images[text_row[text_id]].append(position[key])
                continue
            text_row[text_id] = len(pairs.texts)
            pairs.add_text(text_id, caption, [position[key]])
    return pairs


# ---- CulTwin --------------------------------------------------------------------------
def read_cultwin_pairs(path: str | Path) -> PairCollection:
    """Each side of each CulTwin pair: its image with its captions (the concept if none).

    Image ids are ``{record id}:pos`` / ``{record id}:neg``. Records that fail validation
    are skipped by :func:`read_cultwin`; their line numbers are in ``meta["bad_records"]``.
    """
    load = read_cultwin(path)
    pairs = PairCollection(
        name=Path(path).stem,
        meta={"layout": "cultwin", "bad_records": [bad.line for bad in load.errors]},
    )
    for record in load.records:
        for side in ("pos", "neg"):
            image_path = load.image_path(getattr(record, f"{side}_image"))
            if image_path is None:
                continue
            index = pairs.add_image(f"{record.id}:{side}", image_path)
            captions = getattr(record, f"{side}_captions") or [getattr(record, f"{side}_concept")]
            for number, caption in enumerate(captions):
                pairs.add_text(f"{record.id}:{side}:{number}", caption, [index])
    return pairs


# ---- splitting and dispatch -----------------------------------------------------------
def _image_groups(collection: PairCollection) -> list[list[int]]:
    """Connected components of images linked by shared texts (union–find), by first image."""
    parent = list(range(len(collection.images)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for refs in collection.text_to_images:
        for other in refs[1:]:
            a, b = find(refs[0]), find(other)
            if a != b:
                parent[b] = a
    groups: dict[int, list[int]] = {}
    for image in range(len(collection.images)):
        groups.setdefault(find(image), []).append(image)
    return list(groups.values())


def _take_images(collection: PairCollection, keep: Sequence[int], name: str) -> PairCollection:
    remap = {old: new for new, old in enumerate(keep)}
    text_indices = [
        t for t, refs in enumerate(collection.text_to_images) if refs and refs[0] in remap
    ]
    return PairCollection(
        image_ids=[collection.image_ids[i] for i in keep],
        images=[collection.images[i] for i in keep],
        text_ids=[collection.text_ids[t] for t in text_indices],
        texts=[collection.texts[t] for t in text_indices],
        text_to_images=[[remap[i] for i in collection.text_to_images[t]] for t in text_indices],
        name=name,
        meta=dict(collection.meta),
    )


def split_collection(
    collection: PairCollection, ratios: Sequence[float] = (7, 1, 2), seed: int = 0
) -> dict[str, PairCollection]:
    """Splits by image into ``train``/``valid``/``test`` in the given proportions.

    Images that share a text stay in the same split, so no image and no text appears in
    two splits. Groups are shuffled with ``seed`` and dealt out by cumulative image count,
    so the split sizes match the ratios to within one group.
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise InputError(
            f"ratios must be three non-negative numbers with a positive sum, got {ratios}"
        )
    groups = _image_groups(collection)
    random.Random(seed).shuffle(groups)
    total = len(collection.images)
    bounds = [total * acc / sum(ratios) for acc in itertools.accumulate(ratios)]
    assigned: dict[str, list[int]] = {name: [] for name in SPLITS}
    placed = 0
    for group in groups:
        # Put the group in the split whose interval holds the group's midpoint.
        middle = placed + len(group) / 2
        split = next((n for n, b in zip(SPLITS, bounds, strict=True) if middle <= b), SPLITS[-1])
        assigned[split].extend(group)
        placed += len(group)
    base = collection.name or "collection"
    return {
        name: _take_images(collection, sorted(idx), f"{base}/{name}")
        for name, idx in assigned.items()
    }


def detect_layout(path: str | Path) -> str:
    """``chinese_clip``, ``caption_folder`` or ``cultwin`` for a path (file or directory)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"collection not found: {path}")
    if path.is_file():
        if path.name.endswith(("_texts.jsonl", "_imgs.tsv")):
            return "chinese_clip"
        if path.name in CAPTION_FILES:
            return "caption_folder"
        if is_cultwin_path(path):
            return "cultwin"
        raise CollectionFormatError(
            f"cannot tell the layout of {path}: not a Chinese-CLIP file, a caption file "
            f"({' / '.join(CAPTION_FILES)}) or a CulTwin set; see docs/retrieval.md"
        )
    if chinese_clip_splits(path):
        return "chinese_clip"
    if is_cultwin_path(path):  # JSONL, Parquet or tar shards
        return "cultwin"
    if any((path / n).exists() for n in CAPTION_FILES):
        return "caption_folder"
    lonely = sorted(p.name for p in path.glob("*_texts.jsonl"))
    found = f" ({', '.join(lonely)} has no _imgs.tsv or image folder beside it)" if lonely else ""
    raise CollectionFormatError(
        f"{path} holds none of: {{split}}_imgs.tsv or {{split}}_images/ + {{split}}_texts.jsonl "
        f"(Chinese-CLIP), {' / '.join(CULTWIN_FILES)} (CulTwin), "
        f"{' / '.join(CAPTION_FILES)} (caption folder){found}; {_convert_hint(path)}"
    )


def load_collection(
    path: str | Path,
    split: str | None = None,
    *,
    ratios: Sequence[float] = (7, 1, 2),
    seed: int = 0,
) -> PairCollection:
    """Loads any supported layout; ``split`` picks a split (see below).

    Chinese-CLIP directories have their own splits: ``split`` names one, and may be
    omitted only when a single split is present. Other layouts have no split: without
    ``split`` the whole collection is returned, with one it is cut 7:1:2 by
    :func:`split_collection` (``seed``) and that part is returned.
    """
    path = Path(path)
    layout = detect_layout(path)
    directory = path.parent if path.is_file() else path
    if layout == "chinese_clip":
        if path.is_file():
            from_name = path.name.rsplit("_", 1)[0]
            if split is not None and normalize_split(split) != normalize_split(from_name):
                raise InputError(
                    f"{path.name} is split {from_name!r} but split {split!r} was asked for"
                )
            split = from_name
        if split is None:
            present = chinese_clip_splits(directory)
            if len(present) != 1:
                raise InputError(
                    f"{directory} holds splits {', '.join(present)}; choose one with --split"
                )
            split = present[0]
        collection = read_chinese_clip(directory, split)
        collection.meta.update(source=str(directory.resolve()), split=normalize_split(split))
        return collection
    collection = read_cultwin_pairs(path) if layout == "cultwin" else read_caption_folder(directory)
    collection.meta["source"] = str(path.resolve())
    if split is None:
        return collection
    split = normalize_split(split)
    if split not in SPLITS:
        raise InputError(
            f"unknown split {split!r}; a {layout} collection is cut into {', '.join(SPLITS)}"
        )
    part = split_collection(collection, ratios=ratios, seed=seed)[split]
    part.meta.update(split=split, split_seed=seed, split_ratios=list(ratios))
    return part


def decode_image(source: ImageSource, max_pixels: int | None = None) -> Image.Image:
    """Decodes one collection image; raises :class:`ImageDecodeError` with the reason if it cannot.

    ``max_pixels`` caps the decoded size (see :func:`~cultureclip.data.pairs.open_image`).
    """
    # ValueError covers ImageTooLargeError and bad base64, OSError unidentified images.
    try:
        return open_image(source, max_pixels)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageDecodeError(f"cannot decode image: {reason}") from exc


# ---- writing other layouts (``cultureclip convert``) -------------------------------------
WRITE_FORMATS = ("chinese-clip", "chinese-clip-folder", "folder", "cultwin")
_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def _file_name(image_id: str, raw: bytes) -> str:
    """A safe file name for an image id, with the suffix of its real format."""
    try:
        with Image.open(io.BytesIO(raw)) as image:
            suffix = _FORMAT_SUFFIX.get(image.format or "", ".img")
    except (OSError, UnidentifiedImageError):
        suffix = ".img"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id).strip(".") or "image"
    return stem + suffix


def _write_images(folder: Path, collection: PairCollection) -> list[str]:
    """Copies every image into ``folder``; returns the file names, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    used: set[str] = set()
    for image_id, source in zip(collection.image_ids, collection.images, strict=True):
        raw = raw_image_bytes(source)
        name = _file_name(image_id, raw)
        if name in used:
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}-{len(names)}{dot}{suffix}"
        used.add(name)
        atomic_write_bytes(folder / name, raw)
        names.append(name)
    return names


def write_caption_folder(root: str | Path, collection: PairCollection) -> None:
    """``images/…`` + ``captions.jsonl`` rows ``{image, captions, image_id, text_ids}``.

    Ids are kept, and a text describing several images appears under each with the same
    text id, so :func:`read_caption_folder` gives back the same collection. An image
    without text is left out: a caption folder has no place for it.
    """
    root = Path(root)
    names = _write_images(root / "images", collection)
    per_image = collection.image_to_texts()
    rows = [
        {
            "image": f"images/{name}",
            "captions": [collection.texts[t] for t in texts],
            "image_id": image_id,
            "text_ids": [collection.text_ids[t] for t in texts],
        }
        for image_id, name, texts in zip(collection.image_ids, names, per_image, strict=True)
        if texts
    ]
    write_jsonl(root / "captions.jsonl", rows)


def write_cultwin_pairs(root: str | Path, collection: PairCollection) -> None:
    """A collection read from a CulTwin set (image ids ``{record}:pos`` / ``{record}:neg``)
    written back as ``cultwin.jsonl`` with ``images/``.

    Plain image–text pairs have no culturally different twin, so they cannot become CulTwin
    records; ``cultureclip synth`` makes twins from concepts.
    """
    root = Path(root)
    sides: dict[str, dict[str, int]] = {}
    for number, image_id in enumerate(collection.image_ids):
        record, sep, side = image_id.rpartition(":")
        if not sep or side not in ("pos", "neg"):
            raise CollectionFormatError(
                f"image id {image_id!r} is not a CulTwin side ('<record>:pos' or '<record>:neg'); "
                f"CulTwin needs twin pairs, which plain image–text pairs do not have: "
                f"make them with `cultureclip synth` (docs/synth.md)"
            )
        sides.setdefault(record, {})[side] = number
    lonely = [r for r, pair in sides.items() if len(pair) != 2]
    if lonely:
        raise CollectionFormatError(
            f"record(s) {lonely[:5]} have only one side; a CulTwin record needs both"
        )
    names = _write_images(root / "images", collection)
    per_image = collection.image_to_texts()
    records = []
    for record, pair in sides.items():
        row: dict[str, Any] = {"id": record, "country": "unknown", "category": "unknown"}
        for side, number in pair.items():
            captions = [collection.texts[t] for t in per_image[number]]
            row[f"{side}_concept"] = captions[0] if captions else record
            row[f"{side}_captions"] = captions
            row[f"{side}_image"] = f"images/{names[number]}"
        records.append(row)
    write_cultwin(root / "cultwin.jsonl", records)


def write_collection(
    out: str | Path,
    collection: PairCollection,
    format: str,
    *,
    split: str = "test",
    urlsafe: bool = False,
) -> Path:
    """Writes ``collection`` in one of :data:`WRITE_FORMATS` under ``out``."""
    out = Path(out)
    if format in ("chinese-clip", "chinese-clip-folder"):
        folder = format == "chinese-clip-folder"
        write_chinese_clip(out, split, collection, urlsafe=urlsafe, folder=folder)
    elif format == "folder":
        write_caption_folder(out, collection)
    elif format == "cultwin":
        write_cultwin_pairs(out, collection)
    else:
        raise InputError(f"unknown format {format!r}; choose one of {', '.join(WRITE_FORMATS)}")
    return out
