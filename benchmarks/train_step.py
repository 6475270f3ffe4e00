"""Framework overhead of a CultureCLIP training step vs. the bare model's forward+backward.

On the same inputs (a batch of twin pairs: both images, both captions, both concept
names), in the same process, alternating so machine load hits both alike:

- **bare**: the transformers ``CLIPModel`` directly — ``get_image_features`` /
  ``get_text_features``, normalise, the CultureCLIP formula written inline with
  ``F.cross_entropy``, ``backward()``, ``AdamW.step()``;
- **cultureclip**: ``cultureclip.train.TrainStep`` with ``create_loss("cultureclip")``
  and the trainer's optimiser — named features, loss registry, gradient plumbing,
  schedule step, everything ``train()`` runs per step except data loading.

Both train the same parameters (LoRA r=4 on q/v of both towers, the reference
recipe). Prints pairs/s of both and the ratio (target ≥ 0.90).

The default model is a CLIP with the ViT-B/32 shape (12+12 layers, width 768/512,
224 px, patch 32) and random weights, written offline with ``save_pretrained`` and
loaded through ``hf:<dir>`` like a hub checkpoint: real per-step compute, no hub
needed. ``--size small`` is a 4-layer, 96 px version for quick runs; ``--model SPEC``
benchmarks any hf spec.

    python benchmarks/train_step.py [--size vitb32|small] [--pairs 8] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cultureclip.models.registry import create_model
from cultureclip.train.config import DataSettings, OptimSettings, ScheduleSettings, TrainConfig
from cultureclip.train.data import EncoderInputs
from cultureclip.train.losses import create_loss
from cultureclip.train.trainer import TrainStep

SIZES = {
    "vitb32": dict(
        image_size=224, patch_size=32, vision_width=768, text_width=512, layers=12, proj=512
    ),
    "small": dict(
        image_size=96, patch_size=16, vision_width=256, text_width=256, layers=4, proj=256
    ),
}


def build_clip(path: Path, size: str) -> Path:
    """A random CLIP of the given shape, with the MiniLM tokenizer, saved like a hub model."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from cultureclip.testing import _copy_tokenizer

    s = SIZES[size]
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=30522,
            hidden_size=s["text_width"],
            intermediate_size=4 * s["text_width"],
            num_hidden_layers=s["layers"],
            num_attention_heads=8,
            max_position_embeddings=77,
            bos_token_id=101,
            eos_token_id=102,
            pad_token_id=0,
        ),
        vision_config=dict(
            image_size=s["image_size"],
            patch_size=s["patch_size"],
            hidden_size=s["vision_width"],
            intermediate_size=4 * s["vision_width"],
            num_hidden_layers=s["layers"],
            num_attention_heads=12 if s["vision_width"] % 12 == 0 else 8,
        ),
        projection_dim=s["proj"],
    )
    path.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(path)
    size_px = s["image_size"]
    CLIPImageProcessor(
        size={"shortest_edge": size_px}, crop_size={"height": size_px, "width": size_px}
    ).save_pretrained(path)
    _copy_tokenizer(path)
    return path


def make_inputs(model, pairs: int, image_size: int) -> EncoderInputs:
    generator = torch.Generator().manual_seed(0)

    def texts(kind: str) -> dict[str, torch.Tensor]:
        words = ["red", "silk", "temple", "roof", "festival", "dumpling", "carved", "wooden"]
        return model.tokenize(
            [f"a {kind} of {words[i % 8]} {words[(3 * i) % 8]} number {i}" for i in range(pairs)]
        )

    return EncoderInputs(
        images={
            "pos_image": torch.randn(pairs, 3, image_size, image_size, generator=generator),
            "neg_image": torch.randn(pairs, 3, image_size, image_size, generator=generator),
        },
        texts={
            "pos_caption": texts("photo"),
            "neg_caption": texts("picture"),
            "pos_concept": texts("concept"),
            "neg_concept": texts("twin"),
        },
    )


def bare_step(hf_model, inputs: EncoderInputs, optimizer: torch.optim.Optimizer) -> float:
    """The model's own calls and the CultureCLIP formula inline; no cultureclip code."""
    pixels = torch.cat([inputs.images["pos_image"], inputs.images["neg_image"]])
    images = F.normalize(hf_model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    pos_i, neg_i = images.chunk(2)
    t = {
        n: F.normalize(hf_model.get_text_features(**tok).pooler_output, dim=-1)
        for n, tok in inputs.texts.items()
    }
    scale = hf_model.logit_scale.exp()
    target = torch.arange(pos_i.shape[0])

    def negclip(i: torch.Tensor, txt: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        i2t = F.cross_entropy(scale * i @ torch.cat([txt, neg]).T, target)
        return 0.5 * (i2t + F.cross_entropy(scale * txt @ i.T, target))

    caption = negclip(pos_i, t["pos_caption"], t["neg_caption"]) + negclip(
        neg_i, t["neg_caption"], t["pos_caption"]
    )
    concept = negclip(pos_i, t["pos_concept"], t["neg_concept"]) + negclip(
        neg_i, t["neg_concept"], t["pos_concept"]
    )
    loss = 0.7 * caption + 0.3 * concept
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="vitb32")
    parser.add_argument(
        "--model", default=None, help="benchmark this hf spec instead of a random CLIP"
    )
    parser.add_argument("--pairs", type=int, default=8, help="twin pairs per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        spec = args.model or f"hf:{build_clip(Path(tmp) / 'clip', args.size)}"
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(0)
        model = create_model(spec).to(device)
        model.configure_training(image="lora", text="lora", lora={"dropout": 0.0})
        model.train()
        hf_model = model.model  # the transformers CLIPModel inside the hf backend
        image_size = model.image_processor.crop_size["height"]
        inputs = make_inputs(model, args.pairs, image_size).to(device)

        config = TrainConfig(
            data=DataSettings(path="unused"),  # the step reads no data
            precision="fp32",
            optim=OptimSettings(lr=1e-6, weight_decay=0.1),
            schedule=ScheduleSettings(warmup_steps=0),
        )
        step = TrainStep(model, create_loss("cultureclip"), config, kind="twin", total_steps=10_000)
        bare_optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-6, weight_decay=0.1)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        timings: dict[str, list[float]] = {"bare": [], "cultureclip": []}
        runners = {
            "bare": lambda: bare_step(hf_model, inputs, bare_optimizer),
            "cultureclip": lambda: step([inputs]),
        }
        for i in range(args.warmup + args.steps):
            for name, run in runners.items():
                sync()
                start = time.perf_counter()
                run()
                sync()
                if i >= args.warmup:
                    timings[name].append(time.perf_counter() - start)

    trainable = sum(p.numel() for p in model.trainable_parameters())
    total = sum(p.numel() for p in model.parameters())
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"model: {args.model or f'random CLIP, {args.size} shape'}; {total / 1e6:.1f}M params, "
          f"{trainable / 1e3:.1f}k trainable (LoRA r=4 q/v both towers)")  # fmt: skip
    print(
        f"batch: {args.pairs} twin pairs (2 images + 4 texts each), {args.steps} timed steps per variant"
    )
    rates = {}
    for name, values in timings.items():
        median = statistics.median(values)
        rates[name] = args.pairs / median
        print(f"{name:12s} median step {median * 1000:9.1f} ms   {rates[name]:8.2f} pairs/s")
    ratio = rates["cultureclip"] / rates["bare"]
    print(
        f"ratio cultureclip/bare: {ratio:.3f} (target >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
