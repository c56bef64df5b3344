"""partners.yaml errors name the partner and the field; the bucket may come from the environment."""

from __future__ import annotations

import pytest

from partner_ingest.config import BUCKET_ENV, CONFIG_ENV, load_config, parse_config
from partner_ingest.errors import ConfigError
from partner_ingest_tests.harness.paths import EXAMPLE_PARTNERS

GOOD = {
    "name": "acme",
    "host": "sftp.acme.example",
    "username": "ingest",
    "secret_id": "partner-ingest/acme",
    "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOX9DK+u0/TmQigRmaMo5k1Ynbt90m8HlN6FKH0w78Ji"],
    "remote_dir": "/outbound",
    "landing_prefix": "partners/acme/",
}


def _config(**changes):
    return {"landing": {"bucket": "landing-bucket"}, "partners": [{**GOOD, **changes}]}


def test_defaults_and_normalisation():
    config = parse_config(_config())
    partner = config.partners[0]
    assert partner.port == 22 and partner.recursive and partner.include == ["**"]
    assert partner.landing_prefix == "partners/acme/"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"port": 70000}, "port", "less than or equal"),
        ({"host_keys": []}, "host_keys", "at least 1"),
        ({"host_keys": ["not a key"]}, "host_keys", "OpenSSH public key line"),
        ({"host_keys": ["ssh-ed25519 !!!notbase64"]}, "host_keys", "not base64"),
        ({"landing_prefix": "../escape"}, "landing_prefix", "'..'"),
        ({"remote_dir": "../outside"}, "remote_dir", "'..'"),
        ({"secret_id": None}, "secret_id", "valid string"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
        ({"after_landing": "move"}, "", "archive_dir"),
    ],
)
def test_errors_name_partner_and_field(changes, field, words):
    with pytest.raises(ConfigError) as err:
        parse_config(_config(**changes))
    message = str(err.value)
    assert "partner 'acme'" in message
    assert f"field '{field}'" in message if field else True
    assert words in message


def test_bad_name_is_reported_by_position():
    with pytest.raises(ConfigError, match="field 'name'.*should match pattern"):
        parse_config(_config(name="Acme Corp"))


def test_missing_host_keys_means_no_trust_on_first_use():
    raw = _config()
    del raw["partners"][0]["host_keys"]
    with pytest.raises(ConfigError, match="partner 'acme', field 'host_keys': Field required"):
        parse_config(raw)


def test_duplicate_names_and_nested_prefixes_are_refused():
    raw = _config()
    raw["partners"].append({**GOOD})
    with pytest.raises(ConfigError, match="used twice"):
        parse_config(raw)
    raw["partners"][1] = {**GOOD, "name": "acme_eu", "landing_prefix": "partners/acme/eu"}
    with pytest.raises(ConfigError, match="lies inside"):
        parse_config(raw)


def test_bucket_from_environment_wins(monkeypatch):
    monkeypatch.setenv(BUCKET_ENV, "from-env-bucket")
    assert parse_config(_config()).landing.bucket == "from-env-bucket"
    raw = _config()
    del raw["landing"]
    assert parse_config(raw).landing.bucket == "from-env-bucket"


def test_missing_bucket_and_bad_bucket(monkeypatch):
    monkeypatch.delenv(BUCKET_ENV, raising=False)
    raw = _config()
    del raw["landing"]
    with pytest.raises(ConfigError, match="field 'landing': Field required"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="not a valid S3 bucket name"):
        parse_config({**_config(), "landing": {"bucket": "Bad_Bucket"}})


def test_file_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="absent.yaml' does not exist.*PARTNER_INGEST_CONFIG"):
        load_config()
    broken = tmp_path / "broken.yaml"
    broken.write_text("partners: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_expect_every_becomes_a_freshness_policy():
    from datetime import timedelta

    from partner_ingest.defs.assets import build_files_asset

    config = parse_config(_config(expect_every="36h"))
    partner = config.partners[0]
    assert partner.expect_every_timedelta == timedelta(hours=36)
    asset = build_files_asset(partner, config.landing)
    policy = asset.specs_by_key[asset.key].freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta() == timedelta(hours=36)
    with pytest.raises(ConfigError, match="field 'expect_every'"):
        parse_config(_config(expect_every="daily"))


def test_the_documented_example_is_valid(monkeypatch):
    monkeypatch.delenv(BUCKET_ENV, raising=False)
    config = load_config(EXAMPLE_PARTNERS)
    assert config.partners[0].name == "acme" and config.partners[0].after_landing == "move"
