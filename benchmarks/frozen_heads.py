"""Heads-only training of the ``lite:`` towers: ``cultureclip.train`` vs a bare loop.

Writes ``--images`` PNG glyphs (emoji, like the quickstart) with one caption each, then:

- **bare**: decodes and preprocesses every image and runs both frozen towers over the
  data once (the *encode-once cost*), then trains the two heads and the temperature on
  those tensors with the same clip loss, AdamW, batch order and step count;
- **train()**: ``cultureclip.train.train`` on the same collection, heads only, with
  frozen-tower features on (the default): the towers' outputs are computed once
  before the first step, the heads train on them.

Prints, as measured on this machine: the bare encode-once seconds and heads
examples/s; ``train()``'s first epoch seconds (tower encoding included) and
examples/s from the second epoch on; and the two ratios, epoch ≥ 2 throughput vs
bare (goal ≥ 0.8) and first epoch vs encode-once (goal ≤ 1.2). ``--old`` also times
the previous path (tower outputs cached per batch by tensor hash, every image still
decoded, resized and hashed each step).

    python benchmarks/frozen_heads.py [--images 384] [--epochs 10] [--batch 64] [--repeats 3] [--old]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cultureclip.data.pairs import PairCollection, open_image
from cultureclip.models.base import TOWER_FEATURES
from cultureclip.models.feature_cache import shared_store
from cultureclip.models.registry import create_model
from cultureclip.train import TrainConfig, train
from cultureclip.train import trainer as trainer_module
from cultureclip.train.config import OptimSettings
from cultureclip.train.data import ResumableSampler
from cultureclip.train.losses import create_loss
from cultureclip.train.trainer import build_optimizer

SEED = 42
LR = 1e-3


def write_collection(root: Path, count: int) -> PairCollection:
    from cultureclip.data.glyphs import render_glyph

    emoji = [chr(c) for c in range(0x1F600, 0x1F650)] + [chr(c) for c in range(0x1F680, 0x1F6C0)]
    root.mkdir(parents=True, exist_ok=True)
    paths, texts = [], []
    for index in range(count):
        glyph = emoji[index % len(emoji)]
        image = render_glyph(glyph, size=160)
        if index >= len(emoji):  # more images than glyphs: tint the repeats
            tint = (37 * index % 255, 91 * index % 255, 53 * index % 255)
            image = image.convert("RGB").point(lambda v, t=tint[index % 3]: (v + t) % 256)
        path = root / f"{index:05d}.png"
        image.save(path)
        paths.append(path)
        texts.append(f"an emoji, number {index}, code point {ord(glyph):x}")
    return PairCollection(
        image_ids=[p.stem for p in paths],
        images=paths,
        text_ids=[p.stem for p in paths],
        texts=texts,
        text_to_images=[[i] for i in range(count)],
    )


def bare(spec: str, collection: PairCollection, epochs: int, batch: int) -> dict[str, float]:
    model = create_model(spec)
    model.configure_training(image="heads", text="heads")
    started = time.perf_counter()
    image_rows = []
    for start in range(0, len(collection.images), 64):
        images = [open_image(p) for p in collection.images[start : start + 64]]
        image_rows.append(model.image_tower_features(model.preprocess(images)))
    text_rows = [
        model.text_tower_features(collection.texts[start : start + 256])
        for start in range(0, len(collection.texts), 256)
    ]
    images, texts = torch.cat(image_rows), torch.cat(text_rows)
    encode_s = time.perf_counter() - started

    model.train()
    torch.manual_seed(SEED)
    loss_fn = create_loss("clip")
    optimizer = build_optimizer(model, OptimSettings(lr=LR, weight_decay=0.0))
    sampler = ResumableSampler(len(images), rank=0, world_size=1, seed=SEED, shuffle=True)
    epoch_s = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order = [index for _, index in sampler]
        mark = time.perf_counter()
        for start in range(0, len(order) - batch + 1, batch):
            rows = torch.tensor(order[start : start + batch])
            features = {
                "image": model.encode_image(images[rows]).float(),
                "text": model.encode_text({TOWER_FEATURES: texts[rows]}).float(),
            }
            loss_fn.compute(features, model.logit_scale).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        epoch_s.append(time.perf_counter() - mark)
    steps = len(images) // batch
    later = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]
    return {"encode_s": encode_s, "examples_per_s": steps * batch / later}


def with_train(
    spec: str, collection: PairCollection, epochs: int, batch: int, out: Path, frozen: bool
) -> dict[str, float]:
    """Times ``train()``: the frozen-tower encoding, then each epoch from its start (the
    dataset's ``set_epoch``) to the end of its last optimiser step."""
    shared_store().clear()  # nothing carried over from an earlier measurement
    marks: dict[str, list[float]] = {"encode": [], "epoch": [], "step": []}
    original_features = trainer_module.frozen_feature_data
    original_step = trainer_module.TrainStep.__call__

    def timed_features(*args, **kwargs):
        mark = time.perf_counter()
        try:
            found = original_features(*args, **kwargs)
        finally:
            marks["encode"].append(time.perf_counter() - mark)
        if found is not None:
            dataset, _collate = found
            set_epoch = dataset.set_epoch

            def marked_set_epoch(epoch: int) -> None:
                marks["epoch"].append(time.perf_counter())
                set_epoch(epoch)

            dataset.set_epoch = marked_set_epoch
        return found

    def timed_step(self, batches):
        output = original_step(self, batches)
        marks["step"].append(time.perf_counter())
        return output

    trainer_module.frozen_feature_data = timed_features
    trainer_module.TrainStep.__call__ = timed_step
    try:
        config = TrainConfig(
            model=spec,
            data={"path": str(out / "unused"), "frozen_features": frozen},
            loss="clip",
            training={"image": "heads", "text": "heads"},
            epochs=epochs,
            batch_size=batch,
            optim={"lr": LR, "weight_decay": 0.0},
            schedule={"kind": "constant", "warmup_steps": 0},
            seed=SEED,
            out=str(out),
            log_every=10_000,
            checkpoint_every=10_000,
            progress=False,
            overwrite=True,
        )
        if not frozen:  # the old path has no feature dataset to mark: time its loader instead
            config.num_workers = 0
        train(config, collection=collection)
    finally:
        trainer_module.frozen_feature_data = original_features
        trainer_module.TrainStep.__call__ = original_step
    steps_per_epoch = len(collection.images) // batch
    ends = marks["step"][steps_per_epoch - 1 :: steps_per_epoch]
    if frozen:
        starts = marks["epoch"]
        epoch_s = [end - start for start, end in zip(starts, ends, strict=True)]
    else:  # epochs follow each other: each ends where the next begins
        first_start = marks["step"][0] - (marks["step"][1] - marks["step"][0])
        bounds = [first_start, *ends]
        epoch_s = [b - a for a, b in itertools.pairwise(bounds)]
    later = statistics.median(epoch_s[1:])
    return {
        "first_epoch_s": marks["encode"][0] + epoch_s[0],
        "encode_s": marks["encode"][0],
        "examples_per_s": steps_per_epoch * batch / later,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs; best counts")
    parser.add_argument("--old", action="store_true", help="also time the per-step cache path")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (throughput is measured from the second on)")
    spec = f"lite:en?image_size={args.image_size}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        collection = write_collection(root / "images", args.images)
        print(
            f"{args.images} images ({spec}), {args.epochs} epochs of batch {args.batch}, "
            f"torch threads {torch.get_num_threads()}"
        )
        # Alternated and repeated: the best of each stands for what the machine allows.
        references, ours = [], []
        for _ in range(args.repeats):
            references.append(bare(spec, collection, args.epochs, args.batch))
            ours.append(
                with_train(spec, collection, args.epochs, args.batch, root / "run", frozen=True)
            )
        reference = {
            "encode_s": min(r["encode_s"] for r in references),
            "examples_per_s": max(r["examples_per_s"] for r in references),
        }
        mine = {
            "first_epoch_s": min(r["first_epoch_s"] for r in ours),
            "encode_s": min(r["encode_s"] for r in ours),
            "examples_per_s": max(r["examples_per_s"] for r in ours),
        }
        print(
            f"bare:    encode once {reference['encode_s']:.2f} s; heads "
            f"{reference['examples_per_s']:.0f} examples/s"
        )
        print(
            f"train(): first epoch {mine['first_epoch_s']:.2f} s (towers {mine['encode_s']:.2f} s); "
            f"epochs 2+ {mine['examples_per_s']:.0f} examples/s"
        )
        print(
            "ratio: throughput epochs 2+ / bare "
            f"{mine['examples_per_s'] / reference['examples_per_s']:.2f} (goal >= 0.8); "
            f"first epoch / encode once {mine['first_epoch_s'] / reference['encode_s']:.2f} "
            "(goal <= 1.2)"
        )
        if args.old:
            old = with_train(
                f"{spec}&cache=100000",
                collection,
                args.epochs,
                args.batch,
                root / "old",
                frozen=False,
            )
            print(
                f"old path (per-step tensor-hash cache): first epoch {old['first_epoch_s']:.2f} s; "
                f"epochs 2+ {old['examples_per_s']:.0f} examples/s"
            )


if __name__ == "__main__":
    main()
