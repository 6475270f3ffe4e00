"""The images stage: one image per caption (or per concept), split over accelerate processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cultureclip.core.io import atomic_path, stable_hash
from cultureclip.core.progress import progress
from cultureclip.core.store import FailureLog, ResultStore
from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.loaders import load_twins, twin_sides
from cultureclip.synth.records import Side
from cultureclip.synth.stages.captions import side_captions


@dataclass(frozen=True)
class ImageUnit:
    """One (caption, image) of a side: rendered by the images stage or given by the corpus."""

    key: str
    side: Side
    index: int
    caption: str
    seed: int
    given: str | None = None  # absolute path of a corpus image

    @property
    def relpath(self) -> str:
        return f"images/{self.key}.png"


def image_units(
    ctx: SynthContext, side: Side, captions: list[str], identity: dict[str, Any]
) -> list[ImageUnit]:
    if side.image is not None:
        key = stable_hash("given-image", side.image)
        return [
            ImageUnit(key, side, 0, captions[0] if captions else side.concept, 0, given=side.image)
        ]
    wanted = captions if ctx.config.images.per == "caption" else captions[:1]
    units = []
    for index, caption in enumerate(wanted):
        base = stable_hash("image", side.key, index, caption, identity)
        # The seed is derived from the unit, so an image does not change with batch or shard.
        seed = int(stable_hash("seed", ctx.config.seed, base), 16) % (2**31)
        units.append(ImageUnit(stable_hash(base, seed), side, index, caption, seed))
    return units


def plan_units(ctx: SynthContext, identity: dict[str, Any]) -> tuple[list[ImageUnit], int]:
    """Every image unit of this shard, and how many sides still wait for captions."""
    captions = ResultStore(ctx.work_dir, "captions")
    units, waiting = [], 0
    for side in twin_sides(load_twins(ctx)):
        texts = side_captions(ctx, side, captions)
        if texts is None:
            waiting += 1
            continue
        units.extend(image_units(ctx, side, texts, identity))
    return units, waiting


def run_images(ctx: SynthContext) -> StageReport:
    from accelerate import PartialState

    from cultureclip.synth.images import RenderRequest, create_image_backend

    report = StageReport("images")
    state = PartialState()
    settings = ctx.config.placed("images")
    device = settings.device
    if device in ("auto", "cuda") and state.num_processes > 1:  # each process its own GPU
        device = str(state.device)
    backend = create_image_backend(settings.model_copy(update={"device": device}))
    units, report.waiting = plan_units(ctx, backend.identity())
    given = sum(1 for u in units if u.given is not None)
    units = [u for u in units if u.given is None]
    if given:
        report.notes.append("given images are the input's own, nothing to render for them")
    writer = (
        ctx.writer
        if state.num_processes == 1
        else ".".join(filter(None, [ctx.writer, f"proc-{state.process_index}"]))
    )
    store = ResultStore(ctx.work_dir, "images", writer)
    failures = FailureLog(ctx.work_dir, writer)
    pending = [u for u in units if u.key not in store]
    report.total, report.cached = len(units) + given, len(units) - len(pending)
    report.given = given
    if not report.total and not report.waiting:
        report.notes.append("no twins with captions yet")
    batch_size = ctx.config.images.batch_size
    # Every process sees the same sorted list, so split_between_processes gives disjoint parts.
    with (
        state.split_between_processes(pending) as mine,
        progress(
            "images",
            len(pending),
            enabled=ctx.config.progress and state.is_main_process and bool(pending),
        ) as task,
    ):
        for start in range(0, len(mine), batch_size):
            batch = mine[start : start + batch_size]
            requests = [
                RenderRequest(u.caption, u.side.concept, u.seed, u.side.glyph) for u in batch
            ]
            for unit, image in zip(batch, backend.render(requests), strict=True):
                if isinstance(image, Exception):
                    failures.add(
                        "images",
                        unit.key,
                        str(image),
                        item={"concept": unit.side.concept, "caption": unit.caption},
                    )
                    report.failed += 1
                    continue
                with atomic_path(ctx.out_dir / unit.relpath) as tmp:
                    image.save(tmp, format="PNG")
                store.add(
                    {
                        "key": unit.key,
                        "side": unit.side.key,
                        "index": unit.index,
                        "caption": unit.caption,
                        "path": unit.relpath,
                        "provenance": {**backend.identity(), "seed": unit.seed},
                    }
                )
                report.done += 1
            task.update(advance=len(batch))
    state.wait_for_everyone()
    return report


def image_identity(ctx: SynthContext) -> dict[str, Any]:
    """The image backend identity without loading a model (diffusers loads lazily)."""
    from cultureclip.synth.images import create_image_backend

    return create_image_backend(ctx.config.placed("images")).identity()
