"""The shipped specs give the numbers the Python benchmark classes gave before them.

``spec_numbers.json`` was written by the last release whose benchmarks were classes
(commit 0919b18), on these same fixtures: every shipped benchmark and protocol variant,
scored by the tiny CLIP and by the colour oracle. A change that moves any count, chance
level, metric or per-group figure fails here and names the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cultureclip.eval import evaluate

from .layouts import ColourOracle

GOLDEN = json.loads((Path(__file__).parent / "spec_numbers.json").read_text(encoding="utf-8"))
VARIANTS = [
    ("cvqa", {"language": "english"}),
    ("crope", {"protocol": "cultureclip"}),
    ("globalrg-grounding", {"protocol": "cultureclip"}),
    ("globalrg-retrieval", {"protocol": "cultureclip"}),
]


def _numbers(result) -> dict:
    return {
        "n": result.n,
        "n_skipped": result.n_skipped,
        "chance": result.chance,
        "metrics": {k: round(v, 6) for k, v in result.metrics.items() if not k.startswith("n_")},
        "per_group": result.per_group,
    }


@pytest.mark.parametrize("model_tag", ["tiny", "oracle"])
def test_every_shipped_spec_gives_the_numbers_of_the_benchmark_classes(
    model_tag, tiny_model, benchmark_data
) -> None:
    model = tiny_model if model_tag == "tiny" else ColourOracle()
    runs = [(name, {}) for name in benchmark_data if name != "cvqa-en"] + VARIANTS
    checked = []
    for name, options in runs:
        data, _ = benchmark_data[name]
        tag = f"{model_tag} {name} {json.dumps(options, sort_keys=True)}"
        result = evaluate(model, name, data=data, model_name=model_tag, **options)
        # JSON round trip: the golden file holds what a result file would
        assert json.loads(json.dumps(_numbers(result))) == GOLDEN[tag], tag
        checked.append(tag)
    assert sorted(checked) == sorted(t for t in GOLDEN if t.startswith(f"{model_tag} "))
