"""Does the CultureCLIP loss help on your own photos? The bring-your-own-photos flow of
docs/own-data.md, run as its commands, for two or more seeds:

1. ``cultureclip synth --from-folder PHOTOS/train`` (and ``PHOTOS/test``): CulTwin sets;
2. per seed, ``cultureclip train`` twice on the same data, steps and seed: ``loss=clip``
   and ``loss=cultureclip`` (``lite:en``, heads only: offline, CPU);
3. ``cultureclip eval`` of each on the held-out photos: zero-shot over the test
   sub-folders (``acc1``) and twin accuracy on the held-out CulTwin set;
4. the paired comparison (``cultureclip.eval.compare``) of the two losses per seed, and
   pooled over seeds: accuracy difference, exact McNemar p-value, paired bootstrap 95%
   interval.

Prints both accuracies per seed and benchmark, their mean over seeds, and the paired
comparisons, as measured. Without ``--photos`` it draws the guide's example (five costume
groups, ``--per-group`` training and ``--test-per-group`` held-out photos each).

    python benchmarks/ablation.py [--photos DIR] [--seeds 0 1] [--epochs 10] [--image-size 64]
        [--batch 8] [--lr 1e-2] [--per-group 8] [--test-per-group 4] [--out DIR]
        [--synth-set KEY=VALUE ...]

``PHOTOS`` holds ``train/<group>/…`` and ``test/<group>/…`` (the same group names) and,
optionally, ``groups.yaml`` (docs/own-data.md, step 2). Every step is resumable: a rerun
with the same settings reuses what is done.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOSSES = ("clip", "cultureclip")
BENCHMARKS = ("zeroshot", "twins")


def cultureclip(*args: str, log: Path) -> None:
    """One documented command in a fresh process (as a user runs it); its output to ``log``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ cultureclip {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run(
            [sys.executable, "-m", "cultureclip", *args], stdout=handle, stderr=handle, env=env
        )
    if done.returncode != 0:
        sys.exit(f"`cultureclip {' '.join(args)}` exited {done.returncode}; see {log}")


def example_photos(folder: Path, per_group: int, test_per_group: int) -> Path:
    from cultureclip.testing import write_costume_photos

    if not (folder / "train").is_dir():
        write_costume_photos(folder / "train", per_group)
        write_costume_photos(folder / "test", test_per_group, offset=1000)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Does the CultureCLIP loss help on your own photos? (docs/own-data.md)"
    )
    parser.add_argument("--photos", type=Path, help="train/ and test/ group folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--per-group", type=int, default=8, help="example photos per group")
    parser.add_argument("--test-per-group", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--synth-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a `--set` for both synth runs (LLM captions: captions.templates=null, llm.…)",
    )
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("--seeds needs two or more seeds: one seed says little about a loss")
    out = args.out or Path(tempfile.mkdtemp(prefix="cultureclip-ablation-"))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    photos = args.photos or example_photos(out / "photos", args.per_group, args.test_per_group)
    groups = photos / "groups.yaml"
    with_groups = ["--set", f"concepts.groups={groups}"] if groups.is_file() else []
    with_groups += [arg for setting in args.synth_set for arg in ("--set", setting)]
    started = time.perf_counter()

    for split in ("train", "test"):
        cultureclip(
            "synth", "--from-folder", str(photos / split), *with_groups,
            "-o", str(out / f"cultwin-{split}"), log=log,
        )  # fmt: skip
    model = f"lite:en?image_size={args.image_size}&cache=2000"
    for seed in args.seeds:
        for loss in LOSSES:
            trained = out / f"seed{seed}" / loss
            cultureclip(
                "train", "--data", str(out / "cultwin-train"), "--out", str(trained),
                "--set", f"loss={loss}", "--set", f"model={model}",
                "--set", "training.image=heads", "--set", "training.text=heads",
                "--set", f"batch_size={args.batch}", "--set", f"epochs={args.epochs}",
                "--set", f"optim.lr={args.lr}", "--set", "schedule.warmup_steps=5",
                "--set", f"seed={seed}", log=log,
            )  # fmt: skip
            for benchmark, data in (
                ("zeroshot", photos / "test"),
                ("twins", out / "cultwin-test"),
            ):
                cultureclip(
                    "eval", "-m", str(trained / "final"), "-b", benchmark, "-d", str(data),
                    "-o", str(out / "eval"), "--model-name", f"{loss}-seed{seed}", log=log,
                )  # fmt: skip
    report(out / "eval", args.seeds, args.resamples)
    print(f"\n{time.perf_counter() - started:.0f} s in all; commands and their output: {log}")


def report(eval_dir: Path, seeds: list[int], resamples: int) -> None:
    from cultureclip.eval.compare import answered, compare_results, paired_stats
    from cultureclip.eval.report import main_metric
    from cultureclip.eval.results import load_result, result_dir

    for benchmark in BENCHMARKS:
        runs = {
            (loss, seed): load_result(result_dir(eval_dir, benchmark, f"{loss}-seed{seed}"))
            for loss in LOSSES
            for seed in seeds
        }
        metric = main_metric(runs[(LOSSES[0], seeds[0])])
        print(f"\n{benchmark} ({metric}, held out; n = {runs[(LOSSES[0], seeds[0])].n} per run)")
        print(f"{'seed':>6} {'clip':>8} {'cultureclip':>12} {'B − A':>8} {'95% CI':>18} {'p':>8}")
        pooled: dict[str, list[bool]] = {loss: [] for loss in LOSSES}
        for seed in seeds:
            a, b = runs[("clip", seed)], runs[("cultureclip", seed)]
            paired = compare_results(a, b, n_resamples=resamples).overall
            print(
                f"{seed:>6} {a.metrics[metric]:>8.2f} {b.metrics[metric]:>12.2f} "
                f"{paired.difference:>+8.2f} "
                f"{f'[{paired.ci_low:+.2f}, {paired.ci_high:+.2f}]':>18} {paired.p_value:>8.3g}"
            )
            by_a, by_b = answered(a), answered(b)
            for item in by_a.keys() & by_b.keys():
                pooled["clip"].append(bool(by_a[item]["correct"]))
                pooled["cultureclip"].append(bool(by_b[item]["correct"]))
        means = [
            sum(runs[(loss, seed)].metrics[metric] for seed in seeds) / len(seeds)
            for loss in LOSSES
        ]
        print(f"{'mean':>6} {means[0]:>8.2f} {means[1]:>12.2f} {means[1] - means[0]:>+8.2f}")
        both = paired_stats(pooled["clip"], pooled["cultureclip"], n_resamples=resamples)
        print(
            f"pooled over {len(seeds)} seeds ({both.n} paired items): cultureclip − clip "
            f"{both.difference:+.2f} points, 95% paired bootstrap "
            f"[{both.ci_low:+.2f}, {both.ci_high:+.2f}], exact McNemar p = {both.p_value:.3g} "
            f"(clip only right on {both.only_a}, cultureclip only on {both.only_b})"
        )


if __name__ == "__main__":
    main()
