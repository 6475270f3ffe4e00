"""Validated configs: YAML/JSON files plus ``key.sub=value`` overrides.

Each stage defines a pydantic model deriving from :class:`Config`. The resolved
config is written next to every output (``config.yaml``) so a run can be repeated
with ``--config that/config.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from cultureclip.core.errors import InputError
from cultureclip.utils.io import atomic_write_text

C = TypeVar("C", bound="Config")


class ConfigError(InputError):
    """A config file or override that cannot be used; the message says which key and why."""


class Config(BaseModel):
    """Base of every config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(f"invalid {type(self).__name__}.{name}: {describe(exc)}") from exc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def save(self, directory: str | Path, name: str = "config.yaml") -> Path:
        return atomic_write_text(Path(directory) / name, self.to_yaml())


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def apply_overrides(
    data: dict[str, Any],
    overrides: Sequence[str],
    *,
    is_text: Callable[[Sequence[str]], bool] = lambda key: False,
) -> dict[str, Any]:
    """Applies ``a.b.c=value`` overrides; values are parsed as YAML (``3``, ``1e-5``, ``[q,v]``).

    A value whose target is a text field (``is_text(key parts)``) stays the string as
    typed, so ``--set template={concept}`` is the template, not a YAML mapping. Where the
    target is untyped, a value that only YAML's flow syntax would turn into a mapping of
    empty keys (``{option}``, ``{concept} in {region}``) is also kept as text.
    """
    result = json.loads(json.dumps(data))
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.path=value")
        key, raw = override.split("=", 1)
        parts = key.strip().split(".")
        value = raw if is_text(parts) else _parse_value(override, raw)
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def _parse_value(override: str, raw: str) -> Any:
    if raw == "":
        return ""
    looks_like_template = "{" in raw and "}" in raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        if looks_like_template:
            return raw
        raise ConfigError(f"cannot parse value of override {override!r}: {exc}") from exc
    if looks_like_template and isinstance(value, dict) and all(v is None for v in value.values()):
        return raw
    return value


def _text_field(cls: type[BaseModel]) -> Callable[[Sequence[str]], bool]:
    """Whether a key path of ``cls`` ends at a field typed as text."""

    def is_text(parts: Sequence[str]) -> bool:
        model: Any = cls
        annotation: Any = None
        for part in parts:
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                return False
            annotation = fields[part].annotation
            model = _model_in(annotation)
        return _is_str(annotation)

    return is_text


def _members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def _model_in(annotation: Any) -> Any:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _is_str(annotation: Any) -> bool:
    members = _members(annotation)
    return bool(members) and all(member is str for member in members)


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    **defaults: Any,
) -> C:
    """Builds ``cls`` from keyword defaults, then the file, then the overrides (last wins)."""
    data: dict[str, Any] = dict(defaults)
    if path is not None:
        data.update(read_config_file(path))
    data = apply_overrides(data, overrides, is_text=_text_field(cls))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: ``key.path: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, mapping by mapping (other values replace)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
