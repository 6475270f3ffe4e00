"""Process-group set-up and the two collectives training needs.

Works under ``torchrun --nproc_per_node N`` and ``accelerate launch`` alike: both set
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``, and we init
from the environment (NCCL on GPU, gloo on CPU). A group someone else already
initialised (a notebook, a test, accelerate's own state) is reused and left open.

Why no DDP wrapper: with gradient caching the model runs several forward passes per
step, and the loss of every rank is the *same* global loss over gathered features.
Gathering with gradients (:func:`gather_features`) sends each rank the gradient of
every rank's loss w.r.t. its own features (a sum over ranks), i.e. ``world_size``
times the gradient of the global loss; averaging parameter gradients across ranks
(:func:`average_gradients`) therefore yields exactly the single-process gradient.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


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


def average_gradients(parameters: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """All-reduces the gradients of ``parameters`` (one flat buffer) and divides by ``world_size``."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            # Every rank must contribute the same buffer layout to the collective.
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def broadcast_parameters(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Makes every rank start from rank 0's values (LoRA init draws random numbers)."""
    for p in parameters:
        dist.broadcast(p.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_object(obj: object, info: DistInfo) -> list[object]:
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, info: DistInfo) -> object:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
