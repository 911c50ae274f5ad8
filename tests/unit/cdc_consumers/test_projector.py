"""The projector's hand-off to its writer thread: flushes written in order, one waiting at
most, failures raised on the loop's thread, offsets committed only once written and only
for partitions still assigned. (The loop on real Kafka: tests/integration/cdc_consumers.)"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future
from kafka.structs import OffsetAndMetadata

from cdc_consumers.assembler import Batch, RegionAssembler
from cdc_consumers.decode import ROUTER_FIELD
from cdc_consumers.projector import (
    BUSY_POLL_MS,
    IDLE_POLL_MS,
    DeadLetter,
    Projector,
    ProjectorError,
    _BatchWriter,
    _Flush,
)
from schemas.errors import TransientError
from schemas.events import (
    Op,
    RegionWrite,
    RowChange,
    Snapshot,
    Transaction,
    TxBegin,
    TxEnd,
    Watermark,
)
from stockcdc.settings import Settings

R = "us-west"


def batch(n: int) -> Batch:
    return Batch(R, [Transaction(R, n, 100 * n, 1000 * n, ())], Watermark(R, 100 * n, 0), n)


def flush(n: int) -> _Flush:
    return _Flush([batch(n)], {TopicPartition("t", 0): OffsetAndMetadata(n, "", -1)})


def eventually(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Wait until `condition()` holds (the writer thread gets there), failing after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_flushes_are_written_in_order_and_returned_oldest_first() -> None:
    written: list[int | None] = []
    writer = _BatchWriter(lambda bs: written.extend(b.commit_offset for b in bs))
    for n in (1, 2, 3):
        writer.hand_over(flush(n))
    done = writer.written(wait=True)
    writer.close()
    assert written == [1, 2, 3]
    assert [f.batches[0].commit_offset for f in done] == [1, 2, 3]
    assert writer.written() == []


def test_one_flush_waits_at_most_while_another_is_written() -> None:
    release = threading.Event()

    def write(bs: list[Batch]) -> None:
        release.wait(10)

    writer = _BatchWriter(write)
    writer.hand_over(flush(1))  # taken by the thread, blocked in the write
    eventually(lambda: writer.has_room)
    writer.hand_over(flush(2))  # waits in the queue
    assert not writer.has_room
    third = threading.Thread(target=writer.hand_over, args=(flush(3),))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # back-pressure: blocked until the writer takes the second
    assert writer.written() == []  # nothing is done before it is written
    release.set()
    third.join(5)
    assert [f.batches[0].commit_offset for f in writer.written(wait=True)] == [1, 2, 3]
    writer.close()


def test_a_failed_write_is_raised_on_the_loops_thread() -> None:
    def write(bs: list[Batch]) -> None:
        if bs[0].commit_offset == 2:
            raise RuntimeError("ClickHouse says no")

    writer = _BatchWriter(write)
    writer.hand_over(flush(1))
    writer.hand_over(flush(2))
    with pytest.raises(RuntimeError, match="says no"):
        writer.written(wait=True)
    with pytest.raises(RuntimeError, match="says no"):
        writer.hand_over(flush(3))
    writer.close()


class FakeRows:
    """Rows a sink writes after their figures: waiting since a flush's write, due
    `max_s` after the oldest, written in `steps` inserts of `step_s` each; the rows of a
    flush written while a write is under way wait for the next one. `log` says what was
    written in which order."""

    def __init__(self, max_s: float, steps: int = 1, step_s: float = 0.0) -> None:
        self.max_s, self.writes, self.steps, self.step_s = max_s, 0, steps, step_s
        self.since: float | None = None  # the rows a write takes (or will take)
        self.later: float | None = None  # rows buffered while a write is under way
        self.under_way = False
        self.left = 0
        self.log: list[str] = []

    def buffered(self, bs: list[Batch]) -> None:
        self.log += (f"flush {b.commit_offset}" for b in bs)
        if self.under_way:
            self.later = self.later or time.monotonic()
        elif self.since is None:
            self.since, self.left = time.monotonic(), self.steps

    def due_in(self) -> float | None:
        since = min((t for t in (self.since, self.later) if t is not None), default=None)
        return None if since is None else since + self.max_s - time.monotonic()

    def write(self, give_way: Callable[[], bool]) -> bool:
        self.under_way = True
        while self.left:
            self.log.append("rows insert")
            time.sleep(self.step_s)
            self.left -= 1
            if self.left and give_way():
                return False
        self.under_way, self.writes = False, self.writes + 1
        self.since, self.later = self.later, None
        self.left = self.steps if self.since is not None else 0
        return True


def offsets(done: list[_Flush]) -> list[int | None]:
    return [f.batches[0].commit_offset for f in done if f.batches]


def test_a_flush_is_returned_only_once_its_rows_are_written() -> None:
    """Its offsets are committed after its rows, written at most `max_s` after the
    oldest waiting, several flushes' at once (the loop polls meanwhile)."""
    rows = FakeRows(max_s=0.3)
    writer = _BatchWriter(rows.buffered, rows)
    writer.hand_over(flush(1))
    writer.hand_over(flush(2))
    time.sleep(0.1)
    assert writer.written() == []  # figures written, rows waiting
    assert rows.writes == 0
    deadline = time.monotonic() + 5
    done: list[_Flush] = []
    while len(done) < 2:
        assert time.monotonic() < deadline
        done += writer.written()
        time.sleep(0.01)
    assert offsets(done) == [1, 2]
    assert rows.writes == 1  # both flushes' rows in one write
    writer.close()


