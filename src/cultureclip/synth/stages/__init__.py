"""The five synth stages and the plan that links them: concepts → twins → captions → images → filter.

Each stage reads what the earlier stages stored, works out its items (each keyed by a
hash of its inputs), skips the keys already stored, does the rest and appends one line
per finished item. Re-running a stage is therefore cheap and never repeats finished
work; a changed prompt, model or seed changes the keys and so redoes only what it
affects. Items belong to the shard of their root (the country × category cell or the
corpus record), so ``--shard i/n`` runs a complete, independent slice of the pipeline.

One module per stage; what they share lives beside them: ``synth.context`` (where a run
writes, what a stage reports), ``synth.pool`` (concurrent keyed work), ``synth.records``
(sides, concepts, twins) and ``synth.loaders`` (reading them back).
"""

from __future__ import annotations

from collections.abc import Callable

from cultureclip.synth.context import StageReport, SynthContext
from cultureclip.synth.loaders import corpus_rows, load_concepts, load_twins, mine_keys, twin_sides
from cultureclip.synth.pool import run_llm_items, run_pool
from cultureclip.synth.records import (
    Concept,
    Side,
    Twin,
    category_list,
    country_code,
    country_name,
)
from cultureclip.synth.stages.captions import (
    caption_key,
    run_captions,
    side_captions,
    template_captions,
)
from cultureclip.synth.stages.concepts import run_concepts
from cultureclip.synth.stages.filter import judged_units, run_filter, verdict_key
from cultureclip.synth.stages.images import (
    ImageUnit,
    image_backend,
    image_identity,
    image_units,
    plan_units,
    run_images,
)
from cultureclip.synth.stages.twins import mine_twins_stage, run_twins

STAGE_FUNCTIONS: dict[str, Callable[[SynthContext], StageReport]] = {
    "concepts": run_concepts,
    "twins": run_twins,
    "captions": run_captions,
    "images": run_images,
    "filter": run_filter,
}

__all__ = [
    "STAGE_FUNCTIONS",
    "Concept",
    "ImageUnit",
    "Side",
    "StageReport",
    "SynthContext",
    "Twin",
    "caption_key",
    "category_list",
    "corpus_rows",
    "country_code",
    "country_name",
    "image_backend",
    "image_identity",
    "image_units",
    "judged_units",
    "load_concepts",
    "load_twins",
    "mine_keys",
    "mine_twins_stage",
    "plan_units",
    "run_captions",
    "run_concepts",
    "run_filter",
    "run_images",
    "run_llm_items",
    "run_pool",
    "run_twins",
    "side_captions",
    "template_captions",
    "twin_sides",
    "verdict_key",
]
