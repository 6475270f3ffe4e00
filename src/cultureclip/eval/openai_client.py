"""A small client for OpenAI-compatible chat servers (vLLM, Ollama, llama.cpp, hosted APIs).

Used by generative scoring and by the benchmark builder. It posts to
``{base_url}/chat/completions`` and handles what real servers do to long runs:

- **retries with exponential backoff** on timeouts, connection errors, HTTP 429 and 5xx
  (``backoff * 2**attempt`` seconds, capped); other 4xx are the caller's mistake and fail
  at once with the server's message;
- **a per-request timeout**;
- **concurrency with a limit**: :meth:`ChatClient.complete_many` runs requests on a thread
  pool of ``concurrency`` workers and returns replies in input order, a failure as a
  :class:`ChatError` object in its slot so one bad request does not lose the rest;
- **structured output**: :meth:`ChatClient.complete_json` validates the reply against a
  pydantic model and, when it does not fit, asks again with the validation error.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
from PIL import Image
from pydantic import BaseModel, ValidationError

from cultureclip.core.errors import InputError
from cultureclip.core.retry import RETRY_STATUS, backoff_delay

Message = dict[str, Any]
M = TypeVar("M", bound=BaseModel)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class ChatError(RuntimeError):
    """A chat request that failed for good (after retries, or with a non-retryable status)."""


def image_data_url(image: Image.Image, format: str = "PNG") -> str:
    """Encodes a PIL image as an inline ``data:`` URL (how OpenAI-style APIs take images)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=format)
    mime = "jpeg" if format.upper() in ("JPG", "JPEG") else format.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def user_message(text: str, images: Sequence[Image.Image] = ()) -> Message:
    """A user turn with the images first (as data URLs), then the text."""
    if not images:
        return {"role": "user", "content": text}
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}} for image in images
    ]
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Parses the JSON object in an LLM reply (bare, in a ``` fence, or embedded in prose)."""
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate.strip())
        except json.JSONDecodeError:
            continue
    raise ValueError(f"no JSON object in reply: {text[:200]!r}")


class ChatClient:
    """Synchronous, thread-safe client of one model on one OpenAI-compatible server."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 8,
        temperature: float = 0.0,
        max_tokens: int = 256,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if concurrency < 1:
            raise InputError("concurrency must be at least 1")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._sleep = sleep
        self._local = threading.local()  # one httpx.Client per worker thread
        self.stats = {"requests": 0, "retries": 0, "failures": 0}
        self._stats_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            client = httpx.Client(timeout=self.timeout, headers=headers)
            self._local.client = client
        return client

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def complete(self, messages: Sequence[Message], **params: Any) -> str:
        """Sends one chat request and returns the reply text; raises :class:`ChatError`."""
        payload = {
            "model": self.model,
            "messages": list(messages),
            "temperature": params.pop("temperature", self.temperature),
            "max_tokens": params.pop("max_tokens", self.max_tokens),
            **params,
        }
        url = f"{self.base_url}/chat/completions"
        last_error = ""
        retry_after: str | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
                self._sleep(
                    backoff_delay(
                        attempt,
                        base_s=self.backoff,
                        max_backoff_s=self.max_backoff,
                        retry_after=retry_after,
                        max_wait_s=self.max_backoff,
                        jitter=False,
                    )
                )
            retry_after = None
            self._count("requests")
            try:
                response = self._client().post(url, json=payload)
            except httpx.TimeoutException:
                last_error = f"timed out after {self.timeout}s"
                continue
            except httpx.TransportError as exc:
                last_error = f"connection error: {exc}"
                continue
            if response.status_code in RETRY_STATUS:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                retry_after = response.headers.get("retry-after")
                continue
            if response.status_code >= 400:
                self._count("failures")
                raise ChatError(
                    f"{url} answered HTTP {response.status_code}: {response.text[:300]}"
                )
            try:
                return str(response.json()["choices"][0]["message"]["content"] or "")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                last_error = f"malformed response ({exc}): {response.text[:200]}"
                continue
        self._count("failures")
        raise ChatError(f"{url} failed after {self.max_retries + 1} attempt(s): {last_error}")

    def complete_many(
        self, conversations: Sequence[Sequence[Message]], **params: Any
    ) -> list[str | ChatError]:
        """Runs many requests, at most ``concurrency`` at a time; results keep input order."""

        def run(messages: Sequence[Message]) -> str | ChatError:
            try:
                return self.complete(messages, **params)
            except ChatError as exc:
                return exc

        if self.concurrency == 1 or len(conversations) <= 1:
            return [run(c) for c in conversations]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(run, conversations))

    def complete_json(
        self, messages: Sequence[Message], schema: type[M], *, attempts: int = 3, **params: Any
    ) -> M:
        """Asks until the reply parses into ``schema`` (feeding the error back each time)."""
        conversation = list(messages)
        problem = ""
        for _ in range(attempts):
            reply = self.complete(conversation, **params)
            try:
                return schema.model_validate(extract_json(reply))
            except (ValueError, ValidationError) as exc:
                problem = str(exc)
                conversation = [
                    *messages,
                    {"role": "assistant", "content": reply},
                    {
                        "role": "user",
                        "content": f"That reply was not valid: {problem[:500]}\n"
                        "Answer again with only the JSON object, following the requested fields exactly.",
                    },
                ]
        raise ChatError(f"no valid {schema.__name__} after {attempts} attempt(s): {problem[:300]}")
