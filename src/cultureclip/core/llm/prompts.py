"""Prompts are data: ``<package>/prompts/<name>.yaml`` holds a versioned template with few-shot examples.

Synth keeps its prompts in ``cultureclip/synth/prompts/``, the benchmark builder and the
open-ended judge in ``cultureclip/eval/prompts/``; both load them here.

A prompt file has ``name``, ``version``, ``system``, ``user`` (a ``str.format`` template;
literal braces are doubled) and ``examples`` (each ``variables`` for the user template
and the ``answer`` the assistant gave). Records store ``prompt.id`` (``name@version``)
so every item says which prompt made it; bump ``version`` when the wording changes and
the changed prompt gets new item keys, so a resumed run never mixes two versions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cultureclip.core.errors import InputError

Message = dict[str, Any]


class PromptError(InputError):
    """A prompt file is missing, malformed, or a variable it needs was not given."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    system: str
    user: str
    examples: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    description: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def render_user(self, variables: dict[str, Any]) -> str:
        try:
            return self.user.format_map(variables).strip()
        except KeyError as exc:
            raise PromptError(f"prompt {self.id} needs variable {exc.args[0]!r}") from None

    def messages(self, variables: dict[str, Any]) -> list[Message]:
        """System message, few-shot turns, then the rendered request."""
        messages: list[Message] = [{"role": "system", "content": self.system.strip()}]
        for example in self.examples:
            messages.append({"role": "user", "content": self.render_user(example["variables"])})
            messages.append({"role": "assistant", "content": str(example["answer"]).strip()})
        messages.append({"role": "user", "content": self.render_user(variables)})
        return messages


def _parse(text: str, origin: str) -> PromptTemplate:
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise PromptError(f"{origin}: a prompt file must hold a mapping")
    missing = [key for key in ("name", "version", "system", "user") if key not in data]
    if missing:
        raise PromptError(f"{origin}: missing key(s) {missing}")
    examples = tuple(data.get("examples") or ())
    for number, example in enumerate(examples, start=1):
        if not isinstance(example, dict) or "variables" not in example or "answer" not in example:
            raise PromptError(f"{origin}: example {number} needs 'variables' and 'answer'")
    return PromptTemplate(
        name=str(data["name"]),
        version=int(data["version"]),
        system=str(data["system"]),
        user=str(data["user"]),
        examples=examples,
        description=str(data.get("description", "")),
    )


@functools.cache
def load_prompt(name_or_path: str, package: str = "cultureclip.synth") -> PromptTemplate:
    """A built-in prompt of ``package`` by name (``"captions"``) or a YAML file of your own by path."""
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.exists():
            raise PromptError(f"prompt file not found: {path}")
        return _parse(path.read_text(encoding="utf-8"), str(path))
    resource = resources.files(package).joinpath("prompts", f"{name_or_path}.yaml")
    if not resource.is_file():
        raise PromptError(
            f"no built-in prompt {name_or_path!r}; built-in: {', '.join(list_prompts(package))} "
            f"(or give the path of a .yaml prompt file)"
        )
    return _parse(resource.read_text(encoding="utf-8"), f"prompts/{name_or_path}.yaml")


def list_prompts(package: str = "cultureclip.synth") -> list[str]:
    folder = resources.files(package).joinpath("prompts")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )
