"""The backend interface of a chat model, its registry, and chat messages with images."""

from __future__ import annotations

import base64
import io
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from cultureclip.core.llm.settings import LLMSettings
from cultureclip.core.registry import Registry

Message = dict[str, Any]


class LLMError(RuntimeError):
    """The backend could not produce an answer (server down, HTTP error after retries, bad setup)."""


class LLMBackend(ABC):
    """One chat model. ``complete`` is async so many requests can be in flight."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings

    @property
    def model_id(self) -> str:
        return self.settings.model_id

    @abstractmethod
    async def complete(
        self,
        messages: list[Message],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> str:
        """The assistant's text for ``messages``."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Releases connections or memory."""

    async def __aenter__(self) -> LLMBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


#: built-in backends are the modules of ``core/llm/backends/``; plugins use the entry points
LLMS: Registry[type[LLMBackend]] = Registry(
    "LLM backend", package="cultureclip.core.llm.backends", entry_point_group="cultureclip.llms"
)


def create_llm(settings: LLMSettings) -> LLMBackend:
    return LLMS.create(settings.backend, settings)


def image_data_url(image: Any, format: str = "PNG") -> str:
    """Encodes a PIL image as an inline ``data:`` URL (how OpenAI-style APIs take images)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=format)
    mime = "jpeg" if format.upper() in ("JPG", "JPEG") else format.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def user_message(text: str, images: Sequence[Any] = ()) -> Message:
    """A user turn with the images first (as data URLs), then the text."""
    if not images:
        return {"role": "user", "content": text}
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}} for image in images
    ]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def with_images(messages: list[Message], images: Sequence[Any]) -> list[Message]:
    """``messages`` with ``images`` put inline in the final (text) user turn."""
    if not images:
        return messages
    return [*messages[:-1], user_message(str(messages[-1]["content"]), images)]


def text_only(message: Message) -> Message:
    """The message with the text parts of multi-part content joined (for text-only models)."""
    content = message.get("content")
    if isinstance(content, list):
        text = "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
        return {**message, "content": text}
    return message
