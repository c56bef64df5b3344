"""Run config is user input: whoever can launch a run fills in the launchpad. No field of the code
location's resources may be set from it, so an endpoint, region, credential or SFTP setting there must
fail the run's config validation before anything runs, and partner files land only where the code
location's environment and partners.yaml say."""

from __future__ import annotations

import os

import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError, materialize, validate_run_config
from dagster_aws.secretsmanager import SecretsManagerResource

from partner_ingest.defs.assets import build_files_asset
from partner_ingest.defs.code_location import build_definitions
from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.resources import SftpResource, default_resources
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.results import object_keys

NOWHERE = "http://127.0.0.1:1"

# Every field a launchpad user could try, per resource key, with a value that would redirect or weaken it.
ATTEMPTS = [
    ("s3", {"endpoint_url": NOWHERE}),
    ("s3", {"region_name": "eu-west-3"}),
    ("s3", {"aws_access_key_id": "AKIAATTACKER", "aws_secret_access_key": "x"}),
    ("s3", {"aws_session_token": "x"}),
    ("s3", {"profile_name": "attacker"}),
    ("s3", {"use_unsigned_session": True}),
    ("s3", {"use_ssl": False}),
    ("s3", {"verify": False}),
    ("s3", {"max_attempts": 1}),
    ("sftp", {"connect_timeout_seconds": 0.001}),
    ("sftp", {"banner_timeout_seconds": 0.001}),
    ("sftp", {"auth_timeout_seconds": 0.001}),
    ("sftp", {"channel_timeout_seconds": 0.001}),
    ("sftp", {"keepalive_seconds": 0}),
    ("sftp", {"window_size_bytes": 1}),
    ("sftp", {"reconnect_attempts": 1000}),
    ("sftp", {"reconnect_backoff_seconds": 0}),
    ("sftp", {"secrets": {"endpoint_url": NOWHERE}}),
    ("sftp", {"secrets": {"region_name": "eu-west-3", "aws_access_key_id": "AKIAATTACKER"}}),
]


def test_a_run_config_redirecting_s3_is_rejected_before_anything_runs(make_partner, s3):
    rig = make_partner()
    rig.write("in/report.csv", b"quarterly numbers\n")
    instance = DagsterInstance.ephemeral()
    key = encode_partition_key("in/report.csv")
    instance.add_dynamic_partitions(partitions_name(rig.partner), [key])
    asset = build_files_asset(rig.partner, rig.landing)

    with pytest.raises(DagsterInvalidConfigError, match="endpoint_url"):
        materialize([asset], instance=instance, resources=default_resources(), partition_key=key,
                    run_config={"resources": {"s3": {"config": {"endpoint_url": NOWHERE}}}}, raise_on_error=False)

    assert object_keys(s3, rig.landing.bucket) == []
    assert instance.get_runs() == []  # rejected before a run was even created
    assert instance.get_latest_materialization_event(asset.key) is None


@pytest.mark.parametrize(("resource", "fields"), ATTEMPTS, ids=[f"{r}.{next(iter(f))}" for r, f in ATTEMPTS])
def test_the_code_locations_job_rejects_every_resource_field_in_run_config(make_partner, resource, fields):
    defs = build_definitions(make_partner().config)
    job = defs.resolve_implicit_global_asset_job_def()
    with pytest.raises(DagsterInvalidConfigError):
        validate_run_config(job, {"resources": {resource: {"config": fields}}})


def test_the_launchpad_offers_no_field_on_any_resource(make_partner):
    """The schema the UI scaffolds from: every partner resource takes an empty config, nothing else."""
    defs = build_definitions(make_partner().config)
    job = defs.resolve_implicit_global_asset_job_def()
    for key in ("sftp", "s3"):
        resource_def = job.resource_defs[key]
        assert resource_def.config_schema.config_type.fields == {}, key
        validate_run_config(job, {"resources": {key: {"config": {}}}})  # empty is still fine


def test_a_secrets_section_in_run_config_is_rejected_or_reaches_nothing(make_partner, s3):
    """There is no Secrets Manager resource a run could name: the client is the SFTP resource's own,
    built from the environment. ``materialize`` rejects such a section; the code location's implicit
    asset job (what the UI launches) tolerates sections for resources it lacks, and there it must
    change nothing: the secret is still read through the environment's endpoint and the file lands."""
    rig = make_partner()
    rig.write("report.csv", b"1,2,3\n")
    instance = DagsterInstance.ephemeral()
    key = encode_partition_key("report.csv")
    instance.add_dynamic_partitions(partitions_name(rig.partner), [key])
    aimed_elsewhere = {"resources": {"secrets": {"config": {"endpoint_url": NOWHERE}}}}
    with pytest.raises(DagsterInvalidConfigError, match="secrets"):
        materialize([build_files_asset(rig.partner, rig.landing)], instance=instance,
                    resources=default_resources(), partition_key=key, run_config=aimed_elsewhere)

    job = build_definitions(rig.config).resolve_implicit_global_asset_job_def()
    assert "secrets" not in job.resource_defs
    result = job.execute_in_process(run_config=aimed_elsewhere, instance=instance, partition_key=key,
                                    raise_on_error=False)
    assert result.success
    assert object_keys(s3, rig.landing.bucket) == [f"partners/{rig.partner.name}/report.csv"]


def test_an_honest_run_still_lands_through_the_environments_endpoints(make_partner, s3):
    rig = make_partner()
    rig.write("a/one.csv", b"one\n")
    rig.write("a/two.csv", b"two\n")
    assert os.environ["AWS_ENDPOINT_URL"]  # the moto fixture: boto3's standard resolution finds it
    result, _, _ = land(rig.partner, rig.landing.bucket, ["a/one.csv", "a/two.csv"])
    assert result.success
    assert sorted(object_keys(s3, rig.landing.bucket)) == [f"partners/{rig.partner.name}/a/one.csv",
                                                            f"partners/{rig.partner.name}/a/two.csv"]


def test_code_can_still_choose_sftp_settings_that_run_config_cannot(make_partner, s3):
    """Tests and tools build the SFTP resource with their own timeouts; that stays a code decision."""
    rig = make_partner()
    rig.write("x.csv", b"x\n")
    sftp = SftpResource(secrets=SecretsManagerResource(), connect_timeout_seconds=3.0, reconnect_attempts=0,
                        reconnect_backoff_seconds=0.1)
    assert sftp.settings().connect_timeout == 3.0 and sftp.reconnect_attempts == 0
    result, _, _ = land(rig.partner, rig.landing.bucket, ["x.csv"], resources={**default_resources(), "sftp": sftp})
    assert result.success
    assert object_keys(s3, rig.landing.bucket) == [f"partners/{rig.partner.name}/x.csv"]
