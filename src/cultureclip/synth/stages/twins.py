"""The twins stage: an LLM names each concept's twin, or the image-embedding miner finds it."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cultureclip.core.errors import InputError
from cultureclip.core.io import stable_hash
from cultureclip.core.llm import PromptTemplate, load_prompt
from cultureclip.core.progress import progress
from cultureclip.core.store import ResultStore
from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.loaders import load_concepts, mine_keys
from cultureclip.synth.pool import LLMItem, run_llm_items
from cultureclip.synth.records import Concept, country_code, side_variables
from cultureclip.synth.schemas import TwinAnswer

logger = logging.getLogger(__name__)

NO_CONCEPTS = (
    "no concepts stored yet (the concepts stage has none; see `cultureclip synth failures`)"
)


def run_twins(ctx: SynthContext) -> StageReport:
    """Twin matching by LLM, or by the image-embedding miner (``twins.method=mine``)."""
    if ctx.config.twins.method == "mine":
        return mine_twins_stage(ctx)
    settings, report = ctx.config.twins, StageReport("twins")
    prompt = load_prompt(settings.prompt)
    items = [_twin_item(ctx, prompt, concept) for concept in load_concepts(ctx)]
    if not items:
        report.notes.append(NO_CONCEPTS)
    run_llm_items(
        ctx,
        "twins",
        items,
        report,
        prompt=prompt,
        schema=TwinAnswer,
        temperature=settings.temperature,
    )
    return report


def _twin_item(ctx: SynthContext, prompt: PromptTemplate, concept: Concept) -> LLMItem:
    side = concept.side
    key = stable_hash(
        "twins",
        concept.id,
        side.concept,
        side.context,
        side.features,
        prompt.id,
        ctx.llm_id(),
        ctx.config.seed,
        ctx.config.twins.temperature,
    )

    def check(answer: TwinAnswer) -> dict[str, str]:
        if answer.neg_concept.strip().lower() == side.concept.strip().lower():
            raise ValueError("neg_concept must differ from the concept itself")
        code = country_code(answer.neg_country)
        if code is None:
            raise ValueError(
                f"neg_country must be an ISO 3166-1 alpha-2 code, got {answer.neg_country!r}"
            )
        if code == country_code(side.country):
            raise ValueError("the twin must come from a different country")
        return {**answer.model_dump(), "neg_country": code}

    fields = {
        "root": concept.root,
        "pos_id": concept.id,
        "pos_concept": side.concept,
        "method": "llm",
    }
    return LLMItem(key, side_variables(side), check, fields)


def _concept_images(ctx: SynthContext, concepts: list[Concept]) -> list[list[Any]]:
    """Given images load from disk; concepts without one are drawn by the image backend (glyphs)."""
    from cultureclip.data.pairs import open_image
    from cultureclip.synth.images import RenderRequest, create_image_backend

    backend = None
    images: list[list[Any]] = []
    for concept in concepts:
        if concept.side.image is not None:
            images.append([functools.partial(open_image, Path(concept.side.image))])
            continue
        backend = backend or create_image_backend(ctx.config.placed("images"))
        request = RenderRequest(
            concept.side.features or concept.side.concept,
            concept.side.concept,
            ctx.config.seed,
            concept.side.glyph,
        )
        rendered = backend.render([request])[0]
        if isinstance(rendered, Exception):
            raise InputError(
                f"twin mining needs an image of every concept: {rendered}"
            ) from rendered
        images.append([rendered])
    return images


def _no_twin_reason(concept: Concept, concepts: list[Concept], column: str) -> str:
    same_category = [c for c in concepts if c.side.category == concept.side.category]
    if len(same_category) == 1:
        return f"no other concept in category {concept.side.category!r}"
    return f"every concept of category {concept.side.category!r} has {column} {concept.side.twin_group!r}"


def mine_twins_stage(ctx: SynthContext) -> StageReport:
    report = StageReport("twins")
    if ctx.shard.count > 1 and ctx.config.concepts.source not in ("corpus", "folder"):
        raise InputError(
            "twins.method=mine across shards needs concepts.source=corpus or folder "
            "(every shard mines all concepts)"
        )
    # Mining compares every concept with every other, so it sees all shards' concepts
    # and keeps the pairs whose concept belongs to this shard.
    concepts = load_concepts(ctx, all_shards=True)
    if not concepts:
        report.notes.append(NO_CONCEPTS)
        return report
    store = ctx.store("twins")
    every_key = mine_keys(ctx, concepts)
    keys = {i: every_key[c.id] for i, c in enumerate(concepts) if ctx.shard.owns(c.root)}
    pending = {i: key for i, key in keys.items() if key not in store}
    report.total, report.cached = len(keys), len(keys) - len(pending)
    _note_one_group(report, concepts, ctx.config.concepts.group_column())
    if pending:
        _store_mined(ctx, store, concepts, pending, report)
    reasons = no_twin_reasons(store.get(key) for key in keys.values())
    if reasons:
        top = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(3))
        report.notes.append(f"{reasons.total()} concept(s) without a twin ({top})")
    return report


def _note_one_group(report: StageReport, concepts: list[Concept], column: str) -> None:
    """Warns when every concept is in one group: mining across groups then finds nothing."""
    groups = {c.side.twin_group for c in concepts}
    if len(groups) > 1:
        return
    note = (
        f"every concept has the same {column} ({next(iter(groups))!r}): twins are mined "
        f"across {column}, so none has a candidate"
        + (
            "; name the column that holds the groups with concepts.group_by"
            if column == "country"
            else ""
        )
    )
    report.notes.append(note)
    logger.warning("twins: %s", note)


def _store_mined(
    ctx: SynthContext,
    store: ResultStore,
    concepts: list[Concept],
    pending: dict[int, str],
    report: StageReport,
) -> None:
    """Mines twins among all ``concepts`` and stores the outcome of each pending one."""
    column = ctx.config.concepts.group_column()
    found = _mined_pairs(ctx, concepts)
    provenance = {
        "method": "mine",
        "model": ctx.config.twins.mine_model,
        "seed": ctx.config.seed,
        "across": column,
    }
    for i, key in pending.items():
        pos = concepts[i]
        record: dict[str, Any] = {
            "key": key,
            "root": pos.root,
            "pos_id": pos.id,
            "pos_concept": pos.side.concept,
            "method": "mine",
            "provenance": provenance,
        }
        twin = found.get(i)
        if twin is None:
            # A finished outcome: a rerun must not embed everything again for it.
            record.update(neg_id=None, no_twin=_no_twin_reason(pos, concepts, column))
            report.skipped += 1
        else:
            neg = concepts[twin.neg]
            record.update(
                neg_id=neg.id,
                neg_concept=neg.side.concept,
                similarity=round(twin.similarity, 6),
            )
            report.done += 1
        store.add(record)


def _mined_pairs(ctx: SynthContext, concepts: list[Concept]) -> dict[int, Any]:
    """Embeds every concept's images and mines twins across groups: pos index -> twin."""
    from cultureclip.models.registry import create_model
    from cultureclip.synth.mining import embed_concepts, mine_twins

    settings = ctx.config.placed("twins")
    model = create_model(
        settings.mine_model, device=settings.resolved_device(), precision=settings.precision
    )
    images = _concept_images(ctx, concepts)
    total = sum(len(i) for i in images)
    with progress("twins (mining)", total, enabled=ctx.config.progress) as task:
        embeddings = embed_concepts(
            model,
            images,
            batch_size=settings.mine_batch_size,
            on_progress=lambda n: task.update(advance=n),
        )
    labels = [
        {"key": c.id, "group": c.side.twin_group, "category": c.side.category} for c in concepts
    ]
    return {twin.pos: twin for twin in mine_twins(labels, embeddings, across="group")}


def no_twin_reasons(records: Iterable[dict[str, Any] | None]) -> Counter[str]:
    """Why mined concepts have no twin (a finished outcome), counted over their records."""
    return Counter(
        record.get("no_twin", "no candidate")
        for record in records
        if record is not None and record.get("neg_id") is None
    )
