"""Pydantic schemas of the LLM answers, and the checks beyond the schema.

Every answer is parsed into one of these models; anything that does not validate is
retried with the error fed back to the model (see :func:`cultureclip.core.llm.ask`).
The reference CulTwin code parsed twin answers with a mismatched label and silently
left ``neg_features`` empty; here an empty field is a validation error.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints


def _join_list(value: Any) -> Any:
    # Models often answer a feature list where the format wants one string.
    if isinstance(value, list):
        return "; ".join(str(v).strip() for v in value)
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Features = Annotated[Text, BeforeValidator(_join_list)]
OptionalText = Annotated[str, StringConstraints(strip_whitespace=True), BeforeValidator(_join_list)]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ConceptItem(Answer):
    concept: Text
    context: Text
    features: Features


class ConceptsAnswer(Answer):
    concepts: list[ConceptItem] = Field(min_length=1)


class BottomUpAnswer(Answer):
    answer: Literal["yes", "no"]
    category: str | None = None
    country: str | None = None
    context: OptionalText = ""
    features: OptionalText = ""


class TwinAnswer(Answer):
    neg_concept: Text
    neg_country: Text
    neg_context: Text
    neg_features: Features


class CaptionsAnswer(Answer):
    captions: list[Text] = Field(min_length=1)


class JudgeAnswer(Answer):
    authenticity: int = Field(ge=1, le=5)
    consistency: int = Field(ge=1, le=5)
    fidelity: int = Field(ge=1, le=5)


def judge_passes(scores: dict[str, float]) -> bool:
    """CulTwin's rule: an image passes iff no score is 1 and the mean is above 3."""
    values = list(scores.values())
    return bool(values) and min(values) > 1 and sum(values) / len(values) > 3


_WORD = re.compile(r"[\w'-]+", re.UNICODE)
#: a character of a word in decoding patterns (not a space, nor what splits a _WORD)
_DECODED_WORD = '[^ ,.;:!?/()"&+*=<>|]'
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "with",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "its",
        "it",
        "is",
        "are",
        "as",
        "into",
        "over",
        "under",
    ]
)


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def feature_words(features: str) -> set[str]:
    """Content words of a feature description, lower-cased (stop words dropped)."""
    return {
        w.lower() for w in _WORD.findall(features) if len(w) > 2 and w.lower() not in _STOPWORDS
    }


def mentions_feature(caption: str, words: set[str]) -> bool:
    # A shared 4-letter prefix counts, so "pleats" matches "pleated" without a stemmer.
    caption_words = {w.lower() for w in _WORD.findall(caption)}
    return any(c[:4] == f[:4] and min(len(c), len(f)) >= 3 for c in caption_words for f in words)


def caption_shape(max_words: int, features: str, require_features: bool) -> dict[str, Any]:
    """A JSON schema of one caption for decoding: fewer than ``max_words`` words and, when
    features are required, one of the feature words among the first half. Decoding under
    it writes captions that pass :func:`check_caption`; the check still decides."""
    # a word and at most one punctuation mark after it: one word as word_count counts them
    word, most = f"{_DECODED_WORD}{{1,20}}[,.;:!?]?", max_words - 2
    wanted = sorted(feature_words(features)) if require_features else []
    if not wanted:
        return {"type": "string", "pattern": f"^{word}( {word}){{0,{most}}}$"}
    named = "|".join(f"[{w[0].upper()}{w[0]}]{re.escape(w[1:])}" for w in wanted)
    before = most // 2
    return {
        "type": "string",
        "pattern": f"^({word} ){{0,{before}}}({named})(s|es|ed|ing)?[,.;:!?]?"
        f"( {word}){{0,{most - before}}}$",
    }


def caption_problem(
    caption: str, *, max_words: int, features: str, require_features: bool
) -> str | None:
    """Why one caption is not usable (too long, no key visual feature), or ``None``."""
    words = word_count(caption)
    if words >= max_words:
        return f"has {words} words; each must have fewer than {max_words}"
    wanted = feature_words(features)
    if require_features and wanted and not mentions_feature(caption, wanted):
        return f"mentions none of the key visual features ({features})"
    return None


def check_caption(caption: str, *, max_words: int, features: str, require_features: bool) -> str:
    """``caption`` if usable; else ``ValueError`` saying why (the per-item check of ``ask``)."""
    problem = caption_problem(
        caption, max_words=max_words, features=features, require_features=require_features
    )
    if problem:
        raise ValueError(f"this caption {problem}")
    return caption


def check_captions(
    answer: CaptionsAnswer, *, n: int, max_words: int, features: str, require_features: bool
) -> list[str]:
    """Validates caption count, length and feature coverage; returns the first ``n`` captions."""
    problems = []
    captions = list(dict.fromkeys(answer.captions))  # drop exact duplicates, keep order
    if len(captions) < n:
        problems.append(f"expected {n} different captions, got {len(captions)}")
    for number, caption in enumerate(captions[:n], start=1):
        problem = caption_problem(
            caption, max_words=max_words, features=features, require_features=False
        )
        if problem:
            problems.append(f"caption {number} {problem}")
    wanted = feature_words(features)
    if require_features and wanted:
        missing = [
            i for i, c in enumerate(captions[:n], start=1) if not mentions_feature(c, wanted)
        ]
        if missing:
            problems.append(
                f"caption(s) {missing} mention none of the key visual features ({features})"
            )
    if problems:
        raise ValueError("; ".join(problems))
    return captions[:n]
