"""What every benchmark is, and the scoring machinery the multiple-choice ones share.

The code lives in :mod:`~cultureclip.eval.benchmarks.benchmark` (the base class, options,
output), :mod:`~cultureclip.eval.benchmarks.features` (text and image features of
contrastive models) and :mod:`~cultureclip.eval.benchmarks.mcq` (multiple-choice
scoring); this module keeps the names importable from one place.
"""

from cultureclip.eval.benchmarks.benchmark import (
    Benchmark,
    BenchmarkOptions,
    BenchmarkOutput,
    batched,
    is_local,
    load_hub_rows,
    seeded_rng,
)
from cultureclip.eval.benchmarks.features import (
    IMAGE_ERRORS,
    TextFeatureCache,
    describe_image_error,
    embed_images,
    image_key,
)
from cultureclip.eval.benchmarks.mcq import MCQBenchmark, MCQOptions, items_from_rows

__all__ = [
    "IMAGE_ERRORS",
    "Benchmark",
    "BenchmarkOptions",
    "BenchmarkOutput",
    "MCQBenchmark",
    "MCQOptions",
    "TextFeatureCache",
    "batched",
    "describe_image_error",
    "embed_images",
    "image_key",
    "is_local",
    "items_from_rows",
    "load_hub_rows",
    "seeded_rng",
]
