"""Crash-safe training checkpoints: one file per step, a ``latest`` pointer, keep the last K.

Each ``step_00000100.pt`` is written atomically (a killed process leaves no new file or
a complete one), then ``latest`` is moved to it, then older ones are pruned: ``latest``
always names a complete checkpoint. Everything is stored as tensors and plain Python
values, so a checkpoint loads with ``torch.load(weights_only=True)``: a run directory
someone hands you cannot run code.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cultureclip.core.errors import InputError
from cultureclip.core.io import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
LATEST_NAME = "latest"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, or belongs to a different run."""


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random state a training step can read (python, numpy, torch CPU and CUDA)."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy arrays are not weights_only-loadable; the MT19937 key is 624 uint32 words.
        "numpy": {
            **numpy_state,
            "state": {
                "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                "pos": int(numpy_state["state"]["pos"]),
            },
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        "key": numpy_state["state"]["key"].numpy().astype(np.uint32),
        "pos": numpy_state["state"]["pos"],
    }
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Writes ``state`` as the checkpoint of ``step``, moves ``latest`` to it, prunes old ones."""
    target = directory / f"step_{step:08d}.pt"
    with atomic_path(target) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "step": step, **state}, tmp)
    atomic_write_text(directory / LATEST_NAME, target.name + "\n")
    # Only checkpoints older than this one are pruned, so ``latest`` never loses its file.
    older = [p for p in list_checkpoints(directory) if checkpoint_step(p) < step]
    for old in older[: max(0, len(older) - (keep_last - 1))]:
        old.unlink(missing_ok=True)
    return target


def checkpoint_step(path: Path) -> int:
    """The step of a file :func:`list_checkpoints` listed."""
    return int(path.stem.removeprefix("step_"))


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint files of ``directory``, oldest first (temp files are not matched)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _STEP_FILE.match(p.name)), key=checkpoint_step)


def resolve_checkpoint(resume: str, checkpoint_dir: Path) -> Path:
    """``latest`` → the file the pointer names, which must be a checkpoint file inside
    ``checkpoint_dir`` (``../../elsewhere.pt`` is refused); anything else is a file path."""
    if resume != LATEST_NAME:
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        return path
    pointer = checkpoint_dir / LATEST_NAME
    if not pointer.exists():
        raise CheckpointError(
            f"resume=latest but {pointer} does not exist: no checkpoint was written in this output "
            "directory yet (start without --resume, or point out at the interrupted run)"
        )
    name = pointer.read_text(encoding="utf-8").strip()
    if not _STEP_FILE.match(name):
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a checkpoint file of {checkpoint_dir}; "
            "refusing to follow it (resume from a checkpoint file instead)"
        )
    path = checkpoint_dir / name
    if not path.is_file():
        raise CheckpointError(
            f"{pointer} names {path.name}, which is missing; resume from a file instead"
        )
    return path


def load_resume_checkpoint(resume: str, checkpoint_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``resume`` names (see :func:`resolve_checkpoint`), loaded. When the
    file ``latest`` names is unreadable (a truncated copy, a disk error), the newest
    checkpoint of the folder that reads, with a warning."""
    path = resolve_checkpoint(resume, checkpoint_dir)
    try:
        return path, load_checkpoint(path)
    except CheckpointError as exc:
        if resume != LATEST_NAME:
            raise
        first_error = exc
    for candidate in reversed(list_checkpoints(checkpoint_dir)):
        if candidate == path:
            continue
        try:
            state = load_checkpoint(candidate)
        except CheckpointError:
            continue
        logger.warning(
            "%s is unreadable (%s); resuming from %s, the newest intact checkpoint",
            path,
            first_error,
            candidate.name,
        )
        return candidate, state
    raise CheckpointError(f"{first_error}; no other intact checkpoint in {checkpoint_dir}")


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a cultureclip training checkpoint (format {CHECKPOINT_FORMAT})"
        )
    return state
