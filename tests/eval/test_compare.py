"""Paired comparison of two runs (issue 26): exact McNemar against scipy, the paired
bootstrap, `cultureclip eval compare` and the report's paired section."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.eval.compare import compare_results, mcnemar_exact, paired_stats

runner = CliRunner()


@pytest.mark.parametrize(
    ("only_a", "only_b"), [(0, 0), (0, 1), (1, 5), (3, 3), (7, 19), (40, 61), (250, 190), (0, 900)]
)
def test_exact_mcnemar_is_scipys_two_sided_binomial_test(only_a: int, only_b: int) -> None:
    from scipy.stats import binomtest

    expected = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b).pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert mcnemar_exact(only_b, only_a) == mcnemar_exact(only_a, only_b)


def test_paired_stats_count_the_discordant_items_and_bracket_the_difference() -> None:
    a = [True] * 30 + [False] * 10 + [True] * 2 + [False] * 8  # 32 / 50
    b = [True] * 30 + [True] * 10 + [False] * 2 + [False] * 8  # 40 / 50
    stats = paired_stats(a, b, n_resamples=500, seed=1)
    assert (stats.n, stats.only_a, stats.only_b) == (50, 2, 10)
    assert stats.accuracy_a == pytest.approx(64.0) and stats.accuracy_b == pytest.approx(80.0)
    assert stats.difference == pytest.approx(16.0)
    assert stats.ci_low < 16.0 < stats.ci_high and stats.ci_low > 0  # B is better on these
    assert stats.p_value == pytest.approx(mcnemar_exact(2, 10))
    same = paired_stats(a, a, n_resamples=100)
    assert same.difference == 0 and same.p_value == 1.0 and same.ci_low == same.ci_high == 0


def write_run(folder: Path, model: str, flags: dict[str, bool | None], country: dict[str, str]):
    """A result directory as `cultureclip eval` writes one (result.json, predictions.jsonl)."""
    from cultureclip.eval.results import EvalResult

    folder.mkdir(parents=True)
    lines = [
        {"id": i, "prediction": 0, "correct": ok, "country": country[i]} for i, ok in flags.items()
    ]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = EvalResult(
        benchmark="cultureverse",
        model=model,
        task="mcq",
        metrics={"accuracy": 0.0},
        per_group={"country": {"JP": {"n": 1, "correct": 1, "accuracy": 1.0}}},
        key={"data": {"path": "same"}},
    )
    result.save(folder)
    return folder


def test_eval_compare_prints_the_difference_and_the_p_value(tmp_path: Path) -> None:
    ids = [f"q{i}" for i in range(12)]
    country = {i: "JP" if n < 6 else "KR" for n, i in enumerate(ids)}
    a_flags = {i: n % 2 == 0 for n, i in enumerate(ids)}  # 6 right
    b_flags = {i: True for i in ids} | {"q11": None}  # q11 withheld: not paired
    a = write_run(tmp_path / "a", "clip", a_flags, country)
    b = write_run(tmp_path / "b", "cultureclip", b_flags, country)
    found = compare_results(a, b, n_resamples=200)
    assert found.overall.n == 11 and found.unpaired == 1
    assert (found.overall.only_a, found.overall.only_b) == (0, 5)
    assert found.overall.difference == pytest.approx(100.0 - 600 / 11)
    assert found.overall.p_value == pytest.approx(0.0625)  # 2 · (1/2)^5
    assert set(found.groups["country"]) == {"JP", "KR"}
    assert found.groups["country"]["KR"].n == 5

    done = runner.invoke(app, ["eval", "compare", str(a), str(b), "--resamples", "200"])
    assert done.exit_code == 0, done.output
    assert "difference B − A: +45.45 points on 11 items" in done.output
    assert "exact McNemar p = 0.0625" in done.output
    missing = runner.invoke(app, ["eval", "compare", str(a), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no result file" in missing.output


def test_the_report_compares_two_models_run_on_the_same_items(tmp_path: Path) -> None:
    from PIL import Image

    from cultureclip.eval import evaluate
    from cultureclip.eval.report import build_report

    from .layouts import PALETTE, ColourOracle

    items = []
    for n, colour in enumerate(["red", "green", "blue"] * 2):
        Image.new("RGB", (8, 8), PALETTE[colour]).save(tmp_path / f"{colour}.png")
        options = ["red", "green", "blue", "cyan"]
        items.append(
            {"id": f"i{n}", "image": f"{colour}.png", "options": options, "answer": colour}
        )
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items))
    out = tmp_path / "eval"
    strong = evaluate(ColourOracle(), "cultureverse", data=data, out_dir=out, model_name="a")
    weak = evaluate(ColourOracle("weak"), "cultureverse", data=data, out_dir=out, model_name="b")
    assert (strong.metrics["accuracy"], weak.metrics["accuracy"]) == (100.0, pytest.approx(400 / 6))
    page = build_report([out], tmp_path / "report", n_resamples=50).read_text()
    assert "Paired comparisons" in page and "McNemar" in page
    with open(tmp_path / "report" / "paired.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    (overall,) = [r for r in rows if r["group_key"] == "overall"]
    assert (overall["model_a"], overall["model_b"], int(overall["n"])) == ("a", "b", 6)
    assert float(overall["difference"]) == pytest.approx(-200 / 6, abs=1e-4)
    assert float(overall["p_value"]) == pytest.approx(0.5)  # the weak model only loses 2 blues
