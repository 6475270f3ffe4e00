"""Does every stage run on the GPU it is given? One short pass over small real configs.

On a CUDA machine, runs each stage on tiny models built offline (``cultureclip.testing``:
no downloads) and prints, per stage, the devices its linear layers ran on (every
``nn.Linear`` call is watched), the throughput and the peak GPU memory:

- ``train``: contrastive training steps in bf16 (``precision=bf16``), the real ``train()``;
- ``eval``: the ``twins`` benchmark in bf16 through ``cultureclip.eval.run``;
- ``index``: ``build_index`` in bf16, then text searches through ``RetrievalIndex``;
- ``miner+judge``: the twin miner's and the CLIPScore judge's batches, placed from a
  ``SynthConfig`` as the synth stages place them;
- ``hf-vlm``: batched greedy generation of a tiny LLaVA (``hf-vlm:``).

It exits 1 if a stage ran any layer on the CPU (or none at all). Without CUDA it prints
``no CUDA: skipped`` and exits 0.

    python benchmarks/gpu_check.py [--device cuda:0] [--items 64]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class StageRun:
    name: str
    unit: str
    devices: set[str] = field(default_factory=set)
    autocast: set[str] = field(default_factory=set)
    items: int = 0
    seconds: float = 0.0
    peak_mib: float | None = None

    @property
    def on_cpu(self) -> bool:
        return not self.devices or "cpu" in self.devices

    def line(self) -> str:
        rate = self.items / self.seconds if self.seconds else 0.0
        peak = f"{self.peak_mib:.0f} MiB" if self.peak_mib is not None else "n/a"
        devices = ",".join(sorted(self.devices)) or "none"
        half = ",".join(sorted(self.autocast)) or "-"
        return (
            f"{self.name:<12} device={devices:<8} autocast={half:<8} "
            f"{rate:9.1f} {self.unit}/s  ({self.items} in {self.seconds:.2f} s)  peak {peak}"
        )


@contextlib.contextmanager
def watched(run: StageRun, device: str) -> Iterator[None]:
    """Records the device (and autocast dtype) of every ``nn.Linear`` call in the block."""
    forward = torch.nn.Linear.forward
    device_type = torch.device(device).type

    def watching(module: torch.nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
        run.devices.add(inputs.device.type)
        if torch.is_autocast_enabled(inputs.device.type):
            run.autocast.add(str(torch.get_autocast_dtype(inputs.device.type)).split(".")[-1])
        return forward(module, inputs)

    if device_type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    torch.nn.Linear.forward = watching  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        yield
    finally:
        torch.nn.Linear.forward = forward  # type: ignore[method-assign]
        if device_type == "cuda":
            torch.cuda.synchronize(device)
            run.peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
        run.seconds = time.perf_counter() - started


@dataclass
class Fixtures:
    root: Path
    clip: Path
    twins: Path
    vlm: Path
    device: str
    #: bf16 where the device has it (CPU autocast does); fp32 training on a CPU check run
    precision: str
    train_precision: str
    items: int


def check_train(f: Fixtures, run: StageRun) -> None:
    from cultureclip.train import TrainConfig, train

    steps, batch = 3, 4
    config = TrainConfig(
        model=f"hf:{f.clip}",
        data={"path": str(f.twins)},
        out=str(f.root / "train"),
        batch_size=batch,
        max_steps=steps,
        device=f.device,
        precision=f.train_precision,
        num_workers=0,
        tensorboard=False,
        log_every=1,
        schedule={"warmup_steps": 0},
    )
    with watched(run, f.device):
        result = train(config)
    run.items = result.steps * batch


def check_eval(f: Fixtures, run: StageRun) -> None:
    from cultureclip.eval.api import EvalConfig
    from cultureclip.eval.api import run as evaluate

    config = EvalConfig(
        model=f"hf:{f.clip}",
        benchmark="twins",
        data=str(f.twins),
        out=None,
        device=f.device,
        precision=f.precision,
    )
    with watched(run, f.device):
        result = evaluate(config)
    run.items = result.n


def check_index(f: Fixtures, run: StageRun) -> None:
    from cultureclip.retrieval.index import IndexConfig, build_index
    from cultureclip.retrieval.search import RetrievalIndex

    out = f.root / "index"
    config = IndexConfig(
        model=f"hf:{f.clip}",
        data=str(f.twins),
        out=str(out),
        device=f.device,
        precision=f.precision,
        batch_size=16,
    )
    with watched(run, f.device):
        summary = build_index(config, progress=False)
        index = RetrievalIndex(out, device=f.device, precision=f.precision)
        queries = [f"a photo of thing {i}" for i in range(16)]
        for query in queries:
            index.search_text(query, k=5)
    run.items = summary.n_images + len(queries)


def check_miner_and_judge(f: Fixtures, run: StageRun) -> None:
    from PIL import Image

    from cultureclip.models.registry import create_model
    from cultureclip.synth.config import SynthConfig
    from cultureclip.synth.judges import create_judge
    from cultureclip.synth.mining import embed_concepts, mine_twins

    spec = f"hf:{f.clip}"
    config = SynthConfig.model_validate(
        {
            "device": f.device,
            "precision": f.precision,
            "twins": {"method": "mine", "mine_model": spec, "mine_batch_size": 32},
            "filter": {"backend": "clipscore", "model": spec, "batch_size": 32},
        }
    )
    colours = [(40 * i % 255, 90 * i % 255, 150 * i % 255) for i in range(f.items)]
    images = [Image.new("RGB", (48, 48), colour) for colour in colours]
    concepts = [
        {"key": str(i), "country": "AB"[i % 2], "category": "C"} for i in range(len(images))
    ]
    miner = config.placed("twins")
    judge = create_judge(config.placed("filter"), config.placed("llm"))
    with watched(run, f.device):
        model = create_model(
            miner.mine_model, device=miner.resolved_device(), precision=miner.precision
        )
        embeddings = embed_concepts(
            model, [[image] for image in images], batch_size=miner.mine_batch_size
        )
        mine_twins(concepts, embeddings)
        for start in range(0, len(images), judge.batch_size):
            chunk = images[start : start + judge.batch_size]
            judge.scores(chunk, [f"a photo of colour {i}" for i in range(len(chunk))])
    run.items = 2 * len(images)


def check_vlm(f: Fixtures, run: StageRun) -> None:
    from PIL import Image

    from cultureclip.models.generative import MCQPrompt, create_generative_model

    model = create_generative_model(
        f"hf-vlm:{f.vlm}", device=f.device, precision=f.precision, batch_size=8
    )
    prompts = [
        MCQPrompt(Image.new("RGB", (32, 32), (i * 7 % 255, 30, 90)), "Which flag?", ["A", "B"])
        for i in range(f.items // 2)
    ]
    with watched(run, f.device):
        outcomes = model.generate(prompts)
    run.items = sum(1 for o in outcomes if o.error is None)


STAGES: dict[str, tuple[str, Callable[[Fixtures, StageRun], None]]] = {
    "train": ("pairs", check_train),
    "eval": ("items", check_eval),
    "index": ("images+queries", check_index),
    "miner+judge": ("images", check_miner_and_judge),
    "hf-vlm": ("prompts", check_vlm),
}


def build_fixtures(root: Path, device: str, items: int) -> Fixtures:
    from cultureclip.core.device import resolve_precision
    from cultureclip.testing import build_tiny_hf_model, build_tiny_vlm, write_toy_cultwin

    precision = resolve_precision("bf16", device) if device != "cpu" else "bf16"
    return Fixtures(
        root=root,
        clip=build_tiny_hf_model(root / "clip", "clip"),
        twins=write_toy_cultwin(root / "twins", n_pairs=max(8, items // 2)),
        vlm=build_tiny_vlm(root / "vlm", family="llava"),
        device=device,
        precision=precision,
        # training refuses half precision off CUDA: the CPU dry run trains in fp32
        train_precision="bf16" if device.startswith("cuda") else "fp32",
        items=items,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the GPU to check (default: cuda)")
    parser.add_argument("--items", type=int, default=64, help="items per stage (default: 64)")
    # runs the same code on the CPU, to check the script itself where there is no GPU
    parser.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.allow_cpu and not torch.cuda.is_available():
        print("no CUDA: skipped")
        return 0
    device = "cpu" if args.allow_cpu and not torch.cuda.is_available() else args.device
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = build_fixtures(Path(tmp), device, args.items)
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
        print(f"gpu_check on {device} ({name}), torch {torch.__version__}")
        runs = []
        for stage, (unit, check) in STAGES.items():
            run = StageRun(stage, unit)
            check(fixtures, run)
            print(run.line(), flush=True)
            runs.append(run)
    on_cpu = [run.name for run in runs if run.on_cpu]
    if on_cpu and not args.allow_cpu:
        print(f"FAILED: ran on the CPU (or not at all): {', '.join(on_cpu)}")
        return 1
    print("every stage ran on", device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
