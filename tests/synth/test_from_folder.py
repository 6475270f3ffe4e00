"""Must-show: own labelled photos of several groups within one country, through exactly
the commands docs/own-data.md shows (synth from folder -> train with clip and
cultureclip -> eval 5-way zero-shot and twins -> report)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cultureclip.data.cultwin import read_cultwin
from cultureclip.synth.config import FOLDER_DEFAULTS, FOLDER_TEMPLATES
from cultureclip.testing import COSTUME_STYLES as STYLES
from cultureclip.testing import write_costume_photos as write_photos

ROOT = Path(__file__).resolve().parents[2]
OWN_DATA = ROOT / "docs" / "own-data.md"
STAGE_LINE = re.compile(r"^(concepts|twins|captions|images|filter): (\d+) items(.*)$")


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def documented_commands(text: str) -> list[str]:
    commands = []
    for block in fenced(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def run(command: str, cwd: Path) -> str:
    argv = shlex.split(command)
    assert argv[0] == "cultureclip", command
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "cultureclip", *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command}\n{output}"
    return output


def result(cwd: Path, benchmark: str, slug: str) -> dict[str, Any]:
    return json.loads((cwd / "runs/own/eval" / benchmark / slug / "result.json").read_text())


@pytest.mark.slow
def test_own_photos_end_to_end_with_the_documented_commands(tmp_path: Path) -> None:
    doc = OWN_DATA.read_text(encoding="utf-8")
    (groups_file,) = [b for b in fenced(doc, "yaml") if b.startswith("# photos/groups.yaml")]
    groups = yaml.safe_load(groups_file)
    assert set(groups["groups"]) == set(STYLES) and groups["country"] == "CN"
    photos = tmp_path / "photos"
    train = write_photos(photos / "train", 8)
    test = write_photos(photos / "test", 4, offset=1000)
    (photos / "groups.yaml").write_text(groups_file, encoding="utf-8")
    # The labels-file layout of the guide, over the same training photos.
    (listed_doc,) = [b for b in fenced(doc, "text") if b.startswith("photos/listed/labels.csv")]
    header = listed_doc.splitlines()[1].split(",")
    (photos / "listed").mkdir()
    with open(photos / "listed" / "labels.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for path in train:
            entry = groups["groups"][path.parent.name]
            ethnic_group = entry["concept"].split()[0]
            writer.writerow(
                [
                    f"../train/{path.parent.name}/{path.name}",
                    ethnic_group,
                    entry["concept"],
                    "CN",
                    "Clothing",
                ]
            )

    commands = documented_commands(doc)
    assert [c.split()[1] for c in commands] == ["synth"] * 2 + ["train"] * 2 + ["eval"] * 2 + [
        "report",
        "synth",
    ]
    outputs = [run(command, tmp_path) for command in commands]

    # No step reports zero without a reason.
    for output in (outputs[0], outputs[1], outputs[-1]):
        for line in output.splitlines():
            match = STAGE_LINE.match(line)
            if match and (match.group(2) == "0" or "(" not in match.group(3)):
                assert "; " in match.group(3), f"a zero without a reason: {line}"
    # The guide's expected synth output is what the first command prints.
    (expected,) = [b for b in fenced(doc, "text") if b.startswith("concepts: 40 items")]
    printed = outputs[0].splitlines()
    for line in expected.splitlines():
        if STAGE_LINE.match(line) or line.startswith(("merge:", "│")):
            assert line in printed, f"docs/own-data.md promises {line!r}"

    # Every photo becomes its own record; twins come from another group of the same country.
    for out_dir, photos_in in (("runs/own/cultwin", train), ("runs/own/cultwin-test", test)):
        load = read_cultwin(tmp_path / out_dir, strict=True, check_images=True)
        assert len(load) == len(photos_in) == len({r.pos_image for r in load})
        summary = json.loads((tmp_path / out_dir / "summary.json").read_text())
        assert summary["records"] == summary["concepts"] == len(photos_in)
        assert summary["no_twin"] == summary["rejected"] == summary["incomplete"] == 0
        for record in load:
            extra = record.model_extra or {}
            assert record.country == record.neg_country == "CN"
            assert extra["group"] != extra["neg_group"] and record.neg_concept != record.pos_concept
            assert len(record.pos_captions) == 4 and record.pos_features
    listed = read_cultwin(tmp_path / "runs/own/cultwin-listed", strict=True)
    assert len(listed) == len(train)
    assert {(r.model_extra or {})["group"] for r in listed} == {
        "Miao",
        "Dong",
        "Yi",
        "Tibetan",
        "Dai",
    }

    # Both fine-tunes trained; the evaluations scored every held-out photo.
    for output, loss in ((outputs[2], "clip"), (outputs[3], "cultureclip")):
        steps = int(re.search(r"trained (\d+) steps", output).group(1))
        assert steps == 50 and (tmp_path / f"runs/own/{loss}/final").is_dir()
        assert (tmp_path / f"runs/own/{loss}/metrics.jsonl").read_text().strip()
    zeroshot = result(tmp_path, "zeroshot", "runs_own_cultureclip_final")
    assert zeroshot["n"] == len(test) and not zeroshot.get("n_skipped")
    assert zeroshot["metrics"]["acc1"] > 20.0  # 5-way: chance is 20 %
    assert zeroshot["baseline"]["model"] == "runs/own/clip/final"
    twins = result(tmp_path, "twins", "runs_own_cultureclip_final")
    assert twins["n"] == 2 * len(test) and twins["metrics"]["accuracy"] > 50.0
    csv_text = (tmp_path / "runs/own/report/results.csv").read_text()
    assert "runs/own/cultureclip/final,zeroshot" in csv_text and "twins" in csv_text
    assert (tmp_path / "runs/own/report/report.html").exists()


def test_the_guides_option_block_is_what_from_folder_starts_from() -> None:
    doc = OWN_DATA.read_text(encoding="utf-8")
    (block,) = [b for b in fenced(doc, "yaml") if b.startswith("concepts: {source: folder")]
    shown = yaml.safe_load(block)
    assert shown["captions"]["templates"] == FOLDER_TEMPLATES
    for section, values in FOLDER_DEFAULTS.items():
        assert {k: shown[section][k] for k in values} == values


def test_models_doc_names_every_lite_option() -> None:
    """Issue 16 item 7: docs/models.md never named the lite ``cache=`` option."""
    from cultureclip.models.lite import LiteSettings

    doc = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for name in LiteSettings.model_fields:
        assert f"| `{name}` |" in doc, f"docs/models.md does not document lite option {name}"
    assert "cache=" in doc and "heads-only" in doc
