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
from cultureclip.synth.stages.captions import run_captions
from cultureclip.synth.stages.concepts import run_concepts
from cultureclip.synth.stages.filter import run_filter
from cultureclip.synth.stages.images import run_images
from cultureclip.synth.stages.twins import run_twins

STAGE_FUNCTIONS: dict[str, Callable[[SynthContext], StageReport]] = {
    "concepts": run_concepts,
    "twins": run_twins,
    "captions": run_captions,
    "images": run_images,
    "filter": run_filter,
}
