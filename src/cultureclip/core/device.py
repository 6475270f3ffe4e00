"""One meaning of ``device`` for every stage: ``auto`` is the GPU when there is one."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

from cultureclip.core.errors import InputError

AUTO = "auto"


def _none_is_auto(value: Any) -> Any:
    # Configs saved before ``auto`` existed wrote ``device: null`` for the same choice.
    return AUTO if value is None else value


#: a config's ``device`` field: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...
Device = Annotated[str, BeforeValidator(_none_is_auto)]


def resolve_device(device: str | None = AUTO, local_rank: int | None = None) -> str:
    """``auto`` (or None) → ``cuda`` when CUDA is available, else ``cpu``; other names as
    given. With ``local_rank``, a bare ``cuda`` becomes that process's GPU (``cuda:<rank>``).
    Naming CUDA on a machine without it is a user error, not a crash deep inside torch."""
    import torch

    if device is None or device == AUTO:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r} but CUDA is not available; use device=cpu or auto")
    if device == "cuda" and local_rank is not None:
        device = f"cuda:{local_rank % max(1, torch.cuda.device_count())}"
    return device
