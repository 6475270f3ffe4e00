"""The five synth stages and the plan that links them: concepts → twins → captions → images → filter.

Each stage reads what the earlier stages stored, works out its items (each keyed by a
hash of its inputs), skips the keys already stored, does the rest and appends one line
per finished item. Re-running a stage is therefore cheap and never repeats finished
work; a changed prompt, model or seed changes the keys and so redoes only what it
affects. Items belong to the shard of their root (the country × category cell or the
corpus record), so ``--shard i/n`` runs a complete, independent slice of the pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.progress import progress
from cultureclip.core.store import FailureLog, ResultStore, Shard
from cultureclip.synth.config import SynthConfig
from cultureclip.synth.corpus import CorpusRow, read_corpus
from cultureclip.synth.folder import read_folder, unreadable
from cultureclip.synth.llm import LLMBackend, Outcome, ask, create_llm
from cultureclip.synth.prompts import load_prompt
from cultureclip.synth.schemas import (
    BottomUpAnswer,
    CaptionsAnswer,
    ConceptsAnswer,
    TwinAnswer,
    check_captions,
)
from cultureclip.utils.io import stable_hash

T = TypeVar("T")
logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- context


@dataclass
class SynthContext:
    """Where a run writes, which shard it is, and which writer tag its files carry."""

    config: SynthConfig
    shard: Shard = field(default_factory=Shard)
    writer: str | None = None  # suffix of this process's store files (shard / process / task)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "work"

    @property
    def image_dir(self) -> Path:
        return self.out_dir / "images"

    def store(self, stage: str) -> ResultStore:
        return ResultStore(self.work_dir, stage, self.writer)

    def failures(self) -> FailureLog:
        return FailureLog(self.work_dir, self.writer)

    def llm_id(self) -> str:
        return f"{self.config.llm.backend}:{self.config.llm.model}"


@dataclass
class StageReport:
    stage: str
    total: int = 0  # items of this shard
    cached: int = 0  # already stored by an earlier run
    done: int = 0  # finished by this run
    failed: int = 0  # failed in this run (retried by the next one)
    waiting: int = 0  # not ready: an earlier stage has no result for them yet
    given: int = 0  # no work needed: taken from the input (corpus rows, photos, templates)
    skipped: int = 0  # finished without a result (e.g. no twin candidate); not retried
    notes: list[str] = field(default_factory=list)  # why a count is what it is

    def line(self) -> str:
        parts = [
            f"{count} {label}"
            for count, label in (
                (self.given, "given"),
                (self.cached, "cached"),
                (self.done, "done"),
                (self.skipped, "skipped"),
                (self.failed, "failed"),
                (self.waiting, "waiting on earlier stages"),
            )
            if count
        ]
        text = f"{self.stage}: {self.total} items" + (f" ({', '.join(parts)})" if parts else "")
        notes = self.notes or ([] if self.total or self.waiting else ["nothing to do"])
        return text + "".join(f"; {note}" for note in notes)


async def run_pool(
    items: Sequence[T],
    handle: Callable[[list[T]], Awaitable[None]],
    *,
    concurrency: int,
    batch_size: int = 1,
    on_done: Callable[[int], None] | None = None,
) -> None:
    """Runs ``handle`` over batches of ``items`` with at most ``concurrency`` batches in flight."""
    queue: asyncio.Queue[list[T]] = asyncio.Queue()
    for start in range(0, len(items), batch_size):
        queue.put_nowait(list(items[start : start + batch_size]))

    async def worker() -> None:
        while True:
            try:
                batch = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await handle(batch)
            if on_done is not None:
                on_done(len(batch))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, queue.qsize()))))


# ----------------------------------------------------------------------------- taxonomy


@functools.cache
def _country_names() -> dict[str, str]:
    from cultureclip.data.taxonomy import countries

    return {c.iso2.upper(): c.name for c in countries()}


def country_code(value: str) -> str | None:
    """ISO2 for any code or name :func:`cultureclip.data.taxonomy.country` knows (ISO2, ISO3,
    short, ISO list and official names, case-insensitive); None if unknown."""
    from cultureclip.data.taxonomy import country

    entry = country(value) if value else None
    return entry.iso2.upper() if entry else None


def country_name(code: str) -> str:
    from cultureclip.data.taxonomy import country

    entry = country(code) if code else None
    return entry.name if entry else code


def category_list(config: SynthConfig) -> list[str]:
    if config.concepts.categories:
        return list(config.concepts.categories)
    from cultureclip.data.taxonomy import categories

    return list(categories("cultwin"))


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Side:
    """One concept as drawn and captioned: the pos or neg half of a twin."""

    concept: str
    context: str
    features: str
    category: str
    country: str
    image: str | None = None  # a given image (corpus); None: rendered by the images stage
    captions: tuple[str, ...] = ()  # given captions (corpus); empty: written by the captions stage
    glyph: str | None = None
    group: str = ""  # what twins are mined across (the country unless concepts.group_by says)

    @property
    def twin_group(self) -> str:
        """The value twins must differ in: the group, else the country."""
        return self.group or self.country

    @property
    def text_key(self) -> str:
        """The concept as text: sides sharing it share their (written) captions."""
        return stable_hash(
            "side", self.concept, self.context, self.features, self.category, self.country
        )

    @property
    def key(self) -> str:
        """The side as drawn: corpus rows of one concept with their own photos stay apart."""
        if self.image is None:
            return self.text_key
        return stable_hash("side-image", self.text_key, self.image, self.captions, self.group)

    @property
    def given(self) -> bool:
        return self.image is not None and bool(self.captions)


@dataclass(frozen=True)
class Concept:
    id: str
    root: str
    side: Side
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Twin:
    key: str
    root: str
    pos: Side
    neg: Side
    method: str
    provenance: dict[str, Any] = field(default_factory=dict)
    similarity: float | None = None


def _provenance(prompt_id: str, model: str, seed: int) -> dict[str, Any]:
    return {"prompt": prompt_id, "model": model, "seed": seed}


def _corpus_root(row: CorpusRow) -> str:
    parts: list[Any] = [row.name, row.image, row.caption, row.country, row.category]
    if row.group and row.group != row.country:
        parts.append(row.group)
    return stable_hash("corpus", *parts)


def _side_from_row(
    row: CorpusRow, country: str, category: str, context: str, features: str
) -> Side:
    return Side(
        concept=row.name,
        context=context,
        features=features,
        category=category,
        country=country,
        image=row.image,
        captions=(row.caption,) if row.caption else (),
        glyph=row.glyph,
        group=row.group or country,
    )


_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def _readable(
    rows: list[CorpusRow], where: str, left_out: list[tuple[str, str]] | None
) -> list[CorpusRow]:
    """Rows whose image reads; a missing image is an error, an unreadable one is left out."""
    kept = []
    for row in rows:
        if row.image is not None:
            path = Path(row.image)
            if not path.exists():
                raise MissingInputError(f"{where}:{row.line}: image not found: {path}")
            problem = unreadable(path)
            if problem is not None:
                logger.warning(
                    "left out %s:%d: not a readable image (%s)", where, row.line, problem
                )
                if left_out is not None:
                    left_out.append((str(path), problem))
                continue
        kept.append(row)
    return kept


def corpus_rows(
    ctx: SynthContext, left_out: list[tuple[str, str]] | None = None
) -> list[CorpusRow]:
    """The labelled rows of ``concepts.source=corpus`` or ``folder``, checked; unreadable
    photos of a folder are left out (and listed in ``left_out``)."""
    settings = ctx.config.concepts
    column = settings.group_column()
    if settings.source == "folder":
        rows, where = read_folder(settings, left_out), str(settings.folder)
    else:
        if not settings.corpus:
            raise InputError("concepts.source=corpus needs concepts.corpus (a JSONL or CSV file)")
        where = settings.corpus
        rows = [
            row
            if row.country or not settings.country
            else dataclasses.replace(
                row,
                country=settings.country,
                group=settings.country if column == "country" else row.group,
            )
            for row in read_corpus(where, group_by=column)
        ]
        if settings.category:
            rows = [
                r if r.category else dataclasses.replace(r, category=settings.category)
                for r in rows
            ]
        rows = _readable(rows, where, left_out)
    for row in rows:
        if not row.group:
            raise InputError(
                f"{where}:{row.line}: a labelled row needs a {column!r} value "
                "(the group twins are mined across; set concepts.group_by to name another column)"
            )
        if settings.source == "corpus" and not row.category:
            raise InputError(
                f"{where}:{row.line}: a labelled corpus row needs country and category"
            )
    unknown = sorted({r.country for r in rows if r.country and country_code(r.country) is None})
    if unknown and (where, tuple(unknown)) not in _WARNED:
        _WARNED.add((where, tuple(unknown)))  # every stage reads the rows: warn once
        hint = (
            " If they name groups within a country (ethnic groups, regions, periods), put them in "
            "their own column, set concepts.group_by to it and keep the ISO code in 'country'."
            if column == "country"
            else ""
        )
        logger.warning(
            "%s: country value(s) %s are not ISO 3166-1 codes or names.%s",
            where,
            ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""),
            hint,
        )
    return rows


def load_concepts(ctx: SynthContext, *, all_shards: bool = False) -> list[Concept]:
    """The concepts stored by the concepts stage (or read from the corpus), this shard's only."""
    settings = ctx.config.concepts
    concepts: list[Concept] = []
    if settings.source in ("corpus", "folder"):
        for row in corpus_rows(ctx):
            root = _corpus_root(row)
            side = _side_from_row(row, row.country, row.category, row.context, row.features)
            concepts.append(
                Concept(stable_hash("concept", root, row.name.lower()), root, side, settings.source)
            )
    else:
        for record in ResultStore(ctx.work_dir, "concepts").records():
            if record["source"] == "topdown":
                for item in record["concepts"]:
                    side = Side(
                        item["concept"],
                        item["context"],
                        item["features"],
                        record["category"],
                        record["country"],
                    )
                    concept_id = stable_hash("concept", record["root"], item["concept"].lower())
                    concepts.append(
                        Concept(concept_id, record["root"], side, "topdown", record["provenance"])
                    )
            elif record["answer"] == "yes":
                side = Side(
                    record["concept"],
                    record["context"],
                    record["features"],
                    record["category"],
                    record["country"],
                    image=record.get("image"),
                    captions=(record["caption"],) if record.get("caption") else (),
                    glyph=record.get("glyph"),
                )
                concept_id = stable_hash("concept", record["root"], record["concept"].lower())
                concepts.append(
                    Concept(concept_id, record["root"], side, "bottomup", record["provenance"])
                )
    concepts = [c for c in concepts if all_shards or ctx.shard.owns(c.root)]
    return sorted({c.id: c for c in concepts}.values(), key=lambda c: c.id)


