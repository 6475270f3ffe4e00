"""The one LLM client: JSON extraction, settings, the feedback loop and the sync wrapper."""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

from cultureclip.core.llm import (
    FEEDBACK_PREFIX,
    LLMS,
    LLMSettings,
    SyncLLM,
    extract_json,
    image_data_url,
    load_prompt,
    user_message,
)
from cultureclip.synth.standin import Reply, StandInLLMServer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # inputs the synth version read
        ('Sure!\n```json\n{"a": 1}\n```', {"a": 1}),
        ('  {"a": 1}  ', {"a": 1}),
        ('Here you go: {"a": {"b": [1, 2]}} — enjoy', {"a": {"b": [1, 2]}}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        # inputs the eval version read (and the synth version did not)
        ("[1, 2]", [1, 2]),
        ('```json\n{"a": 1,}\n``` but really {"a": 2}', {"a": 2}),  # a bad fence, a good object
        # chatter with braces after the object (neither version read it)
        ('{"correct": true} (I am {fairly} sure)', {"correct": True}),
    ],
)
def test_extract_json_reads_what_either_old_version_read(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_extract_json_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("I cannot help with that")
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json('{"a": 1,}')


def test_settings_take_the_eval_names_and_say_what_decides_an_answer() -> None:
    settings = LLMSettings.model_validate({"timeout": 3, "backoff": 0, "max_backoff": 2})
    assert (settings.timeout_s, settings.backoff_s, settings.max_retry_wait_s) == (3, 0, 2)
    identity = settings.identity()
    assert identity["model"] == settings.model and "timeout_s" not in identity
    assert "base_url" not in identity  # the same model on another server answers the same
    assert {"openai", "transformers"} <= set(LLMS.names())


def test_images_go_inline_as_data_urls() -> None:
    image = Image.new("RGB", (4, 4), (255, 0, 0))
    assert image_data_url(image).startswith("data:image/png;base64,")
    assert image_data_url(image, "JPEG").startswith("data:image/jpeg;base64,")
    message = user_message("what is it?", [image])
    assert [part["type"] for part in message["content"]] == ["image_url", "text"]
    assert user_message("hi") == {"role": "user", "content": "hi"}


class Verdict(BaseModel):
    correct: bool


def test_sync_client_asks_many_with_feedback_and_keeps_order() -> None:
    answers = {"0": ["nope", '{"correct": true}'], "1": ['{"correct": false}']}

    def respond(request: dict[str, Any]) -> Reply | str:
        first = request["messages"][0]["content"]
        retried = request["messages"][-1]["content"].startswith(FEEDBACK_PREFIX)
        script = answers[first]
        return script[1] if retried and len(script) > 1 else script[0]

    with StandInLLMServer(respond) as server:
        settings = LLMSettings(model="m", base_url=server.base_url, backoff_s=0, concurrency=2)
        with SyncLLM(settings) as llm:
            outcomes = llm.ask_many(
                [[{"role": "user", "content": "0"}], [{"role": "user", "content": "1"}]], Verdict
            )
            again = llm.complete([{"role": "user", "content": "1"}])  # the loop is reused
    assert [o.value.correct for o in outcomes] == [True, False]
    assert outcomes[0].raw == ["nope", '{"correct": true}']
    assert json.loads(again) == {"correct": False}


def test_prompts_of_both_packages_load_through_one_loader() -> None:
    assert load_prompt("captions").id.startswith("captions@")
    builder = load_prompt("build-questions", "cultureclip.eval")
    assert builder.id == "build-questions@1" and "{{" not in builder.render_user(
        {"name": "Kimono", "category": "Clothing", "country": "Japan", "introduction": "A robe.",
         "language": "en"}
    )[:40]  # fmt: skip
