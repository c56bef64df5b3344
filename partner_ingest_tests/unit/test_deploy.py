"""deploy/ecs, read without any server or lint tool: the templates say what a security review needs, the
renderers refuse bad input, and the AWS dagster.yaml validates with Dagster's own config checks.

The linters (cfn-lint, checkov) and a real run launch on moto's ECS are in
``partner_ingest_tests/integration/test_deploy.py``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from partner_ingest.defs.tags import PARTNER_TAG
from partner_ingest_tests.harness.deploy import (
    CFN,
    PG_ENV,
    STATIC_TEMPLATES,
    as_list,
    entrypoint,
    load_template,
    policy_documents,
    render_partners,
    resources_of,
    statements,
)
from partner_ingest_tests.harness.paths import DEPLOY, EXAMPLE_PARTNERS, REPO_ROOT


@pytest.fixture(scope="module")
def foundation() -> dict:
    return load_template(CFN / "foundation.yaml")


@pytest.fixture(scope="module")
def partners_stack(rendered_partners: Path) -> dict:
    return load_template(rendered_partners)


@pytest.fixture(scope="module")
def all_templates(foundation, services, partners_stack) -> dict[str, dict]:
    return {"foundation": foundation, "services": services, "partners": partners_stack}


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

    partners = {p.name: p for p in load_config(EXAMPLE_PARTNERS).partners}
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

    partner_ports = {p.port for p in load_config(EXAMPLE_PARTNERS).partners}
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
    assert launcher["propagate_tags"]["allow_list"] == [PARTNER_TAG]


# ---------------------------------------------------------------- image

def test_image_is_slim_non_root_hash_pinned_with_a_health_check():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^USER 10001", dockerfile, re.M) and re.search(r"^HEALTHCHECK ", dockerfile, re.M)
    assert "--require-hashes" in dockerfile
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            if not path.startswith("$"):
                assert (REPO_ROOT / path).exists(), f"Dockerfile copies missing {path}"
    allowed = [line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            path = "partners.yaml" if path.startswith("$") else path
            assert path.rstrip("/") in allowed, f"{path} is copied but excluded by Dockerfile.dockerignore"


def test_requirements_lock_pins_every_project_dependency_with_hashes():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
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

    return load_config(EXAMPLE_PARTNERS)


# ---------------------------------------------------------------- Dagster: config validation and a real launch

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
    assert {"key": PARTNER_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in \
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