def test_waiting_for_the_writer_writes_the_rows_now() -> None:
    """A stop or a rebalance waits for everything handed over: the rows go at once."""
    rows = FakeRows(max_s=60)
    writer = _BatchWriter(rows.buffered, rows)
    writer.hand_over(flush(1))
    started = time.monotonic()
    assert offsets(writer.written(wait=True)) == [1]
    assert time.monotonic() - started < 5
    assert rows.writes == 1
    assert writer.written(wait=True) == []  # nothing in flight: nothing handed over
    writer.close()


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(dict(offsets))


class FakeDeadLetter:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer, self.flushed_before_commits = consumer, -1

    def flush(self) -> None:
        self.flushed_before_commits = len(self.consumer.commits)


class ListSink:
    def __init__(self) -> None:
        self.writes: list[RegionWrite] = []  # every region's part
        self.calls: list[list[str]] = []  # the regions of each call

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        return {}

    def write_all(self, writes: Sequence[RegionWrite]) -> None:
        self.writes += writes
        self.calls.append([w.region for w in writes])


def test_offsets_are_committed_after_the_write_for_partitions_still_ours() -> None:
    sink = ListSink()
    projector = Projector(Settings(), sink)
    ours, gone = TopicPartition("a", 0), TopicPartition("b", 0)
    projector._assemblers = {ours: RegionAssembler(R)}
    assembler = projector._assemblers[ours]
    assembler.add(0, TxBegin(R, 7, 10, 1))
    assembler.add(1, TxEnd(R, 7, 20, 0, {}, 2))
    writer = _BatchWriter(projector._write)
    projector._hand_over(writer)
    consumer = FakeConsumer()
    deadletter = FakeDeadLetter(consumer)
    done = writer.written(wait=True)
    done.append(_Flush([], {gone: OffsetAndMetadata(5, "", -1)}))  # revoked meanwhile
    projector._commit(consumer, deadletter, done)  # type: ignore[arg-type]
    writer.close()
    assert [(r, [t.tx_id for t in txs], w) for r, txs, w in sink.writes] == [
        (R, [7], Watermark(R, 20, 2))
    ]
    assert consumer.commits == [{ours: OffsetAndMetadata(2, "", -1)}]
    assert deadletter.flushed_before_commits == 0  # dead letters durable first


def test_nothing_written_commits_nothing() -> None:
    projector = Projector(Settings(), ListSink())
    consumer = FakeConsumer()
    projector._commit(consumer, FakeDeadLetter(consumer), [])  # type: ignore[arg-type]
    assert consumer.commits == []


class FlakySink(ListSink):
    """Fails the write of `fail_at` (its call number) once, as a ClickHouse hiccup."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.tried, self.fail_at = 0, fail_at

    def write_all(self, writes: Sequence[RegionWrite]) -> None:
        self.tried += 1
        if self.tried == self.fail_at:
            raise TransientError("try again")
        super().write_all(writes)


class AssignedConsumer(FakeConsumer):
    def __init__(self, assigned: set[TopicPartition]) -> None:
        super().__init__()
        self._assigned = assigned

    def assignment(self) -> set[TopicPartition]:
        return self._assigned


def open_under(directory: Path) -> list[str]:
    """This process's open files in `directory`."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            out.append(target)
    return out


