from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from cultureclip.core.llm import LLMError, LLMSettings, SyncLLM
from cultureclip.eval import evaluate, read_items
from cultureclip.models.generative import (
    GENERATIVE_MODELS,
    create_generative_model,
    parse_answer_letter,
)
from tests.eval.chat_server import chat_server

OPTIONS = ["Kimono", "Hanbok", "Qipao", "Ao dai"]
FAST = {"backoff": 0.0, "timeout": 5.0, "max_retries": 2}


def client_settings(url: str, **options: object) -> LLMSettings:
    return LLMSettings.model_validate({"model": "m", "base_url": url, **options})


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("B", 1),
        ("(B)", 1),
        ("Answer: B", 1),
        ("The answer is b.", 1),
        ("**C**", 2),
        ("D. Ao dai", 3),
        ("b", 1),
        ("I think it is a Hanbok.", 1),
        ("The correct option is (A) Kimono", 0),
        ("Answer: E", None),  # not an option letter
        ("I cannot tell.", None),
        ("Kimono or Hanbok", None),  # ambiguous echo
    ],
)
def test_parse_answer_letter(reply: str, expected: int | None) -> None:
    assert parse_answer_letter(reply, OPTIONS) == expected


def test_registry_and_spec() -> None:
    assert {"openai", "hf-vlm"} <= set(GENERATIVE_MODELS.names())
    model = create_generative_model("openai:my-vlm@http://127.0.0.1:9/v1")
    assert model.spec == "openai:my-vlm@http://127.0.0.1:9/v1"
    with pytest.raises(ValueError):
        create_generative_model("openai:")


