"""Model and dataset cards: ``README.md`` with YAML metadata, built by huggingface_hub's
card classes (``ModelCard``/``ModelCardData``/``EvalResult``, ``DatasetCard``) from the
Jinja templates beside this module, so the hub (and ``ModelCard.load``) parses them."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cultureclip import __version__
from cultureclip.core.io import atomic_write_text

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
#: our eval task names → the hub's task types (model-index); others are kept as they are
HUB_TASKS = {
    "zeroshot_classification": "zero-shot-image-classification",
    "twin_accuracy": "zero-shot-image-classification",
    "zeroshot_retrieval": "zero-shot-image-classification",
    "mcq": "visual-question-answering",
    "openended": "visual-question-answering",
}


@dataclass
class EvalSummary:
    """What a card needs from one ``result.json``: read defensively (name and metrics),
    so result files with more fields (schema versions, counts) still read."""

    benchmark: str
    model: str
    task: str
    metrics: dict[str, float]
    data: str = ""
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_eval_results(*paths: str | Path) -> list[EvalSummary]:
    """Every ``result.json`` under ``paths`` (folders or the files themselves), sorted."""
    from cultureclip.core.errors import InputError, MissingInputError

    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("result.json")))
        else:
            raise MissingInputError(f"no such eval result file or folder: {path}")
    summaries = []
    for file in found:
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            metrics = raw.get("metrics", {})
            summaries.append(
                EvalSummary(
                    benchmark=str(raw.get("benchmark") or raw.get("name") or file.parent.name),
                    model=str(raw.get("model", "")),
                    task=str(raw.get("task", "")),
                    # Only plain numbers are metrics; counts and nested groups stay out.
                    metrics={
                        str(k): float(v)
                        for k, v in metrics.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)
                    },
                    data=str(raw.get("data", "")),
                    path=file,
                    extra={k: v for k, v in raw.items() if k in ("n", "label", "chance")},
                )
            )
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise InputError(f"{file}: not an eval result: {exc}") from None
    return summaries


def hub_id(spec: str | None) -> str | None:
    """The hub repo a model spec names (``hf:openai/clip-vit-base-patch32`` →
    ``openai/clip-vit-base-patch32``), or None for a local folder or a name without one."""
    from cultureclip.models.hub import looks_like_path

    if not spec:
        return None
    _, _, argument = spec.partition(":") if ":" in spec else ("", "", spec)
    if argument.startswith("hf-hub:"):  # open_clip:hf-hub:org/name
        argument = argument.removeprefix("hf-hub:")
    elif spec.startswith("open_clip:"):
        arch, _, tag = argument.partition("/")
        return _open_clip_hub_id(arch, tag)
    elif spec.startswith("lite:"):
        return None
    if looks_like_path(argument) or argument.count("/") != 1:
        return None
    return argument


def _open_clip_hub_id(arch: str, tag: str) -> str | None:
    """Where open_clip's pretrained tag lives on the hub, when it says."""
    try:
        from open_clip import get_pretrained_cfg

        found = get_pretrained_cfg(arch, tag).get("hf_hub", "") if tag else ""
    except ImportError:
        return None
    return found.strip("/") or None


def eval_results_for_card(results: Sequence[EvalSummary], model_name: str) -> list[Any]:
    """``huggingface_hub.EvalResult`` entries (one per metric) for the card's model-index."""
    from huggingface_hub import EvalResult

    entries = []
    for result in results:
        for metric, value in sorted(result.metrics.items()):
            entries.append(
                EvalResult(
                    task_type=HUB_TASKS.get(result.task, result.task or "other"),
                    dataset_type=result.benchmark,
                    dataset_name=result.benchmark,
                    metric_type=metric,
                    metric_name=metric,
                    metric_value=round(value, 6),
                )
            )
    return entries


def card_template(name: str) -> str:
    return resources.files("cultureclip.publish").joinpath("templates", name).read_text("utf-8")


def _config_yaml(config: Mapping[str, Any] | None) -> str:
    if not config:
        return ""
    return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False).strip()


def model_card(
    *,
    library: str,
    base: str | None,
    model_name: str,
    kind: str = "contrastive",
    usage: str = "",
    license: str | None = None,
    datasets: Sequence[str] = (),
    tags: Sequence[str] = (),
    eval_results: Sequence[EvalSummary] = (),
    config: Mapping[str, Any] | None = None,
    adapter: str | None = None,
    adapter_dir: str = "adapter/",
) -> Any:
    """A ``huggingface_hub.ModelCard`` for a trained model (see :func:`write_card`)."""
    from huggingface_hub import ModelCard, ModelCardData

    base_id = hub_id(base)
    data = ModelCardData(
        model_name=model_name,
        base_model=base_id,
        library_name=library,
        license=license or "other",
        datasets=list(datasets) or None,
        tags=["cultureclip", *(t for t in tags if t != "cultureclip")],
        pipeline_tag="zero-shot-image-classification"
        if kind == "contrastive"
        else "image-text-to-text",
        eval_results=eval_results_for_card(eval_results, model_name) or None,
    )
    return ModelCard.from_template(
        data,
        template_str=card_template("model_card.md.jinja"),
        title=model_name,
        base=base or "",
        base_id=base_id,
        usage=usage,
        config_yaml=_config_yaml(config),
        results=list(eval_results),
        adapter=adapter,
        adapter_dir=adapter_dir,
        license_given=license is not None,
        version=__version__,
    )


def add_to_model_card(
    path: str | Path,
    *,
    license: str | None = None,
    datasets: Sequence[str] = (),
    eval_results: Sequence[EvalSummary] = (),
) -> Any:
    """Loads the card at ``path`` and adds a license, datasets and eval results to its
    metadata (results of a benchmark already listed are replaced)."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(path)
    data = card.data
    if license:
        data.license = license
        card.text = _with_section(card.text, "License", None)  # the "none given" note
    if datasets:
        data.datasets = sorted({*(data.datasets or []), *datasets})
    if eval_results:
        name = data.model_name or Path(path).parent.name
        data.model_name = name
        replaced = {r.benchmark for r in eval_results}
        kept = [e for e in data.eval_results or [] if e.dataset_type not in replaced]
        data.eval_results = kept + eval_results_for_card(eval_results, name)
        rows = [
            f"| {e.dataset_name} | {e.task_type} | {e.metric_type} | {e.metric_value:.4f} |"
            for e in data.eval_results
        ]
        table = "| benchmark | task | metric | value |\n| --- | --- | --- | --- |\n" + "\n".join(
            rows
        )
        card.text = _with_section(card.text, "Evaluation", table)
    return card


def _with_section(text: str, title: str, body: str | None) -> str:
    """``text`` with its ``## title`` section replaced by ``body`` (removed when None); a
    new section goes before the training configuration, or at the end."""
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = f"## {title}\n\n{body.strip()}\n\n" if body else ""
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    if not section:
        return text
    anchor = text.find("## Training configuration")
    if anchor < 0:
        return text.rstrip("\n") + "\n\n" + section
    return text[:anchor] + section + text[anchor:]


def write_card(card: Any, folder: str | Path) -> Path:
    """Writes a card as ``folder/README.md`` (atomically)."""
    return atomic_write_text(Path(folder) / CARD_NAME, str(card).rstrip("\n") + "\n")