def load_twins(ctx: SynthContext) -> list[Twin]:
    every = load_concepts(ctx, all_shards=True)
    concepts = {c.id: c for c in every}
    current = set(mine_keys(ctx, every).values()) if ctx.config.twins.method == "mine" else None
    twins = []
    for record in ResultStore(ctx.work_dir, "twins").records():
        pos = concepts.get(record["pos_id"])
        if pos is None or not ctx.shard.owns(record["root"]):
            continue  # a twin of a concept that is no longer produced (changed config)
        if record["method"] == "mine" and (current is None or record["key"] not in current):
            continue  # mined over another set of concepts (or mining is off): not this run's
        if record["method"] == "mine" and record.get("neg_id") is None:
            continue  # mined, and no twin was found: a finished outcome without a pair
        if record["method"] == "mine":
            neg_concept = concepts.get(record["neg_id"])
            if neg_concept is None:
                continue
            neg = neg_concept.side
        else:
            neg = Side(
                record["neg_concept"],
                record["neg_context"],
                record["neg_features"],
                pos.side.category,
                record["neg_country"],
            )
        twins.append(
            Twin(
                record["key"],
                record["root"],
                pos.side,
                neg,
                record["method"],
                {"concepts": pos.provenance, "twins": record["provenance"], "source": pos.source},
                record.get("similarity"),
            )
        )
    return sorted(twins, key=lambda t: t.key)


