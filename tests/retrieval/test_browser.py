"""The search page in headless Chromium: type a query, see results, open an explanation."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "headless Chromium not installed (Debian packages chromium chromium-driver; scripts/setup.sh)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cultureclip-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_query_shows_results_and_explanation(live_server: str, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(live_server + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "info"), "12 images"))
    assert "/tmp" not in browser.find_element(By.ID, "info").text  # names, not paths
    Select(browser.find_element(By.ID, "k")).select_by_visible_text("6")
    box = browser.find_element(By.ID, "query")
    box.send_keys("两个红色的图案")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 6)
    # Paging: "Show more" appends the next page (ranks 7-12).
    browser.find_element(By.ID, "more").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 12)
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "12 of 12 images for"))
    assert not browser.find_element(By.ID, "more").is_displayed()
    # Every thumbnail loaded (served by id from the index), whole (not cropped).
    wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    assert (
        browser.execute_script(
            "return getComputedStyle(document.querySelector('#grid img')).objectFit"
        )
        == "contain"
    )
    assert (
        browser.execute_script(
            "return getComputedStyle(document.querySelector('#grid .caption')).textOverflow"
        )
        == "ellipsis"
    )
    ids = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#grid .meta .id")]
    assert ids[0].startswith("#1 · 1") and len(set(ids)) == 12  # rank and image id
    scores = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#grid .score")]
    assert scores == sorted(scores, reverse=True)
    if browser.execute_script("return INFO.cjk_font"):  # the server found a CJK font to send
        wait.until(
            lambda d: d.execute_script(
                "return [...document.fonts].some(f => f.family.includes('cultureclip-cjk') && f.status === 'loaded')"
            )
        )
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "retrieval-search.png"))

    # Clicking an image opens the full-size view with its texts and their ids.
    browser.find_element(By.CSS_SELECTOR, "#grid .card .thumb").click()
    wait.until(lambda d: d.execute_script("return document.getElementById('viewer').open"))
    wait.until(
        lambda d: d.execute_script("return document.getElementById('view-image').naturalWidth > 0")
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#view-texts tr")
    assert rows and rows[0].text.startswith("text ")
    browser.save_screenshot(str(ARTIFACTS / "retrieval-view.png"))
    browser.find_element(By.ID, "viewer-close").click()

    browser.find_element(By.CSS_SELECTOR, "#grid .card .actions button:nth-child(2)").click()
    wait.until(lambda d: d.execute_script("return document.getElementById('dialog').open"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#crops tr")
    assert len(rows) == 1 + 3  # header + k crops
    assert "score" in browser.find_element(By.ID, "explain-summary").text
    browser.save_screenshot(str(ARTIFACTS / "retrieval-explain.png"))
    assert (ARTIFACTS / "retrieval-search.png").stat().st_size > 10_000
