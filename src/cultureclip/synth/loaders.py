"""What the stages read back: labelled corpus rows, stored concepts and twins."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from cultureclip.core.errors import InputError, MissingInputError
from cultureclip.core.io import stable_hash
from cultureclip.core.store import ResultStore
from cultureclip.synth.context import SynthContext
from cultureclip.synth.corpus import CorpusRow, read_corpus
from cultureclip.synth.folder import read_folder, unreadable
from cultureclip.synth.records import (
    Concept,
    Side,
    Twin,
    corpus_root,
    country_code,
    side_from_row,
)

logger = logging.getLogger(__name__)


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
                    "left out %s (%s:%d): not a readable image (%s)", path, where, row.line, problem
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
    images are left out (and listed in ``left_out`` as ``(path, why)``)."""
    settings = ctx.config.concepts
    column = settings.group_column()
    if settings.source == "folder":
        rows, where = read_folder(settings), str(settings.folder)
    else:
        if not settings.corpus:
            raise InputError("concepts.source=corpus needs concepts.corpus (a JSONL or CSV file)")
        where = settings.corpus
        rows = []
        for row in read_corpus(where, group_by=column):
            country = row.country or settings.country or ""
            rows.append(
                dataclasses.replace(
                    row,
                    country=country,
                    category=row.category or settings.category or "",
                    group=country if column == "country" else row.group,
                )
            )
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


def _concept(root: str, side: Side, source: str, provenance: dict[str, Any]) -> Concept:
    return Concept(
        stable_hash("concept", root, side.concept.lower()), root, side, source, provenance
    )


def load_concepts(ctx: SynthContext, *, all_shards: bool = False) -> list[Concept]:
    """The concepts stored by the concepts stage (or read from the corpus), this shard's only."""
    source = ctx.config.concepts.source
    concepts: list[Concept] = []
    if source in ("corpus", "folder"):
        for row in corpus_rows(ctx):
            concepts.append(_concept(corpus_root(row), side_from_row(row), source, {}))
    else:
        for record in ResultStore(ctx.work_dir, "concepts").records():
            root, provenance = record["root"], record["provenance"]
            if record["source"] == "topdown":
                for item in record["concepts"]:
                    side = Side(
                        item["concept"],
                        item["context"],
                        item["features"],
                        record["category"],
                        record["country"],
                    )
                    concepts.append(_concept(root, side, "topdown", provenance))
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
                concepts.append(_concept(root, side, "bottomup", provenance))
    concepts = [c for c in concepts if all_shards or ctx.shard.owns(c.root)]
    return sorted({c.id: c for c in concepts}.values(), key=lambda c: c.id)


def load_twins(ctx: SynthContext) -> list[Twin]:
    every = load_concepts(ctx, all_shards=True)
    concepts = {c.id: c for c in every}
    current = set(mine_keys(ctx, every).values()) if ctx.config.twins.method == "mine" else set()
    twins = []
    for record in ResultStore(ctx.work_dir, "twins").records():
        pos = concepts.get(record["pos_id"])
        if pos is None or not ctx.shard.owns(record["root"]):
            continue  # a twin of a concept that is no longer produced (changed config)
        if record["method"] == "mine":
            mined = concepts.get(record.get("neg_id") or "")
            # Mined over another set of concepts (or mining is off): not this run's; or
            # mined with no twin found: a finished outcome without a pair.
            if record["key"] not in current or mined is None:
                continue
            neg = mined.side
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


def mine_keys(ctx: SynthContext, concepts: list[Concept]) -> dict[str, str]:
    """Concept id -> its mining item key; mining compares all concepts, so all enter each key."""
    settings = ctx.config.placed("twins")
    column = ctx.config.concepts.group_column()
    parts: list[Any] = [[c.id for c in concepts], settings.mine_model]
    if column != "country":  # keys of country-grouped runs stay those of earlier versions
        parts.append(column)
    # half precision asked for may pick other twins; the setting, not what ``auto`` became
    # on this machine, keys them: a merge on another machine finds the same keys
    if settings.precision not in ("auto", "fp32"):
        parts.append(settings.precision)
    universe = stable_hash("universe", *parts)
    return {c.id: stable_hash("mine", c.id, universe) for c in concepts}


def twin_sides(twins: list[Twin]) -> list[Side]:
    unique: dict[str, Side] = {}
    for twin in twins:
        for side in (twin.pos, twin.neg):
            unique.setdefault(side.key, side)
    return [unique[k] for k in sorted(unique)]