# ----------------------------------------------------------------------------- LLM stages


async def _llm_stage(
    ctx: SynthContext,
    stage: str,
    items: list[tuple[str, Callable[[LLMBackend], Awaitable[tuple[Outcome[Any], dict[str, Any]]]]]],
    report: StageReport,
) -> None:
    """Runs keyed LLM work items concurrently; successes are stored, failures logged."""
    store, failures = ctx.store(stage), ctx.failures()
    report.total = len(items)
    pending = [(key, work) for key, work in items if key not in store]
    report.cached = report.total - len(pending)
    if not pending:
        return
    async with create_llm(ctx.config.llm) as llm:
        with progress(
            stage, report.total, completed=report.cached, enabled=ctx.config.progress
        ) as task:

            async def handle(batch: list[tuple[str, Any]]) -> None:
                for key, work in batch:
                    outcome, record = await work(llm)
                    # fsync in a worker thread: durable, without stalling the requests in flight.
                    if outcome.ok:
                        await asyncio.to_thread(store.add, {"key": key, **record})
                        report.done += 1
                    else:
                        await asyncio.to_thread(
                            failures.add, stage, key, outcome.error, raw=outcome.raw, item=record
                        )
                        report.failed += 1

            await run_pool(
                pending,
                handle,
                concurrency=ctx.config.llm.concurrency,
                on_done=lambda n: task.update(advance=n),
            )


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
        names = _country_names()
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
            root = _corpus_root(row)
            if not ctx.shard.owns(root):
                continue
            key = stable_hash("bottomup", root, categories, prompt.id, model, seed)
            items.append((key, functools.partial(_judge_title, ctx, prompt, root, row, categories)))
    asyncio.run(_llm_stage(ctx, "concepts", items, report))
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
        "provenance": _provenance(prompt.id, llm.model_id, ctx.config.seed),
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
        "provenance": _provenance(prompt.id, llm.model_id, ctx.config.seed),
    }
    return outcome, record


