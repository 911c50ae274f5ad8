"""Faults around a running projector, each under a mixed workload and each ending with
reconciliation finding zero differences: ClickHouse refusing writes, a connector and
Kafka Connect restarted mid-stream, a regional PostgreSQL stopped (the other regions
stay fresh, the stopped one is stale, then catches up), and a lost replication slot
repaired by re-snapshotting that one region."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence

import psycopg
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from cdc_consumers.projector import Sink
from infra.connect import ConnectClient, resnapshot
from infra.jvm import connect_service, start_connect
from infra.pipeline import IsolatedPipeline
from infra.postgres import Cluster
from query_api.app import create_app
from query_api.auth import DEMO_KEYS
from query_api.service import ReadModel
from read_model.reconcile import projection_point, reconcile
from read_model.writer import ProjectionWriter
from schemas.errors import TransientError
from schemas.events import RegionWrite, Watermark
from tests.integration.chain import LiveChain, live_chain, wait_for
from tests.integration.faults.profile import assert_zero_differences, profile, workload

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]


@pytest.fixture(scope="module")
def live(pipeline: IsolatedPipeline) -> Iterator[LiveChain]:
    with live_chain(pipeline, seed=41, size="150") as chain:
        chain.wait_caught_up()
        yield chain


def _reconciled(live: LiveChain) -> None:
    live.wait_caught_up()
    assert_zero_differences(reconcile(live.settings, live.client, live.pipeline.regions))


def _committed(live: LiveChain) -> dict[str, int]:
    consumer = KafkaConsumer(
        **live.settings.kafka_client_config(),
        group_id=live.settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        return {
            r.name: consumer.committed(TopicPartition(r.cdc_topic, 0)) or 0
            for r in live.pipeline.regions
        }
    finally:
        consumer.close()


class RefusingSink:
    """The projection writer, refusing every write while `refusing` (a ClickHouse that
    is down answers with transient errors)."""

    def __init__(self, inner: ProjectionWriter) -> None:
        self.inner = inner
        self.refusing = True
        self.refused = 0

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        return self.inner.load_watermarks(regions)

    def write_all(self, writes: Sequence[RegionWrite]) -> object:
        if self.refusing:
            self.refused += 1
            raise TransientError("injected: ClickHouse unavailable")
        return self.inner.write_all(writes)


def test_clickhouse_write_failures_are_retried_and_no_offset_moves_meanwhile(
    live: LiveChain,
) -> None:
    p = profile()
    live.stop_projector()
    sink = RefusingSink(ProjectionWriter(live.client))
    retries_before = REGISTRY.get_sample_value("stockcdc_write_retries_total") or 0
    settings = live.settings.model_copy(update={"write_retry_max_ms": 1000})
    with workload(live.settings, live.pipeline.regions, p.rate, seed=1):
        time.sleep(1)
        committed = _committed(live)
        typed: Sink = sink
        live.start_projector(settings, typed)
        time.sleep(p.write_failure_s)
        # The new member joins the group and fetches first: on a loaded box its first
        # write can come after `write_failure_s`.
        wait_for(lambda: sink.refused >= 2, what="the projector should have tried and retried")
        assert _committed(live) == committed, "offsets moved while ClickHouse refused writes"
        sink.refusing = False
        time.sleep(2)
    retries = (REGISTRY.get_sample_value("stockcdc_write_retries_total") or 0) - retries_before
    assert retries >= sink.refused
    _reconciled(live)


def test_a_connector_and_kafka_connect_restarted_mid_stream(live: LiveChain) -> None:
    p = profile()
    region = live.pipeline.regions[1]
    with workload(live.settings, live.pipeline.regions, p.rate, seed=2):
        time.sleep(2)
        with ConnectClient(live.settings) as connect:
            connect.restart(region.connector_name)
        time.sleep(3)
        connect_service(live.settings).stop()
        time.sleep(2)
        start_connect(live.settings)
        time.sleep(3)
    _reconciled(live)


def test_a_regional_postgres_stopped_others_stay_fresh_then_it_catches_up(
    live: LiveChain,
) -> None:
    p = profile()
    down, *others = live.pipeline.regions
    cluster = Cluster(live.settings, down)
    cluster.stop()
    try:
        with workload(live.settings, others, p.rate, seed=3):
            time.sleep(p.outage_s)
            now = time.time()
            for r in others:  # heartbeats keep coming: fresh
                _lsn, beat = projection_point(live.client, r.name)
                assert beat is not None, r.name
                assert now - beat < 10, f"{r.name} went stale"
            _lsn, beat = projection_point(live.client, down.name)
            assert beat is None or now - beat >= p.outage_s - 5, f"{down.name} still fresh"
            states = _api_states(live)
            assert states[down.name] == "stale", states
            assert all(states[r.name] != "stale" for r in others), states
    finally:
        cluster.start()
    # The task lost its database: Debezium retries; a task that gave up is restarted.
    with psycopg.connect(live.settings.pg_dsn(down, "app")) as conn:
        conn.execute("SELECT 1")
    with ConnectClient(live.settings) as connect:
        connect.restart_failed(down.connector_name)
    _reconciled(live)
    assert _api_states(live)[down.name] != "stale"


def _api_states(live: LiveChain) -> dict[str, str]:
    """Each region's freshness state as the Query API reports it (`/v1/freshness`)."""
    settings = live.settings.model_copy(update={"api_watermark_cache_ms": 0})
    app = create_app(settings, ReadModel([live.client]))
    with TestClient(app, headers={"Authorization": f"Bearer {DEMO_KEYS['oms']}"}) as api:
        answer = api.get("/v1/freshness")
        assert answer.status_code == 200, answer.text
        return {r["region"]: r["state"] for r in answer.json()["regions"]}


