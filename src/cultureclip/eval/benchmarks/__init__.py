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
from cultureclip.eval.benchmarks.benchmark import Benchmark, BenchmarkOutput, BenchmarkSettings
from cultureclip.eval.benchmarks.mcq import MCQBenchmark, MCQOptions
from cultureclip.eval.benchmarks.registry import BENCHMARKS

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkOutput",
    "BenchmarkSettings",
    "MCQBenchmark",
    "MCQOptions",
]
