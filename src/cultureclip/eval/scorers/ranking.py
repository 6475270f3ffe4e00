"""Multiple choice plus GlobalRG's retrieval view (``scorer: mcq-ranking``): per value of
``query_field``, images ranked by ``query_template`` give ``precision@k`` and
``diversity@k`` (normalised entropy of the regions in the top k), averaged over values."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from cultureclip.eval.features import TextFeatureCache, image_key
from cultureclip.eval.scorers import SCORERS, BenchmarkOutput, ScorerSettings
from cultureclip.eval.scorers.mcq import MCQOptions, MCQScorer


class RankingOptions(MCQOptions):
    query_template: str = "a photo of {universal}"
    query_field: str = "universal"
    retrieval_ks: list[int] = Field(default_factory=lambda: [5, 10], min_length=1)


@SCORERS.register("mcq-ranking", help="multiple choice plus precision@k and diversity@k")
class RankingScorer(MCQScorer):
    Options: ClassVar[type[ScorerSettings]] = RankingOptions

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        output = super().run(model, work_dir=work_dir, progress=progress)
        features = getattr(self, "image_features", None)
        if features:
            output.metrics.update(self.ranking_metrics(model, features))
        return output

    def ranking_metrics(self, model: Any, features: dict[str, Any]) -> dict[str, float]:
        items = [i for i in self.items().items if image_key(i) in features]
        if not items:
            return {}
        field = self.options.query_field
        values = sorted({str(i.model_extra[field]) for i in items})
        queries = [self.options.query_template.format_map({field: v}) for v in values]
        images = torch.stack([features[image_key(i)] for i in items])
        sim = TextFeatureCache(model).encode(queries) @ images.T
        metrics: dict[str, float] = {}
        for k in self.options.retrieval_ks:
            top = min(k, len(items))
            precisions, diversities = [], []
            for row, value in enumerate(values):
                order = torch.argsort(sim[row], descending=True, stable=True)[:top].tolist()
                hits = [items[j] for j in order]
                shown = sum(str(h.model_extra[field]) == value for h in hits)
                precisions.append(100.0 * shown / top)
                counts = Counter(h.country for h in hits)
                entropy = -sum(c / top * math.log(c / top) for c in counts.values())
                # float rounding puts a uniform top k a hair above log(k)
                evenness = min(entropy / math.log(top), 1.0) if top > 1 else 0.0
                diversities.append(100.0 * evenness)
            metrics[f"precision@{k}"] = sum(precisions) / len(precisions)
            metrics[f"diversity@{k}"] = sum(diversities) / len(diversities)
        return metrics
