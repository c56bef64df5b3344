"""deploy/ecs as the deploy tests read it: its scripts loaded as modules, its CloudFormation templates
decoded by cfn-lint's own decoder (``!Ref``, ``!Sub``, ``!GetAtt`` ... in their long form), the lint
tools, the example partners stack, and the pool settings the AWS instance runs with."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from cfnlint.decode import cfn_yaml

from partner_ingest_tests.harness.paths import DEPLOY, EXAMPLE_PARTNERS, REPO_ROOT

CFN = DEPLOY / "cloudformation"
STATIC_TEMPLATES = [CFN / "foundation.yaml", CFN / "services.yaml"]
INSTALL_HINT = "run `bash deploy/ecs/install_lint_tools.sh` (cfn-lint into .venv, checkov into .venv-checkov)"
# The database settings the AWS instance's environment carries (no real password anywhere).
PG_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
          "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "not-a-real-password"}


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


entrypoint = _load_module("partner_ingest_deploy_entrypoint", DEPLOY / "entrypoint.py")
render_partners = _load_module("partner_ingest_deploy_render_partners", DEPLOY / "render_partners.py")


def tool(name: str) -> str:
    """Locate cfn-lint (project venv) or checkov (its own venv); fail, not skip, when absent."""
    override = os.environ.get(name.upper().replace("-", "_"))
    candidates = [override] if override else []
    if name == "checkov":
        candidates.append(str(REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))
    candidates += [str(Path(sys.executable).parent / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} is not installed: {INSTALL_HINT}")


def load_template(path: Path) -> dict:
    """A template as CloudFormation reads it, short tags in their long form (``{"Ref": ...}``,
    ``{"Fn::GetAtt": [resource, attribute]}``), through the decoder cfn-lint itself lints with."""
    return cfn_yaml.loads(path.read_text(encoding="utf-8"), str(path))


def resources_of(template: dict, type_: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == type_}


def statements(document: dict) -> list[dict]:
    found = document.get("Statement", [])
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def policy_documents(template: dict) -> Iterator[tuple[str, dict]]:
    """Every IAM/resource policy document in a template, with where it comes from."""
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield f"{name}/{policy['PolicyName']}", policy["PolicyDocument"]
        elif res["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::S3::BucketPolicy"):
            yield name, props["PolicyDocument"]
        elif res["Type"] == "AWS::Transfer::User":
            policy = props["Policy"]["Fn::Sub"][0]
            yield f"{name}/session", json.loads(policy)


def render_example_partners(out: Path) -> Path:
    """The partners stack rendered from the example partners.yaml and sftp-users.yaml into ``out``."""
    code = render_partners.main(["--partners", str(EXAMPLE_PARTNERS),
                                 "--sftp-users", str(DEPLOY / "sftp-users.example.yaml"), "-o", str(out)])
    assert code == 0
    return out


def deploy_pools() -> dict:
    """The pool settings the AWS instance runs with; the tests run Dagster with exactly these."""
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["concurrency"]["pools"]
