"""The README's demo command: the UI answers, lists the demo asset, its sensor registers the sample
files, and a partition launched from the UI's own GraphQL API lands in the embedded bucket. Stopped by
SIGTERM to its process group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import boto3

from partner_ingest.demo.object_store import DEMO_ACCESS_KEY_ID, DEMO_REGION, DEMO_SECRET_ACCESS_KEY
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest.s3.upload import SHA256_TAG
from partner_ingest_tests.harness.demo import demo_fixture  # noqa: F401  (the fixture `demo`)
from partner_ingest_tests.harness.demo import graphql as _graphql
from partner_ingest_tests.harness.demo import wait_for as _wait

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
