"""Built-in benchmarks, registered in :data:`BENCHMARKS` on import."""

from cultureclip.eval.benchmarks import (  # noqa: F401
    crope,
    cultureverse,
    cvqa,
    globalrg,
    retrieval,
    twins,
    zeroshot,
)
from cultureclip.eval.benchmarks.base import (
    Benchmark,
    BenchmarkOptions,
    BenchmarkOutput,
    MCQBenchmark,
    MCQOptions,
)
from cultureclip.eval.benchmarks.registry import BENCHMARKS

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkOptions",
    "BenchmarkOutput",
    "MCQBenchmark",
    "MCQOptions",
]
