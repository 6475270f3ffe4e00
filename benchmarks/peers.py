"""Our training step and zero-shot eval against the reference tools, side by side.

In one process, on the same machine, model and data:

1. **train step** — ``cultureclip.train.TrainStep`` (the trainer's step: named features,
   loss registry, gradient plumbing, optimiser, DDP-ready encoder) with the plain
   contrastive loss, gradient caching off, vs **open_clip**'s own step as its training
   script runs it (``model(images, texts)``, ``open_clip.ClipLoss``, backward, AdamW,
   logit-scale clamp). Both train a ViT-B/32-shaped open_clip model with random
   weights (ours through the ``open_clip:`` backend), all weights or LoRA on the MLPs
   (``--lora``), AdamW with the same hyper-parameters and the same batch.
2. **zero-shot eval** — our ``zeroshot`` benchmark on an image folder vs
   **CLIP_benchmark**'s ``zeroshot_classification`` functions
   (``zero_shot_classifier`` + ``run_classification``) called directly on a DataLoader
   of the same images (torchvision ``ImageFolder`` with the model's own
   preprocessing), same model, class names and templates. Their ``evaluate`` is not
   called: its metric code fails under numpy 2 (``float`` of a 1-element array); its
   top-1 accuracy is computed from their logits instead. Both accuracies are printed:
   equal numbers show the two computed the same thing.

Timings alternate ours/theirs (and who goes first) after warm-up, so machine load
hits both alike, and the median of ``--repeats`` is reported. Ratios are *theirs / ours* time: ≥ 1.0 means
ours is not slower (the goal). The peers' versions are printed.

    python benchmarks/peers.py                       # CPU, small sizes, a few minutes
    python benchmarks/peers.py --batch 256 --device cuda --precision bf16 --lora
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Read when tqdm is first imported: CLIP_benchmark's bars would bury the table.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _alternate(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    *,
    warmup: int,
    repeats: int,
    device: torch.device,
) -> tuple[list[float], list[float]]:
    """Seconds of each run (warm-up runs not counted), run alternately, who goes first
    alternating too, so a load spike hits one pair of runs, not one side."""
    ours_times, theirs_times = [], []
    for index in range(warmup + repeats):
        if index % 2:
            b = _timed(theirs, device)
            a = _timed(ours, device)
        else:
            a = _timed(ours, device)
            b = _timed(theirs, device)
        if index >= warmup:
            ours_times.append(a)
            theirs_times.append(b)
    return ours_times, theirs_times


def _paired_ratios(ours_times: list[float], theirs_times: list[float]) -> list[float]:
    """theirs / ours of each pair of neighbouring runs, sorted."""
    return sorted(b / a for a, b in zip(ours_times, theirs_times, strict=True))


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _lora_open_clip(model: torch.nn.Module, rank: int) -> None:
    """open_clip has no LoRA of its own: the same peft adapters our backend injects."""
    from peft import LoraConfig, inject_adapter_in_model

    for tower in (model.visual, model.transformer):
        config = LoraConfig(
            r=rank, lora_alpha=16, lora_dropout=0.0, target_modules=["c_fc", "c_proj"]
        )
        inject_adapter_in_model(config, tower)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name or name == "logit_scale")


def _their_optimizer(model: torch.nn.Module, lr: float, wd: float) -> torch.optim.AdamW:
    """As open_clip's training script groups them: no decay on gains, biases, the scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        (no_decay if exempt or "logit_scale" in name else decay).append(param)
    return torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def train_step_ratio(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    import open_clip

    from cultureclip.models.registry import create_model
    from cultureclip.train.config import DataSettings, OptimSettings, ScheduleSettings, TrainConfig
    from cultureclip.train.data import EncoderInputs
    from cultureclip.train.losses import create_loss
    from cultureclip.train.trainer import TrainStep

    lr, wd = 1e-5, 0.2
    ours = create_model(f"open_clip:{args.arch}")
    mode = "lora" if args.lora else "full"
    ours.configure_training(
        image=mode, text=mode, logit_scale=True, lora={"r": args.lora_rank, "dropout": 0.0}
    )
    ours.to(device).train()
    config = TrainConfig(
        data=DataSettings(path="unused"),  # the step reads no data
        precision=args.precision,
        # ``fused: false`` keeps both on torch's default AdamW: the ratio is the machinery's
        optim=OptimSettings(lr=lr, weight_decay=wd, fused=False),
        schedule=ScheduleSettings(kind="constant", warmup_steps=0),
    )
    step = TrainStep(ours, create_loss("clip"), config, kind="pairs", total_steps=1)

    theirs = open_clip.create_model(args.arch, pretrained=None)
    if args.lora:
        _lora_open_clip(theirs, args.lora_rank)
    theirs.to(device).train()
    their_optimizer = _their_optimizer(theirs, lr, wd)
    their_loss = open_clip.ClipLoss()
    autocast = _autocast(args.precision, device)
    tokenizer = open_clip.get_tokenizer(args.arch)

    generator = torch.Generator().manual_seed(0)
    size = theirs.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    pixels = torch.randn(args.batch, 3, size, size, generator=generator).to(device)
    words = ["red", "silk", "temple", "roof", "festival", "dumpling", "carved", "wooden"]
    tokens = tokenizer(
        [f"a photo of {words[i % 8]} {words[(3 * i) % 8]} number {i}" for i in range(args.batch)]
    ).to(device)
    inputs = EncoderInputs(images={"image": pixels}, texts={"text": {"input_ids": tokens}})

    def our_step() -> None:
        step([inputs])

    def their_step() -> None:
        with autocast():
            image_features, text_features, scale = theirs(pixels, tokens)
            loss = their_loss(image_features, text_features, scale)
        loss.backward()
        their_optimizer.step()
        their_optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            theirs.logit_scale.clamp_(0, math.log(100))
        float(loss.detach())  # ours reports its loss every step too

    ours_times, theirs_times = _alternate(
        our_step, their_step, warmup=args.warmup, repeats=args.repeats, device=device
    )
    trained = sum(p.numel() for p in ours.trainable_parameters())
    their_trained = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    return {
        "ours_times": ours_times,
        "theirs_times": theirs_times,
        "trained": trained,
        "their_trained": their_trained,
        "mode": mode,
    }


def _write_image_folder(root: Path, classes: int, per_class: int, size: int) -> list[str]:
    """Random-noise JPEGs, ``root/class_k/img_i.jpg``; returns the class names."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = []
    for k in range(classes):
        folder = root / f"class_{k:02d}"
        folder.mkdir(parents=True)
        names.append(folder.name.replace("_", " "))
        for i in range(per_class):
            array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"img_{i:03d}.jpg", quality=90)
    return names


def zeroshot_ratio(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, object]:
    import open_clip
    from clip_benchmark.metrics import zeroshot_classification
    from torchvision.datasets import ImageFolder

    from cultureclip.eval.api import create_benchmark
    from cultureclip.models.registry import create_model

    model = create_model(f"open_clip:{args.eval_arch}").to(device).eval()
    root = work / "images"
    classnames = _write_image_folder(root, args.classes, args.per_class, args.image_px)
    templates = ["a photo of a {c}.", "a photo of the {c}.", "an image of a {c}."]
    tokenizer = open_clip.get_tokenizer(args.eval_arch)
    amp = args.precision != "fp32"

    def ours() -> dict[str, float]:
        benchmark = create_benchmark(
            "zeroshot", str(root), batch_size=args.eval_batch, templates=templates
        )
        return benchmark.run(model, progress=False).metrics

    def theirs() -> dict[str, float]:
        # The native open_clip model inside our backend: the very same weights.
        dataset = ImageFolder(str(root), transform=model._preprocess)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.eval_batch, num_workers=0)
        classifier = zeroshot_classification.zero_shot_classifier(
            model.model, tokenizer, classnames, templates, device.type, amp=amp
        )
        logits, target = zeroshot_classification.run_classification(
            model.model, classifier, loader, device.type, amp=amp
        )
        # Their ``evaluate``/``accuracy`` end in ``float(<1-element array>)``, which
        # numpy 2 refuses; the top-1 accuracy they compute, by hand.
        return {"acc1": float((logits.argmax(dim=1) == target).float().mean())}

    our_metrics, their_metrics = ours(), theirs()
    ours_times, theirs_times = _alternate(
        ours, theirs, warmup=args.eval_warmup, repeats=args.eval_repeats, device=device
    )
    return {
        "ours_times": ours_times,
        "theirs_times": theirs_times,
        "images": args.classes * args.per_class,
        "ours_acc1": our_metrics.get("acc1"),
        "theirs_acc1": 100 * their_metrics["acc1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture of the step")
    parser.add_argument("--batch", type=int, default=8, help="image–text pairs per step")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters, not all weights")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per side (median)")
    parser.add_argument(
        "--eval-arch", default="ViT-S-32", help="open_clip architecture of the eval"
    )
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--image-px", type=int, default=256, help="side of the JPEGs on disk")
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument(
        "--eval-warmup", type=int, default=0, help="beyond the first, untimed run of each"
    )
    parser.add_argument("--eval-repeats", type=int, default=7)
    parser.add_argument("--skip", choices=["train", "eval"], default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)

    versions = {
        name: importlib.metadata.version(name)
        for name in ("torch", "open_clip_torch", "clip-benchmark")
    }
    print("peers:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"device {device}, precision {args.precision}, torch threads {torch.get_num_threads()}")

    rows = []
    if args.skip != "train":
        train = train_step_ratio(args, device)
        rows.append(
            (
                f"train step ({args.arch}, batch {args.batch}, {train['mode']}, "
                f"{train['trained'] / 1e6:.2f}M trained; theirs {train['their_trained'] / 1e6:.2f}M)",
                "open_clip",
                train["ours_times"],
                train["theirs_times"],
            )
        )
    if args.skip != "eval":
        with tempfile.TemporaryDirectory() as work:
            zs = zeroshot_ratio(args, device, Path(work))
        rows.append(
            (
                f"zero-shot eval ({args.eval_arch}, {zs['images']} images, {args.classes} classes; "
                f"acc1 ours {zs['ours_acc1']:.2f} theirs {zs['theirs_acc1']:.2f})",
                "CLIP_benchmark",
                zs["ours_times"],
                zs["theirs_times"],
            )
        )
    print()
    print(
        f"{'what':<90} {'peer':<15} {'ours s':>7} {'theirs s':>8} {'ratio':>6} "
        f"{'paired ratios: min  p25  p75  max':>34}"
    )
    for what, peer, ours_times, theirs_times in rows:
        ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
        paired = _paired_ratios(ours_times, theirs_times)
        quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        spread = f"{paired[0]:.2f} {quartiles[0]:.2f} {quartiles[2]:.2f} {paired[-1]:.2f}"
        print(
            f"{what:<90} {peer:<15} {ours_s:>7.3f} {theirs_s:>8.3f} {theirs_s / ours_s:>6.2f} "
            f"{spread:>34}"
        )
    print(
        "ratio = theirs / ours (median seconds); >= 1.00: ours is not slower. Paired ratios "
        "compare neighbouring runs: their spread is the machine's noise."
    )


if __name__ == "__main__":
    main()
