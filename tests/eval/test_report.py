from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from cultureclip.eval import evaluate
from cultureclip.eval.report import build_report

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture
def results_dir(tiny_model, tiny_clip_dir: Path, mcq_file: Path, tmp_path: Path) -> Path:
    out = tmp_path / "results"
    evaluate(
        tiny_model,
        "cultureverse",
        data=mcq_file,
        out_dir=out,
        model_name="finetuned",
        baseline=f"hf:{tiny_clip_dir}",
        baseline_name="base",
    )
    return out


def test_report_tables(results_dir: Path, tmp_path: Path) -> None:
    html_path = build_report([results_dir], tmp_path / "report")
    with open(tmp_path / "report" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["model"] for r in rows} == {"finetuned", "base"}
    compared = next(r for r in rows if r["model"] == "finetuned" and r["metric"] == "accuracy")
    assert float(compared["delta"]) == pytest.approx(
        float(compared["value"]) - float(compared["baseline_value"])
    )
    with open(tmp_path / "report" / "groups.csv") as handle:
        groups = list(csv.DictReader(handle))
    ft_types = [
        g for g in groups if g["model"] == "finetuned" and g["group_key"] == "question_type"
    ]
    assert sum(int(g["n"]) for g in ft_types) == 18
    for g in groups:
        assert float(g["ci_low"]) <= float(g["accuracy"]) <= float(g["ci_high"])
    page = html_path.read_text()
    assert "http://" not in page and "https://" not in page  # self-contained
    assert page.count("data:image/png;base64,") >= 5  # the map is inline SVG
    assert "accuracy by country" in page and 'class="worldmap"' in page


def test_report_needs_results(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no result\.json"):
        build_report([tmp_path / "empty"], tmp_path / "out")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(results_dir: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver")
    if not Path(chromium).exists() or driver_path is None:
        pytest.skip("headless Chromium not installed (Debian packages chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    html_path = build_report([results_dir], tmp_path / "report")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1300,1000")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(html_path.as_uri())
        images = driver.find_elements(By.CSS_SELECTOR, "img.figure")
        assert len(images) >= 5
        for image in images:
            loaded = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", image
            )
            assert loaded, image.get_attribute("alt")
        alts = [image.get_attribute("alt") for image in images]
        assert any("per continent" in a for a in alts)
        assert any("per country" in a for a in alts)
        assert any("per category" in a for a in alts)
        assert any("per question_type" in a for a in alts)
        maps = driver.find_elements(By.CSS_SELECTOR, "svg.worldmap")
        assert maps and "accuracy by country" in maps[0].get_attribute("aria-label")
        assert any("before and after" in a for a in alts)
        artifacts = Path("test-artifacts")
        artifacts.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(artifacts / "eval_report.png"))
    finally:
        driver.quit()
