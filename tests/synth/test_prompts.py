from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cultureclip.core.llm import PromptError, extract_json, list_prompts, load_prompt
from cultureclip.synth.schemas import (
    CaptionsAnswer,
    ConceptsAnswer,
    JudgeAnswer,
    TwinAnswer,
    check_captions,
    judge_passes,
    word_count,
)

SCHEMAS = {
    "concepts": ConceptsAnswer,
    "twins": TwinAnswer,
    "captions": CaptionsAnswer,
    "judge": JudgeAnswer,
}


@pytest.mark.parametrize("name", list_prompts())
def test_builtin_prompts_render_with_their_examples(name: str) -> None:
    prompt = load_prompt(name)
    assert prompt.id == f"{name}@{prompt.version}" and prompt.version >= 1
    variables = dict(prompt.examples[0]["variables"]) if prompt.examples else {}
    if not prompt.examples:  # the judge has no few-shot examples; give its variables
        variables = {
            "concept": "Erhu",
            "country_name": "China",
            "category": "Art",
            "caption": "an erhu",
        }
    messages = prompt.messages(variables)
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert len(messages) == 2 + 2 * len(prompt.examples)
    for example in prompt.examples:  # few-shot answers must themselves be valid answers
        data = json.loads(example["answer"])
        if name in SCHEMAS:
            SCHEMAS[name].model_validate(data)


def test_missing_variable_and_unknown_prompt_are_explicit_errors() -> None:
    with pytest.raises(PromptError, match="needs variable"):
        load_prompt("captions").messages({"concept": "x"})
    with pytest.raises(PromptError, match="no built-in prompt"):
        load_prompt("nope")


def test_twin_answer_with_empty_neg_features_is_invalid() -> None:
    with pytest.raises(ValidationError, match="neg_features"):
        TwinAnswer.model_validate(
            {"neg_concept": "Guzheng", "neg_country": "CN", "neg_context": "x", "neg_features": " "}
        )
    ok = TwinAnswer.model_validate(
        {"neg_concept": "a", "neg_country": "KR", "neg_context": "b", "neg_features": ["c", "d"]}
    )
    assert ok.neg_features == "c; d"


def test_caption_checks_count_words_and_features() -> None:
    good = CaptionsAnswer(captions=["an erhu with two strings", "erhu on a stage, two strings"])
    assert (
        check_captions(good, n=2, max_words=15, features="two strings", require_features=True)
        == good.captions
    )
    long = CaptionsAnswer(captions=["erhu strings " + "word " * 14, "erhu strings"])
    with pytest.raises(ValueError, match="caption 1 has 16 words"):
        check_captions(long, n=2, max_words=15, features="strings", require_features=True)
    with pytest.raises(ValueError, match="mention none of the key visual features"):
        check_captions(good, n=2, max_words=15, features="python skin", require_features=True)
    with pytest.raises(ValueError, match="expected 3 different captions"):
        check_captions(good, n=3, max_words=15, features="", require_features=True)
    assert word_count("a red-and-white lattice tower") == 4


@pytest.mark.parametrize(
    ("scores", "passed"),
    [
        ((4, 4, 4), True),
        ((5, 5, 1), False),
        ((3, 3, 3), False),
        ((2, 4, 4), True),
        ((2, 3, 4), False),
    ],
)
def test_judge_rule_no_one_and_mean_above_three(scores: tuple[int, int, int], passed: bool) -> None:
    assert judge_passes(dict(zip("acf", scores, strict=True))) is passed


def test_extract_json_tolerates_fences_and_rejects_garbage() -> None:
    assert extract_json('Sure!\n```json\n{"a": 1}\n```') == {"a": 1}
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("I cannot help with that")
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json('{"a": 1,}')
