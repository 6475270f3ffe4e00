"""Item builders a spec names as ``layout``, for what a column mapping cannot say (parsed
fields, seeded distractors, one record becoming several items). A record it cannot use is
a skipped item naming why; distractors are seeded by ``(seed, record id)`` alone."""

from __future__ import annotations

import ast
import contextlib
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from cultureclip.core.config import Config
from cultureclip.core.errors import InputError
from cultureclip.core.io import stable_hash
from cultureclip.core.registry import Registry
from cultureclip.data.taxonomy import country
from cultureclip.eval.items import ItemSet, read_items, validate_items
from cultureclip.eval.source import is_hub_layout

if TYPE_CHECKING:
    from cultureclip.eval.spec import Benchmark

Layout = Callable[["Benchmark"], ItemSet]
LAYOUTS: Registry[Layout] = Registry("layout")
ITEM_FILES = ("items.jsonl", "items.parquet", "items.json")


class LayoutSettings(Config):
    pass


def layout(name: str, options: type[Config] = LayoutSettings) -> Callable[[Layout], Layout]:
    def register(build: Layout) -> Layout:
        build.Options = options  # type: ignore[attr-defined]
        return LAYOUTS.register(name)(build)

    return register


def seeded_rng(seed: int, *key: Any) -> random.Random:
    return random.Random(stable_hash(seed, *key))


def finish(bench: Benchmark, rows: list[dict[str, Any]], root: Path) -> ItemSet:
    """Validates built rows as items; a row without a question gets the spec's generative
    one. A row whose answer the release withholds (none, -1) is kept: predicted, not scored."""
    asked, numbered = bench.spec.prompts.generative, []
    for line, row in enumerate(rows, start=1):
        if asked and not row.get("question") and "_error" not in row:
            row["question"] = asked.format_map(row)
        numbered.append((line, row))
    options = bench.options
    return validate_items(
        numbered,
        root=image_root(bench, root),
        name=bench.name,
        value_maps=getattr(options, "value_maps", None),
    )


def image_root(bench: Benchmark, root: Path) -> Path:
    """Where relative image paths start: ``options.image_root`` when set, else ``root``."""
    given = getattr(bench.options, "image_root", None)
    return Path(given).expanduser() if given else root


def mapped_rows(bench: Benchmark) -> tuple[list[dict[str, Any]], Path]:
    """Rows with every spec column read under our field name; a row without an id keeps
    none (:func:`validate_items` gives it one from its content)."""
    rows, root = bench.rows()
    mapped = []
    for row in rows:
        fields = {name: bench.field(row, name, required=False) for name in bench.spec.columns}
        item = {**row, **{k: v for k, v in fields.items() if v is not None}}
        item["id"] = bench.field(row, "id", required=False)
        mapped.append(item)
    return mapped, root


@layout("mcq-items")
def mcq_items(bench: Benchmark) -> ItemSet:
    path = Path(str(bench.data))
    item_format = (path.is_file() and path.suffix.lower() in (".jsonl", ".json", ".parquet")) or (
        path.is_dir() and any((path / name).is_file() for name in ITEM_FILES)
    )
    if item_format and not (path.is_dir() and is_hub_layout(path)):
        options = bench.options
        root = options.image_root
        return read_items(
            path,
            columns=options.columns,
            image_root=Path(root).expanduser() if root else None,
            value_maps=options.value_maps,
        )
    return finish(bench, *mapped_rows(bench))


def parse_subset(subset: Any) -> tuple[str, str]:
    """``"('Japanese', 'Japan')"`` (or a list/tuple) -> ``("Japanese", "Japan")``."""
    value = subset
    if isinstance(subset, str):
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(subset)  # literals only: never executes code
    if isinstance(value, list | tuple) and len(value) == 2:
        return str(value[0]).strip(), str(value[1]).strip()
    return "", str(subset).strip()


def country_code(name: str) -> str:
    """The ISO code of a country name when the taxonomy knows it, else the name itself."""
    # CVQA subsets like "Indonesia-Javanese" or "China-Mandarin" keep the country first
    for candidate in (name, name.split("-")[0].strip(), name.split("(")[0].strip()):
        found = country(candidate) if candidate else None
        if found is not None:
            return found.iso2
    return name


@layout("cvqa")
def cvqa(bench: Benchmark) -> ItemSet:
    rows, root = mapped_rows(bench)
    english = getattr(bench.options, "language", "") == "english"
    for row in rows:
        language, place = parse_subset(row.get("Subset", ""))
        choices = row.get("options")
        row.update(
            question=row.get("question") or "",
            options=list(choices) if isinstance(choices, list | tuple) else choices,
            country=country_code(place),
            category=str(row.get("category") or ""),
            question_type="knowledge",
            language="English" if english else (language or "unknown"),
            subset=str(row.get("Subset") or ""),
        )
    return finish(bench, rows, root)


