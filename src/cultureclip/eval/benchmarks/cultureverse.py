"""CultureVerse-style multiple choice: recognition, cultural knowledge, scene understanding.

Data: an items file in the cultureclip MCQ format (:mod:`cultureclip.eval.items`), a
directory holding ``items.jsonl``/``items.parquet``, any annotation file or hub-layout
folder :func:`~cultureclip.eval.benchmarks.source.read_rows` reads (parquet/arrow/JSONL
with ``datasets.Image`` structs, ``data:`` URLs or paths), or a hub dataset name. When
the released column names differ, map them: ``--set columns.answer=Label``. Contrastive
scoring turns each option into a text with the question type's template: by default
``"a photo of {option}."`` for recognition and ``"{question} {option}"`` for knowledge and
scene questions.
"""

from __future__ import annotations

from pathlib import Path

from cultureclip.eval.benchmarks.mcq import MCQBenchmark, items_from_rows
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.benchmarks.source import is_hub_layout
from cultureclip.eval.items import ItemSet, read_items

ITEM_FILES = ("items.jsonl", "items.parquet", "items.json")


@BENCHMARKS.register(
    "cultureverse",
    help="CultureVerse / any MCQ set (item format, parquet/arrow/JSONL, hub layout, hub name)",
)
class CultureVerseBenchmark(MCQBenchmark):
    name = "cultureverse"

    def load_items(self) -> ItemSet:
        path = Path(str(self.data))
        item_format = (
            path.is_file() and path.suffix.lower() in (".jsonl", ".json", ".parquet")
        ) or (path.is_dir() and any((path / name).is_file() for name in ITEM_FILES))
        if item_format and not (path.is_dir() and is_hub_layout(path)):
            return read_items(path, columns=self.options.columns)
        rows, root = self.rows(ITEM_FILES)
        return items_from_rows(rows, root, str(self.data))
