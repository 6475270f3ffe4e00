"""How much a tiny VLM learns from ``train-vlm``, measured by ``cultureclip eval``.

Builds the tiny random LLaVA of :func:`cultureclip.testing.build_tiny_vlm`, writes the
emoji-world flag task ("Which country is this flag from?", four countries) as training
items (renderings from seed 0) and held-out items (new renderings, seed 1), exports the
training items as CultureVerse chat records, runs ``cultureclip train-vlm`` (full SFT on
the CPU), and evaluates base and fine-tuned models on the held-out items in both scoring
modes, plus the forgetting check on a general emoji MCQ set. Prints accuracies (chance is
25%) and timings.

    python benchmarks/vlm_learning.py [--views 16] [--epochs 20] [--seed 42] [--shuffle-options]

``--shuffle-options`` shuffles the option order per item, so the model must also read
which letter holds the country it recognises (much harder for a model trained from
random weights in seconds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.eval.items import read_items
from cultureclip.synth.builder import export_instruction_data
from cultureclip.testing import build_tiny_vlm, write_flag_mcq, write_general_mcq


def run(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise SystemExit(result.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=16, help="training renderings per flag")
    parser.add_argument("--test-views", type=int, default=8, help="held-out renderings per flag")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=5, help="warmup steps")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--shuffle-options", action="store_true")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vlm = build_tiny_vlm(root / "vlm")
        train_items = write_flag_mcq(
            root / "train", views=options.views, seed=0, shuffle_options=options.shuffle_options
        )
        export = export_instruction_data(read_items(train_items), root / "train" / "instruct.jsonl")
        held_out = write_flag_mcq(
            root / "test",
            views=options.test_views,
            seed=1,
            shuffle_options=options.shuffle_options,
        )
        general = write_general_mcq(root / "general", views=2)
        started = time.perf_counter()
        run(
            [
                "train-vlm", "-m", str(vlm), "--data", str(export), "-o", str(root / "run"),
                "--set", "method=full", "--set", "train_vision_tower=true",
                "--set", f"optim.lr={options.lr}", "--set", f"epochs={options.epochs}",
                "--set", "batch_size=8", "--set", "checkpoint_every=100000",
                "--set", f"schedule.warmup_steps={options.warmup}", "--set", f"seed={options.seed}",
            ]
        )  # fmt: skip
        trained = time.perf_counter() - started
        n_train = len(read_items(train_items))
        print(f"train-vlm: {n_train} items, {options.epochs:g} epochs, {trained:.1f} s")
        for label, data in (("flags (held-out)", held_out), ("general", general)):
            for mode in ("generate", "likelihood"):
                started = time.perf_counter()
                run(
                    [
                        "eval", "-m", f"hf-vlm:{root / 'run' / 'model'}", "-b", "cultureverse",
                        "-d", str(data), "-o", str(root / "evals"), "--set", f"label={label}",
                        "--model-name", f"tuned-{mode}", "--baseline", f"hf-vlm:{vlm}",
                        "--baseline-name", f"base-{mode}", "--set", f"generative.mode={mode}",
                    ]
                )  # fmt: skip
                seconds = time.perf_counter() - started
                result_dir = next((root / "evals").glob(f"*{label.split()[0]}*"))
                saved = json.loads((result_dir / f"tuned-{mode}" / "result.json").read_text())
                base = saved["baseline"]["metrics"]["accuracy"]
                tuned = saved["metrics"]["accuracy"]
                print(
                    f"{label:17s} {mode:10s} n={saved['n']:3d}  base {base:6.2f}%  "
                    f"tuned {tuned:6.2f}%  delta {tuned - base:+6.2f}  ({seconds:.1f} s)"
                )


if __name__ == "__main__":
    main()
