"""The quickstart: the whole CultureCLIP workflow, offline, in minutes on two CPU cores.

1. build an emoji-and-flag CulTwin world (OpenMoji artwork, twins mined by pixels);
2. align the ``lite:en`` towers on the culture-neutral emoji (``clip`` loss, heads);
3. fine-tune that base on the twin training split, once with plain ``clip`` and once
   with the ``cultureclip`` loss (same data, steps and seed);
4. evaluate base, CLIP-tuned and CultureCLIP-tuned models on held-out twins (twin
   accuracy) and on held-out general emoji (zero-shot top-1), the forgetting check;
5. index the held-out twins for retrieval and run example searches;
6. write ``report.html`` and ``summary.json`` and print the summary table.

Every step is skipped when its output exists (same settings), so an interrupted run
continues where it stopped. The same flow runs on real CLIP with
``--model hf:openai/clip-vit-base-patch32`` (alignment off: ``align.epochs=0``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from cultureclip.core.config import Config
from cultureclip.core.device import DeviceSettings, resolve_device
from cultureclip.core.io import atomic_write_json, atomic_write_text
from cultureclip.models.base import MODEL_CONFIG_NAME, TrainingSettings, TrainMode
from cultureclip.quickstart.world import World, WorldSettings, build_world

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
FEATURES_DIR = "features"  # frozen-tower outputs (cultureclip.models.feature_cache)
MODEL_ORDER = ("base", "clip", "cultureclip")


class StageSettings(Config):
    """One training stage (alignment or fine-tuning)."""

    epochs: int = Field(ge=0)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)


class AlignSettings(StageSettings):
    """Aligning the towers on general emoji (``epochs=0`` skips it: an aligned model)."""

    epochs: int = Field(6, ge=0)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(20, ge=0)


class FinetuneSettings(StageSettings):
    """Fine-tuning on the twin training split, once per compared loss."""

    epochs: int = Field(15, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(5e-4, gt=0)


class QuickstartConfig(DeviceSettings):
    """Everything the quickstart does; saved as ``config.yaml`` in the output directory."""

    out: str = "runs/quickstart"
    #: the model to start from; ``cache`` keeps frozen-tower outputs (heads-only training)
    model: str = "lite:en?image_size=128&cache=100000"
    world: WorldSettings = Field(default_factory=WorldSettings)
    #: which parts train in alignment and fine-tuning (heads: the projection layers)
    training: TrainingSettings = Field(
        default_factory=lambda: TrainingSettings(image=TrainMode.heads, text=TrainMode.heads)
    )
    align: AlignSettings = Field(default_factory=AlignSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    #: the losses compared in fine-tuning (the first is the baseline of the gain)
    losses: tuple[str, str] = ("clip", "cultureclip")
    #: text of a concept in twin evaluation (the paper scores bare concept names)
    twin_template: str = "{concept}"
    zeroshot_templates: list[str] = Field(
        default_factory=lambda: ["{c}", "an emoji of {c}", "a picture of {c}"]
    )
    example_searches: int = Field(4, ge=0, description="text queries run on the index")
    seed: int = 42
    progress: bool = True


@dataclass
class QuickstartResult:
    """Accuracies in percent, per model role (``base``, ``clip``, ``cultureclip``).

    ``twin_accuracy["seen"]``: training twin pairs in renderings never trained on;
    ``twin_accuracy["unseen"]``: twin pairs whose concepts never appeared in fine-tuning.
    """

    out: Path
    twin_accuracy: dict[str, dict[str, float]]
    general_accuracy: dict[str, float]
    model_dirs: dict[str, str]
    searches: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def gain(self, over: str, kind: str | None = None) -> float:
        """CultureCLIP's accuracy minus ``over``'s: on twins of ``kind``, else general top-1."""
        accuracy = self.general_accuracy if kind is None else self.twin_accuracy[kind]
        return accuracy["cultureclip"] - accuracy[over]

    def to_dict(self) -> dict[str, Any]:
        return {
            "twin_accuracy": self.twin_accuracy,
            "general_accuracy": self.general_accuracy,
            "twin_gain_over_base": {k: round(self.gain("base", k), 3) for k in self.twin_accuracy},
            "twin_gain_over_clip": {k: round(self.gain("clip", k), 3) for k in self.twin_accuracy},
            "general_change_vs_clip": round(self.gain("clip"), 3),
            "general_change_vs_base": round(self.gain("base"), 3),
            "model_dirs": self.model_dirs,
            "searches": self.searches,
            "report": str(self.report) if self.report else None,
            "seconds": self.seconds,
        }


def _log(config: QuickstartConfig, message: str) -> None:
    if config.progress:
        logger.info("quickstart: %s", message)


#: what a training stage was made from (``TrainConfig.content_identity``)
CONTENT_NAME = "content.json"


def _train_stage(
    config: QuickstartConfig, model: str, data: Path, loss: str, stage: StageSettings, name: str
) -> str:
    """Trains (or resumes, or reuses) one stage in ``train/<name>``; its final model directory."""
    from cultureclip.core.config import read_config_file
    from cultureclip.core.io import atomic_write_json, read_json
    from cultureclip.core.store import changed_fields
    from cultureclip.train import TrainConfig, train

    output_dir = Path(config.out) / "train" / name

    train_config = TrainConfig(
        model=model,
        device=config.device,
        precision=config.precision,
        # Frozen-tower outputs are kept on disk too: a rerun with other training settings
        # (or the second fine-tune's data, when it is the first's) encodes nothing again.
        data={"path": str(data), "feature_cache_dir": str(Path(config.out) / FEATURES_DIR)},
        loss=loss,
        training=config.training,
        epochs=stage.epochs,
        batch_size=stage.batch_size,
        optim={"lr": stage.lr, "weight_decay": stage.weight_decay},
        schedule={
            "kind": "linear" if stage.warmup_steps else "constant",
            "warmup_steps": stage.warmup_steps,
        },
        seed=config.seed,
        out=str(output_dir),
        checkpoint_every=50,
        keep_last=1,
        log_every=5,
        progress=config.progress,
        # A lite model's final/ already loads on its own (its towers ship with the
        # package); `cultureclip export` writes the carded folder when it is wanted.
        export=False,
    )
    final, saved = output_dir / "final", output_dir / "config.yaml"
    # The base model (the first stage's final/ for the second) and the data by content: a
    # stage redone upstream is new input here even though its path is the same.
    content, content_file = train_config.content_identity(), output_dir / CONTENT_NAME
    changed = ["(no earlier run)"]
    if saved.exists():
        previous = TrainConfig.model_validate(read_config_file(saved))
        changed = changed_fields(previous.run_identity(), train_config.run_identity())
        recorded = read_json(content_file) if content_file.exists() else None
        changed += [f"{name} content" for name in changed_fields(recorded, content)]
    if not changed:
        if (final / MODEL_CONFIG_NAME).exists():  # written last by ``save``: stage finished
            logger.info("reusing %s: same settings", final)
            return str(final)
        if (output_dir / "checkpoints" / "latest").exists():
            train_config = train_config.model_copy(update={"resume": "latest"})
    elif output_dir.exists():
        logger.info("redoing %s: settings changed (%s)", output_dir, ", ".join(changed))
        shutil.rmtree(output_dir)
    atomic_write_json(content_file, content)
    result = train(train_config)
    if result.final_model_dir is None:
        raise RuntimeError(f"training in {output_dir} stopped before its last step")
    return str(result.final_model_dir)


@contextlib.contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    mark = time.perf_counter()
    yield
    seconds[step] = time.perf_counter() - mark


def run_quickstart(config: QuickstartConfig | None = None) -> QuickstartResult:
    """Runs (or resumes) the whole quickstart; returns the measured accuracies."""
    from cultureclip.eval.report import build_report

    config = config or QuickstartConfig()
    resolve_device(config.device)  # a device this machine lacks fails before any work
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    with _timed(seconds, "world"):
        world = _build_world(config, out)
    with _timed(seconds, "align"):
        # epochs=0: fine-tuning starts from ``config.model`` itself (an aligned model)
        base = config.model
        if config.align.epochs:
            _log(config, "2/6 aligning the towers on general emoji (clip loss, heads)")
            base = _train_stage(config, base, world.general_train, "clip", config.align, "align")
    model_dirs = {"base": base}
    for loss in config.losses:
        with _timed(seconds, f"finetune_{loss}"):
            pairs = world.counts["twin_pairs_train"]
            _log(config, f"3/6 fine-tuning on {pairs} twin pairs with loss {loss}")
            model_dirs[loss] = _train_stage(
                config, base, world.twins_train, loss, config.finetune, loss
            )
    with _timed(seconds, "eval"):
        twin_accuracy, general_accuracy = _evaluate(config, world, model_dirs, out / "eval")
    with _timed(seconds, "retrieval"):
        _log(config, "5/6 indexing the new views of the twins for retrieval")
        searches = _example_searches(
            config, model_dirs[config.losses[-1]], world.twins_train_views, out
        )
    _log(config, "6/6 writing the report")
    report = build_report([out / "eval"], out)
    seconds["total"] = time.perf_counter() - started
    result = QuickstartResult(
        out=out,
        twin_accuracy=twin_accuracy,
        general_accuracy=general_accuracy,
        model_dirs=model_dirs,
        searches=searches,
        report=report,
        seconds={k: round(v, 1) for k, v in seconds.items()},
    )
    atomic_write_json(out / SUMMARY_NAME, {"counts": world.counts, **result.to_dict()})
    atomic_write_text(out / "summary.md", summary_markdown(result, world.counts))
    return result


def _build_world(config: QuickstartConfig, out: Path) -> World:
    """Step 1; a changed world makes what was trained, evaluated and indexed on it stale."""
    _log(config, "1/6 building the emoji-and-flag CulTwin world")
    world_manifest = out / "world" / "world.json"
    before = world_manifest.read_bytes() if world_manifest.exists() else None
    world = build_world(out / "world", config.world, progress=config.progress)
    if before is not None and world_manifest.read_bytes() != before:
        for stale in ("train", "eval", "index"):  # built from the previous world
            shutil.rmtree(out / stale, ignore_errors=True)
    counts = world.counts
    _log(
        config,
        f"    {counts['twin_pairs']} mined twin pairs ({counts['twin_pairs_train']} train / "
        f"{counts['twin_pairs_test']} held out), {counts['general_train']} general emoji to align "
        f"on, {counts['general_test']} held out",
    )
    return world


def _evaluate(
    config: QuickstartConfig, world: World, model_dirs: dict[str, str], eval_dir: Path
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Step 4: (twin accuracy per kind and role, general zero-shot top-1 per role)."""
    from cultureclip.eval.api import evaluate
    from cultureclip.models.registry import create_model

    _log(config, "4/6 evaluating on held-out twins and held-out general emoji")
    labels = dict(zip(MODEL_ORDER, ("base", *config.losses), strict=True))
    twin_sets = {"seen": world.twins_train_views, "unseen": world.twins_test}
    twin_accuracy: dict[str, dict[str, float]] = {kind: {} for kind in twin_sets}
    general_accuracy: dict[str, float] = {}
    device = resolve_device(config.device)
    base_model = create_model(model_dirs["base"], device=device, precision=config.precision)
    # The three models share the base's frozen towers, whose outputs the process-wide
    # feature store keeps (the spec's ``cache``): each image goes through the image tower
    # once. The benchmarks encode a few texts per call; encoding them all here, in a few
    # large batches, leaves each of those calls a lookup.
    base_model.embed_texts(_eval_texts(config, twin_sets, world.general_test))
    for role, key in labels.items():
        model = (
            base_model
            if role == "base"
            else create_model(model_dirs[key], device=device, precision=config.precision)
        )
        name = "base" if role == "base" else f"{key}-tuned"
        baseline = None if role == "base" else base_model
        common = {"model_name": name, "baseline": baseline, "baseline_name": "base"}
        for kind, data in twin_sets.items():
            twins = evaluate(
                model,
                "twins",
                data=data,
                out_dir=eval_dir,
                label=f"twins-{kind}",
                template=config.twin_template,
                **common,
            )
            twin_accuracy[kind][role] = round(twins.metrics["accuracy"], 3)
        general = evaluate(
            model,
            "zeroshot",
            data=world.general_test,
            out_dir=eval_dir,
            label="general-zeroshot",
            templates=config.zeroshot_templates,
            **common,
        )
        general_accuracy[role] = round(general.metrics["acc1"], 3)
    return twin_accuracy, general_accuracy


