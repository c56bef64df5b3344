"""One run per partner for every run, not only sensor runs: the partner's asset is in the partner's
Dagster concurrency pool, and the instance limits every pool to one (op granularity), so a run
launched from the UI or a backfill, which carries no ``partner`` tag, cannot land files for a partner
while another run of that partner does.

Run A is held inside its step: every AWS connection it opens waits at a relay in front of moto until
the test releases it, so A holds the pool slot for as long as the test needs. Everything else is
Dagster's own machinery: a persistent instance, the QueuedRunCoordinator daemon, the default run
launcher and a gRPC code server, runs launched through the UI's GraphQL mutation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, instance_for_test, materialize
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql, infer_job_selector

from partner_ingest.config import CONFIG_ENV
from partner_ingest.defs.asset_keys import files_asset_key
from partner_ingest.defs.assets import build_files_asset
from partner_ingest.defs.partitions import partitions_name
from partner_ingest.defs.pools import partner_pool
from partner_ingest.defs.resources import default_resources
from partner_ingest.defs.tags import PARTNER_TAG
from partner_ingest.ingest.partition_keys import encode_partition_key
from partner_ingest_tests.harness.deploy import deploy_pools
from partner_ingest_tests.harness.fault_proxy import FaultProxy
from partner_ingest_tests.harness.paths import REPO_ROOT
from partner_ingest_tests.harness.results import object_keys

WAIT = 120  # seconds: the bound on every wait below


@pytest.fixture
def held_aws(moto, monkeypatch) -> Iterator[FaultProxy]:
    """AWS_ENDPOINT_URL through a relay that holds connections (boto3 waits 60 s for a reply)."""
    relay = FaultProxy(moto.port, hold=True, hold_timeout=WAIT)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
    try:
        yield relay
    finally:
        relay.close()


def _wait_for(condition, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _holds_slot(instance: DagsterInstance, pool: str, run_id: str) -> bool:
    return run_id in instance.event_log_storage.get_concurrency_info(pool).active_run_ids


def _step_started(instance: DagsterInstance, run_id: str) -> bool:
    return any(e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START
               for e in instance.all_logs(run_id))


def _step_window(instance: DagsterInstance, run_id: str) -> tuple[float, float]:
    """When the run's step started, and when it finished (success or failure)."""
    times = {e.dagster_event.event_type: e.timestamp for e in instance.all_logs(run_id) if e.dagster_event}
    end = times.get(DagsterEventType.STEP_SUCCESS, times.get(DagsterEventType.STEP_FAILURE))
    assert end is not None, f"run {run_id} has no step end"
    return times[DagsterEventType.STEP_START], end


def test_the_partner_asset_is_in_the_partners_pool(make_partner):
    partner = make_partner().partner
    asset = build_files_asset(partner, make_partner().landing)
    assert partner_pool(partner) == f"partner_{partner.name}"
    assert {node.pool for node in asset.node_def.iterate_op_defs()} == {partner_pool(partner)}