def test_a_lost_replication_slot_is_repaired_by_resnapshotting_that_region_only(
    live: LiveChain,
) -> None:
    """The README's operations procedure, end to end: a region's slot is lost (dropped
    while its connector was stopped, as `max_slot_wal_keep_size` would invalidate it),
    the WMS keeps working (a row is even deleted, which no stream will ever tell), then
    `stockcdc infra resnapshot <region>` re-snapshots that region alone."""
    p = profile()
    lost, *others = live.pipeline.regions
    live.wait_caught_up()
    gone = live.client.query(
        "SELECT code FROM cur_owner WHERE region = {r:String} AND code LIKE 'SYNC-%' LIMIT 1",
        parameters={"r": lost.name},
    ).result_rows[0][0]
    other_lsns = {r.name: projection_point(live.client, r.name)[0] for r in others}
    with ConnectClient(live.settings) as connect:
        connect.stop_connector(lost.connector_name)
        deadline = time.monotonic() + 60
        while (connect.status(lost.connector_name) or {}).get("connector", {}).get(
            "state"
        ) != "STOPPED":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    with psycopg.connect(live.settings.pg_dsn(lost, dbname="postgres"), autocommit=True) as c:
        deadline = time.monotonic() + 30
        while c.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (lost.slot_name,)
        ).fetchone() != (False,):
            assert time.monotonic() < deadline, "the slot stayed active"
            time.sleep(0.2)
        c.execute("SELECT pg_drop_replication_slot(%s)", (lost.slot_name,))
    with workload(live.settings, live.pipeline.regions, p.rate, seed=4):
        time.sleep(3)
    with psycopg.connect(live.settings.pg_dsn(lost, "app")) as conn:
        conn.execute("DELETE FROM owner WHERE code = %s", (gone,))

    resnapshot(live.settings, lost)

    _reconciled(live)
    assert not live.client.query(
        "SELECT count() FROM cur_owner WHERE region = {r:String} AND code = {c:String}",
        parameters={"r": lost.name, "c": gone},
    ).result_rows[0][0]
    for r in others:  # streamed on, never re-snapshotted
        assert projection_point(live.client, r.name)[0] > other_lsns[r.name]
