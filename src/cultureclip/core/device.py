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


def resolve_dtype(dtype: str, device: str, *, on_cuda: str = "bfloat16") -> Any:
    """``auto`` → ``on_cuda`` on a GPU and float32 elsewhere (half precision is slow on a
    CPU); any other name → the torch dtype of that name."""
    import torch

    name = (on_cuda if device.startswith("cuda") else "float32") if dtype == AUTO else dtype
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return value
