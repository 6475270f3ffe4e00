"""Structured asking: parse the answer into a pydantic schema, check it, and on a malformed
answer ask again with the error fed back. An answer that never validates comes back as a
failed :class:`Outcome` carrying the raw text of every attempt; callers record it as a
failure, never as a result. With :class:`Items`, a partly valid answer keeps its valid
items and only the missing ones are asked for again."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar, get_args

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

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
    """What :func:`ask` got: a validated value, or the error and every raw answer.

    ``dropped`` names what was thrown away on the way, whether the outcome is ok or not:
    an item of a partly valid answer (``{"attempt", "item", "reason"}``) or a whole answer
    that could not be used (``item`` is ``None`` when it did not parse).
    """

    value: R | None
    error: str = ""
    raw: list[str] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None and not self.error


@dataclass(frozen=True)
class Items:
    """Where an answer's items are, so that a partly valid answer keeps its valid part.

    ``field`` names the list field that holds the items (captions, concepts); ``None``
    makes each field of the answer an item (a question set, judge scores). Valid items are
    kept across attempts and the model is asked again only for what is missing.

    - ``need``: valid items that complete a list answer; ``None``: as many as it gave
      (every invalid one is asked for again, and what is valid at the end is kept);
    - ``check``: one item -> the item to keep, or ``ValueError`` saying why it is dropped;
    - ``same``: what makes two items repeats of each other (the later one is dropped);
    - ``decode``: a JSON schema of one list item that decoding follows where the backend
      decodes under the schema (``json_mode=json_schema``), e.g. a word-count pattern; it
      shapes what is written, the checks above still decide what is kept.

    A list answer is decoded with at most the missing number of items.
    """

    field: str | None = None
    need: int | None = None
    check: Callable[[Any], Any] | None = None
    same: Callable[[Any], Hashable] | None = None
    decode: dict[str, Any] | None = None


def format_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def _item_error(exc: Exception) -> str:
    # An item is validated on its own: its errors have no location but within the item.
    return format_error(exc).replace("answer: ", "")


def _parse(text: str, salvage: bool) -> Any:
    """The answer's JSON; with ``salvage``, what a cut-off object holds up to the cut
    (an answer that ran out of tokens keeps its finished items)."""
    try:
        return extract_json(text)
    except ValueError:
        start = text.find("{")
        if not salvage or start < 0:
            raise
        try:
            return pydantic_core.from_json(text[start:], allow_partial=True)
        except ValueError:
            raise ValueError("the answer is not valid JSON, not even up to a cut") from None


def _feedback(message: str) -> Message:
    return {"role": "user", "content": f"{FEEDBACK_PREFIX}{message}"}


class _Collector:
    """The valid items kept so far across attempts, and what was dropped and why."""

    def __init__(self, schema: type[BaseModel], items: Items) -> None:
        self.schema, self.items = schema, items
        fields = schema.model_fields
        if items.field is not None:
            (item_type,) = get_args(fields[items.field].annotation) or (Any,)
            self.adapters = {items.field: TypeAdapter(item_type)}
        else:
            self.adapters = {
                name: TypeAdapter(
                    Annotated[info.annotation, *info.metadata]  # type: ignore[misc]
                    if info.metadata
                    else info.annotation
                )
                for name, info in fields.items()
            }
        self.missing = items.need
        self.list: list[Any] = []
        self.fields: dict[str, Any] = {}
        self.seen: set[Hashable] = set()
        self.dropped: list[dict[str, Any]] = []
        self.last: dict[str, Any] = {}

    def drop(self, attempt: int, item: Any, reason: str) -> None:
        self.dropped.append({"attempt": attempt, "item": item, "reason": reason})

    def take(self, attempt: int, data: Any) -> str:
        """Keeps the valid items of one parsed answer; returns what is still missing ('' if none)."""
        if not isinstance(data, dict):
            raise ValueError(f"the answer must be a JSON object, got {type(data).__name__}")
        self.last = data
        return (
            self._take_list(attempt, data) if self.items.field else self._take_fields(attempt, data)
        )

    def _take_list(self, attempt: int, data: dict[str, Any]) -> str:
        name = self.items.field
        assert name is not None
        given = data.get(name)
        if not isinstance(given, list):
            raise ValueError(f"{name}: the answer needs a list of {name}")
        dropped_now = 0
        for raw_item in given:
            try:
                item = self.adapters[name].validate_python(raw_item)
                if self.items.check is not None:
                    item = self.items.check(item)
                identity = self.items.same(item) if self.items.same else None
                if identity is not None and identity in self.seen:
                    raise ValueError("repeats an earlier one")
            except (ValidationError, ValueError) as exc:
                self.drop(attempt, raw_item, _item_error(exc))
                dropped_now += 1
                continue
            if identity is not None:
                self.seen.add(identity)
            self.list.append(item)
        need = self.items.need
        missing = (need - len(self.list)) if need is not None else dropped_now
        self.missing = missing if need is not None else None
        if missing <= 0:
            return ""
        reasons = "; ".join(
            f"{json.dumps(d['item'], ensure_ascii=False)[:80]}: {d['reason']}"
            for d in self.dropped
            if d["attempt"] == attempt
        )
        kept = json.dumps(
            [TypeAdapter(Any).dump_python(i, mode="json") for i in self.list], ensure_ascii=False
        )
        return (
            f"{len(self.list)} of the {name} are valid and kept: {kept}."
            + (f" Dropped: {reasons}." if reasons else "")
            + f" Write {missing} more {name}, different from the kept ones."
        )

    def _take_fields(self, attempt: int, data: dict[str, Any]) -> str:
        for name, adapter in self.adapters.items():
            if name in self.fields or name not in data:
                continue
            try:
                self.fields[name] = adapter.validate_python(data[name])
            except (ValidationError, ValueError) as exc:
                self.drop(attempt, {name: data[name]}, _item_error(exc))
        missing = [
            name
            for name, info in self.schema.model_fields.items()
            if info.is_required() and name not in self.fields
        ]
        if not missing:
            return ""
        reasons = "; ".join(
            f"{next(iter(d['item']))}: {d['reason']}"
            for d in self.dropped
            if d["attempt"] == attempt
        )
        return (
            (f"{', '.join(sorted(self.fields))} are valid and kept. " if self.fields else "")
            + (f"Dropped: {reasons}. " if reasons else "")
            + f"Answer again with {', '.join(missing)} corrected."
        )

    def decoding_schema(self) -> type[BaseModel]:
        """The schema decoding follows: at most the missing items, each shaped by ``decode``."""
        name = self.items.field
        if name is None or (self.missing is None and self.items.decode is None):
            return self.schema
        shape = self.schema.model_json_schema()
        listed = shape["properties"][name]
        if self.missing is not None:
            listed["maxItems"] = max(self.missing, listed.get("minItems", 0))
        if self.items.decode is not None:
            listed["items"] = self.items.decode

        class Decoding(self.schema):  # type: ignore[name-defined,misc]
            @classmethod
            def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
                return shape

        Decoding.__name__ = self.schema.__name__
        return Decoding

    def answer(self) -> BaseModel:
        if self.items.field is not None:
            return self.schema.model_validate({**self.last, self.items.field: self.list})
        return self.schema.model_validate({**self.last, **self.fields})

    @property
    def anything(self) -> bool:
        return bool(self.list or self.fields)


async def ask(
    llm: LLMBackend,
    prompt: PromptTemplate | None,
    variables: dict[str, Any],
    schema: type[A],
    *,
    check: Callable[[A], R] | None = None,
    items: Items | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    messages: list[Message] | None = None,
) -> Outcome[R]:
    """Asks until the answer parses into ``schema`` and passes ``check`` (or attempts run out).

    ``check`` turns the parsed answer into the value to keep and raises ``ValueError`` with a
    message the model can act on. ``messages`` replaces the rendered prompt (images inline).
    With ``items``, the valid items of a partly valid answer are kept and only the missing
    ones are asked for again (see :class:`Items`); every dropped item is in the outcome.
    Transport errors (:class:`LLMError`) are returned as a failed outcome too.
    """
    if messages is None and prompt is None:
        raise ValueError("ask needs a prompt or messages")
    conversation = list(messages) if messages is not None else prompt.messages(variables)  # type: ignore[union-attr]
    raw: list[str] = []
    error = ""
    attempts = llm.settings.max_attempts
    collector = _Collector(schema, items) if items is not None else None
    dropped = collector.dropped if collector is not None else []
    for attempt in range(attempts):
        try:
            text = await llm.complete(
                conversation,
                schema=collector.decoding_schema() if collector is not None else schema,
                temperature=temperature,
                seed=None if seed is None else seed + attempt,
            )
        except LLMError as exc:
            return Outcome(None, f"llm error: {exc}", raw, dropped)
        raw.append(text)
        data: Any = None
        try:
            data = _parse(text, salvage=collector is not None)
            if collector is None:
                parsed: Any = schema.model_validate(data)
            else:
                missing = collector.take(attempt, data)
                if missing:
                    error = missing
                    conversation = [
                        *conversation,
                        {"role": "assistant", "content": text},
                        _feedback(f" in part: {missing} Answer with JSON only."),
                    ]
                    continue
                parsed = collector.answer()
        except (ValidationError, ValueError) as exc:
            error = format_error(exc)
            dropped.append({"attempt": attempt, "item": data, "reason": error})
        else:
            try:
                return Outcome(check(parsed) if check else parsed, "", raw, dropped)
            except ValueError as exc:
                error = format_error(exc)
                if collector is None:
                    dropped.append({"attempt": attempt, "item": data, "reason": error})
        # Feed the problem back so the next attempt can fix it, not repeat it.
        conversation = [
            *conversation,
            {"role": "assistant", "content": text},
            _feedback(f": {error}. Answer again with corrected JSON only."),
        ]
    if collector is not None and collector.items.need is None and collector.anything:
        # Out of attempts with some items still invalid: what is valid is the answer.
        try:
            parsed = collector.answer()
            return Outcome(check(parsed) if check else parsed, "", raw, dropped)
        except (ValidationError, ValueError) as exc:
            error = format_error(exc)
    return Outcome(None, f"invalid answer after {attempts} attempt(s): {error}", raw, dropped)
