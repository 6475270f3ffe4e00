"""Presets of every stage, shipped as package data: ``presets/<command>/<name>.yaml``.

``cultureclip <command> --preset NAME`` starts from one (a config file and flags go on
top); ``cultureclip presets`` lists them. A ``configs/<command>/`` folder in the working
directory holds presets of your own and is looked in first.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

from cultureclip.core.errors import UnknownNameError

#: the commands that take ``--preset``, each with its folder of presets
COMMANDS = ("synth", "train", "train-vlm", "eval", "index", "retrieval-eval", "quickstart")
LOCAL_DIR = Path("configs")

C = TypeVar("C")


def presets(command: str) -> dict[str, Traversable | Path]:
    """Name → file of the presets of ``command`` (local ones shadow shipped ones)."""
    found: dict[str, Traversable | Path] = {}
    local = Path.cwd() / LOCAL_DIR / command
    if local.is_dir():
        for path in sorted(local.glob("*.yaml")):
            found[path.stem] = path
    shipped = resources.files(__name__).joinpath(command)
    if shipped.is_dir():
        for item in sorted(shipped.iterdir(), key=lambda t: t.name):
            if item.name.endswith(".yaml"):
                found.setdefault(item.name.removesuffix(".yaml"), item)
    return found


def all_presets() -> dict[str, dict[str, Traversable | Path]]:
    """Command → its presets, for every command that has some."""
    return {command: found for command in COMMANDS if (found := presets(command))}


def read_preset(command: str, name: str) -> dict[str, Any]:
    """The settings of preset ``name`` of ``command``."""
    import yaml

    from cultureclip.core.config import ConfigError

    found = presets(command)
    if name not in found:
        known = ", ".join(found) or "none"
        what = "training" if command == "train" else command
        raise UnknownNameError(f"unknown {what} preset {name!r}; available: {known}")
    data = yaml.safe_load(found[name].read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {command}/{name} must hold a mapping")
    return data


def load_preset(cls: type[C], command: str, name: str, overrides: Sequence[str] = ()) -> C:
    """``cls`` from preset ``name`` of ``command`` and ``key=value`` overrides."""
    from cultureclip.core.config import merge_layers, validate

    return validate(cls, merge_layers(cls, read_preset(command, name), overrides=overrides))
