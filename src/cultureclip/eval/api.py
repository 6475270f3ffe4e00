"""The eval stage: ``run(EvalConfig) -> EvalResult``; ``evaluate(model, benchmark, data=...)``
is the same with keywords, and also takes model and data objects."""

from __future__ import annotations

import json
import logging
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import Field

from cultureclip.core.config import Config, out_field, read_config_file
from cultureclip.core.device import DeviceSettings, resolve_device, resolve_precision
from cultureclip.core.errors import MissingInputError, UnknownNameError, UserError
from cultureclip.core.identity import (
    data_identity,
    module_hash,
    portable_spec,
    references_hash,
    short,
    spec_identity,
)
from cultureclip.core.io import write_jsonl
from cultureclip.core.store import changed_fields
from cultureclip.data.cultwin import CulTwinLoad
from cultureclip.eval.report import build_report
from cultureclip.eval.results import (
    PREDICTIONS_NAME,
    PROTOCOL_VERSION,
    BaselineComparison,
    EvalResult,
    NewerResultError,
    load_result,
    result_dir,
    served_name,
)
from cultureclip.eval.spec import Benchmark, create_benchmark, is_spec_path
from cultureclip.models.generative import (
    AnswerStore,
    GenerativeSettings,
    create_generative_model,
    is_generative_spec,
    is_main_process,
    join_processes,
)

logger = logging.getLogger(__name__)

ModelLike = Any  # a VisionLanguageModel, a GenerativeModel, or a spec string


class EvalConfig(DeviceSettings):
    """``device``/``precision``: where a contrastive model encodes (``bf16``/``fp16``: under
    autocast) and where a local generative one (``hf-vlm:``) runs, in that dtype."""

    model: str
    #: a benchmark name (``cultureclip benchmarks``) or the path of a spec file
    benchmark: str
    #: local path or hub dataset name; none: the spec's ``source.data``
    data: str | None = None
    split: str | None = None
    #: results directory (None: nothing is written)
    out: str | None = out_field("runs/eval", "out_dir", "output_dir")
    model_name: str | None = None
    #: name of the results in reports (e.g. two twin sets); default: the benchmark's name
    label: str | None = None
    baseline: str | None = None
    baseline_name: str | None = None
    overwrite: bool = False
    #: benchmark options (templates, seed, batch_size, …), checked by the benchmark
    options: dict[str, Any] = Field(default_factory=dict)
    #: our item field -> the data's column (``--set columns.answer=Label``); same as
    #: ``options.columns``
    columns: dict[str, str] = Field(default_factory=dict)
    #: settings of a generative model backend (timeout, max_retries, concurrency, mode, …)
    generative: GenerativeSettings = Field(default_factory=GenerativeSettings)


def model_label(model: ModelLike, name: str | None = None) -> str:
    """How results of ``model`` are named (and filed): ``name``, else its spec. A served
    model (``openai:<model>@<url>``) is named without the URL, as its reuse key is."""
    if name:
        return name
    spec = str(model) if isinstance(model, str | Path) else getattr(model, "spec", "")
    if not spec:
        raise ValueError("cannot name this model; pass model_name=")
    return str(served_name(spec))


def resolve_model(model: ModelLike, config: EvalConfig) -> Any:
    if not isinstance(model, str | Path):
        return model
    if is_generative_spec(str(model)):
        # a backend is given only what was set (each has its own defaults); a local model
        # runs on the stage's device and precision unless generative.* names its own
        options = config.generative.model_dump(exclude_defaults=True)
        if str(model).startswith("hf-vlm:"):
            for name in ("device", "precision"):
                if getattr(config, name) != "auto":
                    options.setdefault(name, getattr(config, name))
        return create_generative_model(str(model), **options)
    from cultureclip.models.registry import create_model

    # under N processes each is on its own GPU (only hf-vlm splits the work between them)
    local_rank = int(os.environ["LOCAL_RANK"]) if "LOCAL_RANK" in os.environ else None
    device = config.resolved_device(local_rank)
    return create_model(model, device=device, precision=config.precision)


