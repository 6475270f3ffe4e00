from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cultureclip.core.io import read_json, read_jsonl
from cultureclip.core.store import ResultStore, Shard
from cultureclip.data.cultwin import read_cultwin
from cultureclip.synth.pipeline import merge, run_synth
from cultureclip.synth.standin import StandInLLMServer, SynthScript, prompt_name, user_text


def manifest_rows(out_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out_dir / "cultwin.parquet").to_pylist()


def test_topdown_pipeline_end_to_end_with_faults(
    tmp_path: Path, standin: StandInLLMServer, make_config: Any
) -> None:
    config = make_config(tmp_path / "run", standin.base_url)
    report = run_synth(config)
    by_stage = {r.stage: r for r in report.stages}
    assert by_stage["concepts"].done == 4  # JP, CN x Cuisine, Clothing
    assert (
        by_stage["twins"].done == 7 and by_stage["twins"].failed == 1
    )  # 'bad twin' never validates
    assert (
        by_stage["captions"].done == 14 and by_stage["captions"].failed == 0
    )  # sushi fixed on the 3rd try
    assert by_stage["images"].done == 42  # 14 sides x 3 captions, one image per caption
    assert by_stage["filter"].done == 42

    data = read_cultwin(tmp_path / "run", strict=True, check_images=True)
    assert (
        report.merge is not None and report.merge.rejected == 3
    )  # taco fails the judge: rice ball/taco x 3
    assert len(data) == 18  # 6 kept twins x 3 caption slots
    concepts = {r.pos_concept for r in data} | {r.neg_concept for r in data}
    assert "bad twin" not in concepts and "taco" not in concepts
    for record in data:
        assert (
            record.neg_features and len(record.pos_captions) == 1 and len(record.neg_captions) == 1
        )
        assert all(len(c.split()) < 15 for c in record.pos_captions + record.neg_captions)
        assert record.quality["pos"]["fidelity"] >= 2 and record.neg_country
        provenance = json.loads(record.provenance)
        assert (
            provenance["twins"]["prompt"] == "twins@1"
            and provenance["concepts"]["model"] == "openai:stand-in"
        )
        assert "seed" in provenance["twins"]
    sushi = [r for r in data if r.pos_concept == "sushi"]
    # The finished caption of the cut-off first answer is kept; the 3rd answer fills the rest.
    assert len(sushi) == 3 and sushi[0].pos_captions[0] == "sushi with raw fish"
    assert all("slice of raw" in r.pos_captions[0] for r in sushi[1:])
    # What was dropped on the way, and why, is in the ledger (not an open failure).
    (kept,) = [f for f in read_jsonl(tmp_path / "run" / "work" / "failures.jsonl")
               if f["stage"] == "captions"]  # fmt: skip
    assert kept["item"]["concept"] == "sushi" and len(kept["raw"]) == 3
    assert all("words" in d["reason"] for d in kept["dropped"]) and len(kept["dropped"]) == 10

    # The failure report lists the bad answer with its raw text; it never reached the dataset.
    summary = read_json(tmp_path / "run" / "failures_summary.json")
    assert summary["by_stage"] == {"twins": 1}
    (failure,) = read_jsonl(tmp_path / "run" / "failures.jsonl")
    assert failure["item"]["pos_concept"] == "bad twin" and "neg_features" in failure["error"]
    assert all('"neg_features": ""' in raw for raw in failure["raw"])
    assert (tmp_path / "run" / "config.yaml").exists()

    # A rerun does nothing but retry the open failure.
    rows = manifest_rows(tmp_path / "run")
    before = len(standin.requests)
    again = run_synth(config)
    retried = standin.requests[before:]
    assert retried and all("Concept: bad twin" in user_text(r) for r in retried)
    assert sum(r.cached for r in again.stages) == sum(r.total for r in again.stages) - 1
    assert manifest_rows(tmp_path / "run") == rows


