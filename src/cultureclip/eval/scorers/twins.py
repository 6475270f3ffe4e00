"""Twin accuracy on a CulTwin set (``scorer: twins``; docs/eval.md, "Benchmarks"): each
image of a pair picks its own concept's text over its twin's; a pair with a missing or
unreadable image is skipped whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cultureclip.core.errors import InputError
from cultureclip.data.cultwin import CulTwinLoad, read_cultwin
from cultureclip.eval.items import BadItem, ItemSet, MCQItem, validate_items
from cultureclip.eval.scorers import SCORERS, ScorerSettings
from cultureclip.eval.scorers.mcq import MCQOptions, MCQScorer


class TwinOptions(ScorerSettings):
    template: str = "a photo of {concept}."


@SCORERS.register("twins", help="twin accuracy: each image picks its concept over its twin")
class TwinScorer(MCQScorer):
    task = "twin_accuracy"
    Options: ClassVar[type[ScorerSettings]] = TwinOptions
    prompt_option = "template"
    whole_groups = True

    @property
    def options(self) -> Any:  # the MCQ machinery's view: two roles, one template
        return MCQOptions(batch_size=self.bench.options.batch_size, roles=["pos", "neg"])

    def load_items(self) -> ItemSet:
        data = self.bench.data
        load = data if isinstance(data, CulTwinLoad) else read_cultwin(data)
        rows: list[dict[str, Any]] = []
        for r in load.records:
            if not (r.pos_image and r.neg_image):
                continue
            common = {"country": r.country, "category": r.category, "group_id": r.id}
            options = [r.pos_concept, r.neg_concept]
            for answer, side in enumerate(("pos", "neg")):
                image = load.image_path(getattr(r, f"{side}_image"))
                row = {"id": f"{r.id}/{side}", "image": str(image), "options": options, **common}
                rows.append(row | {"answer": answer, "role": side})
        # image paths are as the set gives them (relative to the working directory)
        items = validate_items(list(enumerate(rows, start=1)), root=Path("."), name="twins")
        items.errors = [BadItem(bad.line, None, bad.error) for bad in load.errors] + items.errors
        if not items.items:
            raise InputError(f"no twin pair with both images in {self.bench.data}")
        return items

    def option_texts(self, item: MCQItem) -> list[str]:
        fields = {"country": item.country, "category": item.category}
        return [self.bench.options.template.format(concept=o, **fields) for o in item.options]