def test_a_spilled_transaction_is_written_in_chunks_then_made_visible(tmp_path: Path) -> None:
    """Issue 16 item 7: a transaction past `max_transaction_rows_in_memory` reaches the
    sink in chunks (a failed one retried alone), the watermark only with the last; its
    offset is committed after all of them and its spill file is freed."""
    settings = Settings(
        max_transaction_rows_in_memory=10, state_dir=tmp_path, write_retry_initial_ms=1
    )
    sink = FlakySink(fail_at=3)
    projector = Projector(settings, sink)
    tp = TopicPartition(settings.region_list()[0].cdc_topic, 0)
    consumer = AssignedConsumer({tp})
    deadletter = FakeDeadLetter(consumer)
    writer = _BatchWriter(projector._write)
    projector._sync_assignment(consumer, writer, deadletter)  # type: ignore[arg-type]
    assembler = projector._assemblers[tp]
    assembler.add(0, TxBegin(R, 7, 10, 1))
    for i in range(95):
        row = RowChange(R, "owner", Op.CREATE, (i,), (i,), 10 + i, 7, 1, Snapshot.NO)
        assembler.add(1 + i, row)
        assert assembler.pending_rows <= 10
    assembler.add(96, TxEnd(R, 7, 200, 95, {"owner": 95}, 2))
    assert open_under(tmp_path / "spill")
    projector._hand_over(writer)
    done = writer.written(wait=True)  # the batch lives on: freed by the writer, not by GC
    projector._commit(consumer, deadletter, done)  # type: ignore[arg-type]
    writer.close()
    assert sink.tried == 11  # the third write failed once and was retried alone
    assert [len(txs[0].changes) for _, txs, _ in sink.writes] == [10] * 9 + [5]
    assert [c.lsn for _, txs, _ in sink.writes for c in txs[0].changes] == list(range(10, 105))
    assert [w for _, _, w in sink.writes] == [None] * 9 + [Watermark(R, 200, 2)]
    assert consumer.commits == [{tp: OffsetAndMetadata(97, "", -1)}]
    assert open_under(tmp_path / "spill") == []
    assert os.listdir(tmp_path / "spill") == []


def test_a_flush_writes_every_region_in_one_call_and_a_spilled_batch_on_its_own(
    tmp_path: Path,
) -> None:
    """Issue 15: the regions of a flush reach the sink together (one insert per table for
    all of them); a region whose transaction spilled is written first, chunk by chunk."""
    settings = Settings(max_transaction_rows_in_memory=10, state_dir=tmp_path)
    sink = ListSink()
    projector = Projector(settings, sink)
    regions = [r.name for r in settings.region_list()]
    tps = {r.name: TopicPartition(r.cdc_topic, 0) for r in settings.region_list()}
    consumer = AssignedConsumer(set(tps.values()))
    writer = _BatchWriter(projector._write)
    projector._sync_assignment(consumer, writer, FakeDeadLetter(consumer))  # type: ignore[arg-type]
    big = regions[1]
    for region, tp in tps.items():
        rows = 15 if region == big else 2
        assembler = projector._assemblers[tp]
        assembler.add(0, TxBegin(region, 7, 10, 1))
        for i in range(rows):
            change = RowChange(region, "owner", Op.CREATE, (i,), (i,), 10 + i, 7, 1, Snapshot.NO)
            assembler.add(1 + i, change)
        assembler.add(1 + rows, TxEnd(region, 7, 200, rows, {"owner": rows}, 2))
    projector._hand_over(writer)
    writer.written(wait=True)
    writer.close()
    together = sorted(r for r in regions if r != big)
    assert [sorted(regions) for regions in sink.calls] == [[big], [big], together]
    assert sorted(w.region for w in sink.writes[2:]) == together
    assert [w.watermark for w in sink.writes[:2]] == [None, Watermark(big, 200, 2)]
    assert {w.watermark for w in sink.writes[2:]} == {Watermark(r, 200, 2) for r in together}


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class FakeProducer:
    """Answers each send with a future that `outcome` resolves (None: stored) and, like
    kafka-python's, refuses at once a record over its `max_request_size`."""

    def __init__(self, outcome: Exception | None = None) -> None:
        self.outcome = outcome
        self.sent: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        self.futures: list[Future] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Future:
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > 1_048_576:
            raise MessageSizeTooLargeError(f"{size} bytes")
        self.sent.append((key, value, dict(headers)))
        future = Future()
        self.futures.append(future)
        return future

    def flush(self) -> None:
        for future in self.futures:
            if self.outcome is None:
                future.success(None)
            else:
                future.failure(self.outcome)
        self.futures = []


