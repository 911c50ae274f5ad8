"""Issue 4 on the real chain: seeded WMS databases (initial snapshot), a concurrent
workload in three regions (streaming), the projector into embedded ClickHouse. The
projection must equal the WMS row for row and figure for figure, survive replays, poison
records and an ADD COLUMN, and never show a reader half a transaction."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from cdc_consumers.projector import Projector
from cdc_consumers.service import progress
from infra.pipeline import IsolatedPipeline as Pipeline
from read_model import queries
from read_model.reconcile import diff_region, projected_figures
from read_model.writer import ProjectionWriter
from simulator.oracle import STOCK_FIELDS, Truth, read_truth
from simulator.workload import run as run_workload
from tests.integration.chain import CATCH_UP_TIMEOUT_S, live_chain
from tests.integration.chain import LiveChain as Live

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPS_PER_REGION = 300


@pytest.fixture(scope="module")
def live(pipeline: Pipeline) -> Iterator[Live]:
    with live_chain(pipeline, seed=11, size="300") as chain:  # the seed: initial snapshot
        run_workload(chain.settings, pipeline.regions, workers=3, count=OPS_PER_REGION, seed=5)
        chain.wait_caught_up()
        yield chain


def truth(live: Live) -> Truth:
    return read_truth(live.settings, live.pipeline.regions)


_QTY = (
    "on_hand",
    "available",
    "allocated",
    "pending_putaway",
    "qc_hold",
    "frozen",
    "damaged",
    "returned",
    "expired",
)


def true_stock(t: Truth) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (k.owner, k.warehouse, k.sku): {f: getattr(v, f) for f in STOCK_FIELDS}
        for k, v in t.stock.items()
    }


def assert_projection_equals_wms(live: Live) -> None:
    s = live.settings
    for region in live.pipeline.regions:
        with psycopg.connect(s.pg_dsn(region, "cdc")) as conn:
            bad = [d.summary() for d in diff_region(live.client, conn, region.name) if not d.ok]
        assert not bad, "\n".join(bad)
    t = truth(live)
    owners = {k.owner for k in t.stock}
    got, want = projected_figures(live.client, owners), true_stock(t)
    assert set(got) == set(want)
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, f"{len(wrong)} keys differ, e.g. {next(iter(wrong.items()))}"
    for key, lots in t.lots.items():
        proj = queries.lots(live.client, key.owner, key.warehouse, key.sku)
        assert [lot.lot_no for lot in proj] == [lot.lot_no for lot in lots], key
        for p, w in zip(proj, lots, strict=True):
            for f in _QTY:
                assert getattr(p, f) == getattr(w, f), (key, w.lot_no, f)
    for skey, state in list(t.serials.items())[:: max(1, len(t.serials) // 40)]:
        cur = queries.serial_current(live.client, skey.owner, skey.sku, skey.serial_no)
        assert cur is not None, skey
        assert (cur.status, cur.region, cur.warehouse, cur.location, cur.lot_no) == (
            state.status,
            state.region,
            state.warehouse,
            state.location,
            state.lot_no,
        ), skey


def test_projection_equals_the_wms_after_snapshot_and_concurrent_workload(live: Live) -> None:
    t = truth(live)
    assert len(t.stock) > 50, "the seed and workload should give a real data set"
    assert any(lots for lots in t.lots.values())
    assert t.serials
    assert_projection_equals_wms(live)
    # The initial load was counted per region (the metric behind the CLI's progress).
    for region in live.pipeline.regions:
        loaded = REGISTRY.get_sample_value("stockcdc_snapshot_rows_total", {"region": region.name})
        assert loaded is not None
        assert loaded > 0


def test_moves_never_show_a_reader_a_total_change(live: Live) -> None:
    """Moves take stock from one location and put it in another in one transaction:
    every total stays constant, and a reader polling as fast as it can never sees one
    change (no half-applied transaction is ever visible)."""
    owners = {k.owner for k in truth(live).stock}

    def totals() -> dict[tuple[str, str, str], tuple[Any, ...]]:
        return {
            k: tuple(v[f] for f in (*_QTY, "inbound_expected", "earliest_expiry"))
            for k, v in projected_figures(live.client, owners).items()
        }

    baseline = totals()
    start_lsn = {w.region: w.applied_commit_lsn for w in queries.watermarks(live.client)}
    worker = threading.Thread(
        target=run_workload,
        args=(live.settings, live.pipeline.regions),
        kwargs={"workers": 2, "count": 150, "mix": {"move": 1.0}, "seed": 9},
        daemon=True,
    )
    worker.start()
    polls = 0
    while worker.is_alive() or polls < 5:
        seen = totals()
        assert seen == baseline, "a reader saw a total change while only moves ran"
        polls += 1
    live.wait_caught_up()
    assert totals() == baseline
    end_lsn = {w.region: w.applied_commit_lsn for w in queries.watermarks(live.client)}
    assert all(end_lsn[r] > start_lsn[r] for r in start_lsn), "moves were not applied"
    assert polls >= 5


def dead_letters(region: str, reason: str) -> float:
    """The projector's dead-letter counter (it runs in this process)."""
    value = REGISTRY.get_sample_value(
        "stockcdc_deadletters_total", {"region": region, "reason": reason}
    )
    return value or 0.0


