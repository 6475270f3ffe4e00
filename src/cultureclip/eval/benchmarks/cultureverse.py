"""CultureVerse-style multiple choice: recognition, cultural knowledge, scene understanding.

Data: an items file in the cultureclip MCQ format (:mod:`cultureclip.eval.items`), a
directory holding ``items.jsonl``/``items.parquet``, or a hub dataset name whose rows
carry the same fields. Contrastive scoring turns each option into a text with the
question type's template: by default ``"a photo of {option}."`` for recognition and
``"{question} {option}"`` for knowledge and scene questions.
"""

from __future__ import annotations

from pathlib import Path

from cultureclip.eval.benchmarks.base import MCQBenchmark, is_local, items_from_rows, load_hub_rows
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.items import ItemSet, read_items


@BENCHMARKS.register(
    "cultureverse", help="CultureVerse MCQ (recognition / knowledge / scene), MCQ item format"
)
class CultureVerseBenchmark(MCQBenchmark):
    name = "cultureverse"

    def load_items(self) -> ItemSet:
        if is_local(self.data):
            return read_items(self.data)
        return items_from_rows(load_hub_rows(str(self.data), self.split), Path("."), str(self.data))
