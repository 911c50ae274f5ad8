"""The consumer loop: Kafka → decode → whole transactions → ClickHouse, exactly-once effect.

Offsets are committed only after the sink has the batch (DESIGN decision 3) and only at
transaction boundaries; the sink's writes are idempotent (versions are LSNs), so replays
and redelivery after a crash or a rebalance change nothing. Records that can't be
decoded or fit no transaction go to the dead-letter topic with their reason and original
bytes before their offset is committed (decision 7); the rest of the batch lands.

The sink writes on a thread of its own (`_BatchWriter`), one flush at a time in the order
handed over, while the loop fetches and decodes the next records: ClickHouse works
without holding the GIL, so on two cores the insert overlaps the Python side. The loop
alone touches the consumer: it commits a flush's offsets once the writer returns it.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson
import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.future import Future
from kafka.structs import OffsetAndMetadata

from cdc_consumers import metrics
from cdc_consumers.assembler import AssemblyProblem, Batch, RegionAssembler
from cdc_consumers.decode import ROUTER_FIELD, DecodeError, decode
from cdc_consumers.errors import ConsumerError
from cdc_consumers.topics import ensure_topics
from schemas.errors import TransientError
from schemas.events import (
    Event,
    Heartbeat,
    RegionWrite,
    RowChange,
    Tombstone,
    Transaction,
    Truncate,
    TxBegin,
    TxEnd,
    WalMark,
    Watermark,
)
from stockcdc.settings import Settings

log = structlog.get_logger(__name__)

#: How long a stopping projector waits for the group to take its leave; offsets are
#: committed before, so cutting this short loses nothing.
CLOSE_TIMEOUT_MS = 5_000
#: Longest poll of an idle loop (nothing pending, nothing being written): also how long a
#: stop may wait to be seen.
IDLE_POLL_MS = 500
#: Poll while a flush is written: its offsets are committed once the loop sees it done.
BUSY_POLL_MS = 20


class ProjectorError(ConsumerError):
    """The projector cannot start or go on (its topics are missing, say)."""


_KINDS: Mapping[type, str] = {
    RowChange: "change",
    TxBegin: "begin",
    TxEnd: "end",
    Heartbeat: "heartbeat",
    WalMark: "wal_mark",
    Tombstone: "tombstone",
    Truncate: "truncate",
}


class Sink(Protocol):
    """Where batches go: the ClickHouse projection (read_model), or a list in unit tests."""

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        """The applied watermark of every region the sink has seen; `regions` were just
        assigned to this member (their state is read again: another may have moved them
        on)."""
        ...

    def write_all(self, writes: Sequence[RegionWrite]) -> object:
        """Write each region's whole transactions, then (if given) its new watermark,
        several regions at once; idempotent. Raises a `TransientError` when a retry may
        succeed."""
        ...


@runtime_checkable
class RowsLaterSink(Sink, Protocol):
    """A sink that can write the stock figures of a flush first and its rows later
    (read_model.writer: fewer, larger inserts; see `Settings.rows_max_ms`)."""

    def write_all(self, writes: Sequence[RegionWrite], rows_later: bool = False) -> object:
        """`Sink.write_all`; with `rows_later` the rows wait for `write_rows`."""
        ...

    @property
    def rows_waiting_since(self) -> float | None:
        """When the oldest rows waiting were buffered (monotonic); None: none wait."""
        ...

    def write_rows(self, give_way: Callable[[], bool] = ...) -> bool:
        """Write the rows waiting, then the watermarks they make true; True once done,
        False when it stopped between two inserts because `give_way()`."""
        ...


@dataclass
class DeadLetter:
    """Publishes records the projection can't apply, with why, to the dead-letter topic.

    A record larger than `max_bytes` (key + value) is cut to it, so that it fits the
    producer's and the topic's size limits: headers `<key|value>_truncated_from` (its size)
    and `<key|value>_sha256` (of the original) say so, and `source` names where the
    original is kept (region topics are kept forever)."""

    producer: KafkaProducer
    topic: str
    max_bytes: int = 900_000
    _sent: list[tuple[str, Future]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Dead letters sent since the last `flush`."""
        return len(self._sent)

    def send(self, region: str, record: Any, reason: str, detail: str) -> None:
        source = f"{record.topic}[{record.partition}]@{record.offset}"
        key, clipped_key = _clip("key", record.key, self.max_bytes // 4)
        value, clipped_value = _clip("value", record.value, self.max_bytes - len(key or b""))
        headers = [
            ("reason", reason.encode()),
            ("detail", detail.encode()[:4000]),
            ("region", region.encode()),
            ("source", source.encode()),
            *clipped_key,
            *clipped_value,
        ]
        try:
            future = self.producer.send(self.topic, key=key, value=value, headers=headers)
        except KafkaError as exc:  # refused before sending (too large for the producer)
            raise ProjectorError(f"dead letter of {source} not sent ({reason}): {exc}") from exc
        self._sent.append((source, future))
        metrics.DEADLETTERS.labels(region, reason).inc()
        log.warning(
            "projector.deadletter",
            region=region,
            reason=reason,
            detail=detail,
            topic=record.topic,
            offset=record.offset,
            truncated=bool(clipped_key or clipped_value),
        )

    def flush(self) -> None:
        """Dead letters must be durable before the offsets past them are committed:
        raises `ProjectorError` if any send failed (its offset then stays uncommitted,
        and the record is read and dead-lettered again after the restart)."""
        if not self._sent:
            return
        self.producer.flush()
        sent, self._sent = self._sent, []
        failed = [(source, f.exception) for source, f in sent if not f.succeeded()]
        if failed:
            source, error = failed[0]
            raise ProjectorError(
                f"{len(failed)} of {len(sent)} dead letters not stored, the first of"
                f" {source}: {error!r}; their offsets are not committed"
            )


def _clip(
    part: str, data: bytes | None, limit: int
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """`data` cut to `limit` bytes, with the headers saying what it was (none if whole)."""
    if data is None or len(data) <= limit:
        return data, []
    return data[:limit], [
        (f"{part}_truncated_from", str(len(data)).encode()),
        (f"{part}_sha256", hashlib.sha256(data).hexdigest().encode()),
    ]


@dataclass
class _Flush:
    """One flush on its way through the writer: the regions' batches, and the offsets
    to commit once all of them are written (their rows too, which may come later)."""

    batches: list[Batch]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    started: float = 0.0  # when the writer began it (monotonic)
    rows_now: bool = False  # write the rows waiting once this one is written


class _Rows(Protocol):
    """The rows a sink writes after their figures (`RowsLaterSink`), as the writer
    thread sees them."""

    def due_in(self) -> float | None:
        """Seconds until the rows waiting must be written (<= 0: now); None: none wait."""
        ...

    def write(self, give_way: Callable[[], bool]) -> bool:
        """Write them (retried like any write), one insert at a time, stopping between
        two when `give_way()`; True once all are written."""
        ...


@dataclass(frozen=True)
class _SinkRows:
    """`_Rows` of a `RowsLaterSink`: due `max_s` after the oldest was buffered."""

    sink: RowsLaterSink
    max_s: float
    retried: Callable[[Callable[[], object], str], None]

    def due_in(self) -> float | None:
        since = self.sink.rows_waiting_since
        return None if since is None else since + self.max_s - time.monotonic()

    def write(self, give_way: Callable[[], bool]) -> bool:
        due = self.due_in()
        if due is not None and due < -self.max_s:  # twice as old as allowed: no more waiting
            give_way = _never
        done = False

        def write() -> None:
            nonlocal done
            done = self.sink.write_rows(give_way)

        with metrics.ROWS_WRITE_SECONDS.time():
            self.retried(write, "rows")
        return done


def _never() -> bool:
    return False


class _BatchWriter:
    """The sink's thread: writes handed-over flushes in order, one at a time. At most one
    more waits while one is written (memory stays bounded: beyond that the loop pauses
    fetching, see `Projector._pace`). With `rows`, a written flush is returned only once
    its rows are written too: when they are due, or when the loop waits for it.
    A write that fails for good is re-raised on the loop's thread by the next call."""

    def __init__(self, write: Callable[[list[Batch]], None], rows: _Rows | None = None) -> None:
        self._write = write
        self._rows = rows
        self._todo: queue.Queue[_Flush | None] = queue.Queue(maxsize=1)
        self._done: queue.Queue[_Flush] = queue.Queue()
        # Written, their rows not yet (the writer's thread only): those whose rows a
        # `_Rows.write` under way writes, and those after them.
        self._writing_rows: list[_Flush] = []
        self._waiting: list[_Flush] = []
        self._in_flight = 0  # handed over, not yet returned by `written`
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="projector-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    flush = self._todo.get(timeout=self._rows_due_in())
                except queue.Empty:  # the rows waiting are due
                    self._settle(now=False)
                    continue
                if flush is None:
                    return
                flush.started = time.monotonic()
                if flush.batches:
                    self._write(flush.batches)
                self._waiting.append(flush)
                self._settle(now=flush.rows_now)
        except BaseException as exc:  # handed to the loop, which raises it
            self._error = exc

    def _rows_due_in(self) -> float | None:
        if self._writing_rows:
            return 0.0  # a write under way goes on
        if not self._waiting:
            return None
        due = self._rows.due_in() if self._rows is not None else None
        return 0.0 if due is None else max(due, 0.0)  # None: their rows are in

    def _settle(self, now: bool) -> None:
        """Return the written flushes once their rows are in: write the rows waiting
        when they are due, giving way to a flush handed over meanwhile (its figures are
        what readers wait for; the rows go on after it, its own rows wait for the next
        write), or `now`, all of them."""
        rows = self._rows
        while True:
            due = rows.due_in() if rows is not None else None
            if rows is None or due is None:  # every row is in
                for flush in (*self._writing_rows, *self._waiting):
                    self._done.put(flush)
                self._writing_rows, self._waiting = [], []
                return
            if not (now or due <= 0 or self._writing_rows):  # a write under way goes on
                return
            if not self._writing_rows:  # a write begins: the rows of these flushes
                self._writing_rows, self._waiting = self._waiting, []
            give_way = _never if now else (lambda: not self._todo.empty())
            if not rows.write(give_way):
                return
            for flush in self._writing_rows:
                self._done.put(flush)
            self._writing_rows = []
            if not now:
                return

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def in_flight(self) -> int:
        """Flushes handed over and not yet returned by `written`."""
        return self._in_flight

    @property
    def writing(self) -> bool:
        """Whether a flush handed over is not written yet (rather than written and
        waiting for its rows: those are due much later). Read from the loop's thread
        while the writer's moves them: an instant off, which costs one poll's wait."""
        return self._in_flight > (self._done.qsize() + len(self._waiting) + len(self._writing_rows))

    @property
    def has_room(self) -> bool:
        """Whether a flush handed over now would not wait behind another."""
        return self._todo.empty()

    def hand_over(self, flush: _Flush) -> None:
        """Queue `flush` for writing; blocks while another one is already waiting."""
        while True:
            self._check()
            try:
                self._todo.put(flush, timeout=0.1)
            except queue.Full:
                continue
            self._in_flight += 1
            return

    def written(self, wait: bool = False) -> list[_Flush]:
        """Flushes written since the last call, oldest first; with `wait`, only once every
        flush handed over is written, rows and all."""
        if wait and self._in_flight and self._rows is not None:
            self.hand_over(_Flush([], {}, rows_now=True))
        out: list[_Flush] = []
        while self._in_flight:
            try:
                flush = self._done.get(timeout=0.1) if wait else self._done.get_nowait()
            except queue.Empty:
                self._check()
                if wait:
                    continue
                break
            out.append(flush)
            self._in_flight -= 1
        return out

    def close(self) -> None:
        """Drop what was not begun and wait for the thread (a write in progress ends or,
        retrying, gives up: the caller's stop or closing event is set)."""
        try:
            while True:
                if (flush := self._todo.get_nowait()) is not None:
                    for batch in flush.batches:
                        batch.release()
        except queue.Empty:
            pass
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()


@dataclass
class Projector:
    """One member of the projector consumer group; `run` until `stop` is set."""

    settings: Settings
    sink: Sink
    stop: threading.Event = field(default_factory=threading.Event)
    _assemblers: dict[TopicPartition, RegionAssembler] = field(default_factory=dict)
    _joined: KafkaConsumer | None = None  # the consumer while `run` runs
    _regions: dict[str, str] = field(default_factory=dict)
    _closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._regions = {r.cdc_topic: r.name for r in self.settings.region_list()}

    @property
    def assigned_regions(self) -> list[str]:
        """Regions the group gives this member now, as kafka-python knows it (its network
        thread updates it during a rebalance: eager, so a region is never listed by two
        members at once). The projector's own state follows after its next poll."""
        consumer = self._joined
        if consumer is None:
            return []
        return sorted(self._regions[tp.topic] for tp in consumer.assignment())

    def describe(self) -> list[dict[str, object]]:
        """Per assigned region: watermark, open transaction, offsets (see `RegionAssembler`)."""
        return [a.describe() for a in list(self._assemblers.values())]

    def _consumer(self) -> KafkaConsumer:
        s = self.settings
        return KafkaConsumer(
            **s.kafka_client_config(),
            group_id=s.consumer_group,
            client_id=f"{s.consumer_group}-{threading.get_native_id()}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.max_poll_records,
            max_poll_interval_ms=s.consumer_max_poll_interval_ms,
            # The broker answers a fetch as soon as there is a record (fetch_min_bytes 1):
            # the wait bounds only how often an idle member asks again.
            fetch_max_wait_ms=IDLE_POLL_MS,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            # A region whose topic appears later (a new region, a fresh connector) is
            # picked up within seconds, not after the default five minutes.
            metadata_max_age_ms=5_000,
            # Regions are single-partition topics: the default range assignor would give
            # them all to one member. Sticky spreads them and moves only what it must.
            partition_assignment_strategy=[StickyPartitionAssignor],
        )

    def run(self) -> None:
        """Consume, assemble and flush until stopped; the last batch is flushed on stop."""
        ensure_topics(self.settings)
        consumer = self._consumer()
        deadletter = DeadLetter(
            KafkaProducer(**self.settings.kafka_client_config(), acks="all", linger_ms=5),
            self.settings.deadletter_topic,
            self.settings.deadletter_max_bytes,
        )
        self._await_metadata(consumer)
        consumer.subscribe(topics=sorted(self._regions))
        # kafka-python 3.0.12 snapshots the subscribed topics' metadata only from fetches
        # made while subscribed: without this one the first join records an empty
        # snapshot, the next refresh asks for a second join, and a join of that kind that
        # outlasts one poll's timeout is never completed (the member stays "rebalancing",
        # every commit refused, forever; seen under load).
        consumer.topics()
        self._joined = consumer
        self._closing.clear()
        writer = _BatchWriter(self._write, self._rows_later())
        log.info("projector.start", topics=sorted(self._regions))
        oldest_pending: float | None = None
        try:
            while not self.stop.is_set():
                polled = consumer.poll(timeout_ms=self._poll_ms(oldest_pending, writer))
                self._sync_assignment(consumer, writer, deadletter)
                for tp, records in polled.items():
                    assembler = self._assemblers.get(tp)
                    if assembler is None:
                        continue  # revoked while fetched: its next owner redoes it
                    self._feed(assembler, records, deadletter)
                self._commit(consumer, deadletter, writer.written())
                if oldest_pending is None and any(a.has_work for a in self._assemblers.values()):
                    oldest_pending = time.monotonic()
                if oldest_pending is not None and self._due(oldest_pending, writer):
                    self._hand_over(writer)
                    oldest_pending = None
                self._pace(consumer, writer)
            self.flush(consumer, deadletter, writer)
        finally:
            self._joined = None
            self._closing.set()
            writer.close()
            for assembler in self._assemblers.values():
                assembler.close()
            # Bounded: the broker answers LeaveGroup only after a pending rejoin, which
            # waits out dead members' sessions (45 s); the group forgets us anyway then.
            consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
            deadletter.producer.close()
            log.info("projector.stop")

    def _await_metadata(self, consumer: KafkaConsumer, timeout_s: float = 60.0) -> None:
        """Know every region topic's partitions before joining the group: a leader whose
        metadata lacks a topic assigns it to nobody, and kafka-python does not reliably
        rejoin when the metadata arrives later (seen as a projector that never starts)."""
        deadline = time.monotonic() + timeout_s
        for topic in sorted(self._regions):
            while not consumer.partitions_for_topic(topic):
                if time.monotonic() > deadline:
                    raise ProjectorError(f"topic {topic} has no partitions after {timeout_s}s")
                time.sleep(0.1)

    def _poll_ms(self, oldest_pending: float | None, writer: _BatchWriter) -> int:
        """How long a poll may wait for records: until the pending batch is due, a short
        while when a flush is being written (its offsets are committed after it; not
        while it only waits for its rows, which would spin the loop), else
        `IDLE_POLL_MS` (records end the wait at once: an idle projector sleeps, a busy
        one loses nothing)."""
        if oldest_pending is not None:
            age_ms = 1000 * (time.monotonic() - oldest_pending)
            return max(0, min(IDLE_POLL_MS, int(self.settings.batch_max_ms - age_ms)))
        return BUSY_POLL_MS if writer.writing else IDLE_POLL_MS

    def _due(self, oldest_pending: float, writer: _BatchWriter) -> bool:
        """A batch is due at `batch_max_rows`, or at `batch_max_ms` of age, once the writer
        has room (until then it grows: fewer, larger inserts; a full one pauses fetching)."""
        if not writer.has_room:
            return False
        rows = sum(a.pending_rows for a in self._assemblers.values())
        if rows >= self.settings.batch_max_rows:
            return True
        age_ms = 1000 * (time.monotonic() - oldest_pending)
        return age_ms >= self.settings.batch_max_ms

    def _pace(self, consumer: KafkaConsumer, writer: _BatchWriter) -> None:
        """Never block the loop on the writer: while a full batch waits for it (ClickHouse
        down, retried for minutes) fetching is paused and the loop keeps polling, so the
        member stays in the group (a loop blocked past `max_poll_interval_ms` is dropped
        from it, and rejoins into a rebalance, again and again); resumed once it has room."""
        paused = consumer.paused()
        rows = sum(a.pending_rows for a in self._assemblers.values())
        if rows >= self.settings.batch_max_rows and not writer.has_room:
            fetching = consumer.assignment() - paused
            if fetching:
                consumer.pause(*fetching)
                if not paused:
                    log.warning("projector.paused", pending_rows=rows)
        elif paused:
            consumer.resume(*paused)
            log.info("projector.resumed")

    def _sync_assignment(
        self, consumer: KafkaConsumer, writer: _BatchWriter, deadletter: DeadLetter
    ) -> None:
        """Follow rebalances, on this thread, between polls: drop the state of partitions
        we lost (their new owner restarts from the committed boundary), start fresh ones
        from the region's stored watermark, keep the rest (kafka-python keeps their fetch
        position too). Not a rebalance listener: kafka-python 3 calls those on its network
        thread, racing this loop's use of the same state. What the writer holds is
        written first, and committed for the partitions we keep; the sink is then idle
        while the watermarks are read."""
        assigned = set(consumer.assignment())
        if assigned == set(self._assemblers):
            return
        written = writer.written(wait=True)
        for tp in set(self._assemblers) - assigned:
            self._assemblers.pop(tp).close()
        self._commit(consumer, deadletter, written)
        new = assigned - set(self._assemblers)
        if new:
            watermarks = self.sink.load_watermarks(sorted({self._regions[tp.topic] for tp in new}))
            for tp in new:
                region = self._regions[tp.topic]
                self._assemblers[tp] = RegionAssembler(
                    region,
                    watermarks.get(region),
                    max_rows_in_memory=self.settings.max_transaction_rows_in_memory,
                    spill_dir=self.settings.state_path / "spill",
                )
        metrics.ASSIGNED.set(len(self._assemblers))
        log.info(
            "projector.assignment", regions=sorted(a.region for a in self._assemblers.values())
        )

    def _feed(self, assembler: RegionAssembler, records: list[Any], deadletter: DeadLetter) -> None:
        region = assembler.region
        add = assembler.add
        kinds: Counter[type] = Counter()
        skew_ms = self.settings.wal_mark_max_skew_ms
        for rec in records:
            try:
                event: Event = decode(
                    region, rec.topic, rec.partition, rec.offset, rec.key, rec.value, skew_ms
                )
            except DecodeError as exc:
                deadletter.send(region, rec, exc.reason, exc.detail)
                assembler.add_dead_letter(rec.offset, *_key_of(rec.key))
                continue
            kinds[type(event)] += 1
            try:
                add(rec.offset, event)
            except AssemblyProblem as exc:
                deadletter.send(region, rec, exc.reason, str(exc))
                assembler.add_dead_letter(rec.offset, *_key_of(rec.key))
        for kind, n in kinds.items():  # once per poll, not per event: it is the hot loop
            metrics.EVENTS.labels(region, _KINDS.get(kind, "other")).inc(n)
        if assembler.abandoned:  # before the commit past them, as every dead letter
            tp = TopicPartition(records[0].topic, records[0].partition)
            for tx in assembler.abandoned:
                detail = f"tx {tx.tx_id}: its END (offset {tx.stop_offset}) was dead-lettered"
                for rec in self._records(tp, tx.first_offset, tx.stop_offset):
                    if rec.offset not in tx.dead_lettered:
                        deadletter.send(region, rec, "transaction_without_end", detail)
            assembler.abandoned.clear()

    def _records(self, tp: TopicPartition, start: int, stop: int) -> Iterator[Any]:
        """The records of `tp` in [start, stop), read again by a consumer of no group
        (rare: an abandoned transaction, whose records came in earlier polls too)."""
        reader = KafkaConsumer(
            **self.settings.kafka_client_config(),
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        try:
            reader.assign([tp])
            reader.seek(tp, start)
            deadline = time.monotonic() + 60
            while reader.position(tp) < stop:
                if time.monotonic() > deadline:
                    raise ProjectorError(f"{tp.topic}[{tp.partition}]@{start}..{stop} unreadable")
                for rec in reader.poll(timeout_ms=500).get(tp, []):
                    if rec.offset >= stop:
                        return
                    yield rec
        finally:
            reader.close()

    def _hand_over(self, writer: _BatchWriter) -> None:
        """Take every region's ready transactions and give them to the writer, with the
        offsets to commit after (everything goes through it: a commit never overtakes a
        write of the same partition)."""
        flush = _Flush([], {})
        for tp, assembler in self._assemblers.items():
            batch = assembler.take()
            if batch.is_empty:
                continue
            if batch.transactions or batch.watermark is not None:
                flush.batches.append(batch)
            if batch.commit_offset is not None:
                flush.offsets[tp] = OffsetAndMetadata(batch.commit_offset, "", -1)
        if flush.batches or flush.offsets:
            writer.hand_over(flush)

    def _commit(
        self, consumer: KafkaConsumer, deadletter: DeadLetter, written: list[_Flush]
    ) -> None:
        """Commit the offsets of written flushes (of partitions still ours), after the
        dead letters before them are durable."""
        if not written:
            return
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for flush in written:  # oldest first: a later offset replaces an earlier one
            offsets.update(flush.offsets)
        offsets = {tp: o for tp, o in offsets.items() if tp in self._assemblers}
        deadletter.flush()
        if offsets:
            try:
                consumer.commit(offsets)
            except (CommitFailedError, RebalanceInProgressError) as exc:
                # The group moved partitions under us: the writes were idempotent, the
                # new owner resumes from the last committed boundary.
                metrics.COMMIT_FAILURES.inc()
                log.warning("projector.commit_refused", error=str(exc))
        now = time.monotonic()
        for flush in written:
            if flush.batches:
                metrics.FLUSH_SECONDS.observe(now - flush.started)

    def flush(self, consumer: KafkaConsumer, deadletter: DeadLetter, writer: _BatchWriter) -> None:
        """Write every region's ready transactions, then commit their offsets (waits)."""
        self._hand_over(writer)
        self._commit(consumer, deadletter, writer.written(wait=True))

    def _rows_later(self) -> _Rows | None:
        """How the writer thread writes rows after their figures; None when the sink
        cannot or `rows_max_ms` is 0 (each flush writes everything)."""
        sink = self.sink
        if self.settings.rows_max_ms <= 0 or not isinstance(sink, RowsLaterSink):
            return None
        return _SinkRows(sink, self.settings.rows_max_ms / 1000, self._retried)

    def _write(self, batches: list[Batch]) -> None:
        """Write a flush's batches with backoff on transient errors (on the writer's
        thread); offsets stay uncommitted meanwhile. The regions go together, one insert
        per table, their rows possibly later (`rows_max_ms`); a batch with a spilled
        transaction is written whole on its own first, in several writes
        (`Batch.parts`), each chunk read back once the one before is in."""
        later = self.settings.rows_max_ms > 0 and isinstance(self.sink, RowsLaterSink)
        try:
            with metrics.WRITE_SECONDS.time():
                together: list[RegionWrite] = []
                for batch in batches:
                    if batch.spilled:
                        for transactions, watermark in batch.parts():
                            part = RegionWrite(batch.region, transactions, watermark)
                            self._write_parts([part])
                    else:
                        together += (RegionWrite(batch.region, *p) for p in batch.parts())
                if together:
                    self._write_parts(together, later)
        finally:
            for batch in batches:
                batch.release()
        for batch in batches:
            _observe(batch)

    def _write_parts(self, writes: list[RegionWrite], rows_later: bool = False) -> None:
        sink = self.sink
        if rows_later and isinstance(sink, RowsLaterSink):
            self._retried(lambda: sink.write_all(writes, rows_later=True), writes)
        else:
            self._retried(lambda: sink.write_all(writes), writes)

    def _retried(self, write: Callable[[], object], what: Sequence[RegionWrite] | str) -> None:
        """`write()` until it succeeds, backing off on transient errors (offsets stay
        uncommitted meanwhile); given up when the projector stops."""
        delay_ms = self.settings.write_retry_initial_ms
        while True:
            try:
                write()
                return
            except TransientError as exc:
                if self.stop.is_set() or self._closing.is_set():
                    raise
                metrics.WRITE_RETRIES.inc()
                regions = what if isinstance(what, str) else [w.region for w in what]
                log.warning(
                    "projector.write.retry", regions=regions, error=str(exc), delay_ms=delay_ms
                )
                self._closing.wait(delay_ms / 1000)
                delay_ms = min(2 * delay_ms, self.settings.write_retry_max_ms)


def _observe(batch: Batch) -> None:
    region = batch.region
    rows = batch.row_count
    metrics.ROWS_WRITTEN.labels(region).inc(rows)
    snap = sum(
        len(t.changes) for t in batch.transactions if isinstance(t, Transaction) and t.tx_id is None
    )
    if snap:
        metrics.SNAPSHOT_ROWS.labels(region).inc(snap)
    metrics.TRANSACTIONS.labels(region).inc(sum(1 for t in batch.transactions if t.tx_id))
    if batch.watermark is not None:
        wm = batch.watermark
        metrics.WATERMARK_LSN.labels(region).set(wm.commit_lsn)
        metrics.WATERMARK_COMMIT_TS.labels(region).set(wm.commit_ts_ms / 1000)
        if wm.heartbeat_ts_ms is not None:
            metrics.HEARTBEAT_TS.labels(region).set(wm.heartbeat_ts_ms / 1000)


def _key_of(key: bytes | None) -> tuple[str | None, int | None]:
    """What a record's key names, from the router's field: the source table of a change
    ('wms.<r>.public.<table>'), so a dead-lettered change still counts against its
    transaction's END; or the transaction of a BEGIN/END ('wms.<r>.transaction', id
    '<txId>:<lsn>'), so a dead-lettered END is known for its transaction's."""
    if not key:
        return None, None
    try:
        k = orjson.loads(key)
        parts = str(k.get(ROUTER_FIELD, "")).split(".")
        if len(parts) >= 4 and parts[-2] == "public":
            return parts[-1], None
        if len(parts) >= 3 and parts[-1] == "transaction":
            tx, sep, _lsn = str(k.get("id", "")).partition(":")
            return None, int(tx) if sep else None
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        pass
    return None, None


__all__ = ["DeadLetter", "Projector", "Sink"]