def test_generative_mcq_against_loopback_server(mcq_file: Path, tmp_path: Path) -> None:
    replies = ["A", "(A)", "Answer: A", "the answer is a."]

    def behaviour(body, number):
        return 200, replies[number % len(replies)]

    with chat_server(behaviour) as server:
        result = evaluate(
            f"openai:tiny-vlm@{server.url}",
            "cultureverse",
            data=mcq_file,
            out_dir=tmp_path,
            model_name="vlm",
            generative={**FAST, "concurrency": 4},
        )
    items = read_items(mcq_file)
    expected = 100.0 * sum(item.answer == 0 for item in items) / len(items)
    assert result.metrics["accuracy"] == pytest.approx(expected)
    assert result.counts.failed == 0 and result.counts.refused == 0
    # the request carried the model name, lettered options and the image inline as a data URL
    body = server.requests[0]
    assert body["model"] == "tiny-vlm"
    content = body["messages"][0]["content"]
    url = next(part["image_url"]["url"] for part in content if part["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
    assert "A. " in server.prompt_text(body) and "D. " in server.prompt_text(body)


def test_server_errors_then_succeeds() -> None:
    def behaviour(body, number):
        return (500, "overloaded") if number <= 2 else (200, "C")

    with chat_server(behaviour) as server, SyncLLM(client_settings(server.url, **FAST)) as client:
        assert client.complete([{"role": "user", "content": "hi"}]) == "C"
    assert client.backend.stats == {"requests": 3, "retries": 2, "failures": 0}


def test_client_error_is_not_retried() -> None:
    with chat_server(lambda body, number: (400, "bad model name")) as server:
        client = SyncLLM(client_settings(server.url, **FAST))
        with pytest.raises(LLMError, match="400"):
            client.complete([{"role": "user", "content": "hi"}])
        client.close()
    assert len(server.requests) == 1


def test_timeout_is_recorded_then_resumed(mcq_file: Path, tmp_path: Path) -> None:
    def slow_for_scene(body, number):
        if "When is it eaten?" in ChatServerText.of(body):
            return 200, "B", 1.0  # longer than the client's timeout
        return 200, "A"

    options = {"backoff": 0.0, "timeout": 0.3, "max_retries": 1, "concurrency": 6}
    with chat_server(slow_for_scene) as server:
        first = evaluate(
            f"openai:m@{server.url}",
            "cultureverse",
            data=mcq_file,
            out_dir=tmp_path,
            model_name="vlm",
            generative=options,
        )
    assert first.counts.failed == 6  # the six scene questions timed out (twice each)
    failed = [p for p in first.predictions() if p["error"]]
    assert all("timed out" in p["error"] and not p["correct"] for p in failed)

    # rerun with a healthy server: only the failed items are asked again
    with chat_server(lambda body, number: (200, "B")) as healthy:
        second = evaluate(
            f"openai:m@{healthy.url}",
            "cultureverse",
            data=mcq_file,
            out_dir=tmp_path,
            model_name="vlm",
            generative=options,
            overwrite=True,
        )
    assert second.counts.failed == 0
    assert len(healthy.requests) == 18  # --overwrite recomputes everything


def test_partial_predictions_resume_without_overwrite(mcq_file: Path, tmp_path: Path) -> None:
    options = {"backoff": 0.0, "timeout": 0.3, "max_retries": 0, "concurrency": 6}

    def fails_scene(body, number):
        return (503, "busy") if "When is it eaten?" in ChatServerText.of(body) else (200, "A")

    with chat_server(fails_scene) as server:
        evaluate(
            f"openai:m@{server.url}",
            "cultureverse",
            data=mcq_file,
            out_dir=tmp_path / "a",
            model_name="vlm",
            generative=options,
        )
    result_dir = tmp_path / "a" / "cultureverse" / "vlm"
    # simulate a run killed before the result was written: keep only the partial file
    (result_dir / "result.json").unlink()
    partial = result_dir / "predictions.partial.jsonl"
    partial.write_text((result_dir / "predictions.jsonl").read_text())
    with chat_server(lambda body, number: (200, "B")) as healthy:
        resumed = evaluate(
            f"openai:m@{healthy.url}",
            "cultureverse",
            data=mcq_file,
            out_dir=tmp_path / "a",
            model_name="vlm",
            generative=options,
        )
    assert len(healthy.requests) == 6  # only the six failed scene questions were asked again
    assert resumed.counts.failed == 0
    assert not partial.exists()


def test_concurrency_limit() -> None:
    with (
        chat_server(lambda body, number: (200, "A", 0.05)) as server,
        SyncLLM(client_settings(server.url, concurrency=3, **FAST)) as client,
    ):
        replies = client.complete_many([[{"role": "user", "content": str(i)}] for i in range(12)])
    assert replies == ["A"] * 12
    assert 1 < server.max_in_flight <= 3


class ChatServerText:
    @staticmethod
    def of(body) -> str:
        content = body["messages"][-1]["content"]
        return (
            content if isinstance(content, str) else "\n".join(p.get("text", "") for p in content)
        )


def test_stored_answers_are_reused_only_under_the_same_model_settings(
    mcq_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Answers are keyed by item, benchmark options and the model's identity with its
    sampling: a changed ``max_tokens`` reuses nothing; the same settings reuse all."""
    import logging

    options = {"backoff": 0.0, "timeout": 2.0, "max_retries": 0, "concurrency": 6}

    def run(server_url: str, **extra: object) -> None:
        evaluate(f"openai:m@{server_url}", "cultureverse", data=mcq_file, out_dir=tmp_path,
                 model_name="vlm", generative={**options, **extra})  # fmt: skip
        # as if killed before the end: the result is missing, the stored answers are there
        directory = tmp_path / "cultureverse" / "vlm"
        (directory / "result.json").unlink()
        (directory / "predictions.jsonl").rename(directory / "predictions.partial.jsonl")

    with chat_server(lambda body, number: (200, "A")) as server:
        run(server.url)
        assert len(server.requests) == 18
        with caplog.at_level(logging.INFO, logger="cultureclip.models.generative"):
            run(server.url)
        assert len(server.requests) == 18  # same settings: every answer reused
        assert "cultureverse: 18 answers reused, 0 to ask" in caplog.text
        run(server.url, max_tokens=32)
        assert len(server.requests) == 36  # another sampling setting: asked again
