"""deploy/ecs with the tools and services behind it: the templates pass cfn-lint and checkov, and an
EcsRunLauncher built from the AWS dagster.yaml starts a real run request on moto's ECS (over HTTP) from
the stack's run task definition. (What the templates say is checked without them, in
``partner_ingest_tests/unit/test_deploy.py``.)

cfn-lint and checkov are required (CI installs them with deploy/ecs/install_lint_tools.sh): a missing
tool fails these tests, it never skips them. checkov lives in its own virtualenv and the two take
seconds, which is why they are not in the unit suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import boto3
import yaml

from partner_ingest.defs.tags import PARTNER_TAG
from partner_ingest_tests.harness.deploy import (
    PG_ENV,
    STATIC_TEMPLATES,
    entrypoint,
    tool,
)
from partner_ingest_tests.harness.paths import DEPLOY

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
            run = create_run_for_test(instance, job_name="tiny", tags={PARTNER_TAG: "acme"},
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
    assert tags[PARTNER_TAG] == "acme" and tags["dagster/run_id"] == run.run_id and tags["app"] == "partner-ingest"
    eni = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
    assert eni["subnetId"] in subnets
    assert run_tags["ecs/task_arn"] == task["taskArn"] and run_tags["ecs/cluster"] == cluster["clusterArn"]
