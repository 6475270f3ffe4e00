"""Per-process cost of the distributed CultureCLIP loss: local rows vs the whole batch.

Starts ``N`` gloo processes on 127.0.0.1 (``torch.multiprocessing``) for each ``N`` in
``--worlds``. Every process holds ``B_local = B_global / N`` rows of random normalised
features of a twin batch (both images, captions and concept names) and times, per
repeat and alternately, the trainer's loss path:

- **local** (``local_loss: true``, the default): gather the features with gradients,
  compute the loss of this process's rows against the gathered batch, backward;
- **global** (``local_loss: false``): the same gather, every process computes the
  whole batch's loss, backward.

Printed per world size: the logits each process computes (rows × columns, summed over
the loss's terms, from their shapes), the matmul FLOPs they cost (forward
``2·D`` per logit; backward twice that), the median seconds of the slowest process,
and the largest difference between the two losses (they are the same number).
The local loss's logits scale with ``B_local × B_global``, the global one's with
``B_global²``: the FLOP ratio is ``N``.

    python benchmarks/distributed_loss.py [--batch 1024] [--dim 512] [--worlds 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cultureclip.train import distributed
from cultureclip.train.losses import TWIN_FEATURES, create_loss


def logit_entries(batch: int, world: int, local: bool) -> int:
    """Logits one process computes for the CultureCLIP loss (both terms, both twin halves).

    Each negclip term has image→text logits ``rows × 2·B`` (texts and their twins) and
    text→image logits ``rows × B``; ``rows`` is ``B / N`` locally, ``B`` globally.
    """
    rows = batch // world if local else batch
    per_negclip = rows * 2 * batch + rows * batch
    return 2 * 2 * per_negclip  # caption and concept terms × (I⁺, I⁻) halves


def matmul_flops(batch: int, world: int, dim: int, local: bool) -> float:
    """Forward ``2·D`` per logit, backward ``4·D`` (gradients to both operands)."""
    return 6.0 * dim * logit_entries(batch, world, local)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    info = distributed.DistInfo(rank=rank, world_size=world)
    rows = args.batch // world
    loss_fn = create_loss("cultureclip")
    generator = torch.Generator().manual_seed(1000 + rank)
    base = {
        name: F.normalize(torch.randn(rows, args.dim, generator=generator), dim=-1)
        for name in TWIN_FEATURES
    }
    scale = torch.tensor(1 / 0.07)

    def run(local: bool) -> tuple[float, float]:
        features = {n: t.clone().requires_grad_(True) for n, t in base.items()}
        dist.barrier()
        start = time.perf_counter()
        gathered = distributed.gather_features(features)
        if local:
            out_ = loss_fn.compute(features, scale, gathered=gathered, offset=rank * rows)
        else:
            out_ = loss_fn.compute(gathered, scale)
        out_.loss.backward()
        elapsed = time.perf_counter() - start
        loss = out_.loss.detach()
        if local:
            loss = distributed.all_reduce_mean(loss, info)
        return elapsed, float(loss)

    times: dict[str, list[float]] = {"local": [], "global": []}
    losses: dict[str, float] = {}
    for index in range(args.warmup + args.repeats):
        for mode in ("local", "global"):
            elapsed, loss = run(mode == "local")
            losses[mode] = loss
            if index >= args.warmup:
                times[mode].append(elapsed)
    # The step waits for the slowest process: report the worst median.
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    everyone = [None] * world
    dist.all_gather_object(everyone, medians)
    if rank == 0:
        worst = {mode: max(m[mode] for m in everyone) for mode in medians}
        Path(out).write_text(json.dumps({"seconds": worst, "losses": losses}))
    # Every process done with every collective before any tears gloo down (a process
    # leaving early can abort its peers' pending gloo threads).
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1024, help="global twin pairs B_global")
    parser.add_argument("--dim", type=int, default=512, help="feature size D")
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="split over the processes"
    )
    args = parser.parse_args()
    print(
        f"CultureCLIP loss, B_global={args.batch} twin pairs, D={args.dim}, gloo on 127.0.0.1, "
        f"{args.threads} threads split over the processes; median of {args.repeats}, slowest process"
    )
    header = (
        f"{'N':>2} {'B_local':>7} {'mode':>6} {'logits/process':>15} {'GFLOP/process':>14} "
        f"{'seconds':>8} {'FLOP ratio':>10} {'time ratio':>10} {'|Δloss|':>9}"
    )
    print(header)
    for world in args.worlds:
        if args.batch % world:
            raise SystemExit(f"--batch {args.batch} does not split over {world} processes")
        with tempfile.TemporaryDirectory() as work:
            out = str(Path(work) / "result.json")
            mp.spawn(_worker, args=(world, _free_port(), args, out), nprocs=world, join=True)
            result = json.loads(Path(out).read_text())
        seconds, losses = result["seconds"], result["losses"]
        delta = abs(losses["local"] - losses["global"])
        for mode in ("global", "local"):
            local = mode == "local"
            flops = matmul_flops(args.batch, world, args.dim, local)
            flop_ratio = matmul_flops(args.batch, world, args.dim, False) / flops
            time_ratio = seconds["global"] / seconds[mode]
            print(
                f"{world:>2} {args.batch // world:>7} {mode:>6} "
                f"{logit_entries(args.batch, world, local):>15,} {flops / 1e9:>14.2f} "
                f"{seconds[mode]:>8.3f} {flop_ratio:>10.2f} {time_ratio:>10.2f} {delta:>9.1e}"
            )
    print("ratios are global / this row: local rows cost B_local × B_global, N times fewer FLOPs")


if __name__ == "__main__":
    main()
