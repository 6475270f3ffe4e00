"""Evaluation: cultural benchmarks for contrastive and generative models, grouped results.

- :func:`evaluate` runs a registered benchmark (:data:`BENCHMARKS`) on a model and writes
  ``result.json`` + ``predictions.jsonl`` (skip-existing; ``baseline=`` adds a forgetting check).
- :func:`twin_accuracy` scores a CulTwin set.
- :mod:`cultureclip.eval.metrics` has the metric code (``retrieval_metrics``, bootstrap CIs).
- :mod:`cultureclip.eval.report` merges results into CSV + a self-contained HTML report.
- :mod:`cultureclip.eval.generative` scores chat VLMs (:mod:`cultureclip.eval.openended`:
  open-ended questions with reference answers); :mod:`cultureclip.eval.builder` builds
  CultureVerse-style benchmarks from documents with an LLM.
"""

from cultureclip.eval import openended  # noqa: F401  (registers the openended benchmark)
from cultureclip.eval.api import EvalConfig, create_benchmark, evaluate, twin_accuracy
from cultureclip.eval.benchmarks import BENCHMARKS, Benchmark
from cultureclip.eval.items import ItemSet, MCQItem, read_items, write_items
from cultureclip.eval.results import EvalResult, load_result

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "EvalConfig",
    "EvalResult",
    "ItemSet",
    "MCQItem",
    "create_benchmark",
    "evaluate",
    "load_result",
    "read_items",
    "twin_accuracy",
    "write_items",
]
