"""A benchmark is a spec file: shipped ones, one given by path, one-line errors, suites
that load each model once, and result files of the first shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.errors import InputError
from cultureclip.eval import benchmark_specs, evaluate, load_result
from cultureclip.eval.spec import load_spec

from .layouts import ColourOracle

runner = CliRunner()
SHIPPED = ["crope", "cultureverse", "cvqa", "cvqa-en", "globalrg-grounding"]
SHIPPED += ["globalrg-retrieval", "openended", "retrieval", "twins", "zeroshot"]


def test_the_shipped_benchmarks_are_spec_files_listed_with_source_and_scorer() -> None:
    specs = benchmark_specs()
    assert sorted(specs) == SHIPPED
    assert specs["cvqa"].source.data == "afaji/cvqa" and specs["crope"].scorer == "mcq"
    assert specs["retrieval"].reference["LACLIP ViT-H"]["MR"] == 47.9
    listed = runner.invoke(app, ["benchmarks"], terminal_width=200)
    assert listed.exit_code == 0
    for name in SHIPPED:
        assert name in listed.output
    assert "UBCNLP/GlobalRG" in listed.output and "mcq-ranking" in listed.output


def test_a_spec_given_by_path_runs_with_its_own_data(mcq_file: Path, tmp_path: Path) -> None:
    shutil.copytree(mcq_file.parent, tmp_path / "bench" / "data")
    spec = {
        "name": "my-colours",
        "source": {"data": "data/items.jsonl"},  # relative to the spec file
        "layout": "mcq-items",
        "prompts": {"contrastive": {"recognition": "{option}", "knowledge": "{option}"}},
        "scorer": "mcq",
        "group_keys": ["country"],
    }
    spec["prompts"]["contrastive"]["scene"] = "{option}"
    path = tmp_path / "bench" / "my_bench.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    ran = runner.invoke(app, ["eval", "-m", "colour:oracle", "-b", str(path), "-o", str(out)])
    assert ran.exit_code == 0, ran.output
    result = load_result(out / "my-colours" / "colour_oracle")
    assert result.n == 18 and set(result.per_group) == {"country"}
    assert result.config["templates"]["recognition"] == "{option}"
    suite = tmp_path / "bench" / "suite.yaml"  # a suite names the spec relative to itself
    suite.write_text(
        yaml.safe_dump({"name": "mine", "benchmarks": [{"benchmark": "my_bench.yaml"}]})
    )
    ran = runner.invoke(app, ["eval", "--suite", str(suite), "-m", "colour:oracle", "-o", str(out)])
    assert ran.exit_code == 0 and "1 reused" in ran.output, ran.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scorer": "mcqq"}, "my_bench.yaml: scorer: unknown scorer 'mcqq' (known: "),
        ({"colums": {}}, "my_bench.yaml: colums: unknown key"),
        ({"layout": "nope"}, "my_bench.yaml: layout: unknown layout 'nope'"),
        ({"source": {"split": "test", "dat": "x"}}, "my_bench.yaml: source.dat: unknown key"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_key(change: dict, message: str, tmp_path: Path) -> None:
    path = tmp_path / "my_bench.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "scorer": "mcq", **change}))
    with pytest.raises(InputError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    ran = runner.invoke(app, ["eval", "-m", "colour:oracle", "-b", str(path), "-d", "x"])
    assert ran.exit_code == 2 and message.split(" (")[0] in ran.output
    assert "Traceback" not in ran.output


def test_a_suite_loads_each_model_once(
    monkeypatch, mcq_file: Path, zeroshot_dir: Path, toy_cultwin: Path, tmp_path: Path
) -> None:
    import cultureclip.models.registry as registry
    from cultureclip.eval.api import run_suite

    built: list[str] = []
    monkeypatch.setattr(
        registry, "create_model", lambda spec, **kw: built.append(spec) or ColourOracle()
    )
    suite = tmp_path / "suite.yaml"
    entries = [("cultureverse", mcq_file), ("zeroshot", zeroshot_dir), ("twins", toy_cultwin)]
    suite.write_text(
        yaml.safe_dump(
            {"name": "s", "benchmarks": [{"benchmark": b, "data": str(d)} for b, d in entries]}
        )
    )
    models = ["colour:a", "colour:b"]
    ran = run_suite(
        suite, models, out_dir=tmp_path / "eval", baseline="colour:base", n_resamples=10
    )
    assert not ran.failed and len(ran.computed) == 6
    assert sorted(built) == ["colour:a", "colour:b", "colour:base"]  # was one per benchmark
    built.clear()
    again = run_suite(suite, models, out_dir=tmp_path / "eval", baseline="colour:base")
    assert len(again.reused) == 6 and built == []  # reused results load nothing


def test_a_result_file_of_the_first_shape_still_reads(mcq_file: Path, tmp_path: Path) -> None:
    result = evaluate(
        ColourOracle(), "cultureverse", data=mcq_file, out_dir=tmp_path, model_name="o"
    )
    assert result.path is not None
    stored = json.loads(result.path.read_text())
    assert stored["schema_version"] == 2 and stored["counts"]["items"] == 18
    assert not any(key.startswith("n_") for key in stored["metrics"])
    old = {k: v for k, v in stored.items() if k not in ("schema_version", "counts")}
    old.update(n=18, n_skipped=2, metrics={"accuracy": 50.0, "n_failed": 3.0, "n_unparsed": 1.0})
    result.path.write_text(json.dumps(old))
    read = load_result(result.path)
    assert read.metrics == {"accuracy": 50.0} and read.n == 18 and read.n_skipped == 2
    assert (read.counts.failed, read.counts.refused) == (3, 1)
    result.path.write_text(json.dumps({**stored, "schema_version": 99}))
    with pytest.raises(InputError, match="schema version 99 is newer"):
        load_result(result.path)


def test_withheld_answers_are_counted_as_hidden_not_scored(tmp_path: Path) -> None:
    from .layouts import write_plain_parquet
    from .test_released_layouts import cvqa_rows

    rows, features = cvqa_rows()
    rows[1]["Label"] = rows[4]["Label"] = -1  # a hidden test split withholds them
    data = write_plain_parquet(tmp_path / "cvqa.parquet", rows, features)
    local = evaluate(ColourOracle(), "cvqa", data=data)
    assert local.n == 4 and local.counts.hidden == 2 and local.n_skipped == 0
    assert local.metrics["accuracy"] == pytest.approx(100.0)  # r1 (a tie) and r4 are gone
    english = evaluate(ColourOracle(), "cvqa-en", data=data)
    assert english.n == 4 and english.per_group["language"] == {
        "English": {"n": 4, "correct": 4, "accuracy": 100.0}
    }