def _eval_texts(config: QuickstartConfig, twin_sets: dict[str, Path], general: Path) -> list[str]:
    """The texts step 4 scores images against: twin concept texts and zero-shot prompts."""
    from cultureclip.data.cultwin import read_cultwin
    from cultureclip.eval.api import create_benchmark

    texts: list[str] = []
    for data in twin_sets.values():
        for record in read_cultwin(data).records:
            fields = {"country": record.country, "category": record.category}
            for concept in (record.pos_concept, record.neg_concept):
                texts.append(config.twin_template.format(concept=concept, **fields))
    zeroshot = create_benchmark("zeroshot", general, templates=config.zeroshot_templates)
    zeroshot.prepare()
    loaded = getattr(zeroshot, "_loaded", None)  # (images, labels, classnames, root)
    if loaded is not None:
        texts += [t.format(c=name) for name in loaded[2] for t in config.zeroshot_templates]
    return list(dict.fromkeys(texts))


#: queries tried first, when the world holds them (the classic cultural twins)
FAVOURITE_QUERIES = ("Japanese castle", "kimono", "flag of Indonesia", "dumpling", "sari")


def _example_searches(
    config: QuickstartConfig, model_dir: str, twins: Path, out: Path
) -> list[dict[str, Any]]:
    """Indexes the twin images of ``twins`` and runs a few concept-name queries on them."""
    from cultureclip.data.cultwin import read_cultwin
    from cultureclip.retrieval.index import IndexConfig, build_index
    from cultureclip.retrieval.search import RetrievalIndex

    index_dir = out / "index"
    build_index(
        IndexConfig(
            model=model_dir,
            data=str(twins / "images"),
            out=str(index_dir),
            device=config.device,
            precision=config.precision,
        ),
        progress=False,
    )
    if config.example_searches == 0:
        return []
    index = RetrievalIndex(index_dir)
    names = [r.pos_concept for r in read_cultwin(twins).records]
    queries = [q for q in FAVOURITE_QUERIES if q in names] + names
    return [
        {
            "query": query,
            "hits": [
                {
                    "rank": h.rank,
                    "image": h.image_id,
                    "score": round(h.score, 4),
                    "caption": h.captions[0] if h.captions else "",
                }
                for h in index.search_text(query, k=3)
            ],
        }
        for query in list(dict.fromkeys(queries))[: config.example_searches]
    ]


