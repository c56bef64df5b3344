"""The README's demo command: the UI answers, lists the demo asset, its sensor registers the sample
files, and a partition launched from the UI's own GraphQL API lands in the embedded bucket. Stopped by
SIGTERM to its process group. Then the Dagster UI in a real browser (headless Chromium, the URL the UI's
own links use): the partition page of one landed file shows its sha256 and size as GraphQL reports them;
a screenshot goes to test-artifacts/browser/partition-page.png. Both tests share one demo (a start
costs ~20 s)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from urllib.parse import quote

import boto3
import pytest
from playwright.sync_api import Error as PlaywrightError

from partner_ingest.demo.object_store import DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY
from partner_ingest.demo.sample_files import INBOUND_DIR, sample_files
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest.s3.upload import SHA256_TAG
from partner_ingest_tests.harness.browser import css_string, headless_chromium
from partner_ingest_tests.harness.demo import (
    DEMO_FILES_ASSET,
    demo_fixture,  # noqa: F401  (the fixture `demo`)
    graphql,
    wait_for,
    wait_for_ui,
)
from partner_ingest_tests.harness.demo import graphql as _graphql
from partner_ingest_tests.harness.demo import wait_for as _wait
from partner_ingest_tests.harness.paths import REPO_ROOT

ASSET_PATH = ["partners", "demo", "files"]


def _without_aws() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def test_demo_serves_the_ui_lists_the_asset_and_lands_a_file(demo):
    port, state, proc, log = demo
    _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).status == 200,
          180, "the webserver", proc, log)
    nodes = _wait(lambda: [n["assetKey"]["path"] for n in
                           _graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]],
                  180, "the code location to load", proc, log)
    assert ASSET_PATH in nodes

    endpoints = json.loads((state / "endpoints.json").read_text())
    assert "password" not in json.dumps(endpoints).lower()
    key = encode_partition_key("reports/Q3 résumé, final.csv")
    # The demo partner's sensor runs by default: its first tick registers the sample files as partitions.
    _wait(lambda: key in _graphql(port, """query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
                                             ... on AssetNode { partitionKeys } } }""", {"path": ASSET_PATH})
          ["data"]["assetNodeOrError"]["partitionKeys"], 180, "the sensor to register the demo files", proc, log)
    launched = _graphql(port, """
        mutation($params: LaunchBackfillParams!) {
          launchPartitionBackfill(backfillParams: $params) {
            __typename
            ... on LaunchBackfillSuccess { backfillId }
            ... on PythonError { message }
          }
        }""", {"params": {"partitionNames": [key], "assetSelection": [{"path": ASSET_PATH}]}})
    assert launched["data"]["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", launched

    s3 = boto3.client("s3", endpoint_url=endpoints["aws_endpoint_url"], region_name=DEMO_REGION,
                      aws_access_key_id=DEMO_ACCESS_KEY_ID, aws_secret_access_key=DEMO_SECRET_ACCESS_KEY)
    object_key = "partners/demo/reports/Q3 résumé, final.csv"
    head = _wait(lambda: s3.head_object(Bucket=endpoints["bucket"], Key=object_key), 180,
                 "the demo file to land in the embedded bucket", proc, log)
    assert head["ContentLength"] > 0
    tags = s3.get_object_tagging(Bucket=endpoints["bucket"], Key=object_key)["TagSet"]
    assert any(t["Key"] == SHA256_TAG and len(t["Value"]) == 64 for t in tags)

    # The banner's listing command works without the AWS CLI, from the demo's state directory.
    listed = subprocess.run([sys.executable, "-m", "partner_ingest.cli", "landed", "--demo", "--state-dir", str(state)],
                            capture_output=True, text=True, timeout=60, env=_without_aws())
    assert listed.returncode == 0, listed.stderr
    assert f"s3://{endpoints['bucket']}/{object_key}" in listed.stdout
    sha = next(t["Value"] for t in tags if t["Key"] == SHA256_TAG)
    assert sha in next(line for line in listed.stdout.splitlines() if object_key in line)
    assert f"landed --demo --state-dir {state}" in log.read_text()
    checked = subprocess.run([sys.executable, "-m", "partner_ingest.cli", "check", "--demo", "--state-dir", str(state)],
                             capture_output=True, text=True, timeout=120, env=_without_aws())
    print(checked.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    steps = [line.split(":")[1].strip() for line in checked.stdout.splitlines()]
    assert steps[-1] == "files matching the globs" and "FAIL" not in checked.stdout
    # No line a demo user cannot act on: dagster dev's "use dg dev", the check outputs notice.
    text = log.read_text()
    assert "dg dev" not in text and "did not yield or return expected outputs" not in text, text[-3000:]


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
