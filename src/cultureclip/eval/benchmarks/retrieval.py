"""Image–text retrieval on a :class:`~cultureclip.data.pairs.PairCollection` (CulTi table).

Data: any layout :func:`cultureclip.data.collections.load_collection` reads (Chinese-CLIP
``{split}_imgs.tsv`` + ``{split}_texts.jsonl``, caption folders, CulTwin sets), with
``split`` choosing the part. Metrics: Recall@1/5/10 text→image and image→text and MR,
the mean of the six (percent); a text may have several correct images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cultureclip.core.errors import InputError
from cultureclip.data.collections import load_collection
from cultureclip.eval.benchmarks.benchmark import Benchmark, BenchmarkOutput
from cultureclip.eval.benchmarks.features import TextFeatureCache, embed_images
from cultureclip.eval.benchmarks.registry import BENCHMARKS
from cultureclip.eval.metrics import best_correct_rank, retrieval_metrics
from cultureclip.models.base import VisionLanguageModel


@BENCHMARKS.register(
    "retrieval", help="image-text retrieval: R@1/5/10 both ways and MR (CulTi protocol)"
)
class RetrievalBenchmark(Benchmark):
    name = "retrieval"
    task = "zeroshot_retrieval"

    def run(
        self, model: Any, *, work_dir: Path | None = None, progress: bool = True
    ) -> BenchmarkOutput:
        if not isinstance(model, VisionLanguageModel):
            raise TypeError("retrieval scores contrastive models only")
        collection = load_collection(self.data, self.split)
        if not collection.texts:
            raise InputError(f"no texts in {self.data} (split {self.split})")
        indices = range(len(collection.images))
        features = embed_images(
            model,
            indices,
            collection.load_image,
            batch_size=self.options.batch_size,
            progress=progress,
            description="retrieval: images",
        )
        image_features = torch.stack([features[i] for i in indices])
        text_features = TextFeatureCache(model).encode(collection.texts)
        sim = image_features @ text_features.T
        metrics = retrieval_metrics(sim, collection.text_to_images)
        ranks = best_correct_rank(sim.T.double(), collection.text_to_images)
        predictions = [
            {
                "id": collection.text_ids[t],
                "answer": [collection.image_ids[i] for i in collection.text_to_images[t]],
                "prediction": collection.image_ids[int(torch.argmax(sim[:, t]))],
                "rank": int(ranks[t]),
                "correct": bool(ranks[t] == 0),
            }
            for t in range(len(collection.texts))
        ]
        return BenchmarkOutput(metrics=metrics, predictions=predictions, n=len(collection.texts))
