"""One meaning of ``device``: ``auto`` is CUDA when there is a GPU, else the CPU."""

from __future__ import annotations

import pytest
import torch

from cultureclip.config import Config
from cultureclip.core.device import Device, resolve_device


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
