"""`cultureclip eval --suite` over 6 benchmarks × 2 models: one report, checked in Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cultureclip.cli.main import app

from .conftest import COLOURS, write_image
from .layouts import image_struct, jpeg, write_hub_layout, write_plain_parquet
from .test_released_layouts import cvqa_rows

runner = CliRunner()
MODELS = ["colour:oracle", "colour:weak"]


def build_suite(root: Path) -> Path:
    """Local data for 6 benchmarks (CVQA twice) and a suite file naming them."""
    import datasets

    rows, features = cvqa_rows()
    cvqa = write_hub_layout(root / "cvqa", rows, features)

    regions = ["Japan", "India", "Nigeria", "Brazil", "France"]
    colours = ["red", "green", "blue", "yellow", "cyan"]
    retrieval_rows = []
    for r, region in enumerate(regions):
        for u, universal in enumerate(["wedding", "breakfast"]):
            retrieval_rows.append(
                {
                    "image": image_struct(colours[r], f"{r}{u}.jpg"),
                    "region": f"{colours[r]} {region}",
                    "universal": universal,
                }
            )
    retrieval = write_plain_parquet(
        root / "globalrg_retrieval.parquet",
        retrieval_rows,
        datasets.Features(
            {
                "image": datasets.Image(),
                "region": datasets.Value("string"),
                "universal": datasets.Value("string"),
            }
        ),
    )
    grounding_rows = [
        {"image": image_struct(c, f"{region}{i}.jpg"), "region": region, "concept": f"{c} thing"}
        for region in ("Mexico", "Egypt")
        for i, c in enumerate(["red", "green", "blue", "yellow"])
    ]
    grounding = write_plain_parquet(
        root / "globalrg_grounding.parquet",
        grounding_rows,
        datasets.Features(
            {
                "image": datasets.Image(),
                "region": datasets.Value("string"),
                "concept": datasets.Value("string"),
            }
        ),
    )
    mcq = root / "mcq" / "items.jsonl"
    mcq.parent.mkdir(parents=True)
    lines = []
    for i, (country, colour) in enumerate(zip(["KR", "CN", "US", "AU"], colours, strict=False)):
        (mcq.parent / f"{i}.jpg").write_bytes(jpeg(colour))
        options = [colour, *[c for c in colours if c != colour][:3]]
        lines.append(
            json.dumps(
                {
                    "id": f"m{i}",
                    "image": f"{i}.jpg",
                    "options": options,
                    "answer": 0,
                    "country": country,
                    "category": ["Food", "Clothing"][i % 2],
                }
            )
        )
    lines.append(json.dumps({"id": "bad", "image": "0.jpg", "options": ["a", ""], "answer": 0}))
    mcq.write_text("\n".join(lines) + "\n")
    zeroshot = root / "zeroshot"
    for c, name in enumerate(["red", "green", "blue"]):
        for k in range(2):
            write_image(zeroshot / name / f"{k}.png", COLOURS[c])
    suite = {
        "name": "local-culture",
        "description": "miniature released layouts",
        "benchmarks": [
            {"benchmark": "cvqa", "data": str(cvqa), "label": "cvqa"},
            {
                "benchmark": "cvqa",
                "data": str(cvqa),
                "label": "cvqa-en",
                "options": {"language": "english"},
            },
            {"benchmark": "globalrg-retrieval", "data": str(retrieval)},
            {"benchmark": "globalrg-grounding", "data": str(grounding)},
            {"benchmark": "cultureverse", "data": str(mcq)},
            {
                "benchmark": "zeroshot",
                "data": str(zeroshot),
                "options": {"templates": ["a {c} thing"]},
            },
        ],
    }
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def run_suite_cli(suite: Path, out: Path) -> str:
    args = ["eval", "--suite", str(suite), "-o", str(out)]
    for model in MODELS:
        args += ["-m", model]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_suite_runs_every_pair_reuses_and_reports(tmp_path: Path) -> None:
    suite = build_suite(tmp_path / "data")
    out = tmp_path / "runs"
    first = run_suite_cli(suite, out)
    assert "12 computed, 0 reused, 0 failed" in first
    second = run_suite_cli(suite, out)
    assert "0 computed, 12 reused, 0 failed" in second
    page = (out / "report" / "report.html").read_text()
    assert "Leaderboard" in page
    for label in ("cvqa", "cvqa-en", "globalrg-retrieval", "globalrg-grounding", "zeroshot"):
        assert label in page


def test_shipped_suites_load() -> None:
    from cultureclip.eval.api import load_suite, suite_names

    assert {"culture-contrastive", "culture-generative", "general"} <= set(suite_names())
    for name in suite_names():
        suite = load_suite(name)
        assert suite.benchmarks and suite.name == name


@pytest.mark.browser
@pytest.mark.slow
def test_suite_report_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver")
    if not Path(chromium).exists() or driver_path is None:
        pytest.skip("headless Chromium not installed (Debian packages chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from .test_report import CHROMIUM_FLAGS

    suite = build_suite(tmp_path / "data")
    out = tmp_path / "runs"
    run_suite_cli(suite, out)
    html_path = out / "report" / "report.html"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1300,1000")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    artifacts = Path("test-artifacts")
    artifacts.mkdir(exist_ok=True)
    try:
        driver.get(html_path.as_uri())
        board = driver.find_element(By.CSS_SELECTOR, "table.leaderboard")
        header = [th.text for th in board.find_elements(By.CSS_SELECTOR, "thead th")]
        for label in ("cvqa", "cvqa-en", "globalrg-retrieval", "globalrg-grounding"):
            assert label in header
        body = board.find_elements(By.CSS_SELECTOR, "tbody tr")
        names = [row.find_element(By.CSS_SELECTOR, "td").text for row in body]
        assert {"colour:oracle", "colour:weak"} <= set(names)
        assert "chance" in names
        driver.save_screenshot(str(artifacts / "eval_suite_report.png"))
        maps = driver.find_elements(By.CSS_SELECTOR, "svg.worldmap")
        assert maps, "no world map in the report"
        labels = [m.get_attribute("aria-label") for m in maps]
        world = maps[labels.index("accuracy by country, colour:oracle, cvqa")]
        driver.execute_script("arguments[0].scrollIntoView()", world)
        width = driver.execute_script("return arguments[0].getBoundingClientRect().width", world)
        assert width > 400
        # the choropleth colours countries with results (JP, KR in CVQA) and leaves others grey
        coloured = world.get_attribute("style")
        assert "--jp:" in coloured and "--kr:" in coloured
        png = artifacts / "eval_suite_map.png"
        world.screenshot(str(png))
        from PIL import Image

        with Image.open(png) as shot:
            colours = shot.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 3  # more than background + one fill
    finally:
        driver.quit()


def test_suite_with_a_baseline_reports_before_after(tmp_path: Path) -> None:
    suite = build_suite(tmp_path / "data")
    out = tmp_path / "runs"
    args = ["eval", "--suite", str(suite), "-o", str(out), "-m", "colour:oracle"]
    result = runner.invoke(app, [*args, "--baseline", "colour:weak"])
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "cvqa" / "colour_oracle" / "result.json").read_text())
    assert stored["baseline"]["model"] == "colour:weak"
    assert stored["baseline"]["delta"]["accuracy"] == pytest.approx(400 / 6 - 50.0)
    page = (out / "report" / "report.html").read_text()
    assert "Before / after fine-tuning" in page