def written_flush(tp: TopicPartition) -> list[_Flush]:
    """One written flush of `tp` with the offset past a dead-lettered record."""
    return [_Flush([], {tp: OffsetAndMetadata(2, "", -1)})]


def test_a_failed_dead_letter_send_stops_the_commit_past_it() -> None:
    projector = Projector(Settings(), ListSink())
    tp = TopicPartition("t", 0)
    projector._assemblers = {tp: RegionAssembler(R)}
    consumer = FakeConsumer()
    producer = FakeProducer(KafkaTimeoutError("broker gone"))
    deadletter = DeadLetter(producer, "dlq")
    deadletter.send(R, Record("t", 0, 1, b"k", b"poison"), "malformed_json", "bad")
    with pytest.raises(ProjectorError, match=r"t\[0\]@1.*broker gone"):
        projector._commit(consumer, deadletter, written_flush(tp))
    assert consumer.commits == []
    # A send that succeeds lets the next commit through.
    producer.outcome = None
    deadletter.send(R, Record("t", 0, 1, b"k", b"poison"), "malformed_json", "bad")
    projector._commit(consumer, deadletter, written_flush(tp))
    assert consumer.commits == [{tp: OffsetAndMetadata(2, "", -1)}]


def test_an_oversize_record_is_dead_lettered_cut_with_what_finds_the_original() -> None:
    producer = FakeProducer()
    deadletter = DeadLetter(producer, "dlq", max_bytes=900_000)
    value = b"not json " + bytes(range(256)) * 6_000  # 1.5 MB
    deadletter.send(R, Record("wms.us-west.cdc", 0, 42, b'{"id": 1}', value), "malformed_json", "")
    deadletter.send(R, Record("wms.us-west.cdc", 0, 43, b"k", b"small"), "malformed_json", "")
    deadletter.flush()
    (key, cut, headers), small = producer.sent
    assert key == b'{"id": 1}'
    assert cut == value[: 900_000 - len(key)]
    assert headers["value_truncated_from"] == str(len(value)).encode()
    assert headers["value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["source"] == b"wms.us-west.cdc[0]@42"
    assert "key_truncated_from" not in headers
    assert small[:2] == (b"k", b"small")
    assert not {"value_truncated_from", "value_sha256"} & set(small[2])
    huge_key = b"k" * 2_000_000
    deadletter.send(R, Record("t", 0, 44, huge_key, value), "malformed_json", "")
    key, cut, headers = producer.sent[-1]
    assert key == huge_key[:225_000]
    assert cut is not None
    assert len(key) + len(cut) == 900_000
    assert headers["key_sha256"] == hashlib.sha256(huge_key).hexdigest().encode()


SAMPLES = Path(__file__).parent / "samples"


def tx_records(tx: int, offset: int, end: bytes | None = None) -> list[Record]:
    """BEGIN, an owner insert, END of tx `tx` on wms.us-west.cdc from `offset` (`end`:
    other bytes in the END's place)."""
    change = json.loads((SAMPLES / "create_owner.json").read_text())
    change["value"]["source"].update({"txId": tx, "lsn": 100 * tx})
    begin = {"status": "BEGIN", "id": f"{tx}:{100 * tx}", "ts_ms": 1}
    end_value = {
        "status": "END",
        "id": f"{tx}:{100 * tx + 10}",
        "event_count": 1,
        "data_collections": [{"data_collection": "public.owner", "event_count": 1}],
        "ts_ms": 2,
    }
    tx_key = {ROUTER_FIELD: "wms.us-west.transaction"}
    return [
        Record("wms.us-west.cdc", 0, offset, orjson.dumps({**tx_key, "id": begin["id"]}),
               orjson.dumps(begin)),
        Record("wms.us-west.cdc", 0, offset + 1, orjson.dumps(change["key"]),
               orjson.dumps(change["value"])),
        Record("wms.us-west.cdc", 0, offset + 2, orjson.dumps({**tx_key, "id": end_value["id"]}),
               orjson.dumps(end_value) if end is None else end),
    ]  # fmt: skip


def test_the_changes_of_a_transaction_whose_end_is_dead_lettered_are_dead_lettered() -> None:
    records = [*tx_records(6, 0, end=b"not json"), *tx_records(7, 3)]
    projector = Projector(Settings(), ListSink())
    reads: list[tuple[int, int]] = []

    def read_again(tp: TopicPartition, start: int, stop: int) -> Iterator[Record]:
        reads.append((start, stop))
        return iter(records[start:stop])

    projector._records = read_again  # type: ignore[method-assign]
    assembler = RegionAssembler(R)
    producer = FakeProducer()
    deadletter = DeadLetter(producer, "dlq")
    projector._feed(assembler, records[:2], deadletter)  # the END comes with the next poll
    projector._feed(assembler, records[2:], deadletter)
    assert reads == [(0, 2)]
    assert [(h["source"], h["reason"]) for _k, _v, h in producer.sent] == [
        (b"wms.us-west.cdc[0]@2", b"malformed_json"),
        (b"wms.us-west.cdc[0]@0", b"transaction_without_end"),
        (b"wms.us-west.cdc[0]@1", b"transaction_without_end"),
    ]
    assert producer.sent[2][1] == records[1].value  # the original bytes
    batch = assembler.take()
    assert [t.tx_id for t in batch.transactions] == [7]
    assert batch.commit_offset == 6


def test_an_idle_loop_polls_long_and_a_pending_batch_only_until_it_is_due() -> None:
    """Issue 15: an idle projector sleeps in poll (records end the wait at once), a
    pending batch is handed over when due, a written flush is committed promptly."""
    projector = Projector(Settings(batch_max_ms=100), ListSink())
    release = threading.Event()

    def write(bs: list[Batch]) -> None:
        release.wait(10)

    writer = _BatchWriter(write)
    assert projector._poll_ms(None, writer) == IDLE_POLL_MS
    assert 0 < projector._poll_ms(time.monotonic(), writer) <= 100
    assert projector._poll_ms(time.monotonic() - 1, writer) == 0  # overdue
    writer.hand_over(flush(1))
    assert projector._poll_ms(None, writer) == BUSY_POLL_MS
    release.set()
    writer.written(wait=True)
    writer.close()
    assert projector._poll_ms(None, writer) == IDLE_POLL_MS


def test_a_flush_waiting_only_for_its_rows_lets_the_loop_sleep() -> None:
    """Rows trail their figures by up to a second: polling every BUSY_POLL_MS meanwhile
    would spin the loop for nothing."""
    projector = Projector(Settings(batch_max_ms=100), ListSink())
    rows = FakeRows(max_s=60)
    writer = _BatchWriter(rows.buffered, rows)
    writer.hand_over(flush(1))
    eventually(lambda: not writer.writing)
    assert writer.in_flight == 1  # not committed: its rows wait
    assert projector._poll_ms(None, writer) == IDLE_POLL_MS
    writer.written(wait=True)
    writer.close()


def test_the_rows_give_way_to_a_flush_handed_over_meanwhile() -> None:
    """Readers wait for figures, not rows: a flush handed over while the rows are
    written goes between two of their inserts."""
    rows = FakeRows(max_s=0, steps=3, step_s=0.2)
    writer = _BatchWriter(rows.buffered, rows)
    writer.hand_over(flush(1))
    eventually(lambda: "rows insert" in rows.log)
    writer.hand_over(flush(2))
    assert offsets(writer.written(wait=True)) == [1, 2]
    writer.close()
    assert rows.log == [
        "flush 1", "rows insert", "flush 2", "rows insert", "rows insert",  # flush 1's
        "rows insert", "rows insert", "rows insert",  # then flush 2's, in a write of their own
    ]  # fmt: skip
    assert rows.writes == 2


def test_a_flush_written_during_a_rows_write_is_returned_after_its_own_rows() -> None:
    """Its rows wait for the next write: its offsets are not committed with the rows
    written around it."""
    rows = FakeRows(max_s=0, steps=2, step_s=0.2)
    writer = _BatchWriter(rows.buffered, rows)
    writer.hand_over(flush(1))
    eventually(lambda: "rows insert" in rows.log)
    rows.max_s = 60  # from now on rows are due a minute after their flush
    writer.hand_over(flush(2))
    deadline = time.monotonic() + 5
    done: list[_Flush] = []
    while not done:
        assert time.monotonic() < deadline
        done += writer.written()
        time.sleep(0.01)
    assert offsets(done) == [1]  # the write under way went on, due or not
    time.sleep(0.3)
    assert writer.written() == []
    assert writer.in_flight == 1
    assert offsets(writer.written(wait=True)) == [2]
    writer.close()
