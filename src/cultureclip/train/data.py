"""Training data: CulTwin sets or image–text collections, batched into named encoder inputs.

A batch becomes an :class:`EncoderInputs`: named image tensors and named token dicts
(``pos_image``, ``pos_caption``, … for twins; ``image``, ``text`` for pairs). The
trainer encodes each name into one feature tensor and the loss reads them by name.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.data.pairs import PairCollection, open_image
from cultureclip.data.twin_dataset import TwinBatch, TwinCollator, TwinDataset
from cultureclip.models.feature_cache import FeatureTable, auto_workers, frozen_tower_tables
from cultureclip.train.config import DataSettings
from cultureclip.train.losses import DataKind

Tokens = dict[str, Tensor]
logger = logging.getLogger(__name__)


@dataclass
class EncoderInputs:
    """Named model inputs for one batch; every tensor has the batch as its first dimension."""

    images: dict[str, Tensor]
    texts: dict[str, Tokens]

    @property
    def rows(self) -> int:
        first = [*self.images.values(), *(next(iter(t.values())) for t in self.texts.values())]
        return int(first[0].shape[0]) if first else 0

    def select(self, names: Sequence[str]) -> EncoderInputs:
        missing = [n for n in names if n not in self.images and n not in self.texts]
        if missing:
            raise KeyError(f"batch has no features {missing}; it has {[*self.images, *self.texts]}")
        return EncoderInputs(
            images={n: v for n, v in self.images.items() if n in names},
            texts={n: v for n, v in self.texts.items() if n in names},
        )

    def slice(self, start: int, stop: int) -> EncoderInputs:
        return EncoderInputs(
            images={n: v[start:stop] for n, v in self.images.items()},
            texts={n: {k: t[start:stop] for k, t in tok.items()} for n, tok in self.texts.items()},
        )

    def to(self, device: torch.device | str) -> EncoderInputs:
        return EncoderInputs(
            images={n: v.to(device, non_blocking=True) for n, v in self.images.items()},
            texts={
                n: {k: t.to(device, non_blocking=True) for k, t in tok.items()}
                for n, tok in self.texts.items()
            },
        )


def encoder_inputs(batch: TwinBatch | EncoderInputs) -> EncoderInputs:
    """The named inputs of a collated batch (pair batches are collated as such)."""
    if isinstance(batch, EncoderInputs):
        return batch
    return EncoderInputs(
        images={"pos_image": batch.pos_images, "neg_image": batch.neg_images},
        texts={
            "pos_caption": batch.pos_captions,
            "neg_caption": batch.neg_captions,
            "pos_concept": batch.pos_concepts,
            "neg_concept": batch.neg_concepts,
        },
    )


class PairDataset(Dataset):
    """One example per positive (image, text) pair of a :class:`PairCollection`.

    A text describing several images yields several examples; two examples of one
    batch may then share an image or a text (a false negative), as in Chinese-CLIP.
    """

    def __init__(self, collection: PairCollection, transform: Any) -> None:
        self.collection = collection
        self.examples = collection.pairs()
        self.transform = transform

    def set_epoch(self, epoch: int) -> None:
        """Pairs have no per-epoch randomness; kept for the same interface as TwinDataset."""

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.sources(index)
        item["image"] = self.transform([open_image(item["image"])])[0]
        return item

    def sources(self, index: int) -> dict[str, Any]:
        """Example ``index`` before decoding, as :meth:`TwinDataset.sources`."""
        image_index, text_index = self.examples[index]
        return {
            "image": self.collection.images[image_index],
            "text": self.collection.texts[text_index],
        }


@dataclass
class PairCollator:
    tokenize: Any
    #: as :class:`TwinCollator`'s: stacked pixels, or one gather of stored rows
    batch_images: Callable[[list[Any]], Tensor] = torch.stack

    def __call__(self, items: list[dict[str, Any]]) -> EncoderInputs:
        return EncoderInputs(
            images={"image": self.batch_images([item["image"] for item in items])},
            texts={"text": self.tokenize([item["text"] for item in items])},
        )


def detect_kind(config: DataSettings) -> DataKind:
    if config.kind != "auto":
        return config.kind
    path = Path(config.path)
    if not path.exists():
        raise MissingInputError(f"training data not found: {path}")
    from cultureclip.data.cultwin import is_cultwin_path

    return "twin" if is_cultwin_path(path) else "pairs"


def referenced_images(config: DataSettings) -> list[tuple[str, Path]]:
    """``(as written, file)`` for the image files a data *file* points to (a CulTwin JSONL's
    images beside it, a collection file's): part of the data's identity, since hashing
    the file alone would not see an image redrawn in place. A folder is hashed whole."""
    if not Path(config.path).is_file():
        return []
    if detect_kind(config) == "twin":
        from cultureclip.data.cultwin import read_cultwin

        load = read_cultwin(config.path)
        written = {i for r in load.records for i in (r.pos_image, r.neg_image) if i}
        found = [(name, load.image_path(name)) for name in sorted(written)]
    else:
        from cultureclip.data.collections import load_collection

        images = load_collection(config.path, split=config.split).images
        found = [(str(i), i) for i in images if isinstance(i, Path)]
    return [(name, Path(path)) for name, path in found if path is not None and Path(path).is_file()]


def build_dataset(
    config: DataSettings,
    *,
    transform: Any,
    tokenize: Any,
    seed: int,
    collection: PairCollection | None = None,
) -> tuple[DataKind, TwinDataset | PairDataset, Any]:
    """(kind, dataset, collate_fn) for the configured data; ``collection`` bypasses loading."""
    if collection is None and detect_kind(config) == "twin":
        from cultureclip.data.cultwin import read_cultwin

        # Images are checked now: a missing one would otherwise stop the run many steps in.
        load = read_cultwin(config.path, check_images=True)
        if load.errors:
            raise InputError(
                f"{len(load.errors)} bad record(s) in {config.path}; fix or drop them first:\n"
                f"{load.error_report()}"
            )
        dataset = TwinDataset(load, transform, seed=seed, concept_template=config.concept_template)
        if len(dataset) < len(load):
            raise InputError(
                f"{len(load) - len(dataset)} of {len(load)} records in {config.path} lack pos_image or "
                "neg_image; training needs both images of every pair"
            )
        return "twin", dataset, TwinCollator(tokenize)
    if collection is None:
        from cultureclip.data.collections import load_collection

        collection = load_collection(config.path, split=config.split)
    return "pairs", PairDataset(collection, transform), PairCollator(tokenize)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` order (per-epoch seeded shuffle, equal shards, drop_last),
    starting at any position of the epoch, as ``(epoch, index)`` keys for
    :class:`EpochItems`; ``num_samples`` is the whole shard's length."""

    def __init__(
        self, length: int, *, rank: int, world_size: int, seed: int, shuffle: bool
    ) -> None:
        # DistributedSampler reads only the length of its dataset.
        super().__init__(
            range(length),  # type: ignore[arg-type]
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=True,
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Selects the epoch's order; the first ``start`` indices of this shard are skipped."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = itertools.islice(super().__iter__(), self.start, None)
        return zip(itertools.repeat(self.epoch), indices)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


@dataclass
class EpochItems(Dataset):
    """A dataset read by ``(epoch, index)``: loader workers that live across epochs
    (``persistent_workers``) hold their own copy of the dataset, so the epoch, which
    decides each record's caption draw, travels with every index instead."""

    dataset: Any
    _epoch: int | None = field(default=None, init=False)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if epoch != self._epoch:
            self.dataset.set_epoch(epoch)
            self._epoch = epoch
        return self.dataset[index]


# ---- data loading ---------------------------------------------------------------------
def loader_workers(num_workers: int | None, dataset: Dataset) -> int:
    """Workers of the training loader: ``num_workers``, else :func:`auto_workers` (0 when
    nothing is decoded per step)."""
    if num_workers is not None:
        return num_workers
    if isinstance(dataset, FrozenFeatureDataset) and not dataset.decodes_images:
        return 0
    return auto_workers(len(dataset))  # type: ignore[arg-type]


# ---- frozen towers: each input is encoded once ------------------------------------------
@dataclass
class FrozenFeatureDataset(Dataset):
    """A twin or pair dataset whose fixed image tower's inputs are looked up, not decoded.

    Items carry image sources (pixels when the image tower trains) and raw texts; the
    collator of :func:`frozen_feature_data` gathers the stored rows of fixed towers.
    """

    inner: TwinDataset | PairDataset
    images: FeatureTable | None

    @property
    def decodes_images(self) -> bool:
        return self.images is None

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        # With stored image rows, items keep their image sources: the collator gathers a
        # batch's rows in one indexing op (per-item rows and a stack cost a third of the
        # heads-only throughput).
        return self.inner[index] if self.images is None else self.inner.sources(index)


def _all_inputs(dataset: TwinDataset | PairDataset) -> tuple[list[Any], list[str]]:
    """Every distinct image source and every text an epoch can draw, in a stable order."""
    if isinstance(dataset, PairDataset):
        collection = dataset.collection
        used = sorted({image for image, _ in dataset.examples})
        texts = sorted({text for _, text in dataset.examples})
        return (
            list(dict.fromkeys(collection.images[i] for i in used)),
            list(dict.fromkeys(collection.texts[t] for t in texts)),
        )
    images: list[Any] = []
    texts: list[str] = []
    template = dataset.concept_template
    for index, record in enumerate(dataset.records):
        item = dataset.sources(index)
        images += [item["pos_image"], item["neg_image"]]
        for captions, concept in (
            (record.pos_captions, record.pos_concept),
            (record.neg_captions, record.neg_concept),
        ):
            texts += list(captions) or [template.format(concept=concept)]
            texts.append(template.format(concept=concept))
    return list(dict.fromkeys(images)), list(dict.fromkeys(texts))


def frozen_feature_data(
    model: Any,
    kind: DataKind,
    dataset: TwinDataset | PairDataset,
    config: DataSettings,
    *,
    workers: int | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> tuple[FrozenFeatureDataset, TwinCollator | PairCollator] | None:
    """The dataset and collator that feed fixed towers' heads from outputs computed once.

    None (train on pixels and tokens as before) when ``config.frozen_features`` is off,
    when no tower of ``model`` is fixed (``tower_namespace``), or when the outputs of the
    whole dataset would not fit the feature store's memory budget.
    """
    fixed = [model.tower_namespace(tower) for tower in ("image", "text")]
    if not config.frozen_features or fixed == [None, None]:
        return None
    images, texts = _all_inputs(dataset)
    tables = frozen_tower_tables(
        model,
        images,
        texts,
        disk_dir=config.feature_cache_dir,
        workers=workers,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    if tables is None:
        return None
    image_table, text_table = tables
    tokenize = model.tokenize if text_table is None else text_table.as_tokens
    batch_images = torch.stack if image_table is None else image_table
    collator = TwinCollator if kind == "twin" else PairCollator
    collate = collator(tokenize, batch_images)
    return FrozenFeatureDataset(dataset, image_table), collate
