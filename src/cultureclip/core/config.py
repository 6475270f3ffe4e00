"""Validated configs: YAML/JSON files plus ``key.sub=value`` overrides.

Each stage defines a pydantic model deriving from :class:`Config`. The resolved
config is written next to every output (``config.yaml``) so a run can be repeated
with ``--config that/config.yaml``. Every key has one name: a field's former names
(``output_dir``/``out_dir`` for ``out``) are errors that name the field, in files,
``--set`` overrides and keyword arguments alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from cultureclip.core.errors import InputError
from cultureclip.core.io import atomic_write_text

C = TypeVar("C", bound="Config")


class ConfigError(InputError):
    """A config file or override that cannot be used; the message says which key and why."""


class Config(BaseModel):
    """Base of every config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        protected_namespaces=(),
        validate_by_name=True,
        validate_by_alias=True,
    )

    #: a former key of this section → the key to write instead
    FORMER_NAMES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _no_former_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            renamed = dict(cls.FORMER_NAMES)
            for name, info in cls.model_fields.items():
                extra: Any = info.json_schema_extra or {}
                renamed.update(dict.fromkeys(extra.get("former_names", ()), name))
                # A partial section (``optim.lr=...``) keeps this config's defaults for the
                # rest of it, not the section class's own (train-vlm's optim is not train's).
                if isinstance(data.get(name), dict):
                    default = info.get_default(call_default_factory=True)
                    if isinstance(default, BaseModel):
                        data[name] = _completed(default, data[name])
            for old in data:
                if old in renamed:
                    raise PydanticCustomError(
                        "renamed", "{old} was renamed: use {new}", {"old": old, "new": renamed[old]}
                    )
        return data

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(f"invalid {type(self).__name__}.{name}: {describe(exc)}") from exc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def save(self, directory: str | Path, name: str = "config.yaml") -> Path:
        return atomic_write_text(Path(directory) / name, self.to_yaml())


def _completed(default: BaseModel, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` plus ``default``'s value of each field it does not set (under any alias)."""
    completed = dict(given)
    for name, info in type(default).model_fields.items():
        alias = info.validation_alias
        names = (name, info.alias, alias, *getattr(alias, "choices", ()))
        keys = [key for key in names if isinstance(key, str) and key in given]
        value = getattr(default, name)
        if not keys:
            completed[name] = value
        elif isinstance(value, BaseModel) and isinstance(given[keys[0]], dict):
            completed[keys[0]] = _completed(value, given[keys[0]])
    return completed


def out_field(default: str | None, *former_names: str) -> Any:
    """The output directory of a stage, ``out``; ``former_names`` are refused with its name."""
    return Field(default, json_schema_extra={"former_names": list(former_names)})


def field_type(cls: type[BaseModel], parts: Sequence[str]) -> Any:
    """The type of the field a ``--set`` key path ends at (None below an untyped mapping or
    past the known fields)."""
    model: Any = cls
    annotation: Any = None
    for part in parts:
        fields = getattr(model, "model_fields", None) or {}
        annotation = fields[part].annotation if part in fields else None
        model = _model_in(annotation)
    return annotation


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
    data: dict[str, Any], overrides: Sequence[str], *, model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Applies ``a.b.c=value`` overrides; values are parsed as YAML (``3``, ``1e-5``, ``[q,v]``).

    With ``model`` (the config class), a value whose target is a text field stays the string
    as typed: ``--set template={concept}`` is the template, not a mapping. Where the target
    is untyped, a value that only YAML's flow syntax would turn into a mapping of empty
    keys (``{option}``, ``{concept} in {region}``) is also kept as text.
    """
    result = json.loads(json.dumps(data))
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like key.path=value")
        key, raw = override.split("=", 1)
        parts = key.strip().split(".")
        annotation = None if model is None else field_type(model, parts)
        value = raw if _is_str(annotation) else _parse_value(override, raw)
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
    layers = [defaults] if path is None else [defaults, read_config_file(path)]
    return validate(cls, merge_layers(cls, *layers, overrides=overrides))


def merge_layers(
    cls: type[BaseModel], *layers: dict[str, Any], overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """The layers merged section by section (later wins), then ``--set`` overrides."""
    data: dict[str, Any] = {}
    for layer in layers:
        data = deep_merge(data, layer)
    return apply_overrides(data, overrides, model=cls)


def validate(cls: type[C], data: dict[str, Any]) -> C:
    """``cls`` from plain data; a validation error becomes one :class:`ConfigError` line."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {describe(exc)}") from exc


def describe(exc: ValidationError, root: str = "<root>") -> str:
    """A pydantic error as one line: ``key.path: message; ...`` (``root`` names an empty path)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or root}: {err['msg']}" for err in exc.errors()
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
