from __future__ import annotations

import json
from pathlib import Path

import pytest

from cultureclip.core.io import read_jsonl
from cultureclip.eval import benchmark_specs, create_benchmark, evaluate, load_result, twin_accuracy
from cultureclip.eval.features import TextFeatureCache
from cultureclip.eval.scorers.mcq import MCQScorer


@pytest.mark.parametrize("name", sorted(benchmark_specs()))
def test_every_benchmark_runs_on_its_fixture(
    name: str, tiny_model, benchmark_data, tmp_path: Path
) -> None:
    data, expected = benchmark_data[name]
    result = evaluate(tiny_model, name, data=data, out_dir=tmp_path / "out", model_name="tiny")
    assert result.n == expected["n"]
    assert result.metrics, "a benchmark must report metrics"
    for key, value in result.metrics.items():
        assert 0.0 <= value <= 100.0, (key, value)
    predictions = read_jsonl(tmp_path / "out" / name / "tiny" / "predictions.jsonl")
    assert len(predictions) == result.n
    # grouping sums match the overall count for every group key
    for groups in result.per_group.values():
        assert sum(g["n"] for g in groups.values()) == result.n
        assert sum(g["correct"] for g in groups.values()) == sum(p["correct"] for p in predictions)
    on_disk = load_result(tmp_path / "out" / name / "tiny")
    assert on_disk.metrics == result.metrics
    assert (tmp_path / "out" / name / "tiny" / "config.yaml").exists() or on_disk.config


def test_malformed_items_are_reported_and_skipped(tiny_model, mcq_file: Path) -> None:
    result = evaluate(tiny_model, "cultureverse", data=mcq_file)
    assert result.n == 18
    assert result.n_skipped == 2
    assert any("bad-1" in s and "answer" in s for s in result.skipped)
    assert any("line 20" in s and "JSON" in s for s in result.skipped)


def test_mcq_accuracy_follows_the_scores(tiny_model, mcq_file: Path, tmp_path: Path) -> None:
    result = evaluate(tiny_model, "cultureverse", data=mcq_file, out_dir=tmp_path)
    records = load_result(next(tmp_path.rglob("result.json"))).predictions()
    for record in records:
        probs = record["probs"]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert record["correct"] == (
            max(range(len(probs)), key=probs.__getitem__) == record["answer"]
            and probs.count(max(probs)) == 1
        )
    assert result.metrics["accuracy"] == pytest.approx(
        100.0 * sum(r["correct"] for r in records) / len(records)
    )
    assert set(result.per_group["question_type"]) == {"recognition", "knowledge", "scene"}


def test_repeated_option_texts_are_encoded_once(tiny_model, mcq_file: Path) -> None:
    bench = create_benchmark("cultureverse", mcq_file)
    assert isinstance(bench.scorer, MCQScorer)
    items = bench.load_items()
    texts = [t for item in items for t in bench.option_texts(item)]
    cache = TextFeatureCache(tiny_model)
    cache.encode(texts)
    cache.encode(texts)
    assert cache.encoded == len(set(texts)) < len(texts)


def test_templates_are_configurable_and_validated(mcq_file: Path) -> None:
    bench = create_benchmark(
        "cultureverse",
        mcq_file,
        templates={
            "recognition": "{option} from {country}",
            "knowledge": "{option}",
            "scene": "{option}",
        },
    )
    item = bench.load_items().items[0]
    assert bench.option_texts(item)[0] == "concept 0 from JP"
    with pytest.raises(ValueError, match="extra"):
        create_benchmark("cultureverse", mcq_file, no_such_option=1)
    bad = create_benchmark("cultureverse", mcq_file, templates={"recognition": "{nope} {option}"})
    with pytest.raises(ValueError, match="nope"):
        bad.option_texts(item)


