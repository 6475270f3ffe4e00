"""Own labelled photos through synth: each photo its own record, twins across any grouping
column, "no twin" as a finished outcome, and reports that say why a count is what it is."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.io import read_json
from cultureclip.core.store import ResultStore
from cultureclip.data.cultwin import read_cultwin
from cultureclip.synth.pipeline import run_synth

runner = CliRunner()

GROUPS = {  # group -> (concept, colour)
    "miao": ("Miao costume", (200, 30, 40)),
    "dong": ("Dong costume", (30, 40, 200)),
    "yi": ("Yi costume", (30, 160, 60)),
}


def write_photos(directory: Path, per_group: int = 3, **columns: Any) -> Path:
    """A labelled CSV corpus, one row per photo; ``columns`` override per-row fields."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for group, (concept, colour) in GROUPS.items():
        for index in range(per_group):
            name = f"{group}-{index}.png"
            shade = tuple(max(0, c - 20 * index) for c in colour)
            Image.new("RGB", (32, 32), shade).save(directory / name)
            row = {
                "concept": concept,
                "caption": f"a photo of {concept.lower()}",
                "image": name,
                "country": "CN",
                "group": group,
                "category": "Clothing",
            }
            row.update({k: (v(group) if callable(v) else v) for k, v in columns.items()})
            rows.append(row)
    path = directory / "corpus.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def corpus_config(make_config: Any, tmp_path: Path, corpus: Path, model: str, **concepts: Any):
    return make_config(
        tmp_path / "run",
        "http://127.0.0.1:9/v1",  # nothing listens: the run must not need an LLM
        concepts={"source": "corpus", "corpus": str(corpus), **concepts},
        twins={"method": "mine", "mine_model": model},
        images={"per": "concept"},
        filter={"backend": "clipscore", "model": model, "threshold": 0.0},
    )


def test_corpus_photos_of_one_concept_are_each_judged_and_kept(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any
) -> None:
    """Defect 1: rows sharing a concept were merged into one side, so only one photo per
    concept was judged and merge found no verdict for the others ("199 incomplete")."""
    corpus = write_photos(tmp_path / "corpus", country=lambda g: {"miao": "CN"}.get(g, "JP"))
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}")
    config.concepts.countries = None
    report = run_synth(config)
    by_stage = {r.stage: r for r in report.stages}
    assert by_stage["filter"].done == 9  # every photo judged, not one per concept
    assert report.merge is not None
    assert report.merge.incomplete == 0 and report.merge.records == 9
    images = sorted(r.pos_image for r in read_cultwin(tmp_path / "run", check_images=True))
    assert len(set(images)) == 9  # every photo is the photo of its own record


def test_twins_are_mined_across_a_grouping_column_within_one_country(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any
) -> None:
    """Defect 2: with every row in one country mining gave 0 records and no reason; any
    column can now name the groups, and country stays data."""
    corpus = write_photos(tmp_path / "corpus")
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}", group_by="group")
    report = run_synth(config)
    assert report.merge is not None and report.merge.records == 9
    for record in read_cultwin(tmp_path / "run", strict=True):
        extra = record.model_extra or {}
        assert record.country == "CN" and record.neg_country == "CN"
        assert extra["group"] != extra["neg_group"] and record.pos_concept != record.neg_concept
        assert json.loads(record.provenance)["twins"]["across"] == "group"
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["records"] == summary["concepts"] == 9 and summary["no_twin"] == 0


def test_one_country_without_group_by_says_why_nothing_was_mined(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = write_photos(tmp_path / "corpus")
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}")
    with caplog.at_level(logging.WARNING):
        report = run_synth(config)
    twins = next(r for r in report.stages if r.stage == "twins")
    assert twins.skipped == 9 and twins.done == 0
    assert "concepts.group_by" in twins.line() and "same country ('CN')" in twins.line()
    assert report.merge is not None and report.merge.no_twin == 9
    assert "no twin: every concept of category 'Clothing' has country 'CN'" in report.merge.line()
    assert "concepts.group_by" in caplog.text


def test_non_iso_countries_are_warned_about(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = write_photos(tmp_path / "corpus", country=lambda g: g.title())
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}")
    with caplog.at_level(logging.WARNING):
        run_synth(config)
    assert "Dong, Miao, Yi are not ISO 3166-1" in caplog.text
    assert "set concepts.group_by" in caplog.text