def test_poison_records_are_dead_lettered_and_everything_else_lands(live: Live) -> None:
    s = live.settings
    region = live.pipeline.regions[1]
    marker = uuid.uuid4().hex.encode()
    producer = KafkaProducer(**s.kafka_client_config())
    worker = threading.Thread(
        target=run_workload,
        args=(s, live.pipeline.regions),
        kwargs={"workers": 2, "count": 100, "seed": 13},
        daemon=True,
    )
    # A well-formed change of a table the projection does not know (a connector that
    # captures more than the WMS tables): reported, never silently skipped.
    unknown = {
        "before": None,
        "after": {"id": 2, "note": marker.decode()},
        "source": {"name": region.topic_prefix, "schema": "public", "table": "zz_probe",
                   "snapshot": "false", "txId": 1, "lsn": 1, "ts_ms": 1},
        "op": "c",
    }  # fmt: skip
    poisons = {
        b"{not json " + marker: "malformed_json",
        b'{"op": "x", "marker": "' + marker + b'"}': "unexpected_shape",
        json.dumps(unknown).encode(): "unknown_table",
    }
    before = {reason: dead_letters(region.name, reason) for reason in poisons.values()}
    worker.start()
    for poison in poisons:
        producer.send(region.cdc_topic, key=b'{"id": 1}', value=poison)
        time.sleep(0.2)
    producer.flush()
    producer.close()
    worker.join()
    live.wait_caught_up()
    assert_projection_equals_wms(live)
    # Each is counted under its reason (the metric on-call alerts on).
    assert {r: dead_letters(region.name, r) - n for r, n in before.items()} == dict.fromkeys(
        poisons.values(), 1.0
    )

    dlq = TopicPartition(s.deadletter_topic, 0)
    reader = KafkaConsumer(**s.kafka_client_config(), enable_auto_commit=False)
    try:
        reader.assign([dlq])
        reader.seek_to_beginning(dlq)
        found: list[Any] = []
        deadline = time.monotonic() + 30
        while len(found) < len(poisons) and time.monotonic() < deadline:
            found += [
                r for r in reader.poll(timeout_ms=500).get(dlq, []) if r.value and marker in r.value
            ]
        # The original bytes, with the reason.
        assert {r.value: dict(r.headers)["reason"].decode() for r in found} == poisons
    finally:
        reader.close()


def test_add_column_mid_stream_loses_nothing(live: Live) -> None:
    s = live.settings
    region = live.pipeline.regions[0]
    with psycopg.connect(s.pg_dsn(region), autocommit=True) as admin:
        admin.execute("ALTER TABLE sku ADD COLUMN hs_code text")
        admin.execute("GRANT SELECT ON sku TO wms_cdc")
    worker = threading.Thread(
        target=run_workload,
        args=(s, live.pipeline.regions),
        kwargs={"workers": 2, "count": 100, "seed": 17},
        daemon=True,
    )
    worker.start()
    with psycopg.connect(s.pg_dsn(region, "app")) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM sku ORDER BY id LIMIT 5").fetchall()]
        for i, sku_id in enumerate(ids):
            conn.execute("UPDATE sku SET hs_code = %s WHERE id = %s", (f"8471.{i:02d}", sku_id))
    worker.join()
    live.wait_caught_up()
    assert_projection_equals_wms(live)
    with psycopg.connect(s.pg_dsn(region, "cdc")) as conn:
        source = conn.execute(
            "SELECT id, hs_code FROM sku WHERE hs_code IS NOT NULL ORDER BY id"
        ).fetchall()
    projected = live.client.query(
        "SELECT id, _extra['hs_code'] FROM cur_sku WHERE region = {r:String} "
        "AND mapContains(_extra, 'hs_code') ORDER BY id",
        parameters={"r": region.name},
    ).result_rows
    # SKUs created after the ALTER carry the new column too, as JSON null.
    assert [(i, json.loads(v)) for i, v in projected if v != "null"] == source
    assert [i for i, _ in source] == ids


