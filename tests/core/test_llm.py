"""The one LLM client: JSON extraction, settings, the feedback loop and the sync wrapper."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from cultureclip.core.llm import (
    FEEDBACK_PREFIX,
    LLMS,
    Items,
    LLMBackend,
    LLMSettings,
    Message,
    SyncLLM,
    ask,
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


class Scripted(LLMBackend):
    """A backend that answers from a script and remembers every conversation it was sent."""

    def __init__(self, answers: list[str], **settings: Any) -> None:
        super().__init__(LLMSettings(model="scripted", **settings))
        self.answers, self.sent = iter(answers), []

    async def complete(self, messages: list[Message], **params: Any) -> str:
        self.sent.append(messages)
        return next(self.answers)


class Pick(BaseModel):
    words: list[str]


def short_word(word: str) -> str:
    if len(word) > 5:
        raise ValueError("longer than 5 letters")
    return word


def ask_scripted(llm: Scripted, schema: type[BaseModel], items: Items | None) -> Any:
    messages = [{"role": "user", "content": "Give words."}]
    return asyncio.run(ask(llm, None, {}, schema, messages=messages, items=items))


def test_a_half_valid_answer_keeps_its_valid_half_and_asks_only_for_the_rest() -> None:
    llm = Scripted(
        [
            json.dumps({"words": ["tea", "toolong", "cup", "enormous"]}),
            json.dumps({"words": ["tea", "pot", "kettle"]}),  # a repeat, a new one, a bad one
        ]
    )
    items = Items("words", need=3, check=short_word, same=str.lower)
    outcome = ask_scripted(llm, Pick, items)
    assert outcome.ok and outcome.value.words == ["tea", "cup", "pot"]
    assert len(outcome.raw) == 2
    # The second request names what was kept and asks for the one missing word only.
    feedback = llm.sent[1][-1]["content"]
    assert feedback.startswith(FEEDBACK_PREFIX) and '["tea", "cup"]' in feedback
    assert "Write 1 more words" in feedback and "longer than 5 letters" in feedback
    dropped = {(d["attempt"], d["item"]): d["reason"] for d in outcome.dropped}
    assert dropped == {
        (0, "toolong"): "longer than 5 letters",
        (0, "enormous"): "longer than 5 letters",
        (1, "tea"): "repeats an earlier one",
        (1, "kettle"): "longer than 5 letters",
    }


def test_without_items_a_half_valid_answer_is_thrown_away_whole() -> None:
    def strict(answer: Pick) -> Pick:
        for word in answer.words:
            short_word(word)
        return answer

    answers = [json.dumps({"words": ["tea", "toolong"]}), json.dumps({"words": ["pot"]})]
    llm = Scripted(answers)
    outcome = asyncio.run(
        ask(llm, None, {}, Pick, messages=[{"role": "user", "content": "x"}], check=strict)
    )
    assert outcome.value.words == ["pot"]  # "tea" was lost with its answer
    assert outcome.dropped == [
        {"attempt": 0, "item": {"words": ["tea", "toolong"]}, "reason": "longer than 5 letters"}
    ]


def test_a_cut_off_answer_keeps_its_finished_items() -> None:
    llm = Scripted(['{"words": ["tea", "cup", "po', json.dumps({"words": ["pot"]})])
    outcome = ask_scripted(llm, Pick, Items("words", need=3))
    assert outcome.ok and outcome.value.words == ["tea", "cup", "pot"]


def test_items_run_out_of_attempts_with_too_few_valid_ones() -> None:
    llm = Scripted([json.dumps({"words": ["tea", "enormous"]})] * 2, max_attempts=2)
    outcome = ask_scripted(llm, Pick, Items("words", need=3, check=short_word, same=str))
    assert not outcome.ok and "invalid answer after 2 attempt(s)" in outcome.error
    assert [d["reason"] for d in outcome.dropped].count("longer than 5 letters") == 2


def test_with_no_count_needed_what_is_valid_at_the_end_is_the_answer() -> None:
    llm = Scripted([json.dumps({"words": ["tea", "enormous"]})] * 2, max_attempts=2)
    outcome = ask_scripted(llm, Pick, Items("words", check=short_word, same=str))
    assert outcome.ok and outcome.value.words == ["tea"]


class Scores(BaseModel):
    taste: int = Field(ge=1, le=5)
    smell: int = Field(ge=1, le=5)


def test_fields_as_items_keep_the_valid_fields() -> None:
    llm = Scripted([json.dumps({"taste": 4, "smell": 9}), json.dumps({"taste": 1, "smell": 3})])
    outcome = ask_scripted(llm, Scores, Items())
    assert outcome.ok and (outcome.value.taste, outcome.value.smell) == (4, 3)
    feedback = llm.sent[1][-1]["content"]
    assert "taste are valid and kept" in feedback and "smell corrected" in feedback
    assert outcome.dropped == [
        {"attempt": 0, "item": {"smell": 9}, "reason": "Input should be less than or equal to 5"}
    ]
