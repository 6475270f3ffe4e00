from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cultureclip.core.io import read_jsonl
from cultureclip.core.llm import LLMError, ask, create_llm, load_prompt
from cultureclip.core.store import open_failures
from cultureclip.synth.config import LLMSettings, SynthConfig
from cultureclip.synth.context import SynthContext
from cultureclip.synth.records import Side
from cultureclip.synth.schemas import TwinAnswer
from cultureclip.synth.stages.captions import caption_key, run_captions
from cultureclip.synth.standin import Reply, StandInLLMServer

TWIN = {
    "neg_concept": "Guzheng",
    "neg_country": "CN",
    "neg_context": "zither",
    "neg_features": "long board",
}
VARIABLES = {
    "category": "Art",
    "concept": "Erhu",
    "country_name": "China",
    "context": "fiddle",
    "features": "two strings",
}


def settings(server: StandInLLMServer, **kw: Any) -> LLMSettings:
    return LLMSettings(base_url=server.base_url, model="m", backoff_s=0.01, **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def ask_twin(config: LLMSettings) -> Any:
    async with create_llm(config) as llm:
        return await ask(llm, load_prompt("twins"), VARIABLES, TwinAnswer)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("json_schema", "json_schema"), ("json_object", "json_object"), ("none", None)],
)
def test_json_mode_is_configurable(mode: str, expected: str | None) -> None:
    with StandInLLMServer(lambda r: json.dumps(TWIN)) as server:
        outcome = run(ask_twin(settings(server, json_mode=mode)))
    assert outcome.ok and outcome.value.neg_concept == "Guzheng"
    request = server.requests[0]
    assert request.get("response_format", {}).get("type") == expected
    if expected == "json_schema":
        assert "neg_features" in request["response_format"]["json_schema"]["schema"]["properties"]


def test_malformed_answer_is_retried_with_the_error_fed_back() -> None:
    answers = iter(["not json at all", json.dumps({**TWIN, "neg_features": ""}), json.dumps(TWIN)])
    with StandInLLMServer(lambda r: next(answers)) as server:
        outcome = run(ask_twin(settings(server, max_attempts=3)))
    assert outcome.ok and len(outcome.raw) == 3
    feedback = server.requests[2]["messages"][-1]["content"]
    assert "rejected" in feedback and "neg_features" in feedback
    # The rejected answer is replayed as the assistant's turn before the feedback.
    assert server.requests[2]["messages"][-2] == {"role": "assistant", "content": outcome.raw[1]}


def test_answers_that_never_validate_fail_with_every_raw_text() -> None:
    with StandInLLMServer(lambda r: '{"neg_concept": "x"}') as server:
        outcome = run(ask_twin(settings(server, max_attempts=2)))
    assert not outcome.ok and outcome.value is None
    assert outcome.raw == ['{"neg_concept": "x"}'] * 2 and "neg_features" in outcome.error


def test_http_errors_are_retried_then_reported() -> None:
    calls = {"n": 0}

    def flaky(request: dict[str, Any]) -> Reply:
        calls["n"] += 1
        return Reply("busy", 503) if calls["n"] < 3 else Reply(json.dumps(TWIN))

    with StandInLLMServer(flaky) as server:
        assert run(ask_twin(settings(server, max_retries=3))).ok
    with StandInLLMServer(lambda r: Reply("down", 500)) as server:
        outcome = run(ask_twin(settings(server, max_retries=1)))
    assert not outcome.ok and "HTTP 500" in outcome.error and len(server.requests) == 2
    with StandInLLMServer(lambda r: Reply("bad model", 404)) as server:

        async def direct() -> None:
            async with create_llm(settings(server)) as llm:
                await llm.complete([{"role": "user", "content": "hi"}])

        with pytest.raises(LLMError, match="HTTP 404"):
            run(direct())
        assert len(server.requests) == 1  # a 4xx is a configuration error: not retried


