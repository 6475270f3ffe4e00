"""Generative (chat) VLMs answering multiple-choice items with a letter.

Specs, in the :data:`GENERATIVE_MODELS` registry:

- ``openai:<model>@<base_url>`` — any OpenAI-compatible server (vLLM, Ollama, llama.cpp
  server, hosted APIs); ``@<base_url>`` may be left out to use ``$OPENAI_BASE_URL``.
  The key comes from ``$OPENAI_API_KEY`` (optional for local servers).
- ``hf-vlm:<hub id or dir>`` — a local transformers image-text-to-text model
  (``AutoModelForImageTextToText`` + its processor's chat template), greedy decoding.

The prompt shows the question and lettered options (A, B, C, …) and asks for the letter;
:func:`parse_answer_letter` reads the reply robustly ("B", "(B)", "Answer: B", "The
answer is b.", or the option text echoed back). An unreadable reply is recorded as such
and counts as wrong; it is never guessed.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from cultureclip.core.errors import InputError
from cultureclip.eval.items import LETTERS
from cultureclip.eval.openai_client import ChatClient, ChatError, user_message
from cultureclip.registry import Registry

ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class MCQPrompt:
    """What a generative model is asked: one image, a question, the options."""

    image: Image.Image
    question: str
    options: list[str]

    def text(self) -> str:
        lines = [self.question.strip()] if self.question.strip() else []
        lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(self.options)]
        lines.append(ANSWER_INSTRUCTION)
        return "\n".join(lines)


@dataclass
class GenerationOutcome:
    """One reply (or the error that stopped it)."""

    reply: str | None
    error: str | None = None


_PATTERNS = [
    # "Answer: B", "answer is (b)", "correct option is B."
    re.compile(
        r"\b(?:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*\(?([A-Z])\)?(?![A-Za-z])",
        re.IGNORECASE,
    ),
    # a reply that starts with the letter: "B", "B.", "(B)", "B) kimono", "**B**"
    re.compile(r"^[\s*\"'`\[]*\(?([A-Z])\)?(?:[\s.:,)\]*\"'`]|$)"),
    # a letter in brackets anywhere: "... so (C)."
    re.compile(r"\(([A-Z])\)"),
]


def parse_answer_letter(reply: str, options: Sequence[str]) -> int | None:
    """Index of the option a reply picks, or ``None`` when it cannot be told.

    Tries, in order: an explicit "answer/option is X", a leading letter, a bracketed
    letter, then the option text itself when exactly one option's text appears in the
    reply. Letters beyond the number of options are ignored.
    """
    text = reply.strip()
    valid = LETTERS[: len(options)]
    for pattern in _PATTERNS:
        flags_upper = pattern.flags & re.IGNORECASE
        for match in pattern.finditer(text):
            letter = match.group(1).upper() if flags_upper else match.group(1)
            if letter in valid:
                return valid.index(letter)
    # lowercase lone letter ("b", "b.") — only when the whole reply is that short
    short = re.fullmatch(r"[\s(]*([a-z])[\s).:]*", text)
    if short and short.group(1).upper() in valid:
        return valid.index(short.group(1).upper())
    lowered = text.lower()
    echoed = [
        i
        for i, option in enumerate(options)
        if option.strip() and option.strip().lower() in lowered
    ]
    if len(echoed) > 1:
        # "Hanbok" inside "Hanbok dress": keep only options not contained in another match
        echoed = [
            i
            for i in echoed
            if not any(j != i and options[i].lower() in options[j].lower() for j in echoed)
        ]
    return echoed[0] if len(echoed) == 1 else None


class GenerativeModel(ABC):
    """A chat VLM that answers :class:`MCQPrompt` s."""

    spec: str = ""

    @abstractmethod
    def generate(self, prompts: Sequence[MCQPrompt]) -> list[GenerationOutcome]:
        """Replies in input order; a failed request is an outcome with ``error`` set."""


GENERATIVE_MODELS: Registry[type[GenerativeModel]] = Registry("generative model backend")


@GENERATIVE_MODELS.register("openai", help="OpenAI-compatible chat API: openai:<model>@<base_url>")
class OpenAIChatModel(GenerativeModel):
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, argument: str, **client_options: Any) -> None:
        model, _, base_url = argument.partition("@")
        if not model:
            raise InputError(
                f"openai spec needs a model name: 'openai:<model>@<base_url>', got {argument!r}"
            )
        client_options.setdefault("max_tokens", 16)
        self.client = ChatClient(model, base_url or None, **client_options)
        self.spec = f"openai:{model}@{self.client.base_url}"

    def generate(self, prompts: Sequence[MCQPrompt]) -> list[GenerationOutcome]:
        conversations = [[user_message(p.text(), [p.image])] for p in prompts]
        replies = self.client.complete_many(conversations)
        return [
            GenerationOutcome(None, str(r)) if isinstance(r, ChatError) else GenerationOutcome(r)
            for r in replies
        ]


@GENERATIVE_MODELS.register(
    "hf-vlm", help="local transformers image-text-to-text model: hf-vlm:<hub id or dir>"
)
class HFVisionChatModel(GenerativeModel):
    """A local ``AutoModelForImageTextToText`` (LLaVA, Qwen2-VL, Idefics, …) on CPU or GPU.

    Uses the processor's chat template with one image and the lettered prompt, greedy
    decoding of ``max_new_tokens`` tokens, one prompt at a time (chat VLM processors
    differ in how they batch images; correctness first).
    """

    def __init__(
        self, argument: str, *, device: str | None = None, max_new_tokens: int = 8
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.spec = f"hf-vlm:{argument}"
        self.processor = AutoProcessor.from_pretrained(argument)
        self.model = AutoModelForImageTextToText.from_pretrained(argument, dtype=torch.float32)
        self.model.to(device or "cpu").eval()
        self.max_new_tokens = max_new_tokens

    def generate(self, prompts: Sequence[MCQPrompt]) -> list[GenerationOutcome]:
        import torch

        outcomes = []
        for prompt in prompts:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": prompt.text()}],
                }
            ]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = self.processor(images=[prompt.image], text=text, return_tensors="pt").to(
                self.model.device
            )
            with torch.no_grad():
                output = self.model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, do_sample=False
                )
            new_tokens = output[0, inputs["input_ids"].shape[1] :]
            outcomes.append(
                GenerationOutcome(self.processor.decode(new_tokens, skip_special_tokens=True))
            )
        return outcomes


def is_generative_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.partition(":")[0] in GENERATIVE_MODELS


def create_generative_model(spec: str, **options: Any) -> GenerativeModel:
    """Builds a generative model from ``openai:<model>@<url>`` or ``hf-vlm:<id or dir>``."""
    backend, _, argument = spec.partition(":")
    if not argument:
        raise InputError(f"generative model spec {spec!r} must look like <backend>:<argument>")
    return GENERATIVE_MODELS.create(backend, argument, **options)