def test_globalrg_grounding_protocol(grounding_dir: Path) -> None:
    items = create_benchmark("globalrg-grounding", grounding_dir).load_items()
    assert {i.country for i in items} == {"India", "Japan"}  # Peru (2 concepts) dropped
    for item in items:
        assert len(item.options) == 4 and item.answer_text == item.model_extra["concept"]
        assert all(
            option.startswith(item.country) for option in item.options
        )  # same-region distractors
    again = create_benchmark("globalrg-grounding", grounding_dir).load_items()
    assert [i.options for i in items] == [i.options for i in again]  # seeded
    other_seed = create_benchmark("globalrg-grounding", grounding_dir, seed=7).load_items()
    assert [i.options for i in items] != [i.options for i in other_seed]
    text = create_benchmark("globalrg-grounding", grounding_dir).option_texts(items.items[0])[0]
    assert text.startswith("The item in the picture is ") and text.endswith(
        f" in {items.items[0].country}"  # the authors' protocol: no final period
    )


def test_globalrg_retrieval_protocol(globalrg_retrieval_dir: Path) -> None:
    bench = create_benchmark("globalrg-retrieval", globalrg_retrieval_dir)
    items = bench.load_items()
    for item in items:
        assert item.answer_text == item.country and len(set(item.options)) == 4
    texts = bench.option_texts(items.items[0])
    assert all(
        t.startswith(f"The picture depicts a kind of {items.items[0].model_extra['universal']} in ")
        for t in texts
    )


def test_crope_uses_only_no_items_and_roles(crope_dir: Path) -> None:
    items = create_benchmark("crope", crope_dir).load_items()
    assert not any(i.id.startswith("yes-item") for i in items)
    main = [i for i in items if i.model_extra["role"] == "main"]
    assert len(main) == 4 and all(i.answer_text.startswith("shown") for i in main)
    assert all(
        i.answer_text.startswith("asked") for i in items if i.model_extra["role"] == "definition"
    )


def test_skip_existing_overwrite_and_forgetting_delta(
    tiny_model, tiny_clip_dir: Path, zeroshot_dir: Path, tmp_path: Path
) -> None:
    first = evaluate(tiny_model, "zeroshot", data=zeroshot_dir, out_dir=tmp_path, model_name="ft")
    result_file = tmp_path / "zeroshot" / "ft" / "result.json"
    stamp = json.loads(result_file.read_text())["created"]

    class Exploding:
        spec = "never-used"

    def explode(*args, **kwargs):
        raise AssertionError("a reused result must not run the model")

    # skip-existing: the result of the same weights is read back, the model is not run
    # (another object under the same name is another model: issue 23)
    untouched = pytest.MonkeyPatch()
    for method in ("embed_images", "embed_texts", "forward"):
        untouched.setattr(tiny_model, method, explode)
    again = evaluate(tiny_model, "zeroshot", data=zeroshot_dir, out_dir=tmp_path, model_name="ft")
    untouched.undo()
    assert (
        again.reused
        and again.metrics == first.metrics
        and json.loads(result_file.read_text())["created"] == stamp
    )
    with pytest.raises(TypeError):
        evaluate(
            Exploding(),
            "zeroshot",
            data=zeroshot_dir,
            out_dir=tmp_path,
            model_name="ft",
            overwrite=True,
        )

    compared = evaluate(
        tiny_model,
        "zeroshot",
        data=zeroshot_dir,
        out_dir=tmp_path,
        model_name="ft",
        baseline=f"hf:{tiny_clip_dir}",
        baseline_name="base",
    )
    assert compared.baseline is not None and compared.baseline.model == "base"
    for key, delta in compared.baseline.delta.items():
        assert delta == pytest.approx(compared.metrics[key] - compared.baseline.metrics[key])
    assert (tmp_path / "zeroshot" / "base" / "result.json").exists()
    assert load_result(result_file).baseline is not None


def test_twin_accuracy_function(tiny_model, toy_cultwin: Path) -> None:
    from cultureclip.data.cultwin import read_cultwin

    value = twin_accuracy(tiny_model, read_cultwin(toy_cultwin))
    assert 0.0 <= value <= 100.0
    assert value == twin_accuracy(tiny_model, toy_cultwin)
