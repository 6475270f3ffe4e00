"""The concepts stage: top-down concept writing per country × category, or the bottom-up corpus filter."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cultureclip.core.errors import InputError
from cultureclip.core.io import stable_hash
from cultureclip.core.llm import Items, PromptTemplate, load_prompt
from cultureclip.data import taxonomy
from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.corpus import CorpusRow, read_corpus
from cultureclip.synth.loaders import corpus_rows
from cultureclip.synth.pool import LLMItem, run_llm_items
from cultureclip.synth.records import (
    corpus_root,
    country_code,
    country_name,
    country_names,
)
from cultureclip.synth.schemas import BottomUpAnswer, ConceptsAnswer


def run_concepts(ctx: SynthContext) -> StageReport:
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
    categories = list(settings.categories or taxonomy.categories("cultwin"))
    items = []
    if settings.source == "topdown":
        prompt, temperature = load_prompt(settings.prompt), settings.temperature
        schema: type[BaseModel] = ConceptsAnswer
        names = country_names()
        codes = [c.upper() for c in settings.countries] if settings.countries else sorted(names)
        unknown = [c for c in codes if c not in names]
        if unknown:
            raise InputError(f"concepts.countries: unknown ISO 3166-1 alpha-2 code(s) {unknown}")
        for code in codes:
            for category in categories:
                root = stable_hash("cell", code, category)
                if ctx.shard.owns(root):
                    items.append(_concepts_item(ctx, prompt, root, code, category))
    else:
        if not settings.corpus:
            raise InputError("concepts.source=bottomup needs concepts.corpus (a JSONL or CSV file)")
        prompt, schema, temperature = load_prompt(settings.bottomup_prompt), BottomUpAnswer, 0.0
        for row in read_corpus(settings.corpus):
            root = corpus_root(row)
            if ctx.shard.owns(root):
                items.append(_title_item(ctx, prompt, root, row, categories))
    run_llm_items(
        ctx, "concepts", items, report, prompt=prompt, schema=schema, temperature=temperature
    )
    return report


def _concepts_item(
    ctx: SynthContext, prompt: PromptTemplate, root: str, code: str, category: str
) -> LLMItem:
    settings = ctx.config.concepts
    n = settings.per_pair
    key = stable_hash(
        "concepts",
        code,
        category,
        n,
        prompt.id,
        ctx.llm_id(),
        ctx.config.seed,
        settings.temperature,
    )

    def check(answer: ConceptsAnswer) -> dict[str, Any]:
        unique = list({c.concept.lower(): c for c in answer.concepts}.values())
        if len(unique) < n:
            raise ValueError(f"expected {n} different concepts, got {len(unique)}")
        return {"concepts": [c.model_dump() for c in unique[:n]]}

    return LLMItem(
        key,
        {"country": code, "country_name": country_name(code), "category": category, "n": n},
        check,
        {"root": root, "source": "topdown", "country": code, "category": category},
        failed={"concepts": []},
        items=Items("concepts", need=n, same=lambda c: c.concept.lower()),
    )


def _title_item(
    ctx: SynthContext, prompt: PromptTemplate, root: str, row: CorpusRow, categories: list[str]
) -> LLMItem:
    key = stable_hash("bottomup", root, categories, prompt.id, ctx.llm_id(), ctx.config.seed)
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

    variables = {
        "title": row.name,
        "caption": row.caption or "(none)",
        "categories": ", ".join(categories),
        "country_hint": row.country or "unknown",
    }
    fields = {
        "root": root,
        "source": "bottomup",
        "concept": row.name,
        "image": row.image,
        "caption": row.caption,
        "glyph": row.glyph,
    }
    return LLMItem(key, variables, check, fields, failed={"answer": None})
