"""The notifications sensor on a real Dagster instance, sending through moto's SNS (read back from an SQS
queue subscribed to the topic) and to a local Slack-compatible webhook receiver."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from dagster import AssetMaterialization, build_sensor_context, instance_for_test

from partner_ingest.defs import notifications
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.code_location import build_definitions
from partner_ingest.defs.notifications import SENSOR_NAME, SNS_TOPIC_ENV, WEBHOOK_ENV
from partner_ingest.defs.resources import default_resources
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.dagster_helpers import land
from partner_ingest_tests.harness.webhook import WEBHOOK_TOKEN_PATH, webhook_receiver


@pytest.fixture
def webhook(monkeypatch):
    with webhook_receiver() as (url, received):
        monkeypatch.setenv(WEBHOOK_ENV, url)
        yield received


@pytest.fixture
def topic_queue(moto, monkeypatch):
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    name = f"notify-{time.time_ns()}"
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv(SNS_TOPIC_ENV, topic)
    monkeypatch.setenv("PARTNER_INGEST_UI_URL", "http://dagster.example:3000")

    def drain() -> list[str]:
        messages = []
        while True:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return messages
            for m in got:
                messages.append(json.loads(m["Body"])["Message"])
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])

    return drain


class Notifier:
    def __init__(self, config, instance):
        self.defs = build_definitions(config)
        self.sensor = self.defs.resolve_sensor_def(SENSOR_NAME)
        self.instance = instance
        self.cursor = None

    def tick(self):
        with build_sensor_context(instance=self.instance, instance_ref=self.instance.get_ref(),
                                  definitions=self.defs, cursor=self.cursor,
                                  resources=default_resources()) as context:
            data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data


def _texts(received) -> list[str]:
    return [body["text"] for _, body in received]


def _advance_clock(monkeypatch, seconds: float) -> None:
    monkeypatch.setattr(notifications, "_now", lambda: time.time() + seconds)


def test_late_partner_opens_once_and_clears(make_partner, topic_queue, webhook, caplog, monkeypatch):
    rig = make_partner(expect_every="1m")
    with instance_for_test() as instance:
        instance.report_runless_asset_event(AssetMaterialization(files_asset_key(rig.partner)))
        notifier = Notifier(rig.config, instance)
        assert notifier.tick().cursor  # within the window: nothing
        assert topic_queue() == [] and webhook == []
        _advance_clock(monkeypatch, 61)
        notifier.tick()
        sns_messages, hook_messages = topic_queue(), _texts(webhook)
        assert len(sns_messages) == 1 and hook_messages == sns_messages
        assert f"OPEN late: partner '{rig.partner.name}'" in sns_messages[0]
        assert "What to do:" in sns_messages[0]
        assert webhook[0][0] == WEBHOOK_TOKEN_PATH
        notifier.tick()  # still late: already told
        assert topic_queue() == [] and len(webhook) == 1
        assert json.loads(notifier.cursor)["open"] == [f"late:{rig.partner.name}"]
        _advance_clock(monkeypatch, 0)
        instance.report_runless_asset_event(AssetMaterialization(files_asset_key(rig.partner)))
        notifier.tick()
        cleared = topic_queue()
        assert len(cleared) == 1 and f"CLEARED late: partner '{rig.partner.name}'" in cleared[0]
        assert _texts(webhook)[1:] == cleared
        assert json.loads(notifier.cursor)["open"] == []
    assert "s3cr3t-token" not in caplog.text


def test_file_failing_three_times_notifies_once(make_partner, topic_queue, webhook):
    rig = make_partner()
    rig.write("present.csv", b"a,b\n1,2\n")
    with instance_for_test() as instance:
        notifier = Notifier(rig.config, instance)
        for attempt in range(3):
            # A ranged run: present.csv lands each time, missing.csv fails each time.
            result, _, _ = land(rig.partner, rig.landing.bucket, ["present.csv", "missing.csv"], instance=instance)
            assert not result.success
            notifier.tick()
            if attempt < 2:
                assert topic_queue() == [] and webhook == []
        messages = topic_queue()
        print("AS SENT:\n" + messages[0])
        assert len(messages) == 1, messages
        assert "present.csv'" not in messages[0]
        assert f"file '{rig.tree}/missing.csv'" in messages[0] and "failed in 3 runs in a row" in messages[0]
        assert "Run: http://dagster.example:3000/runs/" in messages[0]
        assert _texts(webhook) == messages
        notifier.tick()
        assert topic_queue() == []
        assert json.loads(notifier.cursor)["open"] == [f"file:{rig.partner.name}:{encode_partition_key('missing.csv')}"]
        rig.write("missing.csv", b"late,but\nhere,now\n")  # the partner re-sends it; it lands
        result, _, _ = land(rig.partner, rig.landing.bucket, ["missing.csv"], instance=instance)
        assert result.success
        notifier.tick()
        [cleared] = topic_queue()
        assert cleared.startswith(f"[partner-ingest] CLEARED file: partner '{rig.partner.name}', "
                                  f"file '{rig.tree}/missing.csv'")
        assert json.loads(notifier.cursor)["open"] == []


def test_host_key_failure_notifies_once(make_partner, sshd, topic_queue, webhook):
    rig = make_partner(host_keys=[sshd.other_host_key_line])
    rig.write("report.csv", b"x\n")
    with instance_for_test() as instance:
        result, _, _ = land(rig.partner, rig.landing.bucket, ["report.csv"], instance=instance)
        assert not result.success
        notifier = Notifier(rig.config, instance)
        notifier.tick()
        notifier.tick()
        messages = topic_queue()
        assert len(messages) == 1, messages
        assert f"OPEN host_key: partner '{rig.partner.name}'" in messages[0]
        assert "which is not pinned" in messages[0] and "host_keys" in messages[0]
        assert _texts(webhook) == messages
        # the operator pins the right key; the next run lands and the incident clears
        fixed = rig.partner.model_copy(update={"host_keys": [sshd.host_key_lines["ed25519"]]})
        result, _, _ = land(fixed, rig.landing.bucket, ["report.csv"], instance=instance)
        assert result.success
        notifier.tick()
        [cleared] = topic_queue()
        assert f"CLEARED host_key: partner '{rig.partner.name}' connects again" in cleared
        assert "Run: http://dagster.example:3000/runs/" in cleared


def test_no_channel_evaluates_and_sends_nothing(make_partner, monkeypatch):
    monkeypatch.delenv(SNS_TOPIC_ENV, raising=False)
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    rig = make_partner(expect_every="1m")
    with instance_for_test() as instance:
        instance.report_runless_asset_event(AssetMaterialization(files_asset_key(rig.partner)))
        notifier = Notifier(rig.config, instance)
        _advance_clock(monkeypatch, 61)
        data = notifier.tick()
        assert "no channel configured" in data.skip_message
        assert json.loads(notifier.cursor)["open"] == [f"late:{rig.partner.name}"]
