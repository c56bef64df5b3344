"""The pool limit every partner run relies on, as the demo and the AWS instance configure it (the runs
that wait for it are in ``partner_ingest_tests/integration/test_concurrency_pools.py``)."""

from __future__ import annotations

import yaml

from partner_ingest.demo.runner import write_dagster_yaml
from partner_ingest_tests.harness.deploy import deploy_pools


def test_demo_and_aws_instances_limit_every_pool_to_one_step(tmp_path):
    assert deploy_pools() == {"default_limit": 1, "granularity": "op"}
    demo = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
    assert demo["concurrency"]["pools"] == deploy_pools()
