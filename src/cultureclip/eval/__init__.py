"""Evaluation (docs/eval.md): benchmarks are spec files (:mod:`~cultureclip.eval.spec`)
scored by :data:`~cultureclip.eval.scorers.SCORERS`; :func:`evaluate` runs one on a model,
:mod:`~cultureclip.eval.report` merges results into CSV and an HTML report."""

from cultureclip.eval.api import EvalConfig, evaluate, twin_accuracy
from cultureclip.eval.items import ItemSet, MCQItem, read_items, write_items
from cultureclip.eval.results import EvalResult, load_result
from cultureclip.eval.spec import Benchmark, BenchmarkSpec, benchmark_specs, create_benchmark

__all__ = [
    "Benchmark",
    "BenchmarkSpec",
    "EvalConfig",
    "EvalResult",
    "ItemSet",
    "MCQItem",
    "benchmark_specs",
    "create_benchmark",
    "evaluate",
    "load_result",
    "read_items",
    "twin_accuracy",
    "write_items",
]