def write_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True)
    rows = [
        ("Hanbok", "KR", (220, 60, 120)),
        ("Kimono", "JP", (200, 40, 100)),
        ("Sari", "IN", (240, 120, 30)),
        ("Generic chair", "", (128, 128, 128)),
    ]
    lines = []
    for index, (title, country, colour) in enumerate(rows):
        Image.new("RGB", (32, 32), colour).save(directory / f"{index}.png")
        lines.append(
            {
                "title": title,
                "caption": f"a photo of {title.lower()}",
                "image": f"{index}.png",
                "country": country,
            }
        )
    path = directory / "corpus.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_bottomup_concepts_with_mined_twins_keep_their_own_images(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    with StandInLLMServer(SynthScript()) as server:
        config = make_config(
            tmp_path / "run",
            server.base_url,
            concepts={
                "source": "bottomup",
                "corpus": str(corpus),
                "categories": ["Clothing", "Cuisine"],
            },
            twins={"method": "mine", "mine_model": f"hf:{tiny_clip_dir}"},
            filter={"backend": "clipscore", "model": f"hf:{tiny_clip_dir}", "threshold": 0.0},
        )
        run_synth(config)
        names = [prompt_name(r) for r in server.requests]
    assert names == ["bottomup"] * 4  # given captions and images: no caption or image requests
    data = read_cultwin(tmp_path / "run", strict=True, check_images=True)
    assert len(data) == 3  # the generic chair was judged 'no'
    for record in data:
        assert record.pos_concept != record.neg_concept and record.country != record.neg_country
        assert record.pos_captions == [f"a photo of {record.pos_concept.lower()}"]
        assert record.pos_image.startswith("images/given-") and "clipscore" in record.quality["pos"]
        assert json.loads(record.provenance)["method"] == "mine"


def test_shards_then_merge_equal_one_run(
    tmp_path: Path, tiny_clip_dir: Path, make_config: Any
) -> None:
    corpus = tmp_path / "emoji.csv"
    corpus.write_text(
        "emoji,concept,country,category,features\n"
        "🏯,Japanese castle,JP,Architecture,white walls under curved roofs\n"
        "🏰,European castle,DE,Architecture,grey stone towers with battlements\n"
        "👘,kimono,JP,Clothing,robe with wide sleeves and a sash\n"
        "🥻,sari,IN,Clothing,long cloth draped over one shoulder\n"
        "🥟,dumpling,CN,Cuisine,pleated dough parcel\n"
        "🥠,fortune cookie,US,Cuisine,folded crescent cookie\n",
        encoding="utf-8",
    )
    sections = dict(
        concepts={"source": "corpus", "corpus": str(corpus)},
        twins={"method": "mine", "mine_model": f"hf:{tiny_clip_dir}"},
        images={"per": "concept"},
        filter={"backend": "none"},
    )
    with StandInLLMServer(SynthScript()) as server:
        whole = make_config(tmp_path / "whole", server.base_url, **sections)
        run_synth(whole)
        parts = make_config(tmp_path / "parts", server.base_url, **sections)
        for index in range(2):
            run_synth(parts, shard=Shard(index, 2))
        assert not (tmp_path / "parts" / "cultwin.parquet").exists()  # shards do not merge
        merge(parts)
    shard_files = sorted(p.name for p in (tmp_path / "parts" / "work").glob("captions.*.jsonl"))
    assert shard_files == ["captions.shard-0-of-2.jsonl", "captions.shard-1-of-2.jsonl"]
    rows = manifest_rows(tmp_path / "whole")
    assert len(rows) == 6 and rows == manifest_rows(tmp_path / "parts")
    pairs = {r["pos_concept"]: r["neg_concept"] for r in rows}
    assert pairs["kimono"] == "sari" and pairs["Japanese castle"] == "European castle"


def test_changed_prompt_settings_redo_only_what_they_affect(
    tmp_path: Path, script: SynthScript, make_config: Any
) -> None:
    with StandInLLMServer(script) as server:
        config = make_config(tmp_path / "run", server.base_url, filter={"backend": "none"})
        config.concepts.countries = ["JP"]
        config.concepts.categories = ["Cuisine"]
        run_synth(config)
        before = len(server.requests)
        config.captions.n = 2  # new caption keys; concepts and twins stay cached
        run_synth(config)
        names = {prompt_name(r) for r in server.requests[before:]}
    assert names == {"captions"}
    assert len(ResultStore(tmp_path / "run" / "work", "captions")) == 8  # 4 sides x 2 settings
    assert all(len(r.pos_captions) == 1 for r in read_cultwin(tmp_path / "run"))
    assert len(read_cultwin(tmp_path / "run")) == 4  # 2 twins x 2 caption slots


@pytest.mark.parametrize("stage", ["twins", "captions", "images", "filter"])
def test_a_stage_alone_waits_for_earlier_stages(
    tmp_path: Path, stage: str, make_config: Any
) -> None:
    config = make_config(
        tmp_path / "run", "http://127.0.0.1:9/v1", stages=[stage], filter={"backend": "none"}
    )
    (report,) = run_synth(config).stages
    assert report.total == 0 and report.done == 0
