"""The consumer loop on real Kafka against faults, with records of its own on a topic of
its own (an isolated namespace, no connector): an undecodable record over a megabyte, a
ClickHouse outage outlasting `max_poll_interval_ms`, a transaction whose END can't be
decoded."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from cdc_consumers.decode import ROUTER_FIELD
from cdc_consumers.projector import Projector
from schemas.errors import TransientError
from schemas.events import RegionWrite, RowChange, Transaction, Watermark
from stockcdc.settings import Settings
from tests.integration.chain import wait_for

pytestmark = pytest.mark.integration

REGION = "us-west"
SAMPLES = Path(__file__).parents[2] / "unit" / "cdc_consumers" / "samples"


class Sink:
    """Keeps every write; refuses them (transient, as a ClickHouse that is down) while
    `refusing`."""

    def __init__(self) -> None:
        self.transactions: list[Transaction] = []
        self.refusing = False
        self.refused = 0

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        return {}

    def write_all(self, writes: Sequence[RegionWrite]) -> None:
        if self.refusing:
            self.refused += 1
            raise TransientError("injected: ClickHouse unavailable")
        self.transactions += [tx for w in writes for tx in w.transactions]

    def owner_ids(self) -> list[object]:
        return [c.key[0] for t in self.transactions for c in t.changes if isinstance(c, RowChange)]


@pytest.fixture
def own(settings: Settings, services_up: None) -> Iterator[Settings]:
    """Settings of a namespace, group and dead-letter topic of this test alone."""
    uid = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "cdc_namespace": f"t{uid}",
            "regions": (REGION,),
            "consumer_group": f"test-{uid}",
            "deadletter_topic": f"t{uid}.deadletter",
        }
    )
    yield s
    admin = KafkaAdminClient(**s.kafka_client_config())
    try:
        admin.delete_topics([s.region(REGION).cdc_topic, s.deadletter_topic], raise_errors=False)
    finally:
        admin.close()


def start(s: Settings, sink: Sink) -> tuple[Projector, threading.Thread]:
    proj = Projector(s, sink)
    thread = threading.Thread(target=proj.run, daemon=True)
    thread.start()
    return proj, thread


def stop(proj: Projector, thread: threading.Thread) -> None:
    proj.stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def produce(s: Settings, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    # Compressed batches: the broker takes a record over a megabyte as Debezium's
    # producer (with a larger max.request.size) would send it.
    producer = KafkaProducer(
        **s.kafka_client_config(), compression_type="gzip", max_request_size=8 << 20
    )
    try:
        for key, value in records:
            producer.send(s.region(REGION).cdc_topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def committed(s: Settings) -> int:
    consumer = KafkaConsumer(
        **s.kafka_client_config(), group_id=s.consumer_group, enable_auto_commit=False
    )
    try:
        return consumer.committed(TopicPartition(s.region(REGION).cdc_topic, 0)) or 0
    finally:
        consumer.close()


def dead_letters(s: Settings, count: int) -> list[Any]:
    """The first `count` records of the dead-letter topic."""
    tp = TopicPartition(s.deadletter_topic, 0)
    reader = KafkaConsumer(**s.kafka_client_config(), enable_auto_commit=False)
    try:
        reader.assign([tp])
        reader.seek_to_beginning(tp)
        found: list[Any] = []
        deadline = time.monotonic() + 30
        while len(found) < count:
            assert time.monotonic() < deadline, f"{len(found)} dead letters, not {count}"
            found += reader.poll(timeout_ms=500).get(tp, [])
        return found
    finally:
        reader.close()


def transaction(s: Settings, tx: int, end: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """A WMS transaction as the connector writes it: BEGIN, an owner insert (id `tx`), END
    (`end`: other bytes in its place)."""
    server = f"{s.cdc_namespace}.{REGION}"
    lsn, now = 1000 * tx, int(time.time() * 1000)
    change = json.loads((SAMPLES / "create_owner.json").read_text())
    key, value = change["key"], copy.deepcopy(change["value"])
    key.update({"id": tx, ROUTER_FIELD: f"{server}.public.owner"})
    value["after"].update({"id": tx, "code": f"O-{tx}"})
    value["source"].update({"name": server, "txId": tx, "lsn": lsn, "ts_ms": now})

    def tx_key(id_: str) -> bytes:
        return orjson.dumps({"id": id_, ROUTER_FIELD: f"{server}.transaction"})

    begin = {"status": "BEGIN", "id": f"{tx}:{lsn}", "event_count": None, "ts_ms": now}
    counts = [{"data_collection": "public.owner", "event_count": 1}]
    end_value = {
        "status": "END",
        "id": f"{tx}:{lsn + 10}",
        "event_count": 1,
        "data_collections": counts,
        "ts_ms": now,
    }
    return [
        (tx_key(f"{tx}:{lsn}"), orjson.dumps(begin)),
        (orjson.dumps(key), orjson.dumps(value)),
        (tx_key(f"{tx}:{lsn + 10}"), end if end is not None else orjson.dumps(end_value)),
    ]


def test_an_undecodable_record_over_a_megabyte_is_dead_lettered_cut_and_the_flow_goes_on(
    own: Settings,
) -> None:
    poison = b"not json " + b"0123456789abcdef" * 100_000  # 1.6 MB
    heartbeat = orjson.dumps({"ts_ms": int(time.time() * 1000)})
    sink = Sink()
    proj, thread = start(own, sink)
    try:
        produce(own, [(b'{"id": 1}', poison), (None, heartbeat), *transaction(own, 7)])
        wait_for(
            lambda: committed(own) == 5 or not thread.is_alive(),
            what="the records after the poison were not committed",
        )
        assert thread.is_alive(), "the projector died on the oversize dead letter"
        assert sink.owner_ids() == [7]
    finally:
        stop(proj, thread)
    (letter,) = dead_letters(own, 1)
    headers = dict(letter.headers)
    assert headers["reason"] == b"malformed_json"
    assert headers["source"] == f"{own.region(REGION).cdc_topic}[0]@0".encode()
    assert headers["value_truncated_from"] == str(len(poison)).encode()
    assert headers["value_sha256"] == hashlib.sha256(poison).hexdigest().encode()
    assert poison.startswith(letter.value)
    assert len(letter.key) + len(letter.value) == own.deadletter_max_bytes


def members(admin: KafkaAdminClient, group: str) -> tuple[str, ...]:
    """The member ids of `group` as the broker knows them."""
    (described,) = admin.describe_groups([group]).values()
    return tuple(sorted(m["member_id"] for m in described["members"]))


def test_a_clickhouse_outage_longer_than_the_poll_interval_keeps_the_member_in_its_group(
    own: Settings,
) -> None:
    s = own.model_copy(
        update={
            "consumer_max_poll_interval_ms": 3_000,
            "batch_max_rows": 1,  # a transaction is a full batch: the writer falls behind
            "write_retry_max_ms": 200,
        }
    )
    commit_failures = REGISTRY.get_sample_value("stockcdc_commit_failures_total") or 0
    sink = Sink()
    sink.refusing = True
    produce(s, transaction(s, 1))
    proj, thread = start(s, sink)
    admin = KafkaAdminClient(**s.kafka_client_config())
    try:
        wait_for(lambda: sink.refused >= 1, what="the first write never came")
        member = members(admin, s.consumer_group)
        assert len(member) == 1
        # One flush is retried, one waits, the rest would block the loop.
        produce(s, [r for tx in range(2, 7) for r in transaction(s, tx)])
        seen = set()
        outage_end = time.monotonic() + 4 * s.consumer_max_poll_interval_ms / 1000
        while time.monotonic() < outage_end:
            seen.add(members(admin, s.consumer_group))
            time.sleep(0.5)
        assert seen == {member}, "the member left the group while ClickHouse was down"
        sink.refusing = False
        wait_for(lambda: committed(s) == 18, what="not everything was committed after")
        assert set(sink.owner_ids()) == {1, 2, 3, 4, 5, 6}
        assert members(admin, s.consumer_group) == member
    finally:
        admin.close()
        stop(proj, thread)
    assert (REGISTRY.get_sample_value("stockcdc_commit_failures_total") or 0) == commit_failures


def test_the_records_of_a_transaction_whose_end_cannot_be_decoded_are_dead_lettered(
    own: Settings,
) -> None:
    sink = Sink()
    proj, thread = start(own, sink)
    try:
        produce(own, [*transaction(own, 6, end=b"not json"), *transaction(own, 7)])
        wait_for(lambda: committed(own) == 6, what="the records after were not committed")
        assert sink.owner_ids() == [7]
    finally:
        stop(proj, thread)
    letters = dead_letters(own, 3)
    topic = own.region(REGION).cdc_topic
    assert sorted((dict(r.headers)["source"], dict(r.headers)["reason"]) for r in letters) == [
        (f"{topic}[0]@0".encode(), b"transaction_without_end"),
        (f"{topic}[0]@1".encode(), b"transaction_without_end"),
        (f"{topic}[0]@2".encode(), b"malformed_json"),
    ]
    assert [r.value for r in letters if r.value.startswith(b"not")] == [b"not json"]
