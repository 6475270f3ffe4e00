"""Training data: CulTwin sets or image–text collections, batched into named encoder inputs.

A batch becomes an :class:`EncoderInputs`: named image tensors and named token dicts
(``pos_image``, ``pos_caption``, … for twins; ``image``, ``text`` for pairs). The
trainer encodes each name into one feature tensor and the loss reads them by name.

:class:`ResumableSampler` is ``DistributedSampler`` (seeded shuffle per epoch, equal
shards, ``drop_last``) that can start part-way through an epoch, which is what makes
a resumed run see exactly the batches the interrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.data.pairs import PairCollection
from cultureclip.data.twin_dataset import TwinBatch, TwinCollator, TwinDataset
from cultureclip.train.config import DataConfig
from cultureclip.train.losses import DataKind

Tokens = dict[str, Tensor]


@dataclass
class EncoderInputs:
    """Named model inputs for one batch; every tensor has the batch as its first dimension."""

    images: dict[str, Tensor]
    texts: dict[str, Tokens]

    @property
    def rows(self) -> int:
        for pixels in self.images.values():
            return int(pixels.shape[0])
        for tokens in self.texts.values():
            return int(next(iter(tokens.values())).shape[0])
        return 0

    def names(self) -> list[str]:
        return [*self.images, *self.texts]

    def select(self, names: Sequence[str]) -> EncoderInputs:
        missing = [n for n in names if n not in self.images and n not in self.texts]
        if missing:
            raise KeyError(f"batch has no features {missing}; it has {self.names()}")
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


@dataclass
class PairBatch:
    images: Tensor
    texts: Tokens

    def __len__(self) -> int:
        return int(self.images.shape[0])


def encoder_inputs(batch: TwinBatch | PairBatch) -> EncoderInputs:
    """The named inputs of a collated batch."""
    if isinstance(batch, TwinBatch):
        return EncoderInputs(
            images={"pos_image": batch.pos_images, "neg_image": batch.neg_images},
            texts={
                "pos_caption": batch.pos_captions,
                "neg_caption": batch.neg_captions,
                "pos_concept": batch.pos_concepts,
                "neg_concept": batch.neg_concepts,
            },
        )
    if isinstance(batch, PairBatch):
        return EncoderInputs(images={"image": batch.images}, texts={"text": batch.texts})
    raise TypeError(f"cannot train on a batch of type {type(batch).__name__}")


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
        image_index, text_index = self.examples[index]
        pixels = self.transform([self.collection.load_image(image_index)])[0]
        return {"image": pixels, "text": self.collection.texts[text_index]}


class PairCollator:
    def __init__(self, tokenize: Any) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[dict[str, Any]]) -> PairBatch:
        return PairBatch(
            images=torch.stack([item["image"] for item in items]),
            texts=self.tokenize([item["text"] for item in items]),
        )


def detect_kind(config: DataConfig) -> DataKind:
    if config.kind != "auto":
        return config.kind
    path = Path(config.path)
    if not path.exists():
        raise MissingInputError(f"training data not found: {path}")
    from cultureclip.data.cultwin import is_cultwin_path

    return "twin" if is_cultwin_path(path) else "pairs"


def build_dataset(
    config: DataConfig,
    *,
    transform: Any,
    tokenize: Any,
    seed: int,
    collection: PairCollection | None = None,
) -> tuple[DataKind, Dataset, Any]:
    """(kind, dataset, collate_fn) for the configured data; ``collection`` bypasses loading."""
    if collection is not None:
        return "pairs", PairDataset(collection, transform), PairCollator(tokenize)
    kind = detect_kind(config)
    if kind == "twin":
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
        return kind, dataset, TwinCollator(tokenize)
    from cultureclip.data.collections import load_collection

    pairs = load_collection(config.path, split=config.split)
    return "pairs", PairDataset(pairs, transform), PairCollator(tokenize)


class ResumableSampler(Sampler[int]):
    """``DistributedSampler`` order (per-epoch seeded shuffle, equal shards, drop_last),
    starting at any position of the epoch."""

    def __init__(
        self, length: int, *, rank: int, world_size: int, seed: int, shuffle: bool
    ) -> None:
        self._inner = DistributedSampler(
            _Sized(length),
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=True,
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Selects the epoch's order; the first ``start`` indices of this shard are skipped."""
        self._inner.set_epoch(epoch)
        self.start = start

    @property
    def shard_length(self) -> int:
        return len(self._inner)

    def __iter__(self) -> Iterator[int]:
        indices = list(self._inner)
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, len(self._inner) - self.start)


class _Sized(Mapping[int, int]):
    """Just a length, which is all DistributedSampler reads from its dataset."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.length))
