"""A folder of labelled photos as concept records (``cultureclip synth --from-folder DIR``).

Two layouts are read:

- ``DIR/<group>/<image>``: one sub-folder per group (a culture, ethnic group, region,
  period...); the group is the sub-folder's name;
- ``DIR/labels.csv`` (or ``labels.jsonl``): one row per photo with an ``image`` column
  (path relative to the file) and the grouping column (``concepts.group_by``, default
  ``group``); optional ``concept``, ``caption``, ``country``, ``category``, ``context``,
  ``features`` columns.

Per-group text comes from a small YAML (``DIR/groups.yaml``, or ``concepts.groups``)::

    country: CN            # default of every group (ISO 3166-1 alpha-2)
    category: Clothing     # default of every group
    groups:
      miao_costume:
        concept: Miao costume
        context: festival dress of the Miao people of Guizhou
        features: silver horn headdress; pleated skirt

A row's own column wins over its group's entry, which wins over the YAML defaults and
``concepts.country`` / ``concepts.category``. Without any text, the concept is the group
name with ``_`` read as a space. Every photo becomes its own concept record.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.synth.config import ConceptSettings
from cultureclip.synth.corpus import CorpusRow, read_rows

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
LABEL_FILES = ("labels.csv", "labels.jsonl")
GROUP_FIELDS = ("concept", "context", "features", "country", "category")


def read_groups(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(defaults, per-group entries) of a groups YAML."""
    import yaml

    if not path.exists():
        raise MissingInputError(f"groups file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with 'groups:' (and optional defaults)")
    unknown = sorted(set(data) - {"groups", "country", "category"})
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; use country, category, groups")
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise InputError(f"{path}: 'groups' must map each group name to its fields")
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in groups.items():
        entry = entry or {}
        if not isinstance(entry, dict) or set(entry) - set(GROUP_FIELDS):
            raise InputError(
                f"{path}: group {name!r} may only set {', '.join(GROUP_FIELDS)}, got {entry!r}"
            )
        entries[str(name)] = {k: str(v).strip() for k, v in entry.items() if v is not None}
    defaults = {k: str(data[k]).strip() for k in ("country", "category") if data.get(k)}
    return defaults, entries


def _photo_rows(root: Path, settings: ConceptSettings) -> list[tuple[str, Path, dict[str, Any]]]:
    """(group, image path, raw row) of every photo, in a fixed order."""
    for name in LABEL_FILES:
        labels = root / name
        if labels.exists():
            column = settings.group_column()
            photos = []
            for number, raw in read_rows(labels):
                image = str(raw.get("image") or "").strip()
                group = str(raw.get(column) or "").strip()
                if not image or not group:
                    raise InputError(
                        f"{labels}:{number}: a photo row needs 'image' and {column!r} "
                        "(set concepts.group_by to the column that names the groups)"
                    )
                path = Path(image) if Path(image).is_absolute() else root / image
                if not path.exists():
                    raise MissingInputError(f"{labels}:{number}: image not found: {path}")
                photos.append((group, path.resolve(), dict(raw)))
            return photos
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    photos = [
        (folder.name, file.resolve(), {"group": folder.name})
        for folder in folders
        for file in sorted(folder.iterdir())
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not photos:
        raise InputError(
            f"{root}: no photos found; expected <group>/<image> sub-folders or a "
            f"{' / '.join(LABEL_FILES)} file with image and group columns"
        )
    return photos


def unreadable(path: Path) -> str | None:
    """Why a photo cannot be used (not an image, truncated), or None if it reads."""
    stat = path.stat()
    return _check_image(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1 << 16)
def _check_image(path: str, mtime_ns: int, size: int) -> str | None:
    # Keyed by modification time and size: every stage reads the folder, each photo is
    # checked once per process unless it changes.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at a fraction of the size, still whole
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def read_folder(settings: ConceptSettings) -> list[CorpusRow]:
    """One :class:`CorpusRow` per photo of ``settings.folder`` (readable or not)."""
    if not settings.folder:
        raise InputError("concepts.source=folder needs concepts.folder (a photo folder)")
    root = Path(settings.folder)
    if not root.is_dir():
        raise MissingInputError(f"photo folder not found: {root}")
    groups_file = Path(settings.groups) if settings.groups else root / "groups.yaml"
    defaults, entries = (
        read_groups(groups_file) if settings.groups or groups_file.exists() else ({}, {})
    )
    photos = _photo_rows(root, settings)
    unknown = sorted(set(entries) - {group for group, _, _ in photos})
    if unknown:
        logger.warning("groups file names group(s) with no photo: %s", ", ".join(unknown))
    rows = []
    by_country = settings.group_column() == "country"
    for number, (group, path, raw) in enumerate(photos, start=1):
        entry = entries.get(group, {})

        def value(name: str, fallback: str = "", raw: dict = raw, entry: dict = entry) -> str:
            return str(raw.get(name) or entry.get(name) or fallback).strip()

        country = value("country", defaults.get("country") or settings.country or "")
        rows.append(
            CorpusRow(
                line=number,
                name=value("concept", group.replace("_", " ")),
                caption=value("caption"),
                image=str(path),
                country=country,
                category=value("category", defaults.get("category") or settings.category or ""),
                context=value("context"),
                features=value("features"),
                group=country if by_country else group,
            )
        )
    return rows
