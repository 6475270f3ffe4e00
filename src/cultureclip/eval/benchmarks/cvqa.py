"""CVQA (``afaji/cvqa``) as released: culturally diverse multilingual VQA, 4 options.

Columns as published: ``image`` (a ``datasets.Image``), ``ID``, ``Subset`` (a string
such as ``"('Japanese', 'Japan')"``: language and country), ``Question``, ``Translated
Question``, ``Options`` (4 strings), ``Translated Options``, ``Label`` (the 0-based index
of the answer), ``Category``, ``Image Type``, ``Image Source``, ``License``.

The two published settings are ``language=local`` (question and options in the
subset's language, the default) and ``language=english`` (the translated columns).
Results are grouped by country (normalised to ISO codes through
:mod:`cultureclip.data.taxonomy`), continent, language and category. Contrastive models
score ``"{question} {option}"`` per option (``templates.knowledge``); generative models
answer the lettered options.
"""

from __future__ import annotations

import ast
import contextlib
from typing import Any, ClassVar, Literal

from pydantic import Field

from cultureclip.data.taxonomy import country
from cultureclip.eval.benchmarks.benchmark import BenchmarkSettings
from cultureclip.eval.benchmarks.mcq import MCQBenchmark, MCQOptions, items_from_rows
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.items import ItemSet
from cultureclip.eval.metrics import GROUP_KEYS


class CVQAOptions(MCQOptions):
    templates: dict[str, str] = Field(default_factory=lambda: {"knowledge": "{question} {option}"})
    #: ``local``: the subset's own language; ``english``: the translated question and options
    language: Literal["local", "english"] = "local"


def parse_subset(subset: Any) -> tuple[str, str]:
    """``"('Japanese', 'Japan')"`` (or a list/tuple) -> ``("Japanese", "Japan")``."""
    value = subset
    if isinstance(subset, str):
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(subset)  # literals only: never executes code
    if isinstance(value, list | tuple) and len(value) == 2:
        return str(value[0]).strip(), str(value[1]).strip()
    return "", str(subset).strip()


def country_code(name: str) -> str:
    """The ISO code of a country name when the taxonomy knows it, else the name itself."""
    # CVQA subsets like "Indonesia-Javanese" or "China-Mandarin" keep the country first
    for candidate in (name, name.split("-")[0].strip(), name.split("(")[0].strip()):
        found = country(candidate) if candidate else None
        if found is not None:
            return found.iso2
    return name


@BENCHMARKS.register(
    "cvqa", help="CVQA as released (afaji/cvqa): 4-way VQA, local language or English"
)
class CVQABenchmark(MCQBenchmark):
    name = "cvqa"
    Options: ClassVar[type[BenchmarkSettings]] = CVQAOptions
    options: CVQAOptions
    group_keys: ClassVar[tuple[str, ...]] = (*GROUP_KEYS, "language")

    def load_items(self) -> ItemSet:
        records, root = self.rows(("cvqa.parquet", "test.parquet"))
        english = self.options.language == "english"
        rows: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            item_id = self.record_id(record, index, ("ID", "id"))
            if "_error" in record:
                rows.append({"id": item_id, "_error": record["_error"]})
                continue
            language, country = parse_subset(record.get("Subset", ""))
            question = record.get("Translated Question" if english else "Question")
            choices = record.get("Translated Options" if english else "Options")
            rows.append(
                {
                    "id": item_id,
                    "image": record.get("image"),
                    "question": question if question is not None else "",
                    "options": list(choices) if isinstance(choices, list | tuple) else choices,
                    "answer": record.get("Label"),
                    "country": country_code(country),
                    "category": str(record.get("Category") or ""),
                    "question_type": "knowledge",
                    "language": "English" if english else (language or "unknown"),
                    "subset": str(record.get("Subset") or ""),
                }
            )
        return items_from_rows(rows, root, self.name)
