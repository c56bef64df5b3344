"""The Dagster UI in a real browser: the demo's sensor lands its sample files by itself; the partition page
of one landed file (headless Chromium, the URL the UI's own links use) shows that file's materialization
metadata, sha256 and size as GraphQL reports them. A full-page screenshot goes to
test-artifacts/browser/partition-page.png."""

from __future__ import annotations

import contextlib
import time
from urllib.parse import quote

import pytest
from playwright.sync_api import Error as PlaywrightError

from partner_ingest.demo.sample_files import INBOUND_DIR, sample_files
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.browser import css_string, headless_chromium
from partner_ingest_tests.harness.demo import (
    DEMO_FILES_ASSET,
    demo_fixture,  # noqa: F401  (the fixture `demo`)
    graphql,
    wait_for,
    wait_for_ui,
)
from partner_ingest_tests.harness.paths import REPO_ROOT

SCREENSHOT = REPO_ROOT / "test-artifacts" / "browser" / "partition-page.png"
RENDER_TIMEOUT_MS = 45_000

MATERIALIZATIONS = """query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeys } }
  assetOrError(assetKey: {path: $path}) { ... on Asset { assetMaterializations(limit: 100) {
    partition
    metadataEntries { label ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue intRepr } }
  } } }
}"""

# Label -> the value cell's text, for every row of the page's metadata tables.
METADATA_ROWS_JS = """() => Object.fromEntries([...document.querySelectorAll('tr')]
  .map((row) => [...row.querySelectorAll(':scope > td')].map((cell) => cell.innerText.trim()))
  .filter((cells) => cells.length >= 2).map((cells) => [cells[0], cells[1]]))"""


def _readable_keys() -> set[str]:
    """The demo files' partition keys whose path has a space or non-ASCII character (the interesting URLs)."""
    prefix = f"{INBOUND_DIR}/"
    paths = [s.relative_path.removeprefix(prefix) for s in sample_files()]
    return {encode_partition_key(p) for p in paths if " " in p or not p.isascii()}


def _landed_file(demo) -> tuple[str, str, int]:
    """(partition key, sha256, size) of a file the sensor's own runs materialized; a key with a space or
    unicode when the sensor registered one."""
    preferred = _readable_keys()

    def landed():
        data = graphql(demo.port, MATERIALIZATIONS, {"path": DEMO_FILES_ASSET})["data"]
        registered = set(data["assetNodeOrError"]["partitionKeys"])
        wanted = (preferred & registered) or registered
        for event in data["assetOrError"]["assetMaterializations"]:
            if event["partition"] in wanted:
                meta = {e["label"]: e for e in event["metadataEntries"]}
                size = meta["size"]["intValue"]
                return event["partition"], meta["sha256"]["text"], int(size if size is not None else
                                                                         meta["size"]["intRepr"])
        return None

    return wait_for(landed, 180, "the demo's sensor to land a file", demo.proc, demo.log)


def test_the_partition_page_shows_the_landed_files_sha256_and_size(demo, tmp_path):
    started = time.monotonic()
    wait_for_ui(demo)
    key, sha256, size = _landed_file(demo)
    assert len(sha256) == 64, sha256
    # The UI's own link to a partition (assetDetailsPathForKey with {view: 'partitions', partition}).
    asset_path = "/".join(quote(part, safe="") for part in DEMO_FILES_ASSET)
    url = f"http://127.0.0.1:{demo.port}/assets/{asset_path}?view=partitions&partition={quote(key, safe='')}"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    print(f"\npartition page: {url}\nscreenshot: {SCREENSHOT}")

    where = f"(partition {key!r}, {url}; screenshot {SCREENSHOT})"
    with headless_chromium(tmp_path / "chromium-profile") as browser:
        page = browser.new_page()
        page.set_default_timeout(RENDER_TIMEOUT_MS)
        try:
            page.goto(url, wait_until="domcontentloaded")
            # Rendered: the detail pane's heading is this partition (its tooltip holds the whole key) and the
            # metadata table (filled in once AssetPartitionDetailQuery answered) has the file's sha256 row.
            page.locator(f"[data-tooltip={css_string(key)}]").first.wait_for(state="visible")
            page.wait_for_function("(sha) => [...document.querySelectorAll('tr > td')]"
                                   ".some((cell) => cell.innerText.trim() === sha)", arg=sha256)
            page.wait_for_timeout(1_500)  # the community dialog, if not dismissed, opens 1 s after the load
            rows = page.evaluate(METADATA_ROWS_JS)
            text = page.locator("body").inner_text()
        except PlaywrightError as exc:
            pytest.fail(f"the partition page did not render the file's metadata {where}; blocked requests "
                        f"{browser.blocked}: {exc}")
        finally:
            with contextlib.suppress(PlaywrightError):  # a failed screenshot must not hide why the page failed
                page.screenshot(path=str(SCREENSHOT), full_page=True)
    where = f"{where[:-1]}; blocked requests {browser.blocked})"
    assert SCREENSHOT.exists(), f"no screenshot {where}"
    assert "Join the Dagster community" not in text, f"the community dialog covers the page {where}"
    assert sha256 in text, f"the page does not show sha256 {sha256} {where}"
    assert str(size) in text, f"the page does not show size {size} {where}"
    assert rows.get("sha256") == sha256, f"metadata rows {rows} {where}"
    assert rows.get("size") == str(size), f"metadata rows {rows} (an int renders without separators) {where}"
    assert not browser.blocked, f"the UI asked for other hosts than 127.0.0.1 {where}"
    print(f"partition page checked, {time.monotonic() - started:.1f}s after the demo started")
