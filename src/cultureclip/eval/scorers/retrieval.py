"""Image–text retrieval (``scorer: retrieval``) on any ``load_collection`` layout, scored by
the one retrieval evaluator, :func:`cultureclip.retrieval.evaluate.evaluate_retrieval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cultureclip.core.errors import InputError
from cultureclip.eval.metrics import best_correct_rank
from cultureclip.eval.scorers import SCORERS, BenchmarkOutput, Scorer
from cultureclip.models.base import VisionLanguageModel


@SCORERS.register("retrieval", help="image-text retrieval: R@1/5/10 both ways and MR")
class RetrievalScorer(Scorer):
    task = "zeroshot_retrieval"

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        from cultureclip.data.collections import load_collection
        from cultureclip.retrieval.evaluate import evaluate_retrieval

        if not isinstance(model, VisionLanguageModel):
            raise TypeError("retrieval scores contrastive models only")
        collection = load_collection(self.bench.data, self.bench.split)
        if not collection.texts:
            raise InputError(f"no texts in {self.bench.data} (split {self.bench.split})")
        result = evaluate_retrieval(
            model, collection, batch_size=self.options.batch_size, progress=progress
        )
        sim, kept, texts = result.sim, result.kept, result.text_rows
        ranks = best_correct_rank(sim.T, result.targets)
        predictions = [
            {
                "id": collection.text_ids[t],
                "answer": [collection.image_ids[i] for i in collection.text_to_images[t]],
                "prediction": collection.image_ids[kept[int(torch.argmax(sim[:, q]))]],
                "rank": int(ranks[q]),
                "correct": bool(ranks[q] == 0),
            }
            for q, t in enumerate(texts)
        ]
        skipped = [f"image {f['image_id']!r}: {f['reason']}" for f in result.failed]
        return BenchmarkOutput(
            metrics=result.rows[0].metrics, predictions=predictions, n=len(texts), skipped=skipped
        )
