"""Render the per-partner CloudFormation stack from partners.yaml and sftp-users.yaml.

    python deploy/ecs/render_partners.py --partners partners.yaml \
        --sftp-users deploy/ecs/sftp-users.yaml -o build/partners-stack.yaml

For every partner in partners.yaml (validated by the code location's own loader): its Secrets Manager
secret (named ``secret_id``, KMS-encrypted, created empty: the value is put with the CLI, never passed
through a template), read access to those secrets for the run and code-server roles, and SFTP egress on
the partners' ports for the run and code-server security groups. For every user in sftp-users.yaml: an
AWS Transfer Family user whose LOGICAL home directory is its partner's ``landing_prefix`` and nothing
else, with a session policy scoped to that prefix, read-only unless ``access: read-write``, and SSH
public keys. Deterministic output, so a re-render without changes is a no-op stack update.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from partner_ingest.config import IngestConfig, PartnerConfig, load_config
from partner_ingest.errors import ConfigError
from partner_ingest.sftp.host_keys import check_openssh_key_line

SESSION_POLICY_LIMIT = 2048  # Transfer Family's maximum session policy length
_LONGEST_BUCKET = "b" * 63
_LONGEST_KEY_ARN = "arn:aws-us-gov:kms:ap-southeast-4:123456789012:key/" + "0" * 36


class SftpUser(BaseModel):
    """One Transfer Family login, mapped to one partner's landing prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_@.-]{2,99}$")]
    partner: str
    access: Literal["read", "read-write"] = "read"
    ssh_public_keys: Annotated[list[str], Field(min_length=1, max_length=50)]

    @field_validator("ssh_public_keys")
    @classmethod
    def _openssh_public_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            check_openssh_key_line(key)
        return [" ".join(key.split()) for key in keys]


class SftpUsers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: list[SftpUser] = Field(default_factory=list)


def load_sftp_users(path: Path | None, partners: IngestConfig) -> list[SftpUser]:
    if path is None:
        return []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        users = SftpUsers.model_validate(raw).users
    except FileNotFoundError:
        raise ConfigError(f"SFTP users file '{path}' does not exist",
                          action="create it (see deploy/ecs/sftp-users.example.yaml) or leave out --sftp-users",
                          ) from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path} is invalid: {exc}", action=f"fix {path}") from None
    names = {p.name for p in partners.partners}
    seen: set[str] = set()
    for user in users:
        if user.partner not in names:
            raise ConfigError(f"SFTP user '{user.name}' names partner '{user.partner}', which is not in partners.yaml",
                              partner=user.partner, action="fix the partner name or add the partner first")
        if user.name in seen:
            raise ConfigError(f"SFTP user '{user.name}' is listed twice", action=f"keep one entry in {path}")
        seen.add(user.name)
    return users


def _logical_id(prefix: str, name: str) -> str:
    """A CloudFormation logical ID from a name: readable, alphanumeric, and unique per name."""
    camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)
    return f"{prefix}{camel}{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def _import(stack_param: str, export: str) -> dict:
    return {"Fn::ImportValue": {"Fn::Sub": f"${{{stack_param}}}-{export}"}}


def session_policy(prefix: str, access: str) -> str:
    """The user's session policy: list, read (and write) only under its partner's prefix."""
    object_actions = ["s3:GetObject", "s3:GetObjectVersion"]
    kms_actions = ["kms:Decrypt"]
    if access == "read-write":
        object_actions += ["s3:PutObject", "s3:DeleteObject"]
        kms_actions += ["kms:GenerateDataKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListOwnPrefix", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": "arn:${AWS::Partition}:s3:::${Bucket}",
             "Condition": {"StringLike": {"s3:prefix": [prefix, prefix + "*"]}}},
            {"Sid": "Location", "Effect": "Allow", "Action": "s3:GetBucketLocation",
             "Resource": "arn:${AWS::Partition}:s3:::${Bucket}"},
            {"Sid": "ObjectsUnderOwnPrefix", "Effect": "Allow", "Action": object_actions,
             "Resource": "arn:${AWS::Partition}:s3:::${Bucket}/" + prefix + "*"},
            {"Sid": "LandingKey", "Effect": "Allow", "Action": kms_actions, "Resource": "${KeyArn}"},
        ],
    }
    return json.dumps(policy, separators=(",", ":"))


def _check_policy_length(user: SftpUser, policy: str) -> None:
    worst = (policy.replace("${Bucket}", _LONGEST_BUCKET).replace("${KeyArn}", _LONGEST_KEY_ARN)
             .replace("${AWS::Partition}", "aws-us-gov"))
    if len(worst) > SESSION_POLICY_LIMIT:
        raise ConfigError(f"the session policy of SFTP user '{user.name}' would exceed "
                          f"{SESSION_POLICY_LIMIT} characters", partner=user.partner,
                          action="shorten the partner's landing_prefix")


