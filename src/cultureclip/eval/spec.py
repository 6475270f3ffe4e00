"""A benchmark is a spec file (docs/benchmark-specs.md): shipped in ``eval/specs/*.yaml``,
listed by a plugin in ``BENCHMARK_SPECS``, or given by path (``eval -b my_bench.yaml``)."""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, create_model, field_validator

from cultureclip.core.config import Config, deep_merge, read_config_file
from cultureclip.core.errors import InputError, UnknownNameError
from cultureclip.eval.layouts import LAYOUTS
from cultureclip.eval.metrics import GROUP_KEYS
from cultureclip.eval.scorers import SCORERS, BenchmarkOutput, Scorer
from cultureclip.eval.source import apply_columns, pick, read_rows

logger = logging.getLogger(__name__)
SPEC_DIR = resources.files("cultureclip.eval").joinpath("specs")


class SourceSpec(Config):
    #: a hub dataset id or a local path (relative to the spec file); ``-d`` replaces it
    data: str | None = None
    #: the hub dataset's config (subset) name
    config: str | None = None
    split: str | None = None
    #: annotation files a data folder is read from, first found wins
    files: list[str] = Field(default_factory=list)


class PromptSpec(Config):
    #: contrastive models: how an option (or class, concept, answer) becomes a text; per
    #: question type for multiple choice, a list for zero-shot, one text for twins
    contrastive: dict[str, str] | list[str] | str | None = None
    #: generative models: the question asked when an item has none (item fields allowed)
    generative: str | None = None