def run_twins(ctx: SynthContext) -> StageReport:
    """Twin matching by LLM, or by the image-embedding miner (``twins.method=mine``)."""
    if ctx.config.twins.method == "mine":
        return _mine_twins_stage(ctx)
    settings, report = ctx.config.twins, StageReport("twins")
    prompt = load_prompt(settings.prompt)
    model, seed = ctx.llm_id(), ctx.config.seed
    items = []
    for concept in load_concepts(ctx):
        side = concept.side
        key = stable_hash(
            "twins",
            concept.id,
            side.concept,
            side.context,
            side.features,
            prompt.id,
            model,
            seed,
            settings.temperature,
        )
        items.append((key, functools.partial(_write_twin, ctx, prompt, concept)))
    if not items:
        report.notes.append(
            "no concepts stored yet (the concepts stage has none; see `cultureclip synth failures`)"
        )
    asyncio.run(_llm_stage(ctx, "twins", items, report))
    return report


async def _write_twin(
    ctx: SynthContext, prompt: Any, concept: Concept, llm: LLMBackend
) -> tuple[Outcome[Any], dict[str, Any]]:
    side = concept.side
    variables = {
        "category": side.category,
        "concept": side.concept,
        "country_name": country_name(side.country),
        "context": side.context or "(none)",
        "features": side.features or "(none)",
    }

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

    outcome = await ask(
        llm,
        prompt,
        variables,
        TwinAnswer,
        check=check,
        temperature=ctx.config.twins.temperature,
        seed=ctx.config.seed,
    )
    record = {
        "root": concept.root,
        "pos_id": concept.id,
        "pos_concept": side.concept,
        "method": "llm",
        **(outcome.value or {}),
        "provenance": _provenance(prompt.id, llm.model_id, ctx.config.seed),
    }
    return outcome, record


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
        backend = backend or create_image_backend(ctx.config.images)
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


def mine_keys(ctx: SynthContext, concepts: list[Concept]) -> dict[str, str]:
    """Concept id -> its mining item key; mining compares all concepts, so all enter each key."""
    settings = ctx.config.twins
    column = ctx.config.concepts.group_column()
    parts: list[Any] = [[c.id for c in concepts], settings.mine_model]
    if column != "country":  # keys of country-grouped runs stay those of earlier versions
        parts.append(column)
    universe = stable_hash("universe", *parts)
    return {c.id: stable_hash("mine", c.id, universe) for c in concepts}


def _no_twin_reason(concept: Concept, concepts: list[Concept], column: str) -> str:
    same_category = [c for c in concepts if c.side.category == concept.side.category]
    if len(same_category) == 1:
        return f"no other concept in category {concept.side.category!r}"
    return f"every concept of category {concept.side.category!r} has {column} {concept.side.twin_group!r}"


