"""Every part of synth that places a model takes the shared device/precision type: the
run's own, unless its section names another."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from cultureclip.core.device import DeviceSettings
from cultureclip.core.llm import LLMS
from cultureclip.models import registry
from cultureclip.synth.config import DEVICE_SECTIONS, SynthConfig
from cultureclip.synth.images import IMAGE_BACKENDS, create_image_backend
from cultureclip.synth.judges import JUDGES, JudgeRequest, create_judge
from cultureclip.synth.pipeline import run_synth
from tests.synth.test_own_data import corpus_config, write_photos


@pytest.mark.parametrize("section", DEVICE_SECTIONS)
def test_a_section_left_auto_takes_the_runs_device_and_its_own_wins(section: str) -> None:
    config = SynthConfig.model_validate(
        {"device": "cpu", "precision": "bf16", "filter": {"llm": {"model": "judge"}}}
    )
    placed = config.placed(section)
    assert isinstance(placed, DeviceSettings)
    assert (placed.device, placed.precision) == ("cpu", "bf16")
    own = {"filter": {"llm": {"model": "judge", "device": "cuda:1", "precision": "fp32"}}}
    if section != "filter.llm":
        own[section] = {"device": "cuda:1", "precision": "fp32"}
    config = SynthConfig.model_validate({"device": "cpu", "precision": "bf16", **own})
    assert (config.placed(section).device, config.placed(section).precision) == ("cuda:1", "fp32")


@pytest.mark.parametrize("name", IMAGE_BACKENDS.names())
def test_every_image_backend_takes_the_shared_type(name: str) -> None:
    config = SynthConfig.model_validate(
        {"device": "cpu", "precision": "bf16", "images": {"backend": name}}
    )
    backend = create_image_backend(config.placed("images"))
    assert isinstance(backend.settings, DeviceSettings)
    assert (backend.settings.device, backend.settings.precision) == ("cpu", "bf16")
    if hasattr(backend, "dtype"):  # a backend that loads weights loads them in that precision
        assert backend.dtype == torch.bfloat16 and backend.device == "cpu"


@pytest.mark.parametrize("name", LLMS.names())
def test_every_llm_backend_is_configured_with_the_shared_type(name: str) -> None:
    config = SynthConfig.model_validate({"device": "cpu", "llm": {"backend": name}})
    assert isinstance(config.placed("llm"), DeviceSettings)
    assert config.placed("llm").backend == name and config.placed("llm").device == "cpu"


@pytest.mark.parametrize("name", JUDGES.names())
def test_every_judge_runs_on_the_configured_device_and_precision(
    name: str, tiny_clip_dir: Path
) -> None:
    config = SynthConfig.model_validate(
        {"device": "cpu", "precision": "bf16",
         "filter": {"backend": name, "model": f"hf:{tiny_clip_dir}", "llm": {"model": "j"}}}
    )  # fmt: skip
    judge = create_judge(config.placed("filter"), config.placed("llm"))
    settings = getattr(judge, "llm_settings", judge.settings)  # the VLM judge's chat model
    assert (settings.device, settings.precision) == ("cpu", "bf16")
    if hasattr(judge, "scores"):  # it embeds: its tensors are on the device, under autocast
        assert (
            judge.model.device == torch.device("cpu") and judge.model.inference_precision == "bf16"
        )
        image = JudgeRequest(Image.new("RGB", (24, 24)), "x", "c", "n", "k")
        outcomes = asyncio.run(judge.judge([image, image]))
        assert all(o.ok for o in outcomes)


def test_the_twin_miner_and_clipscore_judge_use_the_runs_device_and_precision(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    create = registry.create_model

    def recording(spec: Any, **kwargs: Any) -> Any:
        model = create(spec, **kwargs)
        built.append((kwargs.get("device"), kwargs.get("precision"), model))
        return model

    monkeypatch.setattr(registry, "create_model", recording)
    corpus = write_photos(tmp_path / "corpus")
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}", group_by="group")
    config = config.model_copy(update={"device": "cpu", "precision": "bf16"})
    report = run_synth(config)
    assert report.merge is not None and report.merge.records == 9
    assert len(built) == 2  # the miner's model and the judge's
    for device, precision, model in built:
        assert (device, precision) == ("cpu", "bf16")
        assert model.device == torch.device("cpu") and model.inference_precision == "bf16"


def test_half_precision_judging_and_mining_are_keyed_apart(tiny_clip_dir: Path) -> None:
    def judge_identity(precision: str) -> dict[str, Any]:
        config = SynthConfig.model_validate(
            {"device": "cpu", "precision": precision,
             "filter": {"backend": "clipscore", "model": f"hf:{tiny_clip_dir}"}}
        )  # fmt: skip
        return create_judge(config.placed("filter"), config.placed("llm")).identity()

    assert "precision" not in judge_identity("fp32")  # keys of earlier runs stay the same
    assert judge_identity("bf16")["precision"] == "bf16"


def test_half_precision_mining_is_keyed_apart() -> None:
    from cultureclip.synth.context import SynthContext
    from cultureclip.synth.loaders import mine_keys
    from cultureclip.synth.records import Concept, Side

    concepts = [
        Concept(f"c{i}", "r", Side(f"c{i}", "", "", "Food", "JP"), "corpus") for i in range(2)
    ]

    def keys(precision: str) -> dict[str, str]:
        config = SynthConfig.model_validate({"device": "cpu", "precision": precision})
        return mine_keys(SynthContext(config), concepts)

    assert keys("fp32") == keys("auto")  # fp32 on a CPU: the keys of earlier runs
    assert keys("bf16") != keys("fp32")
