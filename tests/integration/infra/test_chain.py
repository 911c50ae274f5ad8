"""The real chain: a commit in a regional WMS arrives on Kafka as a Debezium event."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest

from cdc_consumers.raw import RawEvent, end_offsets, iter_events
from stockcdc.settings import Settings

pytestmark = pytest.mark.integration

ARRIVAL_TIMEOUT_S = 60


@pytest.mark.parametrize("region_name", ["us-west", "eu-central", "ap-southeast"])
def test_insert_update_delete_arrive_with_lsn_and_transaction(
    settings: Settings, services_up: None, region_name: str
) -> None:
    region = settings.region(region_name)
    start = end_offsets(settings, region.cdc_topic)
    code = f"T-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(settings.pg_dsn(region, "app"), autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO owner (code, name) VALUES (%s, 'chain test') RETURNING id", (code,)
        ).fetchone()
        assert row is not None
        owner_id = row[0]
        conn.execute("UPDATE owner SET name = 'renamed' WHERE id = %s", (owner_id,))
        conn.execute("DELETE FROM owner WHERE id = %s", (owner_id,))
    committed = time.monotonic()

    def is_ours(e: RawEvent) -> bool:
        v: Any = e.value
        if not isinstance(v, dict) or v.get("source", {}).get("table") != "owner":
            return False
        image = v.get("after") or v.get("before") or {}
        return bool(image.get("id") == owner_id)

    def is_end_of_delete(e: RawEvent, ours: list[RawEvent]) -> bool:
        v: Any = e.value
        if len(ours) < 3 or not isinstance(v, dict) or v.get("status") != "END":
            return False
        return bool(v["id"].split(":")[0] == str(ours[2].value["source"]["txId"]))

    seen: list[RawEvent] = []
    for event in iter_events(settings, region.cdc_topic, start, timeout_s=ARRIVAL_TIMEOUT_S):
        seen.append(event)
        if is_end_of_delete(event, [e for e in seen if is_ours(e)]):
            break
    latency = time.monotonic() - committed
    ours = [e for e in seen if is_ours(e)]
    assert [e.value["op"] for e in ours] == ["c", "u", "d"], f"saw {len(seen)} events"
    assert ours[0].value["after"]["code"] == code
    assert ours[1].value["after"]["name"] == "renamed"
    assert ours[2].value["after"] is None

    lsns = [e.value["source"]["lsn"] for e in ours]
    assert all(isinstance(lsn, int) and lsn > 0 for lsn in lsns)
    assert lsns == sorted(lsns)
    assert len(set(lsns)) == 3
    for e in ours:
        src, tx = e.value["source"], e.value["transaction"]
        assert isinstance(src["txId"], int)
        assert tx["id"].startswith(f"{src['txId']}:")
        assert e.key["id"] == owner_id
    # Each autocommitted statement is its own transaction: BEGIN ... event ... END in order.
    statuses = [e.value.get("status") for e in seen if "status" in (e.value or {})]
    assert statuses.count("BEGIN") >= 3
    assert statuses.count("END") >= 3
    assert latency < ARRIVAL_TIMEOUT_S


def test_heartbeats_flow_in_the_region_topic_while_idle(
    settings: Settings, services_up: None
) -> None:
    region = settings.region("eu-central")
    start = end_offsets(settings, region.cdc_topic)
    beats = [
        e
        for e in iter_events(settings, region.cdc_topic, start, timeout_s=10)
        if e.value is not None and set(e.value) == {"ts_ms"}
    ]
    assert beats, "no heartbeat in 10 s"
    assert beats[0].key["serverName"] == region.topic_prefix