def _mine_twins_stage(ctx: SynthContext) -> StageReport:
    from cultureclip.models.registry import create_model
    from cultureclip.synth.mining import embed_concepts, mine_twins

    settings, report = ctx.config.twins, StageReport("twins")
    source = ctx.config.concepts.source
    if ctx.shard.count > 1 and source not in ("corpus", "folder"):
        raise InputError(
            "twins.method=mine across shards needs concepts.source=corpus or folder "
            "(every shard mines all concepts)"
        )
    column = ctx.config.concepts.group_column()
    # Mining compares every concept with every other, so it sees all shards' concepts
    # and keeps the pairs whose concept belongs to this shard.
    concepts = load_concepts(ctx, all_shards=True)
    if not concepts:
        report.notes.append(
            "no concepts stored yet (the concepts stage has none; see `cultureclip synth failures`)"
        )
        return report
    store = ctx.store("twins")
    owned = [i for i, c in enumerate(concepts) if ctx.shard.owns(c.root)]
    every_key = mine_keys(ctx, concepts)
    keys = {i: every_key[concepts[i].id] for i in owned}
    report.total = len(owned)
    report.cached = sum(1 for i in owned if keys[i] in store)
    groups = {c.side.twin_group for c in concepts}
    if len(groups) == 1 and concepts:
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
    if report.cached == report.total:
        _note_no_twins(report, [store.get(keys[i]) for i in owned])
        return report
    model = create_model(settings.mine_model).eval()
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
    provenance = {
        "method": "mine",
        "model": settings.mine_model,
        "seed": ctx.config.seed,
        "across": column,
    }
    found = {twin.pos: twin for twin in mine_twins(labels, embeddings, across="group")}
    for i in owned:
        if keys[i] in store:
            continue
        pos = concepts[i]
        record: dict[str, Any] = {
            "key": keys[i],
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
            store.add(record)
            report.skipped += 1
            continue
        neg = concepts[twin.neg]
        record.update(
            neg_id=neg.id,
            neg_concept=neg.side.concept,
            similarity=round(twin.similarity, 6),
        )
        store.add(record)
        report.done += 1
    _note_no_twins(report, [store.get(keys[i]) for i in owned])
    return report


def _note_no_twins(report: StageReport, records: list[dict[str, Any] | None]) -> None:
    """Adds how many concepts have no twin, and why, to the report."""
    reasons: dict[str, int] = {}
    for record in records:
        if record is not None and record.get("neg_id") is None:
            why = record.get("no_twin", "no candidate")
            reasons[why] = reasons.get(why, 0) + 1
    if reasons:
        total = sum(reasons.values())
        top = "; ".join(
            f"{n} x {why}" for why, n in sorted(reasons.items(), key=lambda x: -x[1])[:3]
        )
        report.notes.append(f"{total} concept(s) without a twin ({top})")


def _sides(twins: list[Twin]) -> list[Side]:
    unique: dict[str, Side] = {}
    for twin in twins:
        for side in (twin.pos, twin.neg):
            unique.setdefault(side.key, side)
    return [unique[k] for k in sorted(unique)]


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
    report = StageReport("captions")
    if sides is None:
        every = _sides(load_twins(ctx))
        sides = [s for s in every if not s.captions]
        if len(sides) < len(every):
            report.notes.append(f"{len(every) - len(sides)} side(s) have captions of their own")
    if not sides and not report.notes:
        report.notes.append("no twins stored yet (the twins stage has none)")
    templates = ctx.config.captions.templates
    if templates:
        report.total = report.given = len(sides)
        report.notes.append("written from captions.templates (no LLM)")
        return report
    prompt = load_prompt(ctx.config.captions.prompt)
    # Sides of one concept with their own photos share the written captions: one request.
    items = list(
        {
            caption_key(ctx, side): functools.partial(_write_captions, ctx, prompt, side)
            for side in sides
        }.items()
    )
    asyncio.run(_llm_stage(ctx, "captions", items, report))
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


async def _write_captions(
    ctx: SynthContext, prompt: Any, side: Side, llm: LLMBackend
) -> tuple[Outcome[Any], dict[str, Any]]:
    s = ctx.config.captions
    variables = {
        "concept": side.concept,
        "country_name": country_name(side.country),
        "category": side.category,
        "context": side.context or "(none)",
        "features": side.features or "(none)",
        "n": s.n,
        "max_words": s.max_words,
    }
    check = functools.partial(
        check_captions,
        n=s.n,
        max_words=s.max_words,
        features=side.features,
        require_features=s.require_features,
    )
    outcome = await ask(
        llm,
        prompt,
        variables,
        CaptionsAnswer,
        check=check,
        temperature=s.temperature,
        seed=ctx.config.seed,
    )
    record = {
        "side": side.key,
        "concept": side.concept,
        "captions": outcome.value or [],
        "provenance": _provenance(prompt.id, llm.model_id, ctx.config.seed),
    }
    return outcome, record


def side_captions(ctx: SynthContext, side: Side, store: ResultStore) -> list[str] | None:
    if side.captions:
        return list(side.captions)
    if ctx.config.captions.templates:
        return template_captions(ctx, side)
    record = store.get(caption_key(ctx, side))
    return None if record is None else list(record["captions"])


# ----------------------------------------------------------------------------- images


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
    for side in _sides(load_twins(ctx)):
        texts = side_captions(ctx, side, captions)
        if texts is None:
            waiting += 1
            continue
        units.extend(image_units(ctx, side, texts, identity))
    return units, waiting


def run_images(ctx: SynthContext) -> StageReport:
    """Renders one image per caption (or per concept); splits work over accelerate processes."""
    from accelerate import PartialState

    from cultureclip.synth.images import RenderRequest

    report = StageReport("images")
    state = PartialState()
    device = ctx.config.images.device
    if device == "auto" and state.num_processes > 1:
        device = str(state.device)
    backend = _image_backend(ctx, device)
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
                _save_png(image, ctx.out_dir / unit.relpath)
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


def _image_backend(ctx: SynthContext, device: str) -> Any:
    from cultureclip.synth.images import create_image_backend

    settings = ctx.config.images.model_copy(update={"device": device})
    return create_image_backend(settings)


def _save_png(image: Any, path: Path) -> None:
    import io

    from cultureclip.utils.io import atomic_write_bytes

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------- filter


def image_identity(ctx: SynthContext) -> dict[str, Any]:
    """The image backend identity without loading a model (diffusers loads lazily)."""
    return _image_backend(ctx, ctx.config.images.device).identity()


def judged_units(ctx: SynthContext) -> tuple[list[tuple[ImageUnit, Path]], int]:
    """Units whose image exists (rendered or given), and how many are not rendered yet."""
    units, waiting = plan_units(ctx, image_identity(ctx))
    images = ResultStore(ctx.work_dir, "images")
    ready = []
    for unit in units:
        if unit.given is not None:
            ready.append((unit, Path(unit.given)))
        elif unit.key in images:
            ready.append((unit, ctx.out_dir / unit.relpath))
        else:
            waiting += 1
    return ready, waiting


def verdict_key(unit: ImageUnit, judge_identity: dict[str, Any]) -> str:
    return stable_hash("verdict", unit.key, unit.caption, judge_identity)


def run_filter(ctx: SynthContext) -> StageReport:
    """Scores every image with the configured judge; verdicts are stored, not applied (merge does)."""
    from cultureclip.data.pairs import open_image
    from cultureclip.synth.judges import JudgeRequest, create_judge

    report = StageReport("filter")
    judge = create_judge(ctx.config.filter, ctx.config.llm)
    identity = judge.identity()
    ready, report.waiting = judged_units(ctx)
    if not ready and not report.waiting:
        report.notes.append("no images yet")
    if ctx.config.filter.backend == "none":
        report.total = report.given = len(ready)
        report.notes.append("filter.backend=none: every image is kept unjudged")
        return report
    store, failures = ctx.store("filter"), ctx.failures()
    pending = [(u, p) for u, p in ready if verdict_key(u, identity) not in store]
    report.total, report.cached = len(ready), len(ready) - len(pending)
    if not pending:
        return report

    async def handle(batch: list[tuple[ImageUnit, Path]]) -> None:
        requests = [
            JudgeRequest(
                open_image(path),
                u.caption,
                u.side.concept,
                country_name(u.side.country),
                u.side.category,
            )
            for u, path in batch
        ]
        for (unit, _), outcome in zip(batch, await judge.judge(requests), strict=True):
            key = verdict_key(unit, identity)
            if outcome.ok:
                store.add({"key": key, "image": unit.key, **outcome.value, "judge": identity})
                report.done += 1
            else:
                failures.add(
                    "filter",
                    key,
                    outcome.error,
                    raw=outcome.raw,
                    item={"concept": unit.side.concept, "image": unit.key},
                )
                report.failed += 1

    async def main() -> None:
        with progress(
            "filter", report.total, completed=report.cached, enabled=ctx.config.progress
        ) as task:
            try:
                await run_pool(
                    pending,
                    handle,
                    concurrency=judge.concurrency,
                    batch_size=judge.batch_size,
                    on_done=lambda n: task.update(advance=n),
                )
            finally:
                await judge.aclose()

    asyncio.run(main())
    return report


STAGE_FUNCTIONS: dict[str, Callable[[SynthContext], StageReport]] = {
    "concepts": run_concepts,
    "twins": run_twins,
    "captions": run_captions,
    "images": run_images,
    "filter": run_filter,
}
