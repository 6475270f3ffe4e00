"""CulTwin synthesis: concepts → twins → captions → images → quality filter → dataset.

Quick use::

    from cultureclip.presets import load_preset
    from cultureclip.synth import SynthConfig, run_synth

    config = load_preset(SynthConfig, "synth", "reference", ["out=runs/cultwin"])
    run_synth(config)                      # resumable; merges into runs/cultwin/cultwin.parquet

Backends are registries: ``LLMS`` (``openai``, ``transformers``), ``IMAGE_BACKENDS``
(``diffusers``, ``glyph``) and ``JUDGES`` (``vlm``, ``clipscore``, ``none``).
"""

from cultureclip.core.llm import LLMS, LLMError, Outcome, ask, create_llm
from cultureclip.core.store import Shard, open_failures
from cultureclip.synth.config import (
    CaptionSettings,
    ConceptSettings,
    FilterSettings,
    ImageSettings,
    LLMSettings,
    SynthConfig,
    TwinSettings,
)
from cultureclip.synth.images import IMAGE_BACKENDS, create_image_backend, glyph_for
from cultureclip.synth.judges import JUDGES, create_judge
from cultureclip.synth.mining import MinedTwin, embed_concepts, mine_twins
from cultureclip.synth.pipeline import MergeReport, SynthReport, merge, run_synth
from cultureclip.synth.prompts import PromptTemplate, list_prompts, load_prompt

__all__ = [
    "IMAGE_BACKENDS",
    "JUDGES",
    "LLMS",
    "CaptionSettings",
    "ConceptSettings",
    "FilterSettings",
    "ImageSettings",
    "LLMError",
    "LLMSettings",
    "MergeReport",
    "MinedTwin",
    "Outcome",
    "PromptTemplate",
    "Shard",
    "SynthConfig",
    "SynthReport",
    "TwinSettings",
    "ask",
    "create_image_backend",
    "create_judge",
    "create_llm",
    "embed_concepts",
    "glyph_for",
    "list_prompts",
    "load_prompt",
    "merge",
    "mine_twins",
    "open_failures",
    "run_synth",
]