class GlobalRGSettings(Config):
    n_options: int = Field(4, ge=2)


class GroundingSettings(GlobalRGSettings):
    #: score on the box crop when a record has a box (``bbox``, ``box``, ``bounding_box``):
    #: the grounding view; without boxes (the public test set) the whole image is used
    use_boxes: bool = False
    #: ``xywh`` (COCO: x, y, width, height) or ``xyxy`` (corners), in pixels
    box_format: Literal["xywh", "xyxy"] = "xywh"


def _globalrg_records(bench: Benchmark, what: str) -> tuple[list[Any], list[dict], Path]:
    """``(base item, concept)`` per usable record, the rows of bad ones, the image root."""
    records, root = bench.rows()
    parsed, bad = [], []
    for index, record in enumerate(records):
        try:
            if "_error" in record:
                raise InputError(str(record["_error"]))
            region = str(bench.field(record, "region"))
            base = {
                "id": bench.record_id(record, index),
                "image": bench.field(record, "image"),
                "country": region,
                "region": region,
                "category": str(record.get("category") or ""),
                "question_type": "recognition",
                "language": "en",
            }
            parsed.append((base, str(bench.field(record, what)), record))
        except ValueError as exc:
            bad.append({"id": bench.record_id(record, index), "_error": str(exc)})
    return parsed, bad, root


@layout("globalrg-grounding", GroundingSettings)
def globalrg_grounding(bench: Benchmark) -> ItemSet:
    options = bench.options
    parsed, rows, root = _globalrg_records(bench, "concept")
    concepts_by_region: dict[str, set[str]] = defaultdict(set)
    kept = []
    for base, concept, record in parsed:
        box = next((record[k] for k in ("bbox", "box", "bounding_box") if record.get(k)), None)
        if options.use_boxes and box is not None:
            try:
                x0, y0, a, b = (float(v) for v in box)
            except (TypeError, ValueError):
                rows.append({"id": base["id"], "_error": f"box {box!r} is not 4 numbers"})
                continue
            xywh = options.box_format == "xywh"
            base["crop_box"] = [x0, y0, x0 + a, y0 + b] if xywh else [x0, y0, a, b]
        concepts_by_region[base["region"]].add(concept)
        kept.append((base, concept))
    for base, concept in kept:
        pool = sorted(concepts_by_region[base["region"]] - {concept})
        if len(pool) < options.n_options - 1:
            continue  # the protocol keeps only regions with enough concepts
        rng = seeded_rng(options.seed, base["id"])
        choices = [concept, *rng.sample(pool, options.n_options - 1)]
        rng.shuffle(choices)
        rows.append(
            {**base, "options": choices, "answer": choices.index(concept), "concept": concept}
        )
    return finish(bench, rows, root)


@layout("globalrg-retrieval", GlobalRGSettings)
def globalrg_retrieval(bench: Benchmark) -> ItemSet:
    n_options = bench.options.n_options
    parsed, rows, root = _globalrg_records(bench, "universal")
    regions = sorted({base["region"] for base, _, _ in parsed})
    if len(regions) < n_options:
        raise InputError(
            f"{bench.name} needs at least {n_options} regions for {n_options}-way items; "
            f"{bench.data} has {len(regions)}"
        )
    for base, universal, _ in parsed:
        rng = seeded_rng(bench.options.seed, base["id"])
        others = [r for r in regions if r != base["region"]]
        choices = [base["region"], *rng.sample(others, n_options - 1)]
        rng.shuffle(choices)
        base["category"] = base["category"] or universal
        answer = choices.index(base["region"])
        rows.append({**base, "options": choices, "answer": answer, "universal": universal})
    return finish(bench, rows, root)


@layout("crope")
def crope(bench: Benchmark) -> ItemSet:
    records, root = bench.rows()
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        item_id = bench.record_id(record, index)
        if str(record.get("answer", "")).strip().lower() != "no":
            continue
        try:
            image = bench.field(record, "image")
            asked = str(bench.field(record, "concept"))
            target = str(bench.field(record, "target_concept"))
            definitions = bench.field(record, "definition_images")
        except ValueError as exc:
            rows.append({"id": item_id, "_error": str(exc)})
            continue
        common = {
            "options": [target, asked],
            "concept": asked,
            "country": str(bench.field(record, "country", required=False) or ""),
            "category": str(record.get("category") or ""),
            "question_type": "recognition",
            "group_id": item_id,
        }
        rows.append(
            {**common, "id": f"{item_id}/main", "image": image, "answer": 0, "role": "main"}
        )
        if isinstance(definitions, str):
            definitions = [definitions]
        for number, definition in enumerate(definitions):
            row = {"id": f"{item_id}/def{number}", "image": definition, "answer": 1}
            rows.append({**common, **row, "role": "definition"})
    return finish(bench, rows, root)