def test_no_twin_is_finished_and_a_rerun_loads_no_model(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 item 13: a concept without a candidate was neither done nor failed, so
    every rerun loaded the model and embedded everything again."""
    corpus = write_photos(
        tmp_path / "corpus", category=lambda g: "Symbol" if g == "yi" else "Clothing"
    )
    lines = corpus.read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines[:8]) + "\n", encoding="utf-8")  # one Yi row only
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}", group_by="group")
    first = {r.stage: r for r in run_synth(config).stages}["twins"]
    assert first.done == 6 and first.skipped == 1
    assert "1 concept(s) without a twin (1 x no other concept in category 'Symbol')" in first.line()

    import cultureclip.models.registry as registry

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a rerun with every twin finished must not load the model")

    monkeypatch.setattr(registry, "create_model", no_model)
    again = run_synth(config)
    twins = {r.stage: r for r in again.stages}["twins"]
    assert twins.cached == twins.total == 7 and twins.done == twins.skipped == 0
    assert "1 concept(s) without a twin" in twins.line()
    records = ResultStore(tmp_path / "run" / "work", "twins").records()
    assert sum(1 for r in records if r["neg_id"] is None) == 1
    assert again.merge is not None and again.merge.records == 6


def test_a_first_run_on_a_corpus_says_given_not_cached(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any
) -> None:
    """Issue 16 item 9: a first synth run reported "200 cached" for corpus concepts."""
    corpus = write_photos(tmp_path / "corpus")
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}", group_by="group")
    report = run_synth(config)
    concepts = report.stages[0]
    assert concepts.given == 9 and concepts.cached == 0
    assert concepts.line().startswith("concepts: 9 items (9 given); read from ")
    for stage in report.stages:  # no stage reports zero without a reason
        if stage.total == 0 or stage.done + stage.cached + stage.given == 0:
            assert stage.notes, stage.line()


def test_unreachable_llm_exits_non_zero_with_a_summary(tmp_path: Path, make_config: Any) -> None:
    """Issue 14 item 6: 12/12 failed, 0 records, exit code 0."""
    config = make_config(
        tmp_path / "run",
        "http://127.0.0.1:9/v1",
        llm={"max_retries": 0, "timeout_s": 5},
        concepts={"countries": ["JP"], "categories": ["Cuisine", "Clothing"]},
        filter={"backend": "none"},
    )
    path = config.save(tmp_path / "cfg")
    result = runner.invoke(app, ["synth", "-c", str(path)])
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "2 open failure(s) (concepts: 2)" in output
    assert f"cultureclip synth failures {tmp_path / 'run'}" in output
    assert "concepts │ 2 │ 0 │ 0 │ 0 │ 0 │ 2" in output  # items given cached done skipped failed

    listed = runner.invoke(app, ["synth", "failures", str(tmp_path / "run")])
    assert listed.exit_code == 0 and "2 open failure(s)" in listed.output
    missing = runner.invoke(app, ["synth", "failures", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not found" in missing.output
    not_synth = runner.invoke(app, ["synth", "failures", str(tmp_path)])
    assert not_synth.exit_code == 2
    assert "not a synth output directory" in " ".join(not_synth.output.split())


def write_folder(root: Path) -> Path:
    for group, (_, colour) in GROUPS.items():
        (root / group).mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (32, 32), tuple(c // (index + 1) for c in colour)).save(
                root / group / f"{index}.png"
            )
    (root / "yi" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "groups.yaml").write_text(
        "country: CN\ncategory: Clothing\ngroups:\n"
        "  miao: {concept: Miao costume, features: silver horn headdress}\n"
        "  dong: {concept: Dong costume, context: indigo dress of the Dong people}\n",
        encoding="utf-8",
    )
    return root


def test_from_folder_keeps_every_readable_photo_and_says_what_it_left_out(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    photos = write_folder(tmp_path / "photos")
    out = tmp_path / "run"
    mine = f"twins.mine_model=hf:{tiny_clip_dir}"
    args = [
        "synth",
        "--from-folder",
        str(photos),
        "-o",
        str(out),
        "-s",
        mine,
        "-s",
        "progress=false",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "concepts: 7 items (6 given, 1 skipped)" in output and "unreadable image" in output
    load = read_cultwin(out, strict=True, check_images=True)
    assert len(load) == 6 and len({r.pos_image for r in load}) == 6
    by_concept = {r.pos_concept: r for r in load}
    assert set(by_concept) == {"Miao costume", "Dong costume", "yi"}  # no text: the folder name
    assert by_concept["Miao costume"].pos_captions == [
        "a photo of Miao costume",
        "Miao costume, with silver horn headdress",
        "Miao costume from China",
    ]  # the context template names an empty field: left out
    assert all(r.country == "CN" and r.category == "Clothing" for r in load)
    summary = read_json(out / "summary.json")
    assert summary["reasons"] == {"left out: not a readable image": 1}
    assert summary["records"] == summary["concepts"] == 6

    again = runner.invoke(app, args)  # a rerun: everything cached or given
    assert again.exit_code == 0 and "twins: 6 items (6 cached)" in " ".join(again.output.split())


def test_from_folder_with_a_labels_file_and_a_grouping_column(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    corpus = write_photos(tmp_path / "photos")
    corpus.rename(tmp_path / "photos" / "labels.csv")
    text = (tmp_path / "photos" / "labels.csv").read_text(encoding="utf-8")
    (tmp_path / "photos" / "labels.csv").write_text(text.replace(",group,", ",people,"))
    args = ["synth", "--from-folder", str(tmp_path / "photos"), "-o", str(tmp_path / "run")]
    args += ["-s", f"twins.mine_model=hf:{tiny_clip_dir}", "-s", "progress=false"]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "'group'" in missing.output  # names the line and column
    result = runner.invoke(app, [*args, "-s", "concepts.group_by=people"])
    assert result.exit_code == 0, result.output
    load = read_cultwin(tmp_path / "run", strict=True)
    assert len(load) == 9
    assert all(r.pos_captions == [f"a photo of {r.pos_concept.lower()}"] for r in load)  # own
    assert {(r.model_extra or {})["group"] for r in load} == set(GROUPS)


def test_from_folder_defaults_under_a_config_file_key_by_key(tmp_path: Path) -> None:
    from cultureclip.cli.synth import _load

    config_file = tmp_path / "mine.yaml"
    config_file.write_text("filter: {backend: clipscore, threshold: 0.3}\n", encoding="utf-8")
    config = _load(config_file, ["captions.n=4"], tmp_path / "out", tmp_path / "photos")
    assert config.concepts.source == "folder" and config.concepts.folder == str(tmp_path / "photos")
    assert config.twins.method == "mine" and config.captions.templates  # folder defaults kept
    assert config.filter.backend == "clipscore" and config.filter.threshold == 0.3
    assert config.filter.model == "lite:en" and config.captions.n == 4
    assert config.out_dir == str(tmp_path / "out")


def test_llm_captions_for_a_folder_are_one_request_per_group(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    from cultureclip.core.config import load_config
    from cultureclip.synth.config import FOLDER_DEFAULTS, SynthConfig
    from cultureclip.synth.standin import StandInLLMServer, SynthScript, prompt_name

    photos = write_folder(tmp_path / "photos")
    with StandInLLMServer(SynthScript()) as server:
        overrides = [
            f"out={tmp_path / 'run'}",
            f"concepts.folder={photos}",
            f"twins.mine_model=hf:{tiny_clip_dir}",
            "captions.templates=null",
            "captions.n=3",
            f"llm.base_url={server.base_url}",
            "llm.model=stand-in",
            "progress=false",
        ]
        config = load_config(SynthConfig, None, overrides, **FOLDER_DEFAULTS)
        report = run_synth(config)
        names = [prompt_name(r) for r in server.requests]
    assert names == ["captions"] * 3  # three groups, six photos
    assert report.merge is not None and report.merge.records == 6
    for record in read_cultwin(tmp_path / "run", strict=True):
        assert len(record.pos_captions) == 3 and record.pos_concept in record.pos_captions[0]


def test_a_corpus_image_that_does_not_read_is_left_out_and_a_missing_one_named(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any
) -> None:
    corpus = write_photos(tmp_path / "corpus")
    (tmp_path / "corpus" / "yi-2.png").write_bytes(b"truncated")
    config = corpus_config(make_config, tmp_path, corpus, f"hf:{tiny_clip_dir}", group_by="group")
    config.filter.backend = "none"
    report = run_synth(config)
    assert report.stages[0].skipped == 1 and "unreadable image" in report.stages[0].line()
    assert report.merge is not None and report.merge.records == 8
    assert report.merge.reasons == {"left out: not a readable image": 1}
    (tmp_path / "corpus" / "yi-2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"corpus.csv:10: image not found"):
        run_synth(config)
