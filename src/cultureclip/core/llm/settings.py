"""Typed settings of a chat model: one pydantic tree for synth, the builder and generative eval."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import AliasChoices, Field

from cultureclip.core.device import DeviceSettings, former_dtype_name
from cultureclip.core.identity import weights_identity

#: where ``<model>`` with no ``@<base_url>`` is sent when ``$OPENAI_BASE_URL`` is unset
DEFAULT_API_URL = "https://api.openai.com/v1"

#: the settings that change an answer (the rest decide how hard and how fast to ask)
ANSWER_FIELDS = ("backend", "model", "json_mode", "temperature", "max_tokens", "precision")


class LLMSettings(DeviceSettings):
    """Which chat model answers the prompts, and how hard to try.

    ``timeout``, ``backoff`` and ``max_backoff`` are accepted for ``timeout_s``,
    ``backoff_s`` and ``max_retry_wait_s`` (the names the eval configs used). ``device`` and
    ``precision`` (the dtype the weights load in) are read by the local backend only.
    """

    backend: str = "openai"  # a name in ``cultureclip.core.llm.LLMS``
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    base_url: str = "http://127.0.0.1:8000/v1"
    # The key is read from this environment variable, never written into a config.
    api_key_env: str = "OPENAI_API_KEY"
    # json_schema: ``response_format`` with the pydantic schema (vLLM, OpenAI, llama.cpp);
    # json_object: plain JSON mode (Ollama, most servers); none: rely on the prompt.
    json_mode: Literal["json_schema", "json_object", "none"] = "json_object"
    concurrency: int = Field(16, ge=1)
    timeout_s: float = Field(120.0, gt=0, validation_alias=AliasChoices("timeout_s", "timeout"))
    #: transport retries: HTTP 429/5xx, timeouts, refused connections, malformed replies
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(1.0, ge=0, validation_alias=AliasChoices("backoff_s", "backoff"))
    #: the longest wait between two tries, a server's Retry-After included
    max_retry_wait_s: float = Field(
        30.0, ge=0, validation_alias=AliasChoices("max_retry_wait_s", "max_backoff")
    )
    #: answer attempts; a malformed answer is fed back with the error
    max_attempts: int = Field(3, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(1024, ge=1)
    #: local backend: requests generated together in one ``generate`` call (left-padded)
    batch_size: int = Field(8, ge=1)

    @property
    def model_id(self) -> str:
        return f"{self.backend}:{self.model}"

    def identity(self) -> dict[str, Any]:
        """What decides an answer: part of every item key made with this model (a local
        model's weights by content or hub commit, so a model retrained in place is new)."""
        identity = self.model_dump(include=set(ANSWER_FIELDS))
        # ``precision`` under the name and spelling it had before it was one shared type
        identity["dtype"] = former_dtype_name(identity.pop("precision"))
        return {**identity, **self.weights()}

    def weights(self) -> dict[str, Any]:
        """A local model's weights (content hash, or the hub commit its id resolves to);
        nothing for a served model, which is known by its name."""
        return {} if self.backend == "openai" else weights_identity(self.model)


def parse_model_at_url(spec: str) -> dict[str, str]:
    """``<model>@<base_url>`` (``@<base_url>`` optional: ``$OPENAI_BASE_URL``) as settings."""
    model, _, base_url = spec.partition("@")
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_API_URL
    return {"model": model, "base_url": base_url.rstrip("/")}
