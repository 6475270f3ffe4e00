"""CulTwin as a hub dataset: Parquet shards with ``datasets.Image`` columns (the image
bytes embedded) and a dataset card whose ``configs`` point at them.

The layout is the one ``datasets.load_dataset(folder)`` and the hub's viewer read::

    my-set/
      README.md                          dataset card (YAML: configs, license, tags, ...)
      data/train-00000-of-00001.parquet  one row per twin pair, both images embedded

It may sit beside a set's ``cultwin.jsonl`` and ``images/``: the card names the Parquet
files, so ``load_dataset`` reads only those, and ``read_cultwin`` reads either.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cultureclip.core.errors import UserError
from cultureclip.data.cultwin import (
    HUB_DATA_DIR,
    HUB_SHARD_PATTERN,
    TWIN_FIELDS,
    CulTwinLoad,
    TwinRecord,
    read_cultwin,
    side_image_bytes,
)
from cultureclip.publish.cards import card_template, write_card

#: records per Parquet shard (both images of each embedded): a few hundred MB at most
SHARD_RECORDS = 1000


def _features() -> Any:
    from datasets import Features, Image, List, Value

    text = Value("string")
    columns: dict[str, Any] = {}
    for name, kind in TWIN_FIELDS.items():
        if kind == "image":
            columns[name] = Image()
        elif kind == "captions":
            columns[name] = List(text)
        else:  # strings; ``quality`` and ``extra`` hold JSON text
            columns[name] = text
    return Features(columns)


def _rows(load: CulTwinLoad, records: Sequence[TwinRecord]) -> Iterator[dict[str, Any]]:
    fixed = set(TWIN_FIELDS)
    for record in records:
        row = record.model_dump(mode="json")
        out: dict[str, Any] = {name: row.get(name) for name in TWIN_FIELDS if name != "extra"}
        out["quality"] = json.dumps(row.get("quality") or {}, ensure_ascii=False)
        extra = {k: v for k, v in row.items() if k not in fixed}
        out["extra"] = json.dumps(extra, ensure_ascii=False) if extra else None
        for side, relative, data in side_image_bytes(record, row, load):
            out[f"{side}_image"] = {"bytes": data, "path": Path(relative).name}
        yield out


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """datasets draws a bar per shard; progress is the CLI's to show."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def write_cultwin_dataset(
    source: str | Path | CulTwinLoad,
    folder: str | Path | None = None,
    *,
    name: str | None = None,
    license: str | None = None,
    shard_records: int = SHARD_RECORDS,
) -> Path:
    """Writes a CulTwin set (a path ``read_cultwin`` reads, or a loaded set) as a hub
    dataset into ``folder`` (default: the set's own folder) and returns the folder.

    Bad records are left out, as ``read_cultwin`` leaves them out; a missing image file
    is an error naming the record. Shards are written to a temporary folder and swapped
    in; the card comes last.
    """
    try:
        from datasets import Dataset
    except ImportError as exc:
        raise UserError(
            "writing a hub dataset needs the datasets library: pip install 'cultureclip[datasets]'"
        ) from exc
    load = source if isinstance(source, CulTwinLoad) else read_cultwin(source)
    folder = Path(folder) if folder is not None else load.root
    records = list(load.records)
    if not records:
        raise UserError(f"{folder}: no valid CulTwin records to write")
    features = _features()
    staging = folder / f".{HUB_DATA_DIR}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    chunks = [records[i : i + shard_records] for i in range(0, len(records), shard_records)]
    arrow_bytes = 0
    with _quiet_progress():
        for index, chunk in enumerate(chunks):
            table = Dataset.from_list(list(_rows(load, chunk)), features=features)
            shard = HUB_SHARD_PATTERN.format(index=index, total=len(chunks))
            table.to_parquet(str(staging / shard))
            arrow_bytes += table.data.nbytes
    file_bytes = sum(path.stat().st_size for path in staging.iterdir())
    shutil.rmtree(folder / HUB_DATA_DIR, ignore_errors=True)
    staging.rename(folder / HUB_DATA_DIR)
    sizes = (arrow_bytes, file_bytes)
    write_card(_card(records, name or folder.resolve().name, license, features, sizes), folder)
    return folder


def _card(
    records: Sequence[TwinRecord],
    name: str,
    license: str | None,
    features: Any,
    sizes: tuple[int, int],
) -> Any:
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    from cultureclip import __version__

    countries = sorted({r.country for r in records})
    categories = sorted({r.category for r in records})
    data = DatasetCardData(
        pretty_name=name,
        license=license or "other",
        task_categories=["zero-shot-image-classification"],
        tags=["cultureclip", "cultwin", "culture", "image-text"],
        size_categories=_size_category(len(records)),
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{HUB_DATA_DIR}/train-*.parquet"}],
            }
        ],
    )
    # The card's dataset_info (features, sizes) is what the hub shows, and what keys
    # datasets' local cache: without it two sets in folders of the same name share a cache.
    arrow_bytes, file_bytes = sizes
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_bytes=arrow_bytes, num_examples=len(records)))
    info = DatasetInfo(
        features=features, splits=splits, download_size=file_bytes, dataset_size=arrow_bytes
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return DatasetCard.from_template(
        data,
        template_str=card_template("dataset_card.md.jinja"),
        title=name,
        description=(
            "A CulTwin set: each row is a *twin pair*, a culture-specific concept (`pos_*`) "
            "and a visually similar concept of another culture (`neg_*`), each with context, "
            "key visual features, captions and an image."
        ),
        usage='twins = load_dataset("<repo id or this folder>", split="train")\ntwins[0]["pos_image"]  # a PIL image',
        columns=[(column, _describe(kind)) for column, kind in features.items()],
        results=[],
        stats=[
            f"{len(records)} twin pairs",
            f"{len(countries)} countries: {', '.join(countries[:30])}"
            + (" …" if len(countries) > 30 else ""),
            f"{len(categories)} categories: {', '.join(categories)}",
        ],
        version=__version__,
    )


def _describe(feature: Any) -> str:
    kind = type(feature).__name__
    return "image" if kind == "Image" else ("list of strings" if kind == "List" else "string")
