"""``openai``: any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, Ollama,
llama.cpp server, hosted APIs) over ``httpx``, with a concurrency limit, timeouts and
retries (``core.retry``) on 429/5xx, timeouts, refused connections and malformed replies.
Other 4xx are the caller's mistake and fail at once with the server's message."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
from pydantic import BaseModel

from cultureclip.core.llm.base import LLMS, LLMBackend, LLMError, Message
from cultureclip.core.llm.settings import LLMSettings
from cultureclip.core.retry import RETRY_STATUS, backoff_delay


class _Retry(Exception):
    """One try failed in a way worth another (its message says how)."""


@LLMS.register("openai")
class OpenAICompatibleLLM(LLMBackend):
    """OpenAI-compatible chat completions over HTTP (vLLM, Ollama, llama.cpp, hosted APIs)."""

    def __init__(self, settings: LLMSettings) -> None:
        super().__init__(settings)
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(settings.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(
            max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
        )
        # Requests beyond the limit wait here, not in httpx's pool (whose wait is timed).
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s)),
            limits=limits,
        )
        self.stats = {"requests": 0, "retries": 0, "failures": 0}

    def _payload(
        self,
        messages: list[Message],
        schema: type[BaseModel] | None,
        temperature: float | None,
        seed: int | None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature if temperature is None else temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if seed is not None:
            payload["seed"] = seed
        if schema is not None and self.settings.json_mode == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
            }
        elif schema is not None and self.settings.json_mode == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> str:
        payload = self._payload(messages, schema, temperature, seed)
        settings, last_error, retry_after = self.settings, "", None
        async with self._slots:
            for attempt in range(settings.max_retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                    await asyncio.sleep(
                        backoff_delay(
                            attempt,
                            base_s=settings.backoff_s,
                            max_backoff_s=settings.max_retry_wait_s,
                            retry_after=retry_after,
                            max_wait_s=settings.max_retry_wait_s,
                        )
                    )
                self.stats["requests"] += 1
                try:
                    return await self._try(payload)
                except _Retry as exc:
                    last_error, retry_after = exc.args[0], exc.args[1]
        self.stats["failures"] += 1
        raise LLMError(
            f"no answer from {settings.base_url} after {settings.max_retries + 1} tries: {last_error}"
        )

    async def _try(self, payload: dict[str, Any]) -> str:
        """One request: the reply text, :class:`_Retry` (error, Retry-After) or LLMError."""
        try:
            response = await self._client.post("/chat/completions", json=payload)
        except httpx.TimeoutException as exc:
            raise _Retry(
                f"{type(exc).__name__}: timed out after {self.settings.timeout_s}s", None
            ) from None
        except httpx.TransportError as exc:
            raise _Retry(f"{type(exc).__name__}: connection error: {exc}", None) from None
        if response.status_code in RETRY_STATUS:
            raise _Retry(
                f"HTTP {response.status_code}: {response.text[:300]}",
                response.headers.get("retry-after"),
            )
        if response.status_code != 200:
            self.stats["failures"] += 1
            hint = ""
            if "response_format" in response.text:
                hint = " (the server may not support JSON mode: set llm.json_mode=none)"
            raise LLMError(
                f"{self.settings.base_url} refused the request: "
                f"HTTP {response.status_code}: {response.text[:300]}{hint}"
            )
        return _message_text(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _message_text(response: Any) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        # A cut or garbled body is usually the server's passing trouble: tried again.
        raise _Retry(f"malformed chat completion: {response.text[:200]}", None) from None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""
