"""Fixtures every test folder shares; none starts a server (those are in ``integration/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from partner_ingest_tests.harness.deploy import CFN, load_template, render_example_partners


@pytest.fixture(scope="module")
def services() -> dict:
    """deploy/ecs's services stack, as CloudFormation reads it."""
    return load_template(CFN / "services.yaml")


@pytest.fixture(scope="module")
def rendered_partners(tmp_path_factory) -> Path:
    """The partners stack rendered from the example partners.yaml and sftp-users.yaml."""
    return render_example_partners(tmp_path_factory.mktemp("partners") / "partners-stack.yaml")
