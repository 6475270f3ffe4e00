"""Synth's chat models are the core client's (``cultureclip.core.llm``); the names stay here.

``LLMS`` is the one backend registry (``openai``, ``transformers``, plugins of the
``cultureclip.llms`` entry point); :func:`ask` parses, checks and re-asks with the error.
"""

from cultureclip.core.llm import (
    FEEDBACK_PREFIX,
    LLMS,
    LLMBackend,
    LLMError,
    Outcome,
    ask,
    create_llm,
    extract_json,
)
from cultureclip.core.llm.backends.openai import OpenAICompatibleLLM
from cultureclip.core.llm.backends.transformers import TransformersLLM

__all__ = [
    "FEEDBACK_PREFIX",
    "LLMS",
    "LLMBackend",
    "LLMError",
    "OpenAICompatibleLLM",
    "Outcome",
    "TransformersLLM",
    "ask",
    "create_llm",
    "extract_json",
]
