"""Synth's prompts: ``synth/prompts/<name>.yaml``, loaded by the core prompt loader.

A prompt file has ``name``, ``version``, ``system``, ``user`` (a ``str.format`` template;
literal braces are doubled) and ``examples``; records store ``prompt.id``
(``name@version``), so a changed prompt gets new item keys.
"""

from __future__ import annotations

from cultureclip.core.llm import prompts as _core
from cultureclip.core.llm.prompts import Message, PromptError, PromptTemplate

__all__ = ["Message", "PromptError", "PromptTemplate", "list_prompts", "load_prompt"]


def load_prompt(name_or_path: str) -> PromptTemplate:
    """A built-in synth prompt by name (``"captions"``) or a YAML file of your own by path."""
    return _core.load_prompt(name_or_path, "cultureclip.synth")


def list_prompts() -> list[str]:
    return _core.list_prompts("cultureclip.synth")
