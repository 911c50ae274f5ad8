"""The consumer loop on the real chain, with an in-memory sink: whole transactions,
boundary commits, dead letters. (The ClickHouse sink is tested in the projection tests.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from cdc_consumers.decode import decode
from cdc_consumers.projector import Projector
from schemas.events import Heartbeat, RegionWrite, RowChange, Transaction, TxEnd, WalMark, Watermark
from stockcdc.settings import Settings
from tests.integration.chain import wait_for

pytestmark = pytest.mark.integration


class ListSink:
    """Keeps every write; thread-safe enough for one writer and a polling reader."""

    def __init__(self) -> None:
        self.transactions: list[Transaction] = []
        self.watermarks: dict[str, Watermark] = {}

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        return dict(self.watermarks)

    def write_all(self, writes: Sequence[RegionWrite]) -> None:
        for region, transactions, watermark in writes:
            self.transactions.extend(transactions)
            if watermark is not None:
                self.watermarks[region] = watermark


@pytest.fixture
def projector(settings: Settings, services_up: None) -> Iterator[tuple[Projector, ListSink]]:
    own = settings.model_copy(update={"consumer_group": f"test-{uuid.uuid4().hex[:8]}"})
    sink = ListSink()
    proj = Projector(own, sink)
    thread = threading.Thread(target=proj.run, daemon=True)
    thread.start()
    yield proj, sink
    proj.stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def owner_code(change: object) -> object:
    """The `code` of an owner row change, else None."""
    if isinstance(change, RowChange) and change.table == "owner":
        return (change.as_dict() or {}).get("code")
    return None


def test_a_multi_row_wms_transaction_arrives_whole_and_offsets_stop_at_its_end(
    settings: Settings, projector: tuple[Projector, ListSink]
) -> None:
    proj, sink = projector
    region = settings.region("eu-central")
    code = f"P-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.pg_dsn(region, "app")) as conn:
        row = conn.execute(
            "INSERT INTO owner (code, name) VALUES (%s, 'p') RETURNING id", (code,)
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO sku (owner_id, sku_code, name) VALUES (%s, 'A', 'a'), (%s, 'B', 'b')",
            (row[0], row[0]),
        )
    # committed as one transaction on leaving the block

    def ours() -> list[Transaction]:
        return [t for t in sink.transactions if any(owner_code(c) == code for c in t.changes)]

    wait_for(lambda: bool(ours()))
    (tx,) = ours()
    assert sorted(c.table for c in tx.changes) == ["owner", "sku", "sku"]
    assert tx.commit_lsn > max(c.lsn for c in tx.changes if isinstance(c, RowChange))
    wait_for(
        lambda: sink.watermarks.get(region.name, Watermark("", 0, 0)).commit_lsn >= tx.commit_lsn
    )

    # The committed offset points just past a record outside any transaction.
    tp = TopicPartition(region.cdc_topic, 0)
    probe = KafkaConsumer(
        **settings.kafka_client_config(),
        group_id=proj.settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        wait_for(lambda: (probe.committed(tp) or 0) > 0, timeout_s=20)
        committed = probe.committed(tp)
        assert committed is not None
        probe.assign([tp])
        probe.seek(tp, committed - 1)
        deadline = time.monotonic() + 30  # a fresh consumer's first polls may be empty
        while not (fetched := probe.poll(timeout_ms=1000).get(tp, [])):
            assert time.monotonic() < deadline, f"nothing fetched at offset {committed - 1}"
        last = fetched[0]
        event = decode(region.name, last.topic, last.partition, last.offset, last.key, last.value)
        # a transaction's END, or a record between transactions: Debezium's heartbeat or
        # the heartbeat action's WAL mark (a non-transactional logical message)
        assert isinstance(event, TxEnd | Heartbeat | WalMark), event
    finally:
        probe.close()


def test_undecodable_record_goes_to_the_dead_letter_topic_and_the_rest_lands(
    settings: Settings, projector: tuple[Projector, ListSink]
) -> None:
    _proj, sink = projector
    region = settings.region("ap-southeast")
    dlq = TopicPartition(settings.deadletter_topic, 0)
    producer = KafkaProducer(**settings.kafka_client_config())
    marker = uuid.uuid4().hex.encode()
    producer.send(region.cdc_topic, key=b'{"id": 1}', value=b"not json " + marker)
    producer.flush()
    producer.close()
    code = f"D-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.pg_dsn(region, "app")) as conn:
        conn.execute("INSERT INTO owner (code, name) VALUES (%s, 'after poison')", (code,))

    wait_for(lambda: any(owner_code(c) == code for t in sink.transactions for c in t.changes))
    reader = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False)
    try:
        wait_for(lambda: bool(reader.partitions_for_topic(settings.deadletter_topic)))
        reader.assign([dlq])
        reader.seek_to_beginning(dlq)
        found: list[Any] = []
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            for rec in reader.poll(timeout_ms=500).get(dlq, []):
                if rec.value and marker in rec.value:
                    found.append(rec)
        assert found, "poison record not in the dead-letter topic"
        headers = dict(found[0].headers)
        assert headers["reason"] == b"malformed_json"
        assert headers["region"] == region.name.encode()
        assert headers["source"].startswith(region.cdc_topic.encode())
    finally:
        reader.close()
