"""deploy/ecs: the templates pass cfn-lint and checkov and say what a security review needs; the AWS
dagster.yaml validates with Dagster's own config checks; and an EcsRunLauncher built from it starts a
real run request on moto's ECS (over HTTP) from the stack's run task definition.

cfn-lint and checkov are required (CI installs them with deploy/ecs/install_lint_tools.sh): a missing
tool fails these tests, it never skips them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "ecs"
CFN = DEPLOY / "cloudformation"
STATIC_TEMPLATES = [CFN / "foundation.yaml", CFN / "services.yaml"]
INSTALL_HINT = "run `bash deploy/ecs/install_lint_tools.sh` (cfn-lint into .venv, checkov into .venv-checkov)"


# ---------------------------------------------------------------- helpers

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
        candidates.append(str(ROOT / ".venv-checkov" / "bin" / "checkov"))
    candidates += [str(Path(sys.executable).parent / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} is not installed: {INSTALL_HINT}")


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short tags (!Ref, !Sub, ...) into their long form."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


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


@pytest.fixture(scope="module")
def foundation() -> dict:
    return load_template(CFN / "foundation.yaml")


@pytest.fixture(scope="module")
def services() -> dict:
    return load_template(CFN / "services.yaml")


@pytest.fixture(scope="module")
def rendered_partners(tmp_path_factory) -> Path:
    """The partners stack rendered from the example partners.yaml and sftp-users.yaml."""
    out = tmp_path_factory.mktemp("partners") / "partners-stack.yaml"
    code = render_partners.main(["--partners", str(ROOT / "partners.example.yaml"),
                                 "--sftp-users", str(DEPLOY / "sftp-users.example.yaml"), "-o", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def partners_stack(rendered_partners: Path) -> dict:
    return load_template(rendered_partners)


@pytest.fixture(scope="module")
def all_templates(foundation, services, partners_stack) -> dict[str, dict]:
    return {"foundation": foundation, "services": services, "partners": partners_stack}


# ---------------------------------------------------------------- linters

def test_cfn_lint_is_clean_on_every_template(rendered_partners: Path):
    result = subprocess.run([tool("cfn-lint"), *map(str, STATIC_TEMPLATES), str(rendered_partners)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"cfn-lint findings:\n{result.stdout}{result.stderr}"


def test_checkov_is_clean_and_every_skip_has_a_reason(rendered_partners: Path):
    files = [*STATIC_TEMPLATES, rendered_partners]
    args = [tool("checkov"), "--framework", "cloudformation", "--skip-download", "-o", "json"]
    for path in files:
        args += ["-f", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"})
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed, skipped, passed = [], [], 0
    for rep in reports:
        assert rep["summary"]["parsing_errors"] == 0, rep["summary"]
        failed += rep["results"]["failed_checks"]
        skipped += rep["results"]["skipped_checks"]
        passed += rep["summary"]["passed"]
    assert not failed, "checkov failures:\n" + "\n".join(
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in failed)
    assert passed > 100
    for check in skipped:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert len(reason.strip()) > 20, f"{check['check_id']} skipped without a reason"


@pytest.mark.parametrize("path", STATIC_TEMPLATES, ids=lambda p: p.name)
def test_templates_deploy_without_an_s3_staging_bucket(path: Path):
    # `aws cloudformation deploy` sends templates up to 51,200 bytes inline; larger ones need --s3-bucket.
    assert path.stat().st_size < 51_200


# ---------------------------------------------------------------- landing bucket

def test_landing_bucket_is_versioned_encrypted_private_logged_and_aborts_multipart(foundation):
    props = foundation["Resources"]["LandingBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Fn::GetAtt": ["DataKey", "Arn"]}
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "LogBucket"}
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r["Status"] == "Enabled" and r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
               for r in rules)
    assert foundation["Resources"]["LandingBucket"]["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("bucket", ["LandingBucket", "LogBucket"])
def test_bucket_policies_deny_requests_without_tls(foundation, bucket):
    policy = next(r["Properties"]["PolicyDocument"] for r in resources_of(foundation, "AWS::S3::BucketPolicy").values()
                  if r["Properties"]["Bucket"] == {"Ref": bucket})
    deny = [s for s in statements(policy) if s["Effect"] == "Deny"
            and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert deny, f"{bucket} policy has no deny for aws:SecureTransport=false"
    assert deny[0]["Principal"] == "*" and deny[0]["Action"] == "s3:*"
    resources = as_list(deny[0]["Resource"])
    assert {"Fn::GetAtt": [bucket, "Arn"]} in resources and {"Fn::Sub": f"${{{bucket}.Arn}}/*"} in resources


# ---------------------------------------------------------------- Transfer Family

def test_transfer_server_is_internal_sftp_with_a_current_security_policy(foundation):
    props = foundation["Resources"]["TransferServer"]["Properties"]
    policy = props["SecurityPolicyName"]
    assert "2018" not in policy
    assert re.fullmatch(r"TransferSecurityPolicy-(FIPS-)?20(2[4-9]|[3-9]\d)-\d\d", policy), policy
    assert props["Protocols"] == ["SFTP"] and props["IdentityProviderType"] == "SERVICE_MANAGED"
    assert props["EndpointType"] == "VPC" and "AddressAllocationIds" not in props["EndpointDetails"]
    assert props["StructuredLogDestinations"] == [{"Fn::GetAtt": ["TransferLogGroup", "Arn"]}]


def test_transfer_users_are_logical_and_scoped_to_their_partner_prefix(partners_stack):
    from partner_ingest.config import load_config

    partners = {p.name: p for p in load_config(ROOT / "partners.example.yaml").partners}
    wanted = yaml.safe_load((DEPLOY / "sftp-users.example.yaml").read_text())["users"]
    users = resources_of(partners_stack, "AWS::Transfer::User")
    assert len(users) == len(wanted)
    for entry in wanted:
        props = next(u["Properties"] for u in users.values() if u["Properties"]["UserName"] == entry["name"])
        prefix = partners[entry["partner"]].landing_prefix
        assert props["HomeDirectoryType"] == "LOGICAL"
        mapping = props["HomeDirectoryMappings"]
        assert len(mapping) == 1 and mapping[0]["Entry"] == "/"
        assert mapping[0]["Target"]["Fn::Sub"][0] == "/${Bucket}/" + prefix.rstrip("/")
        assert props["SshPublicKeys"] == entry["ssh_public_keys"]
        session = json.loads(props["Policy"]["Fn::Sub"][0])
        for stmt in statements(session):
            for resource in as_list(stmt["Resource"]):
                assert resource in ("arn:${AWS::Partition}:s3:::${Bucket}", "${KeyArn}") or \
                    resource == f"arn:${{AWS::Partition}}:s3:::${{Bucket}}/{prefix}*", resource
            if stmt["Action"] == "s3:ListBucket":
                assert stmt["Condition"]["StringLike"]["s3:prefix"] == [prefix, prefix + "*"]
        actions = {a for s in statements(session) for a in as_list(s["Action"])}
        role = props["Role"]["Fn::ImportValue"]["Fn::Sub"]
        if entry.get("access", "read") == "read":
            assert not actions & {"s3:PutObject", "s3:DeleteObject"}
            assert role.endswith("-TransferReadRoleArn")
        else:
            assert {"s3:PutObject", "s3:DeleteObject"} <= actions
            assert role.endswith("-TransferReadWriteRoleArn")


def test_transfer_roles_trust_only_this_servers_users(foundation):
    for name in ("TransferReadRole", "TransferReadWriteRole"):
        trust = statements(foundation["Resources"][name]["Properties"]["AssumeRolePolicyDocument"])[0]
        assert trust["Principal"] == {"Service": "transfer.amazonaws.com"}
        assert "aws:SourceArn" in trust["Condition"]["ArnLike"]
        assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    read = foundation["Resources"]["TransferReadRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    assert not {a for s in statements(read) for a in as_list(s["Action"])} & {"s3:PutObject", "s3:DeleteObject"}


# ---------------------------------------------------------------- network exposure and IAM

def _ingress_rules(template: dict) -> Iterator[tuple[str, dict]]:
    for name, res in template["Resources"].items():
        if res["Type"] == "AWS::EC2::SecurityGroup":
            for rule in res["Properties"].get("SecurityGroupIngress", []):
                yield name, rule
        elif res["Type"] == "AWS::EC2::SecurityGroupIngress":
            yield name, res["Properties"]


def test_no_ingress_from_the_internet(all_templates):
    for stack, template in all_templates.items():
        for name, rule in _ingress_rules(template):
            assert rule.get("CidrIp") not in ("0.0.0.0/0",) and rule.get("CidrIpv6") not in ("::/0",), \
                f"{stack}/{name} is open to the internet"
            assert rule.get("Description"), f"{stack}/{name} ingress rule without a description"
    lb = all_templates["services"]["Resources"]["LoadBalancer"]["Properties"]
    assert lb["Scheme"] == "internal"
    listener = all_templates["services"]["Resources"]["HttpsListener"]["Properties"]
    assert listener["Protocol"] == "HTTPS" and "TLS13" in listener["SslPolicy"]


def test_internet_egress_is_only_https_and_partner_sftp_ports(all_templates):
    from partner_ingest.config import load_config

    partner_ports = {p.port for p in load_config(ROOT / "partners.example.yaml").partners}
    for stack, template in all_templates.items():
        rules = [(n, r) for n, res in template["Resources"].items() if res["Type"] == "AWS::EC2::SecurityGroup"
                 for r in res["Properties"].get("SecurityGroupEgress", [])]
        rules += [(n, res["Properties"]) for n, res in resources_of(template, "AWS::EC2::SecurityGroupEgress").items()]
        for name, rule in rules:
            if rule.get("CidrIp") == "0.0.0.0/0":
                assert rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"], f"{stack}/{name}"
                assert rule["FromPort"] == 443 or (stack == "partners" and rule["FromPort"] in partner_ports), \
                    f"{stack}/{name} opens port {rule['FromPort']} to the internet"


# The standard key-policy statement that lets the account's IAM policies govern the key: without it a
# key can become unmanageable. It is the only wildcard action in the templates.
_KEY_ADMIN = {"Sid": "AccountManagesKeyThroughIam", "Action": "kms:*"}


def test_no_wildcard_actions_and_no_write_on_every_resource(all_templates):
    read_only_on_star = {"ecr:GetAuthorizationToken", "ecs:DescribeTaskDefinition"}
    for stack, template in all_templates.items():
        docs = list(policy_documents(template))
        docs += [(f"{n}/KeyPolicy", r["Properties"]["KeyPolicy"]) for n, r in
                 resources_of(template, "AWS::KMS::Key").items()]
        for where, document in docs:
            for stmt in statements(document):
                if stmt["Effect"] != "Allow":
                    continue
                if where.endswith("KeyPolicy") and stmt.get("Sid") == _KEY_ADMIN["Sid"]:
                    root = "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"
                    assert stmt["Principal"] == {"AWS": {"Fn::Sub": root}}
                    continue
                actions = as_list(stmt["Action"])
                assert not [a for a in actions if "*" in a and not a.startswith(("kms:ReEncrypt", "kms:GenerateDataKey",
                                                                                  "kms:Describe"))], \
                    f"{stack}/{where}: wildcard action in {actions}"
                if "*" in as_list(stmt.get("Resource", [])) and not where.endswith("KeyPolicy"):
                    assert set(actions) <= read_only_on_star, f"{stack}/{where}: {actions} on every resource"


def test_daemon_has_exactly_what_ecs_run_launcher_calls(services):
    doc = services["Resources"]["DaemonTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    by_action = {a: s for s in statements(doc) for a in as_list(s["Action"])}
    assert set(by_action) == {"ecs:RunTask", "ecs:TagResource", "ecs:DescribeTasks", "ecs:StopTask",
                              "ecs:DescribeTaskDefinition", "iam:PassRole", "logs:GetLogEvents"}
    assert by_action["ecs:RunTask"]["Condition"]["ArnEquals"]["ecs:cluster"] == {"Fn::GetAtt": ["Cluster", "Arn"]}
    assert by_action["ecs:RunTask"]["Resource"]["Fn::Sub"].endswith("task-definition/${AWS::StackName}-run:*")
    assert by_action["ecs:TagResource"]["Condition"]["StringEquals"]["ecs:CreateAction"] == "RunTask"
    assert by_action["iam:PassRole"]["Resource"] == [{"Fn::GetAtt": ["RunTaskRole", "Arn"]},
                                                    {"Fn::GetAtt": ["RunExecutionRole", "Arn"]}]
    assert by_action["iam:PassRole"]["Condition"]["StringEquals"]["iam:PassedToService"] == "ecs-tasks.amazonaws.com"
    # A log group's GetAtt Arn ends in ":*"; stream ARNs must be built from the name.
    assert by_action["logs:GetLogEvents"]["Resource"]["Fn::Sub"].endswith("log-group:${LogGroup}:log-stream:run/*")


def test_runs_write_the_landing_bucket_and_read_partner_secrets_only(services, partners_stack):
    doc = services["Resources"]["RunTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    actions = {a for s in statements(doc) for a in as_list(s["Action"])}
    assert "s3:PutObject" in actions
    deletes = [s for s in statements(doc) if any("Delete" in a for a in as_list(s["Action"]))]
    # Deleting is allowed only under archive expansion prefixes (clearing a re-expanded archive).
    assert [as_list(s["Action"]) for s in deletes] == [["s3:DeleteObject"]]
    assert all("*.unzipped/*" in json.dumps(r) for s in deletes for r in as_list(s["Resource"]))
    assert {a.split(":")[0] for a in actions} == {"s3", "kms"}
    s3_resources = [r for s in statements(doc) if as_list(s["Action"])[0].startswith("s3:")
                    for r in as_list(s["Resource"])]
    assert all("LandingBucketArn" in json.dumps(r) for r in s3_resources)
    policy = partners_stack["Resources"]["PartnerSecretsReadPolicy"]["Properties"]
    assert [r["Fn::ImportValue"]["Fn::Sub"] for r in policy["Roles"]] == [
        "${ServicesStack}-RunTaskRoleName", "${ServicesStack}-CodeServerTaskRoleName"]
    read = statements(policy["PolicyDocument"])[0]
    assert read["Action"] == "secretsmanager:GetSecretValue"
    secrets = resources_of(partners_stack, "AWS::SecretsManager::Secret")
    assert read["Resource"] == [{"Ref": name} for name in secrets]


def test_partner_secrets_are_kms_encrypted_and_no_template_takes_a_password(all_templates, partners_stack):
    for props in (r["Properties"] for r in resources_of(partners_stack, "AWS::SecretsManager::Secret").values()):
        assert "KmsKeyId" in props and "SecretString" not in props and "GenerateSecretString" not in props
    for stack, template in all_templates.items():
        for name in template.get("Parameters", {}):
            assert not re.search(r"pass(word)?|secret", name, re.I), f"{stack} takes parameter {name}"


def test_database_is_private_encrypted_backed_up_and_protected(services):
    db = services["Resources"]["Database"]
    props = db["Properties"]
    assert props["StorageEncrypted"] is True and "KmsKeyId" in props
    assert props["PubliclyAccessible"] is False
    assert props["ManageMasterUserPassword"] is True and "MasterUserPassword" not in props
    assert props["DeletionProtection"] is True and db["DeletionPolicy"] == "Snapshot"
    assert services["Parameters"]["DbBackupRetentionDays"]["MinValue"] >= 7
    assert services["Resources"]["DatabaseParameters"]["Properties"]["Parameters"]["rds.force_ssl"] == "1"


def test_log_groups_have_retention_and_kms(all_templates):
    for stack, template in all_templates.items():
        for name, res in resources_of(template, "AWS::Logs::LogGroup").items():
            assert "RetentionInDays" in res["Properties"] and "KmsKeyId" in res["Properties"], f"{stack}/{name}"


def test_services_are_private_fargate_with_one_daemon(services):
    svc = resources_of(services, "AWS::ECS::Service")
    assert set(svc) == {"WebserverService", "DaemonService", "CodeServerService"}
    for props in (s["Properties"] for s in svc.values()):
        assert props["LaunchType"] == "FARGATE"
        assert props["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    daemon = svc["DaemonService"]["Properties"]
    assert daemon["DesiredCount"] == 1 and daemon["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert svc["CodeServerService"]["Properties"]["ServiceRegistries"]
    for td in resources_of(services, "AWS::ECS::TaskDefinition").values():
        container = td["Properties"]["ContainerDefinitions"][0]
        assert container["Image"] == {"Ref": "ImageUri"} and container["ReadonlyRootFilesystem"] is True
        env = {e["Name"] for e in container["Environment"]}
        assert "DAGSTER_PG_PASSWORD" not in env, "the database password belongs in Secrets, not Environment"
        assert [s["Name"] for s in container["Secrets"]] == ["DAGSTER_PG_PASSWORD"]


def test_every_variable_the_instance_and_workspace_read_is_set_by_the_stack(services):
    text = re.sub(r"#.*", "", (DEPLOY / "dagster.yaml").read_text() + (DEPLOY / "workspace.yaml").read_text())
    needed = set(re.findall(r"\{env: (\w+)\}", text)) | set(re.findall(r"\$(\w+)", text))
    for name, td in resources_of(services, "AWS::ECS::TaskDefinition").items():
        container = td["Properties"]["ContainerDefinitions"][0]
        provided = {e["Name"] for e in container["Environment"]} | {s["Name"] for s in container["Secrets"]}
        # A run never builds the launcher (the daemon does), and its own ARN cannot be in its definition.
        expected = needed - {"DAGSTER_RUN_TASK_DEFINITION"} if name == "RunTaskDefinition" else needed
        assert expected <= provided, f"{name} lacks {sorted(expected - provided)}"
        if name == "RunTaskDefinition":
            assert set(re.findall(r"\$(\w+)", text)) <= provided  # the entrypoint renders dagster.yaml in runs too


def test_run_task_definition_matches_the_launcher_config(services):
    launcher = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_launcher"]["config"]
    run_td = services["Resources"]["RunTaskDefinition"]["Properties"]
    assert run_td["Cpu"] == launcher["run_resources"]["cpu"] and run_td["Memory"] == launcher["run_resources"]["memory"]
    assert run_td["ContainerDefinitions"][0]["Name"] == launcher["container_name"]
    assert run_td["TaskRoleArn"] == {"Fn::GetAtt": ["RunTaskRole", "Arn"]}
    assert run_td["ExecutionRoleArn"] == {"Fn::GetAtt": ["RunExecutionRole", "Arn"]}
    assert launcher["secrets_tag"] is None and launcher["use_current_ecs_task_config"] is False
    assert launcher["propagate_tags"]["allow_list"] == ["partner"]


# ---------------------------------------------------------------- image

def test_image_is_slim_non_root_hash_pinned_with_a_health_check():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^USER 10001", dockerfile, re.M) and re.search(r"^HEALTHCHECK ", dockerfile, re.M)
    assert "--require-hashes" in dockerfile
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            if not path.startswith("$"):
                assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    allowed = [line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            path = "partners.yaml" if path.startswith("$") else path
            assert path.rstrip("/") in allowed, f"{path} is copied but excluded by Dockerfile.dockerignore"


def test_requirements_lock_pins_every_project_dependency_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (DEPLOY / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+) \\$", lock, re.M))
    assert pins and all(f"{name}=={version} \\\n    --hash=sha256:" in lock for name, version in pins.items())
    for requirement in project:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} (pyproject.toml) is not in requirements.lock"
        if "==" in requirement:
            assert pins[name] == requirement.split("==")[1], f"{name}: lock {pins[name]} != pyproject {requirement}"
    assert pins["dagster-postgres"] == pins["dagster-aws"], "the dagster libraries are released in lockstep"


# ---------------------------------------------------------------- renderers

def test_entrypoint_renders_run_networking_and_refuses_bad_or_missing_values():
    template = (DEPLOY / "dagster.yaml").read_text()
    env = {"DAGSTER_RUN_SUBNETS": "subnet-0a, subnet-0b", "DAGSTER_RUN_SECURITY_GROUP": "sg-0c"}
    rendered = yaml.safe_load(entrypoint.render(template, env))
    vpc = rendered["run_launcher"]["config"]["run_task_kwargs"]["networkConfiguration"]["awsvpcConfiguration"]
    assert vpc == {"subnets": ["subnet-0a", "subnet-0b"], "securityGroups": ["sg-0c"], "assignPublicIp": "DISABLED"}
    with pytest.raises(entrypoint.RenderError, match="DAGSTER_RUN_SECURITY_GROUP"):
        entrypoint.render(template, {"DAGSTER_RUN_SUBNETS": "subnet-0a"})
    with pytest.raises(entrypoint.RenderError, match="comma-separated"):
        entrypoint.render(template, {**env, "DAGSTER_RUN_SUBNETS": "subnet-0a]\nrun_launcher: {x"})


def test_render_partners_rejects_users_of_unknown_partners_and_bad_keys(tmp_path):
    users = tmp_path / "users.yaml"
    key = yaml.safe_load((DEPLOY / "sftp-users.example.yaml").read_text())["users"][0]["ssh_public_keys"][0]
    cases = {
        "not in partners.yaml": {"users": [{"name": "zed-reader", "partner": "zed", "ssh_public_keys": [key]}]},
        "not an OpenSSH public key": {"users": [{"name": "acme-r", "partner": "acme", "ssh_public_keys": ["AAAA"]}]},
        "is a ssh-ed25519 key": {"users": [{"name": "acme-r", "partner": "acme",
                                            "ssh_public_keys": [key.replace("ssh-ed25519", "ssh-rsa", 1)]}]},
        "listed twice": {"users": [{"name": "acme-r", "partner": "acme", "ssh_public_keys": [key]}] * 2},
    }
    for message, content in cases.items():
        users.write_text(yaml.safe_dump(content))
        with pytest.raises(Exception, match=message):
            render_partners.load_sftp_users(users, _example_partners())


def test_render_partners_is_deterministic_and_grants_existing_secret_arns(tmp_path):
    from partner_ingest.config import IngestConfig

    config = _example_partners()
    first = render_partners.render(config, [])
    assert first == render_partners.render(config, [])
    external = "arn:aws:secretsmanager:us-east-1:123456789012:secret:partner-ingest/acme-AbCdEf"
    moved = IngestConfig(landing=config.landing,
                         partners=[config.partners[0].model_copy(update={"secret_id": external})])
    rendered = render_partners.render(moved, [])
    assert not resources_of(rendered, "AWS::SecretsManager::Secret")
    read = rendered["Resources"]["PartnerSecretsReadPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert read["Resource"] == [external]


def _example_partners():
    from partner_ingest.config import load_config

    return load_config(ROOT / "partners.example.yaml")


# ---------------------------------------------------------------- Dagster: config validation and a real launch

PG_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
          "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "not-a-real-password"}


def test_aws_dagster_yaml_passes_dagsters_config_validation(tmp_path, monkeypatch):
    from dagster import DagsterInstance, Shape
    from dagster._config import process_config
    from dagster._core.instance.config import PoolGranularity, dagster_instance_config
    from dagster._core.workspace.config_schema import ensure_workspace_config
    from dagster._serdes.config_class import class_from_code_pointer

    env = {**PG_ENV, "DAGSTER_RUN_SUBNETS": "subnet-0a,subnet-0b", "DAGSTER_RUN_SECURITY_GROUP": "sg-0c",
           "DAGSTER_RUN_TASK_DEFINITION": "partner-ingest-services-run", "DAGSTER_ECS_CLUSTER": "c",
           "DAGSTER_CODE_SERVER_HOST": "code-server.partner-ingest.internal", "DAGSTER_CODE_SERVER_PORT": "4000"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "dagster.yaml").write_text(entrypoint.render((DEPLOY / "dagster.yaml").read_text(), os.environ))
    config, custom_class = dagster_instance_config(str(tmp_path))  # validates the whole instance schema
    assert custom_class is None
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert postgres["params"] == {"sslmode": "require"} and postgres["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3, which the image does not have (dagster-postgres uses psycopg2).
    assert postgres["scheme"] == "postgresql+psycopg2"
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["start_timeout_seconds"] >= 300
    assert config["run_retries"]["enabled"] and config["run_retries"]["max_retries"] >= 1
    # Dagster refuses run limits under run_coordinator once `concurrency` is set: they live there.
    runs = config["concurrency"]["runs"]
    assert {"key": "partner", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in \
        runs["tag_concurrency_limits"]
    assert runs["max_concurrent_runs"] > 1
    # Every run of a partner's asset, tagged or not, is bound by its pool: one step at a time.
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.should_block_op_concurrency_limited_runs  # full pool: stays queued
        assert concurrency.run_queue_config.max_concurrent_runs == runs["max_concurrent_runs"]
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    for section in ("run_coordinator", "run_launcher", "compute_logs"):
        klass = class_from_code_pointer(config[section]["module"], config[section]["class"])
        result = process_config(Shape(klass.config_type()), config[section].get("config", {}))
        assert result.success, f"{section}: {[e.message for e in result.errors]}"
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    ensure_workspace_config(workspace, str(DEPLOY / "workspace.yaml"))
    from dagster._config import process_config as process
    from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA

    resolved = process(WORKSPACE_CONFIG_SCHEMA, workspace)
    assert resolved.success
    grpc = resolved.value["load_from"][0]["grpc_server"]
    assert grpc == {"host": "code-server.partner-ingest.internal", "port": 4000, "location_name": "partner_ingest"}


TINY_JOB = '''
import dagster as dg


@dg.op
def hello():
    return 1


@dg.job
def tiny():
    hello()


defs = dg.Definitions(jobs=[tiny])
'''


def _resolve(value: Any, refs: dict[str, Any]) -> Any:
    """Resolve the intrinsics the run task definition uses, with test values for every reference."""
    if isinstance(value, list):
        return [_resolve(v, refs) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return refs[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        return refs[".".join(value["Fn::GetAtt"])]
    if set(value) == {"Fn::ImportValue"}:
        return refs[_resolve(value["Fn::ImportValue"], refs)]
    if set(value) == {"Fn::Join"}:
        sep, items = value["Fn::Join"]
        return sep.join(_resolve(items, refs))
    if set(value) == {"Fn::Sub"}:
        text, local = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
        scope = {**refs, **{k: _resolve(v, refs) for k, v in local.items()}}
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(scope[m.group(1)]), text)
    return {k: _resolve(v, refs) for k, v in value.items()}


def _camel(value: Any, *, keep_keys: bool = False) -> Any:
    """CloudFormation property names (PascalCase) to ECS API names (camelCase); log driver options stay."""
    if isinstance(value, list):
        return [_camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {(k if keep_keys else k[:1].lower() + k[1:]): _camel(v, keep_keys=(k == "Options"))
            for k, v in value.items()}


def test_ecs_run_launcher_from_the_aws_dagster_yaml_starts_the_run_on_moto_ecs(moto, services, tmp_path, monkeypatch):
    from dagster import DagsterInstance
    from dagster._core.test_utils import create_run_for_test, in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value

    ecs, ec2, iam, logs = (boto3.client(s) for s in ("ecs", "ec2", "iam", "logs"))
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in
               ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]][:2]
    run_sg = ec2.create_security_group(GroupName=f"runs-{tmp_path.name}", Description="runs", VpcId=vpc)["GroupId"]
    cluster = ecs.create_cluster(clusterName="partner-ingest-test")["cluster"]
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                                "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]})
    roles = {name: iam.create_role(RoleName=f"{name}-{tmp_path.name}"[:64],
                                   AssumeRolePolicyDocument=trust)["Role"]["Arn"]
             for name in ("RunTaskRole", "RunExecutionRole")}
    logs.create_log_group(logGroupName=f"/ecs/partner-ingest-test-{tmp_path.name}")
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/partner-ingest:test"
    db_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-0123-AbCdEf"

    # Register the stack's own run task definition, intrinsics resolved with this account's values.
    refs = {"AWS::StackName": "partner-ingest-services", "AWS::Region": "us-east-1", "ImageUri": image,
            "FoundationStack": "partner-ingest-foundation", "CloudMapNamespace": "partner-ingest.internal",
            "RunTaskRole.Arn": roles["RunTaskRole"], "RunExecutionRole.Arn": roles["RunExecutionRole"],
            "LogGroup": f"/ecs/partner-ingest-test-{tmp_path.name}", "Cluster": cluster["clusterName"],
            "Database.Endpoint.Address": PG_ENV["DAGSTER_PG_HOST"], "Database.Endpoint.Port": "5432",
            "Database.MasterUserSecret.SecretArn": db_secret, "RunSecurityGroup": run_sg,
            "partner-ingest-foundation-PrivateSubnetA": subnets[0],
            "partner-ingest-foundation-PrivateSubnetB": subnets[1],
            "partner-ingest-foundation-LandingBucketName": "landing-test"}
    run_td = _camel(_resolve(services["Resources"]["RunTaskDefinition"]["Properties"], refs))
    registered = ecs.register_task_definition(**run_td)["taskDefinition"]
    container_env = {e["name"]: e["value"] for e in registered["containerDefinitions"][0]["environment"]}

    # The daemon's environment, as the services stack sets it; storage swapped to SQLite for the test.
    env = {**PG_ENV, **container_env, "DAGSTER_RUN_TASK_DEFINITION": registered["taskDefinitionArn"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    instance_config = yaml.safe_load(entrypoint.render((DEPLOY / "dagster.yaml").read_text(), os.environ))
    instance_config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    (tmp_path / "tiny.py").write_text(TINY_JOB)

    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_launcher).__name__ == "EcsRunLauncher"
        origin = LoadableTargetOrigin(python_file=str(tmp_path / "tiny.py"), attribute="defs")
        with in_process_test_workspace(instance, origin, container_image=image) as workspace:
            location = workspace.get_code_location(workspace.code_location_names[0])
            remote_job = next(iter(location.get_repositories().values())).get_full_job("tiny")
            run = create_run_for_test(instance, job_name="tiny", tags={"partner": "acme"},
                                      remote_job_origin=remote_job.get_remote_origin(),
                                      job_code_origin=remote_job.get_python_origin())
            instance.launch_run(run.run_id, workspace)
        run_tags = instance.get_run_by_id(run.run_id).tags

    task_arns = ecs.list_tasks(cluster=cluster["clusterName"])["taskArns"]
    assert len(task_arns) == 1
    task = ecs.describe_tasks(cluster=cluster["clusterName"], tasks=task_arns, include=["TAGS"])["tasks"][0]
    assert task["clusterArn"] == cluster["clusterArn"] and task["launchType"] == "FARGATE"
    assert task["taskDefinitionArn"] == registered["taskDefinitionArn"]
    override = task["overrides"]["containerOverrides"][0]
    assert override["name"] == "run" and override["command"][:3] == ["dagster", "api", "execute_run"]
    args = deserialize_value(override["command"][3], ExecuteRunArgs)
    assert args.run_id == run.run_id and args.job_origin.job_name == "tiny"
    assert len(json.dumps(task["overrides"])) < 8192  # ECS's limit on RunTask overrides
    assert (task["overrides"]["cpu"], task["overrides"]["memory"]) == ("1024", "2048")
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert definition["taskRoleArn"] == roles["RunTaskRole"]
    assert definition["executionRoleArn"] == roles["RunExecutionRole"]
    assert definition["containerDefinitions"][0]["secrets"] == [
        {"name": "DAGSTER_PG_PASSWORD", "valueFrom": f"{db_secret}:password::"}]
    assert container_env["PARTNER_INGEST_BUCKET"] == "landing-test"
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags["partner"] == "acme" and tags["dagster/run_id"] == run.run_id and tags["app"] == "partner-ingest"
    eni = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
    assert eni["subnetId"] in subnets
    assert run_tags["ecs/task_arn"] == task["taskArn"] and run_tags["ecs/cluster"] == cluster["clusterArn"]
