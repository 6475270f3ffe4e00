"""Evaluation: cultural benchmarks for contrastive and generative models, grouped results.

- A benchmark is a spec file (:mod:`cultureclip.eval.spec`; shipped in ``eval/specs/``):
  its data, columns, prompts, scorer (:data:`~cultureclip.eval.scorers.SCORERS`), groups.
- :func:`evaluate` runs one on a model and writes ``result.json`` + ``predictions.jsonl``
  (skip-existing; ``baseline=`` adds a forgetting check); :func:`twin_accuracy` scores a
  CulTwin set.
- :mod:`cultureclip.eval.metrics` has the metric code (``retrieval_metrics``, the bootstrap).
- :mod:`cultureclip.eval.report` merges results into CSV + a self-contained HTML report.
- :mod:`cultureclip.models.generative` scores chat VLMs; :mod:`cultureclip.synth.builder`
  builds CultureVerse-style benchmarks from documents with an LLM.
"""

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
