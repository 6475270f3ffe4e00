"""Model backends by name: ``create_model("hf:openai/clip-vit-base-patch32")``.

A spec is ``<backend>:<argument>`` (``hf:<hub id or dir>``,
``open_clip:<arch>/<pretrained or path>``, ``lite:en``, ``lite:multi``) or the path
of a directory written by :meth:`VisionLanguageModel.save`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from cultureclip.core.device import resolve_precision
from cultureclip.core.io import read_json
from cultureclip.core.registry import Registry
from cultureclip.models.base import MODEL_CONFIG_NAME, BackendError, VisionLanguageModel
from cultureclip.models.hub import check_local, loading

MODELS: Registry[type[VisionLanguageModel]] = Registry(
    "model backend", package="cultureclip.models", entry_point_group="cultureclip.models"
)

# Built-in backends register themselves on import. A spec names its backend, so only that
# module is imported (fast start, optional dependencies stay optional); any other name
# makes MODELS scan this package and the ``cultureclip.models`` entry points.
BUILTIN_BACKENDS = ("hf", "open_clip", "lite")  # each in the module of its name


def list_models() -> dict[str, str]:
    """Registered backends and a line of help each."""
    return MODELS.describe()


def parse_spec(spec: str) -> tuple[str, str]:
    if ":" not in spec:
        raise BackendError(
            f"model spec {spec!r} needs a backend prefix (e.g. 'hf:openai/clip-vit-base-patch32', "
            f"'lite:en') or must be a directory saved by cultureclip"
        )
    backend, _, argument = spec.partition(":")
    if not argument:
        raise BackendError(f"model spec {spec!r} has an empty argument after {backend!r}")
    return backend, argument


def create_model(
    spec: str | Path,
    *,
    device: str | torch.device | None = None,
    precision: str | None = None,
    **kwargs: Any,
) -> VisionLanguageModel:
    """Builds a backend from a spec or a saved directory, on ``device`` (default: CPU).
    ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``; default fp32) is what its
    inference autocasts to; the weights stay fp32."""
    path = Path(spec)
    if path.is_dir() and (path / MODEL_CONFIG_NAME).exists():
        meta = read_json(path / MODEL_CONFIG_NAME)
        kwargs.setdefault("context_length", meta.get("context_length", 77))
        model = create_model(meta["base"], **kwargs)
        model.load_saved_weights(path, meta)
    else:
        backend, argument = parse_spec(str(spec))
        if backend in BUILTIN_BACKENDS:
            importlib.import_module(f"cultureclip.models.{backend}")
        factory = MODELS.get(backend)
        if backend == "hf":
            check_local(str(spec), argument)
        with loading(str(spec)):
            model = factory(argument, **kwargs)
    model.eval()  # like from_pretrained: inference mode until a trainer says otherwise
    if device is not None:
        model = model.to(device)
    if precision is not None:
        model.inference_precision = resolve_precision(precision, str(model.device))
    return model
