"""The real UI: the Dagster webserver on ``workspace.yaml`` after a CLI run, driven by headless Debian Chromium.

Needs ``/usr/bin/chromium`` (``.ci/run`` installs it) and Playwright (the ``test`` extra; it drives the system
browser, no browser download). Outside CI the test is skipped when either is missing; in CI it fails instead
(``support.needs.require``).
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline_tests.support.dagster_server import graphql, serving
from llava_sensing_pipeline_tests.support.needs import require

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync"]
ASSETS = ["novel_files", "text_chunks", "environment_features", "sensor_records", "style_labels", "generated_examples",
          "chunked_json_exports"]
PARTITION_KEYS = ["Modernist_Novel/A901_The_Glass_Weather", "Modernist_Novel/A902_A_Room_Facing_North",
                  "Modernist_Novel/A903_Tidewater_Hours", "Travel_Novel/B901_Salt_Roads",
                  "Travel_Novel/B902_North by Rail!", "Travel_Novel/B903_The_Lantern_Coast"]
# the global lineage with both asset groups expanded (the UI's default group ids are "global@global:<group>")
LINEAGE = "/asset-groups?expanded=global%40global%3Aper_file%2Cglobal%40global%3Aexport"
STARTUP_TIMEOUT_S = 60


def _requirements() -> str | None:
    """Why the test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it)"
    return None


@pytest.fixture
def webserver(tmp_path, monkeypatch):
    """A CLI run on a copy of the samples, then ``dagster-webserver -w workspace.yaml`` on the same DAGSTER_HOME."""
    reason = _requirements()
    require(not reason, f"the UI test cannot run: {reason}")
    corpus = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel", corpus, ignore=shutil.ignore_patterns("*.md"))
    env = {"DAGSTER_HOME": str(tmp_path / "home"), "LLAVA_SENSING_STORAGE_DIR": str(tmp_path / "storage"),
           "LLAVA_SENSING_INPUT_DIR": str(corpus), "LLAVA_SENSING_OUTPUT_DIR": str(tmp_path / "out"),
           "LLAVA_SENSING_NUM_EXAMPLES": "12", "LLAVA_SENSING_LLM_CACHE": str(tmp_path / "llm.sqlite")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--input-dir", str(corpus), "--output-dir", str(tmp_path / "out"),
                 "--num-examples", "12"]) == 0
    with serving([sys.executable, "-m", "dagster_webserver"], {**os.environ, **env}, tmp_path / "webserver.log",
                 load_timeout=STARTUP_TIMEOUT_S, stop_timeout=15) as base:
        assert graphql(base, "mutation { setNuxSeen }")["setNuxSeen"] is True  # no welcome modal
        yield base, tmp_path


def test_asset_graph_and_partitions_in_a_real_browser(webserver):
    from playwright.sync_api import expect, sync_playwright

    base, tmp_path = webserver
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 3600, "height": 900})  # wide enough for all eight nodes (narrower truncates)
        page = browser.new_page()
        page.set_default_timeout(20_000)

        page.goto(base + LINEAGE)
        for name in ASSETS:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        expect(page.get_by_text("3 / 3 Passed").first).to_be_visible()  # the export's checks, in its node
        page.screenshot(path=str(tmp_path / "asset_graph.png"))

        page.set_viewport_size({"width": 1600, "height": 1000})
        page.goto(base + "/assets/generated_examples?view=partitions")
        body = page.locator("body")
        for key in PARTITION_KEYS:
            expect(body).to_contain_text(key)
        expect(body).to_contain_text("Materialized (6)")
        page.screenshot(path=str(tmp_path / "partitions.png"))

        # one genre in one step: filter the launch dialog's partition list by the genre folder, then "Select all"
        page.get_by_role("button", name="Materialize…").first.click()
        page.get_by_text("Select a partition or create one").click()
        page.get_by_placeholder("Filter partitions").fill("Modernist_Novel/")
        page.get_by_text("Select all (3)").click()
        page.keyboard.press("Escape")
        expect(page.get_by_placeholder("Filter partitions")).to_be_hidden()
        expect(page.get_by_text("3 partitions", exact=True)).to_be_visible()
        page.screenshot(path=str(tmp_path / "genre_selection.png"))
        browser.close()