class Models:
    """Models built from their specs, each once: a suite runs all its benchmarks on one load."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def get(self, model: ModelLike, config: EvalConfig) -> Any:
        if not isinstance(model, str | Path):
            return model
        key = f"{model}|{config.device}|{config.precision}|{config.generative.model_dump_json()}"
        if key not in self.loaded:
            self.loaded[key] = resolve_model(model, config)
        return self.loaded[key]


def evaluate(
    model: ModelLike,
    benchmark: str,
    *,
    data: str | Path | CulTwinLoad | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    model_name: str | None = None,
    baseline: ModelLike | None = None,
    baseline_name: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    generative: dict[str, Any] | None = None,
    progress: bool = False,
    label: str | None = None,
    **options: Any,
) -> EvalResult:
    """:func:`run` with keywords: ``model`` and ``baseline`` may be model objects, ``data`` a
    loaded CulTwin set, ``options`` go to the benchmark."""
    config = EvalConfig(
        model=_spec_or_name(model, model_name),
        benchmark=benchmark,
        data=None if data is None else str(data.root if isinstance(data, CulTwinLoad) else data),
        split=split,
        out=None if out_dir is None else str(out_dir),
        model_name=model_name,
        label=label,
        baseline=None if baseline is None else _spec_or_name(baseline, baseline_name),
        baseline_name=baseline_name,
        overwrite=overwrite,
        device=device,
        precision=precision,
        options=options,
        generative=generative or {},
    )
    return run(config, model=model, data=data, baseline=baseline, progress=progress)


def _spec_or_name(model: ModelLike, name: str | None) -> str:
    return str(model) if isinstance(model, str | Path) else model_label(model, name)


def run(
    config: EvalConfig,
    *,
    model: ModelLike | None = None,
    data: str | Path | CulTwinLoad | None = None,
    baseline: ModelLike | None = None,
    progress: bool = False,
    models: Models | None = None,
) -> EvalResult:
    """The eval stage: ``config.benchmark`` (a name or a spec file) on ``config.model``.

    ``model``/``data``/``baseline`` objects replace the config's specs; ``models`` keeps
    models loaded across runs. A stored result of the same key is returned (``reused``)
    unless ``overwrite``. ``baseline`` (the forgetting check) adds a second model's metrics
    and the delta in ``result.baseline``.
    """
    config.resolved_device()  # a device this machine lacks fails before any work
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched as N processes: one writes
        join_processes(config.device)
    model = config.model if model is None else model
    data = config.data if data is None else data
    options = dict(config.options)
    if config.columns:
        options["columns"] = {**config.columns, **options.get("columns", {})}
    models = models or Models()
    name = model_label(model, config.model_name)
    bench = create_benchmark(config.benchmark, data, config.split, **options)
    shown_as = config.label or bench.name
    directory = result_dir(config.out, shown_as, name) if config.out is not None else None
    key = _result_key(config, bench, model, name, directory)
    result = _stored(directory, key) if not config.overwrite else None
    if result is None:
        bench.prepare()  # read and validate the data before loading the model
        scorer = models.get(model, config)
        # data-parallel generation (torchrun): every process computes the result, the first writes
        writes = directory is not None and is_main_process()
        if writes:
            directory.mkdir(parents=True, exist_ok=True)
            if config.overwrite:  # no answer of an earlier run is kept
                (directory / PARTIAL_NAME).unlink(missing_ok=True)
        started = time.perf_counter()
        output = bench.run(scorer, work_dir=directory, progress=progress)
        result = EvalResult(
            benchmark=shown_as,
            model=name,
            task=bench.task,
            metrics=output.metrics,
            counts={**output.counts, "items": output.n, "skipped": len(output.skipped)},
            per_group=output.per_group,
            skipped=output.skipped[:100],
            config=bench.config(),
            seconds=round(time.perf_counter() - started, 3),
            data=str(config.data or bench.data),
            key=key,
            identity=short(key),
            chance=output.chance,
        )
        if writes:
            write_jsonl(directory / PREDICTIONS_NAME, output.predictions)
            result.save(directory)  # last: a result file means a finished run
            if not result.counts.failed:
                # Kept while answers are missing: the rerun asks only those.
                (directory / PARTIAL_NAME).unlink(missing_ok=True)
            config.save(directory)
    baseline = config.baseline if baseline is None else baseline
    if baseline is not None:
        base_name = model_label(baseline, config.baseline_name)
        if result.baseline is None or result.baseline.model != base_name or config.overwrite:
            update = {"model": _spec_or_name(baseline, base_name), "model_name": base_name}
            base_config = config.model_copy(update={**update, "baseline": None})
            base = run(base_config, model=baseline, data=data, progress=progress, models=models)
            delta = {k: v - base.metrics[k] for k, v in result.metrics.items() if k in base.metrics}
            result.baseline = BaselineComparison(model=base_name, metrics=base.metrics, delta=delta)
            if directory is not None and is_main_process():
                result.save(directory)
    return result


#: what a changed part of the key (or of its model part) means, in the line a run says
_CHANGED = {
    "weights": "weights changed",
    "revision": "weights changed (the hub id points to another commit)",
    "generative": "generative settings changed",
    "spec": "model spec changed",
    "data": "data changed",
    "benchmark": "benchmark changed",
    "split": "split changed",
    "options": "options changed",
    "protocol": "scoring changed (a newer cultureclip)",
}


def why_recomputed(stored: dict[str, Any], key: dict[str, Any]) -> list[str]:
    """What differs between a stored result's key and this run's, in words."""
    differences = changed_fields(stored, key)
    if "model" in differences:
        inner = changed_fields(stored.get("model") or {}, key["model"])
        differences = [*inner, *(d for d in differences if d != "model")]
    return list(dict.fromkeys(_CHANGED.get(d, f"{d} changed") for d in differences))


def _stored(directory: Path | None, key: dict[str, Any]) -> EvalResult | None:
    """The stored result of ``key`` in ``directory``, or None; says which, and why, in one line."""
    if directory is None or not (directory / "result.json").exists():
        return None
    try:
        stored = load_result(directory)
    except NewerResultError:
        raise
    except (UserError, ValueError) as exc:  # torn or corrupt: never used
        logger.warning("recomputed: the stored result %s is unreadable (%s)", directory, exc)
        return None
    if not stored.identity or not stored.key:
        logger.info(
            "recomputed: the stored result in %s records no content identity (an older version)",
            directory,
        )
        return None
    differences = why_recomputed(stored.key, key)
    if differences:
        logger.info(
            "recomputed: %s since the stored result (%s)", ", ".join(differences), directory
        )
        return None
    if stored.counts.failed:
        # Answers lost to server errors are asked again; the answered ones are resumed.
        logger.info(
            "%s has %d failed answer(s); asking them again", directory, stored.counts.failed
        )
        return None
    stored._reused = True
    logger.info("reused (same content %s): %s", stored.identity[:6], stored.path)
    return stored


def _model_identity(model: ModelLike, config: EvalConfig) -> dict[str, Any]:
    """What a model's answers are made from: its weights (a loaded model's tensors, a
    folder's files, a hub id's commit) and the settings that change an answer."""
    if isinstance(model, str | Path):
        spec = str(model)
        identity = (
            {"spec": served_name(spec)} if spec.startswith("openai:") else spec_identity(spec)
        )
        if is_generative_spec(spec):
            identity["generative"] = config.generative.model_dump(
                mode="json", include=set(GENERATIVE_DECIDING)
            )
        return identity
    if isinstance(model, torch.nn.Module):  # the spec's options (image size, …) count too
        return {"spec": portable_spec(getattr(model, "spec", "")), "weights": module_hash(model)}
    identity = dict(model.identity()) if hasattr(model, "identity") else {}
    weights = getattr(model, "model", None)  # a local generative model's network
    if isinstance(weights, torch.nn.Module):
        identity["weights"] = module_hash(weights)
    return identity or {"object": type(model).__qualname__}


#: ``generative.*`` settings that change an answer (the others decide how fast it comes)
GENERATIVE_DECIDING = (
    "mode",
    "likelihood_target",
    "max_new_tokens",
    "temperature",
    "max_tokens",
    "json_mode",
    "dtype",
)


def _result_key(
    config: EvalConfig, bench: Benchmark, model: ModelLike, name: str, directory: Path | None
) -> dict[str, Any]:
    # Content, never names: the output folder, model name and batch sizes decide nothing.
    options = bench.options.model_dump(mode="json", exclude=set(AnswerStore.NOT_DECIDING))
    key = {
        "benchmark": bench.name,
        "model": _model_identity(model, config),
        "data": _data_identity(config, bench, directory),
        "split": config.split,
        "options": served_name(options),
        "protocol": PROTOCOL_VERSION * 1000 + bench.spec.protocol_version,
    }
    precision = _inference_precision(config, model)
    if precision != "fp32":  # half-precision features are other numbers; fp32 keys as before
        key["precision"] = precision
    return json.loads(json.dumps(key, default=str))  # as it reads back from result.json


def _data_identity(config: EvalConfig, bench: Benchmark, directory: Path | None) -> dict[str, Any]:
    """The data's bytes: the data path's, and those of the images its items point to
    outside it (an annotation file's images, ``options.image_root``)."""
    data = str(config.data or bench.data)
    identity = data_identity(data, exclude=directory)
    inside = Path(data).resolve() if Path(data).is_dir() else None
    outside = [
        (written, path)
        for written, path in bench.scorer.image_files()
        if inside is None or not path.resolve().is_relative_to(inside)
    ]
    if outside:
        identity["images"] = references_hash(outside)
    return identity


def _inference_precision(config: EvalConfig, model: ModelLike) -> str:
    """The precision a contrastive model's features are computed in (a generative model's
    dtype is part of its answers' identity instead)."""
    if not isinstance(model, str | Path):
        return getattr(model, "inference_precision", "fp32")
    if is_generative_spec(str(model)):
        return "fp32"
    return resolve_precision(config.precision, config.resolved_device())


PARTIAL_NAME = "predictions.partial.jsonl"


def twin_accuracy(model: Any, cultwin_load: CulTwinLoad | str | Path, **options: Any) -> float:
    """Percent of CulTwin images that pick their own concept's text over their twin's."""
    bench = create_benchmark("twins", cultwin_load, **options)
    return bench.run(model, progress=False).metrics["accuracy"]


# ---- suites: several benchmarks × several models, one report -----------------------------
class SuiteEntry(Config):
    benchmark: str
    data: str | None = None
    split: str | None = None
    #: name of the results (default: the benchmark); two entries of one benchmark need two
    label: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class Suite(Config):
    """A named list of benchmarks (shipped: ``eval/suites/<name>.yaml``)."""

    name: str
    description: str = ""
    benchmarks: list[SuiteEntry] = Field(min_length=1)


SUITES = resources.files("cultureclip.eval").joinpath("suites")


def suite_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in SUITES.iterdir() if p.name.endswith(".yaml")
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name or a suite YAML file of your own."""
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise MissingInputError(f"suite file not found: {path}")
        suite = Suite.model_validate(read_config_file(path))
        for entry in suite.benchmarks:  # a spec path is relative to the suite file
            if is_spec_path(entry.benchmark) and (path.parent / entry.benchmark).is_file():
                entry.benchmark = str(path.parent / entry.benchmark)
        return suite
    shipped = SUITES.joinpath(f"{name_or_path}.yaml")
    if not shipped.is_file():
        raise UnknownNameError(
            f"unknown suite {str(name_or_path)!r}; shipped: {', '.join(suite_names())} "
            "(or pass a suite .yaml file)"
        )
    return Suite.model_validate(yaml.safe_load(shipped.read_text(encoding="utf-8")))


class SuiteRun(Config):
    """What a suite run did: one entry per (model, benchmark)."""

    results: list[str] = Field(default_factory=list)  # result.json paths
    reused: list[str] = Field(default_factory=list)  # "model · benchmark" reused from disk
    computed: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)  # "model · benchmark" -> error
    report: str | None = None


def run_suite(
    suite: Suite | str | Path,
    models: list[str],
    *,
    out_dir: str | Path = "runs/eval",
    model_names: list[str] | None = None,
    report_dir: str | Path | None = None,
    progress: bool = False,
    n_resamples: int = 1000,
    on_result: Any = None,
    **settings: Any,
) -> SuiteRun:
    """Every model on every benchmark of ``suite`` (each model loaded once), then one report.

    ``settings`` are :class:`EvalConfig` fields every run shares; results are reused as
    :func:`run` reuses them. A benchmark that fails with a user error is recorded in
    ``failed`` and the others still run; ``on_result(label, result or error)`` follows each.
    """
    resolve_device(settings.get("device"))  # a device this machine lacks fails before any work
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    names = model_names or [None] * len(models)
    if len(names) != len(models):
        raise ValueError("model_names must name every model")
    suite_run = SuiteRun()
    loaded = Models()  # each model (and the baseline) loads once for the whole suite
    for model, name in zip(models, names, strict=True):
        for entry in suite.benchmarks:
            shown = f"{name or model} · {entry.label or entry.benchmark}"
            config = EvalConfig(
                **entry.model_dump(), model=model, model_name=name, out=str(out_dir), **settings
            )
            try:
                result = run(config, progress=progress, models=loaded)
            except UserError as exc:
                logger.warning("%s failed: %s", shown, exc)
                suite_run.failed[shown] = str(exc)
                if on_result is not None:
                    on_result(shown, exc)
                continue
            (suite_run.reused if result.reused else suite_run.computed).append(shown)
            suite_run.results.append(str(result.path))  # every suite result is saved under out_dir
            if on_result is not None:
                on_result(shown, result)
        if model != settings.get("baseline"):  # done with it: free its memory
            loaded.loaded = {k: v for k, v in loaded.loaded.items() if k.split("|")[0] != model}
    if suite_run.results:
        target = Path(report_dir) if report_dir is not None else Path(out_dir) / "report"
        suite_run.report = str(build_report(suite_run.results, target, n_resamples=n_resamples))
    return suite_run
