"""One meaning of ``device`` and ``precision`` for every stage: :class:`DeviceSettings`.

``device: auto`` is the GPU when there is one; ``precision: auto`` is bf16 on a GPU that
has it and fp32 elsewhere. A stage that loads weights in a precision (a local chat model,
a VLM, diffusers) loads them in that dtype; a stage that encodes with fp32 weights
(contrastive training, evaluation, index building, the twin miner, the CLIPScore judge)
runs under ``torch.autocast`` in it. A device the machine lacks is a one-line error
before any work.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator

from cultureclip.core.config import Config
from cultureclip.core.errors import InputError

AUTO = "auto"

_DEVICE = re.compile(r"^(auto|[a-z][a-z_]*(:\d+)?)$")


def _none_is_auto(value: Any) -> Any:
    # Configs saved before ``auto`` existed wrote ``device: null`` for the same choice.
    return AUTO if value is None else value


def _device_name(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError(f"{value!r} is no device; use auto, cpu, cuda, cuda:1, mps, ...")
    return value


#: a config's ``device`` field: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...
Device = Annotated[str, BeforeValidator(_none_is_auto), AfterValidator(_device_name)]

PRECISIONS = ("fp32", "bf16", "fp16")
#: torch's dtype names, as ``dtype`` settings wrote them before ``precision``
_TORCH_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _precision_name(value: Any) -> Any:
    if value is None:
        return AUTO
    return _TORCH_NAMES.get(value, value) if isinstance(value, str) else value


#: a config's ``precision`` field: ``auto`` (default), ``fp32``, ``bf16`` or ``fp16``
#: (``float32``, ``bfloat16`` and ``float16`` are read as the same)
Precision = Annotated[Literal["auto", "fp32", "bf16", "fp16"], BeforeValidator(_precision_name)]


class DeviceSettings(Config):
    """The device and precision a stage (or a part of one) runs on: the one type every
    stage's config takes them as."""

    #: auto: cuda (the local rank's GPU) when available, else cpu
    device: Device = AUTO
    #: auto: bf16 on a GPU that has it, fp32 elsewhere
    precision: Precision = AUTO

    FORMER_NAMES: ClassVar[dict[str, str]] = {"dtype": "precision"}

    def resolved_device(self, local_rank: int | None = None) -> str:
        return resolve_device(self.device, local_rank)

    def resolved_precision(self, device: str | None = None) -> str:
        return resolve_precision(self.precision, device or self.resolved_device())


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


def resolve_precision(precision: str | None, device: str, *, on_cuda: str = "bf16") -> str:
    """``fp32``, ``bf16`` or ``fp16``. ``auto`` is ``on_cuda`` on a GPU (fp16 on one without
    bf16) and fp32 elsewhere; bf16 asked of a GPU without it is a user error."""
    import torch

    name = _precision_name(precision)
    if name not in (AUTO, *PRECISIONS):
        raise InputError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    on_gpu = device.startswith("cuda")
    bf16_ok = not on_gpu or torch.cuda.is_bf16_supported()
    if name == AUTO:
        if not on_gpu:
            return "fp32"
        return on_cuda if on_cuda != "bf16" or bf16_ok else "fp16"
    if name == "bf16" and not bf16_ok:
        raise InputError("precision=bf16 but this GPU has no bf16 support; use fp16 or fp32")
    return name


def torch_dtype(precision: str) -> Any:
    """The torch dtype of a resolved precision (``fp32``/``bf16``/``fp16``)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def former_dtype_name(precision: str) -> str:
    """A precision as the former ``dtype`` setting spelled it (``bf16`` → ``bfloat16``,
    ``auto`` as it is): identities stored under that name keep matching."""
    return {short: name for name, short in _TORCH_NAMES.items()}.get(precision, precision)


@contextlib.contextmanager
def autocast(device: Any, precision: str) -> Iterator[None]:
    """``torch.autocast`` on ``device``'s type in a resolved half ``precision``; fp32 runs
    as it is. Autocast is per thread: enter it on the thread that runs the model."""
    import torch

    if precision == "fp32":
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=torch_dtype(precision)):
        yield
