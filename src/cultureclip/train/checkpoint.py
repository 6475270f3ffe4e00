"""Crash-safe training checkpoints: one file per step, a ``latest`` pointer, keep the last K.

A checkpoint is a single ``step_00000100.pt`` written through
:func:`cultureclip.utils.io.atomic_path` (temp file, fsync, rename), so a process
killed at any moment leaves either no new file or a complete one. The ``latest``
pointer is rewritten atomically *after* the file is in place, and old files are
pruned only after that, so ``latest`` always names a complete checkpoint.

Contents: the trainable tensors (LoRA, heads, logit scale, or everything for full
fine-tuning), optimiser, scheduler and grad-scaler state, every rank's RNG states,
the step, the epoch and the position inside it, and the run-defining config.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cultureclip.core.errors import InputError
from cultureclip.utils.io import atomic_path, atomic_write_text

CHECKPOINT_FORMAT = 1
LATEST_NAME = "latest"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, or belongs to a different run."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random state a training step can read (python, numpy, torch CPU and CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    directory: str | os.PathLike[str], step: int, state: dict[str, Any], keep_last: int
) -> Path:
    """Writes ``state`` as the checkpoint of ``step``, moves ``latest`` to it, prunes old ones."""
    directory = Path(directory)
    target = directory / checkpoint_name(step)
    with atomic_path(target) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "step": step, **state}, tmp)
    atomic_write_text(directory / LATEST_NAME, target.name + "\n")
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return target


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoint files of ``directory``, oldest first (temp files are not matched)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(resume: str, checkpoint_dir: str | os.PathLike[str]) -> Path:
    """``latest`` → the file the pointer names; anything else is taken as a checkpoint path."""
    checkpoint_dir = Path(checkpoint_dir)
    if resume != LATEST_NAME:
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        return path
    pointer = checkpoint_dir / LATEST_NAME
    if not pointer.exists():
        raise CheckpointError(
            f"resume=latest but {pointer} does not exist: no checkpoint was written in this output "
            "directory yet (start without --resume, or point output_dir at the interrupted run)"
        )
    path = checkpoint_dir / pointer.read_text(encoding="utf-8").strip()
    if not path.is_file():
        raise CheckpointError(
            f"{pointer} names {path.name}, which is missing; resume from a file instead"
        )
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        # RNG states hold numpy arrays and python tuples, so this is not weights_only.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a cultureclip training checkpoint (format {CHECKPOINT_FORMAT})"
        )
    return state
