"""One meaning of ``device`` for every stage: ``auto`` is the GPU when there is one."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

AUTO = "auto"


def _none_is_auto(value: Any) -> Any:
    # Configs saved before ``auto`` existed wrote ``device: null`` for the same choice.
    return AUTO if value is None else value


#: a config's ``device`` field: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...
Device = Annotated[str, BeforeValidator(_none_is_auto)]


def resolve_device(device: str | None = AUTO, local_rank: int | None = None) -> str:
    """``auto`` (or None) → ``cuda`` when CUDA is available, else ``cpu``; other names as
    given. With ``local_rank``, a bare ``cuda`` becomes that process's GPU (``cuda:<rank>``)."""
    if device is None or device == AUTO:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and local_rank is not None:
        import torch

        device = f"cuda:{local_rank % max(1, torch.cuda.device_count())}"
    return device
