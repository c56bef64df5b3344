"""Dagster's project CLI on this repository, the way a user types it at the repo root: `dg list defs --json`
shows every partner's assets, checks and sensors from ``[tool.dg]`` in pyproject.toml (the same module and
location name as ``[tool.dagster]`` and workspace.yaml), `dg check defs` passes, and a wrong partners.yaml
fails `dg check defs` naming the partner and the field. No AWS, no partner server: only the definitions load."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from partner_ingest.config import BUCKET_ENV, CONFIG_ENV, IngestConfig, parse_config
from partner_ingest.defs.asset_keys import contents_asset_key, expansion_check_key, files_asset_key, object_check_key
from partner_ingest.defs.notifications import SENSOR_NAME as NOTIFICATIONS_SENSOR
from partner_ingest.defs.sensors import sensor_name
from partner_ingest_tests.harness.paths import EXAMPLE_PARTNERS, REPO_ROOT
from partner_ingest_tests.harness.processes import run_in_own_group

DG = Path(sys.executable).parent / "dg"  # the console script of the environment running the tests (.venv)
TIMEOUT = 60.0


def _two_partners() -> dict:
    """The example partner (archives unzipped) next to one without archives, as in the unit tests."""
    raw = yaml.safe_load(EXAMPLE_PARTNERS.read_text())
    second = {**raw["partners"][0], "name": "globex", "host": "sftp.globex.example",
              "landing_prefix": "partners/globex/", "stability": {"done_marker": ".done"},
              "sensor": {"running": False}, "unzip": False, "after_landing": "leave"}
    second.pop("archive_dir", None)
    second.pop("unzip_limits", None)
    return {**raw, "partners": [raw["partners"][0], second]}


def _dg(tmp_path: Path, config: Path, *args: str):
    """`dg <args>` from the repo root with only ``PARTNER_INGEST_CONFIG`` set: no AWS credentials or config
    files, no bucket override, a throwaway DAGSTER_HOME (telemetry off)."""
    assert DG.exists(), f"{DG} is missing: dagster-dg-cli is in the test extra (pip install -e '.[test]')"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DAGSTER_"))}
    env.pop(BUCKET_ENV, None)
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update({CONFIG_ENV: str(config), "DAGSTER_HOME": str(home), "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"})
    cwd = Path.cwd()
    os.chdir(REPO_ROOT)  # dg finds its project from the working directory, as at a shell prompt
    try:
        return run_in_own_group([str(DG), *args], timeout=TIMEOUT, env=env)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def two_partners(tmp_path_factory) -> tuple[Path, IngestConfig]:
    path = tmp_path_factory.mktemp("dg") / "partners.yaml"
    raw = _two_partners()
    path.write_text(yaml.safe_dump(raw))
    return path, parse_config(raw)


def test_dg_list_defs_shows_every_partners_assets_checks_and_sensors(tmp_path, two_partners):
    path, config = two_partners
    result = _dg(tmp_path, path, "list", "defs", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert "does not match the virtual environment" not in result.stderr  # quieted in [tool.dg.cli]

    wanted_assets, wanted_checks = set(), set()
    for partner in config.partners:
        wanted_assets.add(files_asset_key(partner).to_user_string())
        wanted_checks.add(object_check_key(partner))
        if partner.unzip:
            wanted_assets.add(contents_asset_key(partner).to_user_string())
            wanted_checks.add(expansion_check_key(partner))
    assert wanted_assets == {"partners/acme/files", "partners/acme/archive_contents", "partners/globex/files"}
    assert {a["asset_key"] for a in listed["assets"]} == wanted_assets
    assert {c["key"] for c in listed["asset_checks"]} == \
        {f"{key.asset_key.to_user_string()}:{key.name}" for key in wanted_checks}
    assert {s["name"] for s in listed["sensors"]} == \
        {sensor_name(p) for p in config.partners} | {NOTIFICATIONS_SENSOR}
    assert {s["name"] for s in listed["sensors"]} >= {"acme_files_sensor", "globex_files_sensor"}


def test_dg_check_defs_passes(tmp_path, two_partners):
    path, _ = two_partners
    result = _dg(tmp_path, path, "check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully." in result.stdout


def test_dg_check_defs_names_the_partner_and_field_of_a_broken_config(tmp_path):
    raw = _two_partners()
    raw["partners"][1]["port"] = 99_999
    path = tmp_path / "partners.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = _dg(tmp_path, path, "check", "defs")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "partner 'globex', field 'port'" in output, output
    assert "All definitions loaded successfully." not in output
