"""Structured asking: parse the answer into a pydantic schema, check it, and on a malformed
answer ask again with the error fed back. An answer that never validates comes back as a
failed :class:`Outcome` carrying the raw text of every attempt; callers record it as a
failure, never as a result."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from cultureclip.core.llm.base import LLMBackend, LLMError, Message
from cultureclip.core.llm.prompts import PromptTemplate

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R")

FEEDBACK_PREFIX = "Your answer was rejected"
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Parses the JSON in a model answer: bare, in a ``` fence, or an object inside prose.

    Tried in order: each fenced block, the whole answer, then the first ``{`` from which
    a JSON object decodes (so chatter with braces after the object does not spoil it).
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        try:
            return json.loads(candidate.strip())
        except json.JSONDecodeError:
            continue
    decoder, first_error = json.JSONDecoder(), None
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            return decoder.raw_decode(text, start)[0]
        except json.JSONDecodeError as exc:
            first_error = first_error or exc
    if first_error is None:
        raise ValueError("the answer holds no JSON object")
    raise ValueError(f"the answer is not valid JSON: {first_error}")


@dataclass
class Outcome(Generic[R]):
    """What :func:`ask` got: a validated value, or the error and every raw answer."""

    value: R | None
    error: str = ""
    raw: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None and not self.error


def format_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


async def ask(
    llm: LLMBackend,
    prompt: PromptTemplate | None,
    variables: dict[str, Any],
    schema: type[A],
    *,
    check: Callable[[A], R] | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    messages: list[Message] | None = None,
) -> Outcome[R]:
    """Asks until the answer parses into ``schema`` and passes ``check`` (or attempts run out).

    ``check`` turns the parsed answer into the value to keep and raises ``ValueError`` with a
    message the model can act on. ``messages`` replaces the rendered prompt (images inline).
    Transport errors (:class:`LLMError`) are returned as a failed outcome too.
    """
    if messages is None and prompt is None:
        raise ValueError("ask needs a prompt or messages")
    conversation = list(messages) if messages is not None else prompt.messages(variables)  # type: ignore[union-attr]
    raw: list[str] = []
    error = ""
    attempts = llm.settings.max_attempts
    for attempt in range(attempts):
        try:
            text = await llm.complete(
                conversation,
                schema=schema,
                temperature=temperature,
                seed=None if seed is None else seed + attempt,
            )
        except LLMError as exc:
            return Outcome(None, f"llm error: {exc}", raw)
        raw.append(text)
        try:
            parsed = schema.model_validate(extract_json(text))
            value = check(parsed) if check is not None else parsed
            return Outcome(value, "", raw)  # type: ignore[arg-type]
        except (ValidationError, ValueError) as exc:
            error = format_error(exc)
        # Feed the problem back so the next attempt can fix it, not repeat it.
        conversation = [
            *conversation,
            {"role": "assistant", "content": text},
            {
                "role": "user",
                "content": f"{FEEDBACK_PREFIX}: {error}. Answer again with corrected JSON only.",
            },
        ]
    return Outcome(None, f"invalid answer after {attempts} attempt(s): {error}", raw)
