from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import pytest
from PIL import Image

from cultureclip.synth.config import FilterSettings, LLMSettings
from cultureclip.synth.judges import JUDGES, JudgeRequest, create_judge
from cultureclip.synth.standin import StandInLLMServer


def request(
    colour: tuple[int, int, int] = (200, 30, 40), caption: str = "a red kimono"
) -> JudgeRequest:
    return JudgeRequest(Image.new("RGB", (24, 24), colour), caption, "kimono", "Japan", "Clothing")


@pytest.mark.parametrize(
    ("scores", "passed"), [((4, 4, 4), True), ((5, 5, 1), False), ((3, 3, 3), False)]
)
def test_vlm_judge_sends_the_image_inline_and_applies_the_rule(
    scores: tuple[int, ...], passed: bool
) -> None:
    answer = json.dumps(dict(zip(("authenticity", "consistency", "fidelity"), scores, strict=True)))
    with StandInLLMServer(lambda r: answer) as server:
        judge = create_judge(
            FilterSettings(backend="vlm"), LLMSettings(base_url=server.base_url, model="vlm")
        )

        async def go() -> Any:
            try:
                return await judge.judge([request()])
            finally:
                await judge.aclose()

        (outcome,) = asyncio.run(go())
    assert outcome.ok and outcome.value["passed"] is passed
    assert outcome.value["scores"]["fidelity"] == scores[2]
    parts = server.requests[0]["messages"][-1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (24, 24)
    assert "a red kimono" in next(p["text"] for p in parts if p["type"] == "text")


def test_vlm_judge_score_out_of_range_is_a_failure_not_a_verdict() -> None:
    with StandInLLMServer(
        lambda r: '{"authenticity": 7, "consistency": 4, "fidelity": 4}'
    ) as server:
        settings = LLMSettings(base_url=server.base_url, model="vlm", max_attempts=2)
        judge = create_judge(FilterSettings(backend="vlm"), settings)

        async def go() -> Any:
            try:
                return await judge.judge([request()])
            finally:
                await judge.aclose()

        (outcome,) = asyncio.run(go())
    assert not outcome.ok and len(outcome.raw) == 2


def test_clipscore_judge_with_any_registered_model(tiny_clip_dir) -> None:
    settings = FilterSettings(backend="clipscore", model=f"hf:{tiny_clip_dir}", threshold=0.0)
    judge = create_judge(settings, LLMSettings())
    outcomes = asyncio.run(judge.judge([request(), request((20, 20, 200), "a blue sari")]))
    scores = [o.value["scores"]["clipscore"] for o in outcomes]
    assert all(0.0 <= s <= 2.5 for s in scores) and all(o.value["passed"] for o in outcomes)
    strict = create_judge(settings.model_copy(update={"threshold": 2.6}), LLMSettings())
    strict._model = judge.model  # reuse the loaded model
    assert not any(o.value["passed"] for o in asyncio.run(strict.judge([request()])))


@pytest.mark.parametrize("name", JUDGES.names())
def test_every_judge_has_an_identity(name: str) -> None:
    identity = create_judge(FilterSettings(backend=name), LLMSettings()).identity()
    assert identity["backend"] == name