def _launch_from_the_ui(context, key: str, partition: str, tags: dict[str, str]) -> str:
    """The UI's Materialize: the launchPipelineExecution mutation on the implicit asset job."""
    selector = infer_job_selector(context, "__ASSET_JOB", asset_selection=[{"path": list(key.path)}])
    result = execute_dagster_graphql(context, LAUNCH_PIPELINE_EXECUTION_MUTATION, variables={
        "executionParams": {"selector": selector, "executionMetadata": {"tags": [
            {"key": k, "value": v} for k, v in {**tags, "dagster/partition": partition}.items()]}}})
    launched = result.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def test_a_ui_run_without_the_partner_tag_stays_queued_while_the_partners_run_holds_the_pool(
        make_partner, s3, held_aws, tmp_path, monkeypatch):
    rig = make_partner()
    rig.write("first.csv", b"first\n")
    rig.write("second.csv", b"second\n")
    config = tmp_path / "partners.yaml"
    config.write_text(yaml.safe_dump(rig.config.model_dump(mode="json")))
    monkeypatch.setenv(CONFIG_ENV, str(config))
    pool = partner_pool(rig.partner)
    first, second = encode_partition_key("first.csv"), encode_partition_key("second.csv")
    overrides = {
        "concurrency": {"pools": deploy_pools()},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
    }
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    with instance_for_test(overrides=overrides) as instance, create_test_daemon_workspace_context(
            ModuleTarget(module_name="partner_ingest.definitions", attribute=None, working_directory=str(REPO_ROOT),
                         location_name="partner_ingest"), instance) as workspace:
        instance.add_dynamic_partitions(partitions_name(rig.partner), [first, second])
        context = workspace.create_request_context()
        key = files_asset_key(rig.partner)

        try:
            run_a = _launch_from_the_ui(context, key, first, tags={PARTNER_TAG: rig.partner.name})
            list(daemon.run_iteration(workspace))
            _wait_for(lambda: held_aws.held > 0, "run A to be held inside its step")

            run_b = _launch_from_the_ui(context, key, second, tags={})
            assert PARTNER_TAG not in instance.get_run_by_id(run_b).tags
            for _ in range(3):
                list(daemon.run_iteration(workspace))
                time.sleep(1)
            assert instance.get_run_by_id(run_b).status == DagsterRunStatus.QUEUED, \
                "a run without the partner tag was launched while the partner's run was landing files"
            assert instance.get_run_by_id(run_a).status == DagsterRunStatus.STARTED
            assert _holds_slot(instance, pool, run_a)
        finally:
            held_aws.release()
        _wait_for(lambda: instance.get_run_by_id(run_a).is_finished, "run A to finish")

        def b_finished() -> bool:
            list(daemon.run_iteration(workspace))
            return instance.get_run_by_id(run_b).is_finished

        _wait_for(b_finished, "run B to be dequeued and finish")
        assert instance.get_run_by_id(run_a).status == DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(run_b).status == DagsterRunStatus.SUCCESS
        assert _step_window(instance, run_a)[1] <= _step_window(instance, run_b)[0]
    assert object_keys(s3, rig.landing.bucket) == [f"partners/{rig.partner.name}/first.csv",
                                                   f"partners/{rig.partner.name}/second.csv"]


def test_a_second_in_process_run_waits_at_its_step_for_the_pool_slot(make_partner, s3, held_aws):
    """Runs that bypass the queue (``materialize``, ``dagster asset materialize``) are bound too:
    with op granularity every executor claims the pool slot before it starts the step."""
    rig = make_partner()
    rig.write("one.csv", b"one\n")
    rig.write("two.csv", b"two\n")
    pool = partner_pool(rig.partner)
    one, two = encode_partition_key("one.csv"), encode_partition_key("two.csv")
    asset = build_files_asset(rig.partner, rig.landing)
    results: dict[str, object] = {}

    def run(label: str, partition: str, tags: dict[str, str]) -> None:
        results[label] = materialize([asset], instance=instance, resources=default_resources(),
                                     partition_key=partition, tags=tags, raise_on_error=False)

    with instance_for_test(overrides={"concurrency": {"pools": deploy_pools()}}) as instance:
        instance.add_dynamic_partitions(partitions_name(rig.partner), [one, two])
        first = threading.Thread(target=run, args=("a", one, {PARTNER_TAG: rig.partner.name}), daemon=True)
        second = threading.Thread(target=run, args=("b", two, {}), daemon=True)
        try:
            first.start()
            _wait_for(lambda: held_aws.held > 0, "run A to be held inside its step")
            run_a = instance.get_runs()[0].run_id
            second.start()
            _wait_for(lambda: len(instance.get_runs()) == 2, "run B to start")
            run_b = next(r.run_id for r in instance.get_runs() if r.run_id != run_a)
            _wait_for(lambda: _step_started(instance, run_b) or
                      instance.event_log_storage.get_concurrency_info(pool).pending_run_ids == {run_b},
                      "run B to start its step or to wait for the pool")
            assert not _step_started(instance, run_b), "run B started its step while run A was landing files"
            assert _holds_slot(instance, pool, run_a)
        finally:
            held_aws.release()
            for thread in (first, second):
                if thread.ident is not None:
                    thread.join(timeout=WAIT)
        assert not first.is_alive() and not second.is_alive()
        assert results["a"].success and results["b"].success
        assert _step_window(instance, run_a)[1] <= _step_window(instance, run_b)[0]
    assert object_keys(s3, rig.landing.bucket) == [f"partners/{rig.partner.name}/one.csv",
                                                   f"partners/{rig.partner.name}/two.csv"]
