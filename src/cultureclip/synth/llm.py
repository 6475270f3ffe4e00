"""Chat-model backends (``LLMS`` registry) and structured asking with validation and retries.

Two backends ship:

- ``openai``: any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, Ollama,
  llama.cpp server, hosted APIs) over ``httpx`` with a concurrency limit, timeouts and
  retries with exponential backoff on 429/5xx and connection errors;
- ``transformers``: a local ``AutoModelForCausalLM`` with the tokenizer's chat template.

:func:`ask` renders a prompt, parses the answer into a pydantic schema, runs the
extra checks, and on a malformed answer asks again with the error fed back. An
answer that never validates comes back as a failed :class:`Outcome` carrying the
raw text of every attempt; callers record it as a failure, never as a result.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from cultureclip.core.retry import RETRY_STATUS, backoff_delay
from cultureclip.registry import Registry
from cultureclip.synth.config import LLMSettings
from cultureclip.synth.prompts import Message, PromptTemplate

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R")


class LLMError(RuntimeError):
    """The backend could not produce an answer (server down, HTTP error after retries, bad setup)."""


class LLMBackend(ABC):
    """One chat model. ``complete`` is async so many requests can be in flight."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings

    @property
    def model_id(self) -> str:
        return f"{self.settings.backend}:{self.settings.model}"

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


LLMS: Registry[type[LLMBackend]] = Registry("LLM backend", entry_point_group="cultureclip.llms")


def create_llm(settings: LLMSettings) -> LLMBackend:
    return LLMS.create(settings.backend, settings)


@LLMS.register("openai")
class OpenAICompatibleLLM(LLMBackend):
    """OpenAI-compatible chat completions over HTTP (vLLM, Ollama, llama.cpp, hosted APIs)."""

    def __init__(self, settings: LLMSettings) -> None:
        import httpx

        super().__init__(settings)
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(settings.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(
            max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
        )
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s)),
            limits=limits,
        )

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
        import httpx

        payload = self._payload(messages, schema, temperature, seed)
        last_error = ""
        retry_after: str | None = None
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                await asyncio.sleep(
                    backoff_delay(
                        attempt,
                        base_s=self.settings.backoff_s,
                        max_backoff_s=self.settings.max_retry_wait_s,
                        retry_after=retry_after,
                        max_wait_s=self.settings.max_retry_wait_s,
                    )
                )
            retry_after = None
            try:
                response = await self._client.post("/chat/completions", json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return _message_text(response)
                last_error = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUS:
                    hint = ""
                    if "response_format" in response.text:
                        hint = " (the server may not support JSON mode: set llm.json_mode=none)"
                    raise LLMError(
                        f"{self.settings.base_url} refused the request: {last_error}{hint}"
                    )
                retry_after = response.headers.get("retry-after")
        raise LLMError(
            f"no answer from {self.settings.base_url} after {self.settings.max_retries + 1} tries: {last_error}"
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _message_text(response: Any) -> str:
    try:
        data = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LLMError(f"malformed chat completion from server: {response.text[:300]}") from exc
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


@LLMS.register("transformers")
class TransformersLLM(LLMBackend):
    """A local causal LM (``AutoModelForCausalLM``) prompted through its chat template.

    ``model`` is a hub id or a local directory. Requests run one at a time in a worker
    thread (greedy when the temperature is 0, seeded sampling otherwise); use a serving
    engine (vLLM) with the ``openai`` backend for throughput. There is no JSON mode: the
    answer is parsed and validated by :func:`ask` like any other backend's. Text parts of
    multi-part messages are joined (a text-only model sees no images). ``dtype=auto``
    is bfloat16 on CUDA and float32 elsewhere.
    """

    def __init__(self, settings: LLMSettings) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(settings)
        dtype = {
            "auto": None,
            "float32": torch.float32,
            "float16": torch.float16,
            "bfloat16": torch.bfloat16,
        }[settings.dtype]
        if dtype is None:
            dtype = torch.bfloat16 if settings.device.startswith("cuda") else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(settings.model)
            model = AutoModelForCausalLM.from_pretrained(settings.model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise LLMError(f"cannot load the local chat model {settings.model!r}: {exc}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise LLMError(
                f"tokenizer of {settings.model} has no chat template; use an instruction-tuned model"
            )
        self.model = model.to(settings.device).eval()
        self._lock = asyncio.Lock()

    def _generate(self, messages: list[Message], temperature: float, seed: int | None) -> str:
        import torch

        inputs = self.tokenizer.apply_chat_template(
            [_text_only(m) for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(self.model.device)
        if seed is not None:
            torch.manual_seed(seed)
        sampling = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling["temperature"] = temperature
        else:  # greedy: drop sampling defaults a hub generation_config may carry
            sampling.update(temperature=None, top_p=None, top_k=None)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.settings.max_tokens,
                pad_token_id=self.tokenizer.eos_token_id if pad is None else pad,
                **sampling,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> str:
        temp = self.settings.temperature if temperature is None else temperature
        async with self._lock:  # one generate at a time on one model
            try:
                return await asyncio.to_thread(self._generate, messages, temp, seed)
            except RuntimeError as exc:  # e.g. CUDA out of memory, a too-long prompt
                raise LLMError(f"local generation failed: {exc}") from exc


def _text_only(message: Message) -> Message:
    content = message.get("content")
    if isinstance(content, list):
        text = "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
        return {**message, "content": text}
    return message


FEEDBACK_PREFIX = "Your answer was rejected"
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Parses the JSON object in a model answer (tolerates code fences and chatter around it)."""
    text = text.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end <= start:
        raise ValueError("the answer holds no JSON object")
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not valid JSON: {exc}") from None


@dataclass
class Outcome(Generic[R]):
    """What :func:`ask` got: a validated value, or the error and every raw answer."""

    value: R | None
    error: str = ""
    raw: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None and not self.error


def _format_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


async def ask(
    llm: LLMBackend,
    prompt: PromptTemplate,
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
    conversation = list(messages) if messages is not None else prompt.messages(variables)
    raw: list[str] = []
    error = ""
    for attempt in range(llm.settings.max_attempts):
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
            error = _format_error(exc)
        # Feed the problem back so the next attempt can fix it, not repeat it.
        conversation = [
            *conversation,
            {"role": "assistant", "content": text},
            {
                "role": "user",
                "content": f"{FEEDBACK_PREFIX}: {error}. Answer again with corrected JSON only.",
            },
        ]
    return Outcome(
        None, f"invalid answer after {llm.settings.max_attempts} attempt(s): {error}", raw
    )
