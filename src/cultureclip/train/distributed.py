"""Process-group set-up, the feature gather and the DDP wrapper training needs.

Works under ``torchrun --nproc_per_node N`` and ``accelerate launch`` alike (both describe
the group in environment variables); a group someone else initialised is reused and left open.

How N processes train exactly like one (``L`` the loss of the whole batch):

- Features are gathered with gradients (:func:`gather_features`): the backward of the
  gather sums, over processes, each process's gradient w.r.t. this process's rows.
- With the *local loss* (the default), process ``r`` computes ``L_r``, the mean loss of
  its own rows against the gathered batch; ``L = mean_r L_r``. Its features receive
  ``∂(Σ_q L_q)/∂f_r = N · ∂L/∂f_r``.
- With the *global loss* (``local_loss=false``), every process computes ``L`` itself;
  its features receive ``Σ_q ∂L/∂f_r``, again ``N · ∂L/∂f_r``.
- DDP (:func:`wrap_ddp`) averages parameter gradients over processes: the ``1/N``
  cancels the ``N``, giving exactly the single-process gradient either way. DDP also
  overlaps that all-reduce with the backward pass, bucket by bucket.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: True when this process created the group and must destroy it at the end
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Joins the process group described by the environment, if any."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(
                f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun or accelerate launch"
            )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


def gather_features(features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Concatenates each feature over ranks (rank order), keeping gradients to the local part."""
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch ≥ 2.9 marks this autograd-aware gather deprecated in favour of a private
        # (underscore) module; the public one is still the supported, tested path.
        warnings.filterwarnings(
            "ignore", message=".*all_gather is deprecated", category=FutureWarning
        )
        return {
            name: torch.cat(all_gather(value.contiguous()), dim=0)
            for name, value in features.items()
        }


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """``module`` under DDP: rank 0's weights are broadcast now, gradients averaged in
    backward (every trainable parameter must get one: ``find_unused_parameters`` would walk
    the graph every step). CLIP towers hold no running statistics to re-broadcast."""
    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, broadcast_buffers=False
    )


def all_reduce_mean(tensor: Tensor, info: DistInfo) -> Tensor:
    """The mean of ``tensor`` over processes (``tensor`` itself in a single process)."""
    if not info.enabled:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_object(obj: object, info: DistInfo) -> list[object]:
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