def summary_rows(result: QuickstartResult) -> list[tuple[str, float, float, float]]:
    """(model, twin accuracy on new views, on unseen concepts, general top-1) per model."""
    return [
        (
            role,
            result.twin_accuracy["seen"][role],
            result.twin_accuracy["unseen"][role],
            result.general_accuracy[role],
        )
        for role in MODEL_ORDER
    ]


def summary_markdown(result: QuickstartResult, counts: dict[str, int]) -> str:
    lines = [
        "# cultureclip quickstart",
        "",
        f"Twin accuracy (%) on the {counts['twin_pairs_train']} training twin pairs drawn anew "
        f"(new views) and on {counts['twin_pairs_test']} held-out pairs of concepts never seen "
        f"in fine-tuning (unseen concepts); zero-shot top-1 (%) over {counts['general_test']} "
        "held-out general emoji.",
        "",
        "| model | twins, new views | twins, unseen concepts | general zero-shot top-1 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {role} | {seen:.1f} | {unseen:.1f} | {general:.1f} |"
        for role, seen, unseen, general in summary_rows(result)
    ]
    lines += ["", gain_summary(result), ""]
    return "\n".join(lines)


def gain_summary(result: QuickstartResult) -> str:
    """The headline sentence: CultureCLIP's twin gains and its general-accuracy change."""
    return (
        f"CultureCLIP twin gain over base: {result.gain('base', 'seen'):+.1f} points on new views, "
        f"{result.gain('base', 'unseen'):+.1f} on unseen concepts (over CLIP-tuned: "
        f"{result.gain('clip', 'seen'):+.1f} / {result.gain('clip', 'unseen'):+.1f}); "
        f"general change vs CLIP-tuned: {result.gain('clip'):+.1f} points."
    )


#: the stage's entry point under the name every stage uses
run = run_quickstart
