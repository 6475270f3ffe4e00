"""One meaning of ``device``: ``auto`` is CUDA when there is a GPU, else the CPU."""

from __future__ import annotations

import pytest
import torch

from cultureclip.core.config import Config
from cultureclip.core.device import Device, resolve_device, resolve_dtype
from cultureclip.core.errors import InputError


class WithDevice(Config):
    device: Device = "auto"


def test_auto_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("auto", local_rank=3) == "cuda:1"
    assert resolve_device("cuda:0", local_rank=1) == "cuda:0"


def test_named_devices_pass_through() -> None:
    assert resolve_device("cpu") == "cpu" and resolve_device("mps") == "mps"


def test_a_saved_null_device_reads_as_auto() -> None:
    assert WithDevice.model_validate({"device": None}).device == "auto"
    assert WithDevice().device == "auto"


def test_naming_cuda_without_it_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cultureclip.core.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.parametrize(
    ("dtype", "device", "on_cuda", "expected"),
    [
        ("auto", "cpu", "bfloat16", torch.float32),
        ("auto", "cuda:1", "bfloat16", torch.bfloat16),
        ("auto", "cuda", "float16", torch.float16),
        ("float16", "cpu", "bfloat16", torch.float16),
    ],
)
def test_dtype_auto_is_half_precision_only_on_a_gpu(
    dtype: str, device: str, on_cuda: str, expected: torch.dtype
) -> None:
    assert resolve_dtype(dtype, device, on_cuda=on_cuda) is expected


@pytest.mark.parametrize("name", ["Tensor", "fp8", "manual_seed"])
def test_a_name_that_is_no_dtype_is_a_user_error(name: str) -> None:
    with pytest.raises(InputError, match="unknown dtype"):
        resolve_dtype(name, "cpu")