def test_timeouts_are_retried_and_reported() -> None:
    with StandInLLMServer(lambda r: json.dumps(TWIN), delay_s=0.5) as server:
        outcome = run(ask_twin(settings(server, timeout_s=0.1, max_retries=1)))
    assert not outcome.ok and "Timeout" in outcome.error


def test_concurrency_limit_is_respected_and_reached() -> None:
    with StandInLLMServer(lambda r: json.dumps(TWIN), delay_s=0.1) as server:

        async def many() -> list[Any]:
            async with create_llm(settings(server, concurrency=3)) as llm:
                from cultureclip.synth.pool import run_pool

                results: list[Any] = []

                async def handle(batch: list[int]) -> None:
                    results.append(await ask(llm, load_prompt("twins"), VARIABLES, TwinAnswer))

                await run_pool(list(range(9)), handle, concurrency=3)
                return results

        results = run(many())
    assert len(results) == 9 and all(r.ok for r in results)
    assert server.peak_in_flight == 3


def test_retry_after_is_capped_and_uses_the_retry_budget() -> None:
    import time

    from cultureclip.core.llm import create_llm

    with StandInLLMServer(
        lambda r: Reply('{"error": "slow down"}', 429, {"Retry-After": "120"})
    ) as server:
        config = settings(server, max_retries=2, max_retry_wait_s=0.2, timeout_s=2)

        async def one() -> Any:
            async with create_llm(config) as llm:
                return await llm.complete([{"role": "user", "content": "hi"}])

        start = time.monotonic()
        with pytest.raises(LLMError, match="after 3 tries: HTTP 429"):
            run(one())
        elapsed = time.monotonic() - start
    assert len(server.requests) == 3
    assert elapsed < 5, f"waited {elapsed:.1f}s: Retry-After was not capped"


def test_retry_after_dates_and_seconds_parse() -> None:
    from email.utils import formatdate

    from cultureclip.core.retry import backoff_delay, parse_retry_after

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    when = formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(when, now=1_000_000) == pytest.approx(30.0)
    common = dict(base_s=1.0, max_backoff_s=30.0, max_wait_s=5.0, jitter=False)
    assert backoff_delay(1, retry_after="120", **common) == 5.0
    assert backoff_delay(3, **common) == 4.0


def test_a_half_valid_caption_answer_keeps_its_valid_half(tmp_path: Path) -> None:
    """2 of 4 captions pass the stage's checks: they are kept, 2 more are asked for."""
    good = ["an erhu with two strings on a table", "a musician bows the two strings"]
    bad = ["an erhu " + "and many more words " * 4 + "strings", "a photo of a fiddle"]
    more = ["two strings of an erhu in warm light", good[0], "close-up of the strings"]
    answers = iter([json.dumps({"captions": [good[0], bad[0], good[1], bad[1]]}),
                    json.dumps({"captions": more})])  # fmt: skip
    with StandInLLMServer(lambda r: next(answers)) as server:
        config = SynthConfig.model_validate(
            {"out": str(tmp_path), "progress": False,
             "llm": settings(server, max_attempts=2).model_dump(), "captions": {"n": 4}}
        )  # fmt: skip
        ctx = SynthContext(config)
        side = Side("Erhu", "fiddle", "two strings", "Art", "CN")
        report = run_captions(ctx, [side])
    assert report.done == 1 and len(server.requests) == 2
    record = ctx.store("captions").get(caption_key(ctx, side))
    assert record["captions"] == [*good, more[0], more[2]]
    feedback = server.requests[1]["messages"][-1]["content"]
    assert "Write 2 more captions" in feedback
    (ledger,) = read_jsonl(tmp_path / "work" / "failures.jsonl")
    assert open_failures(tmp_path / "work") == []  # a result: nothing left open
    assert [(d["attempt"], d["item"]) for d in ledger["dropped"]] == [
        (0, bad[0]),
        (0, bad[1]),
        (1, good[0]),
    ]
    reasons = [d["reason"] for d in ledger["dropped"]]
    assert "words" in reasons[0] and "key visual features" in reasons[1]
    assert reasons[2] == "repeats an earlier one"
