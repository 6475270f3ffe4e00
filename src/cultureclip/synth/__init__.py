"""CulTwin synthesis: concepts → twins → captions → images → quality filter → dataset.

Quick use::

    from cultureclip.presets import load_preset
    from cultureclip.synth import SynthConfig, run_synth

    config = load_preset(SynthConfig, "synth", "reference", ["out=runs/cultwin"])
    run_synth(config)                      # resumable; merges into runs/cultwin/cultwin.parquet

Backends are registries: ``cultureclip.core.llm.LLMS`` (``openai``, ``transformers``),
``IMAGE_BACKENDS`` (``diffusers``, ``glyph``) and ``JUDGES`` (``vlm``, ``clipscore``, ``none``).
"""

from cultureclip.synth.config import (
    CaptionSettings,
    ConceptSettings,
    FilterSettings,
    ImageSettings,
    SynthConfig,
    TwinSettings,
)
from cultureclip.synth.images import IMAGE_BACKENDS, create_image_backend, glyph_for
from cultureclip.synth.judges import JUDGES, create_judge
from cultureclip.synth.mining import MinedTwin, embed_concepts, mine_twins
from cultureclip.synth.pipeline import MergeReport, SynthReport, merge, run_synth

__all__ = [
    "IMAGE_BACKENDS",
    "JUDGES",
    "CaptionSettings",
    "ConceptSettings",
    "FilterSettings",
    "ImageSettings",
    "MergeReport",
    "MinedTwin",
    "SynthConfig",
    "SynthReport",
    "TwinSettings",
    "create_image_backend",
    "create_judge",
    "embed_concepts",
    "glyph_for",
    "merge",
    "mine_twins",
    "run_synth",
]