def test_replaying_the_topics_from_the_beginning_twice_changes_nothing(live: Live) -> None:
    for attempt in range(2):
        group = f"{live.settings.consumer_group}-replay{attempt}"
        s = live.settings.model_copy(update={"consumer_group": group})
        ends = {p.region: p.end for p in progress(s)}
        live.stop_projector()
        live.start_projector(s)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while any(p.committed < ends[p.region] for p in progress(s)):
            assert live.thread.is_alive(), "projector died"
            assert time.monotonic() < deadline, "replay did not finish"
            time.sleep(0.5)
        live.wait_caught_up()
        assert_projection_equals_wms(live)


def test_two_consumers_share_the_regions_and_a_rebalance_loses_nothing(live: Live) -> None:
    """Scale-out: two projectors in one group split the regions; when one leaves mid-
    stream the other takes its regions over from the last committed boundary."""
    live.projector.stop.set()
    live.thread.join(timeout=60)
    s = live.settings.model_copy(update={"consumer_group": f"{live.settings.consumer_group}-2"})
    members = [Projector(s, ProjectionWriter(live.client)) for _ in range(2)]
    threads = [threading.Thread(target=m.run, daemon=True) for m in members]
    for t in threads:
        t.start()
    everything = {r.name for r in live.pipeline.regions}

    def split() -> tuple[set[str], set[str]]:
        first, second = (set(m.assigned_regions) for m in members)
        return first, second

    # The two members are read one after the other: wait for the settled split (a
    # rebalance between the two reads would show a region under both).
    deadline = time.monotonic() + 60
    while True:
        first, second = split()
        if first and second and not first & second and first | second == everything:
            break
        assert time.monotonic() < deadline, f"the group did not split the regions: {split()}"
        time.sleep(0.2)

    worker = threading.Thread(
        target=run_workload,
        args=(s, live.pipeline.regions),
        kwargs={"workers": 2, "count": 150, "seed": 21},
        daemon=True,
    )
    worker.start()
    time.sleep(3)
    members[1].stop.set()  # leaves mid-stream: its regions move to the other member
    threads[1].join(timeout=60)
    worker.join()
    deadline = time.monotonic() + 60
    while set(members[0].assigned_regions) != {r.name for r in live.pipeline.regions}:
        assert time.monotonic() < deadline, "the remaining member did not take over"
        time.sleep(0.2)
    live.projector, live.thread = members[0], threads[0]
    live.wait_caught_up()
    assert_projection_equals_wms(live)


def test_a_truncate_mid_stream_empties_the_table_and_everything_else_lands(live: Live) -> None:
    """A WMS operator purges the ledger while warehouses work: Debezium streams the
    TRUNCATE (the connector does not skip it), the projection drops every ledger row
    of that region as of it, and the figures built from the ledger follow."""
    s = live.settings
    region = live.pipeline.regions[2]
    worker = threading.Thread(
        target=run_workload,
        args=(s, live.pipeline.regions),
        kwargs={"workers": 2, "count": 100, "seed": 23},
        daemon=True,
    )
    worker.start()
    time.sleep(1.0)
    truncates = REGISTRY.get_sample_value(
        "stockcdc_events_total", {"region": region.name, "kind": "truncate"}
    )
    with psycopg.connect(s.pg_dsn(region), autocommit=True) as admin:
        admin.execute("TRUNCATE inventory_txn")
    worker.join()
    live.wait_caught_up()
    assert_projection_equals_wms(live)
    # What the purge left: only ledger rows written after it, in the WMS and projected.
    with psycopg.connect(s.pg_dsn(region, "cdc")) as conn:
        in_wms = conn.execute("SELECT count(*) FROM inventory_txn").fetchone()
    projected = live.client.query(
        "SELECT count() FROM cur_inventory_txn WHERE region = {r:String}",
        parameters={"r": region.name},
    ).result_rows
    assert in_wms is not None
    assert projected == [(in_wms[0],)]
    after = REGISTRY.get_sample_value(
        "stockcdc_events_total", {"region": region.name, "kind": "truncate"}
    )
    assert (after or 0) - (truncates or 0) == 1
