"""The captions stage: ``n`` short, feature-bearing captions per concept side (LLM or templates)."""

from __future__ import annotations

from typing import Any

from cultureclip.core.errors import InputError
from cultureclip.core.io import stable_hash
from cultureclip.core.llm import Items, load_prompt
from cultureclip.core.store import ResultStore
from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.loaders import load_twins, twin_sides
from cultureclip.synth.pool import LLMItem, run_llm_items
from cultureclip.synth.records import Side, country_name, side_variables
from cultureclip.synth.schemas import (
    CaptionsAnswer,
    caption_shape,
    check_caption,
    check_captions,
)


def caption_key(ctx: SynthContext, side: Side) -> str:
    s = ctx.config.captions
    return stable_hash(
        "captions",
        side.text_key,
        s.n,
        s.max_words,
        s.require_features,
        load_prompt(s.prompt).id,
        ctx.llm_id(),
        ctx.config.seed,
        s.temperature,
    )


def run_captions(ctx: SynthContext, sides: list[Side] | None = None) -> StageReport:
    """``n`` diverse captions per concept side, each shorter than ``max_words`` and feature-bearing."""
    settings, report = ctx.config.captions, StageReport("captions")
    if sides is None:
        every = twin_sides(load_twins(ctx))
        sides = [s for s in every if not s.captions]
        if len(sides) < len(every):
            report.notes.append(f"{len(every) - len(sides)} side(s) have captions of their own")
    if not sides and not report.notes:
        report.notes.append("no twins stored yet (the twins stage has none)")
    if settings.templates:
        report.total = report.given = len(sides)
        report.notes.append("written from captions.templates (no LLM)")
        return report
    # Sides of one concept with their own photos share the written captions: one request.
    by_key = {caption_key(ctx, side): side for side in sides}
    run_llm_items(
        ctx,
        "captions",
        [_captions_item(ctx, key, side) for key, side in by_key.items()],
        report,
        prompt=load_prompt(settings.prompt),
        schema=CaptionsAnswer,
        temperature=settings.temperature,
    )
    return report


def template_captions(ctx: SynthContext, side: Side) -> list[str]:
    """``captions.templates`` filled for ``side``; templates naming an empty field are left out."""
    import string

    values = {
        "concept": side.concept,
        "group": side.group.replace("_", " "),
        "country_name": country_name(side.country) if side.country else "",
        "category": side.category,
        "features": side.features,
        "context": side.context,
    }
    captions = []
    for template in ctx.config.captions.templates or []:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        unknown = fields - set(values)
        if unknown:
            raise InputError(
                f"captions.templates: unknown field(s) {sorted(unknown)} in {template!r}; "
                f"use {', '.join('{' + k + '}' for k in values)}"
            )
        if all(values[name] for name in fields):
            captions.append(template.format(**values))
    return list(dict.fromkeys(captions)) or [side.concept]


def _captions_item(ctx: SynthContext, key: str, side: Side) -> LLMItem:
    s = ctx.config.captions

    def check(answer: CaptionsAnswer) -> dict[str, Any]:
        kept = check_captions(
            answer,
            n=s.n,
            max_words=s.max_words,
            features=side.features,
            require_features=s.require_features,
        )
        return {"captions": kept}

    variables = {**side_variables(side), "n": s.n, "max_words": s.max_words}
    fields = {"side": side.key, "concept": side.concept}
    # Good captions of a partly good answer are kept; only the missing ones are asked again.
    items = Items(
        "captions",
        need=s.n,
        check=lambda caption: check_caption(
            caption,
            max_words=s.max_words,
            features=side.features,
            require_features=s.require_features,
        ),
        same=str,  # exact repeats, as check_captions counts them
        # Decoding (json_mode=json_schema) writes captions short enough, with a feature word.
        decode=caption_shape(s.max_words, side.features, s.require_features),
    )
    return LLMItem(key, variables, check, fields, failed={"captions": []}, items=items)


def side_captions(ctx: SynthContext, side: Side, store: ResultStore) -> list[str] | None:
    if side.captions:
        return list(side.captions)
    if ctx.config.captions.templates:
        return template_captions(ctx, side)
    record = store.get(caption_key(ctx, side))
    return None if record is None else list(record["captions"])