class BenchmarkSpec(Config):
    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    description: str = ""
    source: SourceSpec = Field(default_factory=SourceSpec)
    #: our field -> the data's column, or its aliases (the first present one is read)
    columns: dict[str, str | list[str]] = Field(default_factory=dict)
    #: a Python item builder of :data:`~cultureclip.eval.layouts.LAYOUTS` (distractors,
    #: roles, parsed fields); none: every row is one item after ``columns``
    layout: str | None = None
    prompts: PromptSpec = Field(default_factory=PromptSpec)
    scorer: str
    #: defaults of the scorer's (and layout's) options; a run's options override them
    options: dict[str, Any] = Field(default_factory=dict)
    #: option -> its values -> what each value changes in this spec (the first is the default)
    variants: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    group_keys: list[str] = Field(default_factory=lambda: list(GROUP_KEYS))
    #: a fixed chance level of the main metric (percent); none: the scorer computes it
    chance: float | None = None
    #: published numbers: {"model (paper)": {metric: value}}
    reference: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: bumped when the scoring changes (part of every result's reuse key)
    protocol_version: int = 1

    @field_validator("scorer", "layout")
    @classmethod
    def _registered(cls, value: str | None, info: ValidationInfo) -> str | None:
        known = SCORERS if info.field_name == "scorer" else LAYOUTS
        if value is not None and value not in known:
            raise ValueError(f"unknown {info.field_name} {value!r} (known: {', '.join(known)})")
        return value


UNKNOWN = "unknown key (extra inputs are not permitted)"


def _error_line(where: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {UNKNOWN if err['type'] == 'extra_forbidden' else message}")
    return f"{where}: {'; '.join(problems)}"


def parse_spec(data: Any, where: str, root: Path | None = None) -> BenchmarkSpec:
    """A spec from YAML data; a bad or unknown key is one line naming the file and key."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: a benchmark spec is a mapping of keys")
    try:
        spec = BenchmarkSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(_error_line(where, exc)) from None
    local = spec.source.data
    if root is not None and local and not Path(local).is_absolute() and (root / local).exists():
        spec.source.data = str(root / local)
    return spec


def load_spec(path: str | Path) -> BenchmarkSpec:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"benchmark spec not found: {path}")
    return parse_spec(read_config_file(path), path.name, path.parent)


def is_spec_path(name: str) -> bool:
    return name.lower().endswith((".yaml", ".yml")) or Path(name).is_file()


@cache
def benchmark_specs() -> dict[str, BenchmarkSpec]:
    """Every shipped spec and every spec a ``cultureclip.benchmarks`` plugin lists, by name."""
    specs = {}
    for entry in sorted(SPEC_DIR.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            spec = parse_spec(read_config_file(Path(str(entry))), entry.name)
            specs[spec.name] = spec
    for point in entry_points(group="cultureclip.benchmarks"):
        try:
            listed = getattr(point.load(), "BENCHMARK_SPECS", [])
            found = [
                parse_spec(s, point.name) if isinstance(s, dict) else load_spec(s) for s in listed
            ]
            specs.update((spec.name, spec) for spec in found)
        except Exception as exc:  # a broken plugin must not break the toolkit
            logger.warning(
                "benchmark plugin %r (%s) failed to load: %s", point.name, point.value, exc
            )
    return specs


def get_spec(name: str) -> BenchmarkSpec:
    if is_spec_path(name):
        return load_spec(name)
    specs = benchmark_specs()
    if name not in specs:
        raise UnknownNameError(
            f"unknown benchmark {name!r}; known: {', '.join(sorted(specs))} (or a spec .yaml file)"
        )
    return specs[name]


def _options_model(spec: BenchmarkSpec, scorer: type[Scorer]) -> type[Config]:
    bases = (scorer.Options, *([LAYOUTS.get(spec.layout).Options] if spec.layout else []))
    variants: Any = {
        name: (Literal[tuple(values)], next(iter(values))) for name, values in spec.variants.items()
    }
    return create_model(f"{spec.name} options", __base__=tuple(dict.fromkeys(bases)), **variants)


class Benchmark:
    """A spec on its data with validated options; ``run(model)`` scores a model."""

    def __init__(
        self,
        spec: BenchmarkSpec | str,
        data: Any = None,
        *,
        split: str | None = None,
        **options: Any,
    ) -> None:
        spec = get_spec(spec) if isinstance(spec, str) else spec
        self.data = spec.source.data if data is None else data
        if self.data is None:
            raise InputError(f"benchmark {spec.name!r} has no source.data: pass --data")
        self.split = split if split is not None else spec.source.split
        chosen = {name: options.get(name, next(iter(v))) for name, v in spec.variants.items()}
        patch: dict[str, Any] = {}
        for name, value in chosen.items():
            patch = deep_merge(patch, spec.variants[name].get(str(value), {}))
        self.spec = spec.model_validate(deep_merge(spec.model_dump(), patch)) if patch else spec
        self.name = self.spec.name
        scorer = SCORERS.get(self.spec.scorer)
        defaults = dict(self.spec.options)
        if scorer.prompt_option and self.spec.prompts.contrastive is not None:
            defaults.setdefault(scorer.prompt_option, self.spec.prompts.contrastive)
        try:
            self.options: Any = _options_model(self.spec, scorer).model_validate(
                {**defaults, **options}
            )
        except ValidationError as exc:
            raise InputError(_error_line(f"benchmark {self.name!r} options", exc)) from None
        self.scorer = scorer(self)
        self.task = scorer.task

    def field(self, row: dict[str, Any], name: str, *, required: bool = True) -> Any:
        """A field of a raw row under the spec's column (aliases: the first present)."""
        columns = self.spec.columns.get(name, name)
        return pick(
            row, [columns] if isinstance(columns, str) else columns, name, required=required
        )

    def rows(self) -> tuple[list[dict[str, Any]], Path]:
        """The data's rows with the run's ``columns`` applied, and the folder images start from."""
        source = self.spec.source
        rows, root = read_rows(self.data, self.split, source.files, config=source.config)
        columns = getattr(self.options, "columns", {})
        return [apply_columns(row, columns) for row in rows], root

    def record_id(self, record: dict[str, Any], index: int) -> str:
        """The record's own id (its ``id`` column), else ``{name}-{index:06d}``."""
        return str(self.field(record, "id", required=False) or f"{self.name}-{index:06d}")

    def prepare(self) -> None:
        self.scorer.prepare()

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        output = self.scorer.run(model, work_dir=work_dir, progress=progress)
        if self.spec.chance is not None:
            output.chance = self.spec.chance
        return output

    def config(self) -> dict[str, Any]:
        data = str(getattr(self.data, "root", self.data))  # a loaded CulTwin set: its folder
        return {"data": data, "split": self.split, **self.options.model_dump(mode="json")}

    def __getattr__(self, name: str) -> Any:
        # what a scorer offers beyond run (items(), option_texts(), …) is the benchmark's too
        if name.startswith("__") or "scorer" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["scorer"], name)


def create_benchmark(
    name: str, data: Any = None, split: str | None = None, **options: Any
) -> Benchmark:
    return Benchmark(name, data, split=split, **options)
