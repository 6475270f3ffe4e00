"""The one chat-model client of cultureclip: synth, the benchmark builder, generative eval
and the judges all ask through it.

- :class:`LLMSettings`: typed settings (backend, model, server, JSON mode, timeouts,
  retries, answer attempts, sampling), the same keys in every stage's config;
- :data:`LLMS`: the backend registry (``openai`` over HTTP, ``transformers`` locally; a
  module in ``core/llm/backends/`` or a ``cultureclip.llms`` entry point adds one);
- :func:`ask`: render a prompt, parse the answer into a pydantic schema, check it, and
  re-ask with the error fed back; returns an :class:`Outcome` with every raw answer;
- :class:`SyncLLM`: the same from code that is not async;
- :func:`extract_json`, :func:`image_data_url`, :func:`user_message`, prompts as
  versioned YAML (:func:`load_prompt`).
"""

from cultureclip.core.llm.ask import (
    FEEDBACK_PREFIX,
    Items,
    Outcome,
    ask,
    extract_json,
    format_error,
)
from cultureclip.core.llm.base import (
    LLMS,
    LLMBackend,
    LLMError,
    Message,
    create_llm,
    image_data_url,
    text_only,
    user_message,
    with_images,
)
from cultureclip.core.llm.prompts import PromptError, PromptTemplate, list_prompts, load_prompt
from cultureclip.core.llm.settings import LLMSettings, parse_model_at_url
from cultureclip.core.llm.sync import SyncLLM

__all__ = [
    "FEEDBACK_PREFIX",
    "LLMS",
    "Items",
    "LLMBackend",
    "LLMError",
    "LLMSettings",
    "Message",
    "Outcome",
    "PromptError",
    "PromptTemplate",
    "SyncLLM",
    "ask",
    "create_llm",
    "extract_json",
    "format_error",
    "image_data_url",
    "list_prompts",
    "load_prompt",
    "parse_model_at_url",
    "text_only",
    "user_message",
    "with_images",
]
