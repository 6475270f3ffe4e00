"""The concepts stage: top-down concept writing per country × category, or the bottom-up corpus filter."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from cultureclip.core.errors import InputError
from cultureclip.core.llm import LLMBackend, Outcome, ask
from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.corpus import CorpusRow, read_corpus
from cultureclip.synth.loaders import corpus_rows
from cultureclip.synth.pool import run_llm_items
from cultureclip.synth.prompts import load_prompt
from cultureclip.synth.records import (
    category_list,
    corpus_root,
    country_code,
    country_name,
    country_names,
    provenance,
)
from cultureclip.synth.schemas import (
    BottomUpAnswer,
    ConceptsAnswer,
)
from cultureclip.utils.io import stable_hash


def run_concepts(ctx: SynthContext) -> StageReport:
    """Top-down concept writing per country × category, or the bottom-up corpus filter."""
    settings, report = ctx.config.concepts, StageReport("concepts")
    if settings.source in ("corpus", "folder"):
        left_out: list[tuple[str, str]] = []
        report.total = report.given = len(corpus_rows(ctx, left_out))  # no LLM needed
        report.notes.append(
            f"read from {settings.folder if settings.source == 'folder' else settings.corpus}"
        )
        if left_out:
            report.skipped = len(left_out)
            report.total += len(left_out)
            report.notes.append(
                f"{len(left_out)} unreadable image(s) left out, e.g. {left_out[0][0]} ({left_out[0][1]})"
            )
        return report
    seed, model = ctx.config.seed, ctx.llm_id()
    categories = category_list(ctx.config)
    items: list[tuple[str, Any]] = []
    if settings.source == "topdown":
        prompt = load_prompt(settings.prompt)
        names = country_names()
        codes = [c.upper() for c in settings.countries] if settings.countries else sorted(names)
        unknown = [c for c in codes if c not in names]
        if unknown:
            raise InputError(f"concepts.countries: unknown ISO 3166-1 alpha-2 code(s) {unknown}")
        for code in codes:
            for category in categories:
                root = stable_hash("cell", code, category)
                if not ctx.shard.owns(root):
                    continue
                key = stable_hash(
                    "concepts",
                    code,
                    category,
                    settings.per_pair,
                    prompt.id,
                    model,
                    seed,
                    settings.temperature,
                )
                items.append(
                    (key, functools.partial(_write_concepts, ctx, prompt, root, code, category))
                )
    else:
        if not settings.corpus:
            raise InputError("concepts.source=bottomup needs concepts.corpus (a JSONL or CSV file)")
        prompt = load_prompt(settings.bottomup_prompt)
        for row in read_corpus(settings.corpus):
            root = corpus_root(row)
            if not ctx.shard.owns(root):
                continue
            key = stable_hash("bottomup", root, categories, prompt.id, model, seed)
            items.append((key, functools.partial(_judge_title, ctx, prompt, root, row, categories)))
    asyncio.run(run_llm_items(ctx, "concepts", items, report))
    return report


async def _write_concepts(
    ctx: SynthContext, prompt: Any, root: str, code: str, category: str, llm: LLMBackend
) -> tuple[Outcome[Any], dict[str, Any]]:
    n = ctx.config.concepts.per_pair
    variables = {"country": code, "country_name": country_name(code), "category": category, "n": n}

    def check(answer: ConceptsAnswer) -> list[dict[str, str]]:
        unique = list({c.concept.lower(): c for c in answer.concepts}.values())
        if len(unique) < n:
            raise ValueError(f"expected {n} different concepts, got {len(unique)}")
        return [c.model_dump() for c in unique[:n]]

    outcome = await ask(
        llm,
        prompt,
        variables,
        ConceptsAnswer,
        check=check,
        temperature=ctx.config.concepts.temperature,
        seed=ctx.config.seed,
    )
    record = {
        "root": root,
        "source": "topdown",
        "country": code,
        "category": category,
        "concepts": outcome.value or [],
        "provenance": provenance(prompt.id, llm.model_id, ctx.config.seed),
    }
    return outcome, record


async def _judge_title(
    ctx: SynthContext,
    prompt: Any,
    root: str,
    row: CorpusRow,
    categories: list[str],
    llm: LLMBackend,
) -> tuple[Outcome[Any], dict[str, Any]]:
    variables = {
        "title": row.name,
        "caption": row.caption or "(none)",
        "categories": ", ".join(categories),
        "country_hint": row.country or "unknown",
    }
    by_lower = {c.lower(): c for c in categories}

    def check(answer: BottomUpAnswer) -> dict[str, Any]:
        if answer.answer == "no":
            return {"answer": "no"}
        category = by_lower.get((answer.category or "").strip().lower())
        if category is None:
            raise ValueError(f"category must be one of {categories}, got {answer.category!r}")
        code = country_code(answer.country or row.country or "")
        if code is None:
            raise ValueError(f"country must be an ISO 3166-1 alpha-2 code, got {answer.country!r}")
        if not answer.context or not answer.features:
            raise ValueError("a 'yes' answer needs non-empty context and features")
        return {
            "answer": "yes",
            "category": category,
            "country": code,
            "context": answer.context,
            "features": answer.features,
        }

    outcome = await ask(
        llm, prompt, variables, BottomUpAnswer, check=check, temperature=0.0, seed=ctx.config.seed
    )
    record = {
        "root": root,
        "source": "bottomup",
        "concept": row.name,
        "image": row.image,
        "caption": row.caption,
        "glyph": row.glyph,
        **(outcome.value or {"answer": None}),
        "provenance": provenance(prompt.id, llm.model_id, ctx.config.seed),
    }
    return outcome, record