def render(partners: IngestConfig, users: list[SftpUser], *, foundation_stack: str = "partner-ingest-foundation",
           services_stack: str = "partner-ingest-services") -> dict:
    """The partners stack as a CloudFormation template (a dict, ready for YAML or JSON)."""
    by_name: dict[str, PartnerConfig] = {p.name: p for p in partners.partners}
    resources: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    secret_arns: list = []

    for partner in partners.partners:
        if partner.secret_id.startswith("arn:"):
            secret_arns.append(partner.secret_id)  # an existing secret, managed elsewhere: grant read only
            continue
        logical = _logical_id("Secret", partner.name)
        resources[logical] = {
            "Type": "AWS::SecretsManager::Secret",
            # No rotation schedule: the partner owns this credential and changes it on their server.
            "Properties": {
                "Name": partner.secret_id,
                "Description": (f"SFTP credentials for partner {partner.name} ({partner.username}@{partner.host}): "
                                'JSON {"password": ...} and/or {"private_key": ..., "passphrase": ...}'),
                "KmsKeyId": _import("FoundationStack", "DataKeyArn"),
            },
        }
        secret_arns.append({"Ref": logical})
        outputs[f"{logical}Arn"] = {"Description": f"Put partner {partner.name}'s credentials here",
                                    "Value": {"Ref": logical}}

    if secret_arns:
        resources["PartnerSecretsReadPolicy"] = {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "Description": "Runs and sensors read the partners' SFTP credentials, nothing else in Secrets Manager",
                "Roles": [_import("ServicesStack", "RunTaskRoleName"),
                          _import("ServicesStack", "CodeServerTaskRoleName")],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Sid": "ReadPartnerSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                         "Resource": secret_arns},
                        {"Sid": "DecryptViaSecretsManager", "Effect": "Allow", "Action": "kms:Decrypt",
                         "Resource": _import("FoundationStack", "DataKeyArn"),
                         "Condition": {"StringEquals": {"kms:ViaService": {
                             "Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}}}},
                    ],
                },
            },
        }

    for port in sorted({p.port for p in partners.partners}):
        for role, export in (("Runs", "RunSecurityGroupId"), ("CodeServer", "CodeServerSecurityGroupId")):
            using = ", ".join(sorted(p.name for p in partners.partners if p.port == port))
            resources[f"SftpEgress{role}Port{port}"] = {
                "Type": "AWS::EC2::SecurityGroupEgress",
                "Properties": {
                    "Description": f"SFTP to partner servers on port {port} ({using})"[:255],
                    "GroupId": _import("ServicesStack", export),
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "CidrIp": "0.0.0.0/0",
                },
            }

    for user in users:
        partner = by_name[user.partner]
        prefix = partner.landing_prefix  # normalized by the loader: no leading slash, one trailing slash
        policy = session_policy(prefix, user.access)
        _check_policy_length(user, policy)
        subs = {"Bucket": _import("FoundationStack", "LandingBucketName"),
                "KeyArn": _import("FoundationStack", "DataKeyArn")}
        role_export = "TransferReadWriteRoleArn" if user.access == "read-write" else "TransferReadRoleArn"
        logical = _logical_id("SftpUser", user.name)
        resources[logical] = {
            "Type": "AWS::Transfer::User",
            "Properties": {
                "ServerId": _import("FoundationStack", "TransferServerId"),
                "UserName": user.name,
                "Role": _import("FoundationStack", role_export),
                "HomeDirectoryType": "LOGICAL",
                "HomeDirectoryMappings": [{"Entry": "/", "Target": {
                    "Fn::Sub": ["/${Bucket}/" + prefix.rstrip("/"), {"Bucket": subs["Bucket"]}]}}],
                "Policy": {"Fn::Sub": [policy, subs]},
                "SshPublicKeys": list(user.ssh_public_keys),
                "Tags": [{"Key": "partner", "Value": partner.name}, {"Key": "access", "Value": user.access}],
            },
        }
        outputs[f"{logical}Name"] = {"Description": f"{user.access} SFTP login for partner {partner.name}",
                                     "Value": user.name}

    if not resources:
        raise ConfigError("partners.yaml lists no partners, so the partners stack would be empty",
                          action="add a partner to partners.yaml first")
    template: dict = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": ("partner-ingest partners (rendered by deploy/ecs/render_partners.py; do not edit): "
                        "partner secrets, SFTP egress, Transfer Family users"),
        "Parameters": {
            "FoundationStack": {"Type": "String", "Default": foundation_stack},
            "ServicesStack": {"Type": "String", "Default": services_stack},
        },
        "Resources": resources,
    }
    if outputs:
        template["Outputs"] = outputs
    return template


class _NoAliasDumper(yaml.SafeDumper):
    """CloudFormation rejects YAML anchors and aliases: write repeated values out in full."""

    def ignore_aliases(self, data) -> bool:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partners", type=Path, required=True, help="partners.yaml (the file baked into the image)")
    parser.add_argument("--sftp-users", type=Path, help="who may log in over SFTP (see sftp-users.example.yaml)")
    parser.add_argument("--foundation-stack", default="partner-ingest-foundation")
    parser.add_argument("--services-stack", default="partner-ingest-services")
    parser.add_argument("-o", "--output", type=Path, help="template file to write (default: stdout)")
    args = parser.parse_args(argv)
    try:
        partners = load_config(args.partners)
        users = load_sftp_users(args.sftp_users, partners)
        template = render(partners, users, foundation_stack=args.foundation_stack, services_stack=args.services_stack)
    except ConfigError as exc:
        print(f"render_partners: {exc}", file=sys.stderr)
        return 1
    text = yaml.dump(template, Dumper=_NoAliasDumper, sort_keys=False, width=120)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
