"""One meaning of ``device``: ``auto`` is CUDA when there is a GPU, else the CPU."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from cultureclip.core.config import Config
from cultureclip.core.device import (
    Device,
    DeviceSettings,
    autocast,
    resolve_device,
    resolve_precision,
)
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


# ---- precision: the one type every stage takes --------------------------------------------
class WithBoth(DeviceSettings):
    pass


@pytest.mark.parametrize(
    ("given", "read"),
    [(None, "auto"), ("auto", "auto"), ("bf16", "bf16"), ("bfloat16", "bf16"), ("float32", "fp32")],
)
def test_precision_reads_its_names_and_torch_dtype_names(given: str | None, read: str) -> None:
    assert WithBoth.model_validate({"precision": given}).precision == read


def test_bad_precision_device_and_the_former_dtype_key_are_errors() -> None:
    with pytest.raises(ValidationError, match="precision"):
        WithBoth.model_validate({"precision": "fp8"})
    with pytest.raises(ValidationError, match="no device"):
        WithBoth.model_validate({"device": "gpu 0"})
    with pytest.raises(ValidationError, match="dtype was renamed: use precision"):
        WithBoth.model_validate({"dtype": "bfloat16"})


def test_precision_auto_is_bf16_on_a_gpu_that_has_it_and_fp32_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # CPU autocast has bf16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cuda:0") == "bf16"
    assert resolve_precision("auto", "cuda", on_cuda="fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(InputError, match="no bf16 support"):
        resolve_precision("bf16", "cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_autocast_is_entered_in_the_asked_dtype(precision: str) -> None:
    with autocast("cpu", precision):
        assert torch.is_autocast_enabled("cpu") == (precision != "fp32")
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert not torch.is_autocast_enabled("cpu")


def test_identities_spell_a_precision_as_the_former_dtype_setting_did() -> None:
    from cultureclip.core.device import former_dtype_name
    from cultureclip.core.llm import LLMSettings

    assert [former_dtype_name(p) for p in ("auto", "fp32", "bf16", "fp16")] == [
        "auto",
        "float32",
        "bfloat16",
        "float16",
    ]
    # a served model's stored answers (no weights to hash) keep the key they had
    served = LLMSettings(backend="openai", model="m", precision="bf16").identity()
    assert served["dtype"] == "bfloat16" and "precision" not in served
