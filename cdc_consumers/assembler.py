"""Turns one region's ordered events into whole transactions (DESIGN decision 4).

A region's topic carries, in commit order, BEGIN, the transaction's row changes, END,
and between transactions Debezium's heartbeats (liveness only) and WAL marks (the region
is complete up to their time). The assembler buffers a transaction until its END,
then hands it over whole (a large one from disk: cdc_consumers/spill.py); it also knows
the offset that is safe to commit: the one just past the last record that is either
written with the next flush or carries nothing (a committed offset never falls inside a
transaction, so a restart always begins at a transaction boundary).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path

import structlog

from cdc_consumers.spill import SpilledTransaction, SpillFile
from schemas.events import (
    Event,
    Heartbeat,
    IncompleteTransactionError,
    RowChange,
    Snapshot,
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


class AssemblyProblem(Exception):
    """A record that fits no transaction: dead-letter it with `reason` and go on."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Batch:
    """What one flush of a region writes, and the offset to commit once it is written."""

    region: str
    transactions: list[Transaction | SpilledTransaction]
    watermark: Watermark | None  # None: unchanged since the last flush
    commit_offset: int | None  # next offset to consume after a restart; None: nothing new

    @property
    def row_count(self) -> int:
        return sum(_row_count(t) for t in self.transactions)

    @property
    def spilled(self) -> bool:
        """Whether a transaction of it waits on disk (it takes several writes)."""
        return any(isinstance(tx, SpilledTransaction) for tx in self.transactions)

    def parts(self) -> Iterator[tuple[list[Transaction], Watermark | None]]:
        """The sink writes of this batch, in order: its transactions together, except a
        spilled one, chunk by chunk (each read back once the one before is written); the
        watermark comes with the last write only, so no part of a spilled transaction is
        visible before all of it is."""
        part: list[Transaction] = []
        for tx in self.transactions:
            if isinstance(tx, Transaction):
                part.append(tx)
                continue
            if part:
                yield part, None
            part = []
            for n, chunk in enumerate(tx.chunks(), 1):
                if n < tx.chunk_count:
                    yield [chunk], None
                else:  # the last one goes with what follows it in the batch
                    part = [chunk]
        if part or self.watermark is not None:
            yield part, self.watermark

    def release(self) -> None:
        """Free the spill files once written (or abandoned: a restart re-reads them)."""
        for tx in self.transactions:
            if isinstance(tx, SpilledTransaction):
                tx.close()

    @property
    def is_empty(self) -> bool:
        return not self.transactions and self.watermark is None and self.commit_offset is None


@dataclass(frozen=True)
class AbandonedTx:
    """A transaction whose END was dead-lettered: its records in [`first_offset`,
    `stop_offset`) go to the dead-letter topic too, except `dead_lettered` (already there)."""

    tx_id: int
    first_offset: int
    stop_offset: int
    dead_lettered: frozenset[int]


@dataclass
class _OpenTx:
    begin: TxBegin
    offset: int  # of the BEGIN
    changes: list[RowChange | Truncate] = field(default_factory=list)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    dead_offsets: set[int] = field(default_factory=set)
    maybe_ended: bool = False  # a dead-lettered record of unknown kind may be its END
    spill: SpillFile | None = None  # the changes before `changes`, once too many
    spilled: Counter[str] = field(default_factory=Counter)  # per table, in `spill`

    @property
    def row_count(self) -> int:
        return len(self.changes) + (self.spill.rows if self.spill else 0)


_TABLE = attrgetter("table")
_MAX_ROWS_IN_MEMORY: int = Settings.model_fields["max_transaction_rows_in_memory"].default


def _row_count(tx: Transaction | SpilledTransaction) -> int:
    return len(tx.changes) if isinstance(tx, Transaction) else tx.row_count


class RegionAssembler:
    """Per region (one topic partition): assemble, track the watermark and safe offset.

    An open transaction keeps at most `max_rows_in_memory` changes in memory; the rest
    go to a spill file under `spill_dir` (None: the system's temporary directory)."""

    def __init__(
        self,
        region: str,
        watermark: Watermark | None = None,
        *,
        max_rows_in_memory: int = _MAX_ROWS_IN_MEMORY,
        spill_dir: Path | None = None,
    ) -> None:
        if max_rows_in_memory < 1:
            raise ValueError(f"max_rows_in_memory must be positive, not {max_rows_in_memory}")
        self.region = region
        self.max_rows_in_memory = max_rows_in_memory
        self.spill_dir = spill_dir
        self._watermark = watermark or Watermark(region, 0, 0, None)
        self._published = self._watermark
        self._open: _OpenTx | None = None
        self._ready: list[Transaction | SpilledTransaction] = []
        self._snapshot: list[RowChange] = []
        self._in_snapshot = False
        self._snapshot_lsn = 0  # all rows of one snapshot share its LSN
        self._snapshot_ts_ms = 0
        self._snapshot_done = False  # completed since the last take(): sweep it
        self._safe_offset: int | None = None
        self._committed_offset: int | None = None
        self.discarded_partial_transactions = 0
        self.abandoned: list[AbandonedTx] = []  # the caller dead-letters and clears them

    @property
    def watermark(self) -> Watermark:
        return self._watermark

    @property
    def pending_rows(self) -> int:
        """Changes held in memory (ready, snapshot and the open transaction; not those
        spilled to disk)."""
        open_rows = len(self._open.changes) if self._open else 0
        ready = sum(len(t.changes) for t in self._ready if isinstance(t, Transaction))
        return ready + len(self._snapshot) + open_rows

    def describe(self) -> dict[str, object]:
        """Where this region stands, for operators and failing tests."""
        return {
            "region": self.region,
            "watermark_lsn": self._watermark.commit_lsn,
            "open_tx": self._open.begin.tx_id if self._open else None,
            "open_tx_changes": self._open.row_count if self._open else 0,
            "open_tx_spilled": self._open.spill.rows if self._open and self._open.spill else 0,
            "pending_rows": self.pending_rows,
            "in_snapshot": self._in_snapshot,
            "safe_offset": self._safe_offset,
            "committed_offset": self._committed_offset,
        }

    @property
    def has_work(self) -> bool:
        return (
            bool(self._ready or self._snapshot or self._snapshot_done)
            or self._watermark != self._published
            or (self._safe_offset != self._committed_offset)
        )

    def add(self, offset: int, event: Event) -> None:
        """Feed the next record of the partition (offsets strictly increasing).

        Raises `AssemblyProblem` for a record that fits no transaction; the caller
        dead-letters that record and reports it with `add_dead_letter`."""
        if isinstance(event, RowChange) and event.snapshot is not Snapshot.NO:  # is_snapshot
            self._add_snapshot_row(event)
        else:
            if self._in_snapshot:
                self._end_snapshot()  # the first streamed record closes the snapshot
            if isinstance(event, TxBegin):
                self._begin(offset, event)
            elif isinstance(event, TxEnd):
                self._end(event)
            elif isinstance(event, RowChange | Truncate):
                self._change(event)
            elif isinstance(event, WalMark):
                self._wal_mark(event)
            elif not isinstance(event, Heartbeat | Tombstone):  # these carry no change
                raise AssertionError(f"unhandled event {event!r}")
        if self._open is None:
            # Inside a snapshot the offset stays on its latest row: a restart re-reads that
            # row, so the new assembler knows a snapshot is open and completes it (that the
            # snapshot is unfinished lives only in memory, and its LAST may be dead-lettered).
            self._safe_offset = offset if self._in_snapshot else offset + 1

    def add_dead_letter(self, offset: int, table: str | None, tx_id: int | None = None) -> None:
        """A record of this partition went to the dead-letter topic instead of `add`;
        `table` or `tx_id` say what its key names (a change of that table, a BEGIN or END
        of that transaction). Inside a transaction it is counted so the END's per-table
        counts still add up; a BEGIN/END of the open transaction is taken for its END."""
        open_tx = self._open
        if open_tx is not None:
            open_tx.dead_offsets.add(offset)
            if table is not None:
                open_tx.dead_lettered[table] += 1
            elif tx_id == open_tx.begin.tx_id:
                self._abandon(offset)
            elif tx_id is None:
                open_tx.maybe_ended = True
        if self._open is None and not self._in_snapshot:  # see `add`
            self._safe_offset = offset + 1

    def close(self) -> None:
        """Free the spill files of what was not handed over (the partition is revoked or
        the projector stops: a restart re-reads it from the committed offset)."""
        if self._open is not None and self._open.spill is not None:
            self._open.spill.close()
        for tx in self._ready:
            if isinstance(tx, SpilledTransaction):
                tx.close()

    def take(self) -> Batch:
        """Hand over what is ready; the caller writes it, then commits `commit_offset`."""
        txs = self._ready
        if self._snapshot or self._snapshot_done:
            snap = (
                Transaction.from_snapshot(self._snapshot)
                if self._snapshot
                else Transaction(self.region, None, self._snapshot_lsn, self._snapshot_ts_ms, ())
            )
            if self._snapshot_done:
                snap = replace(snap, completes_snapshot=True)
            txs.insert(0, snap)  # snapshot reads precede what streamed after them
            self._snapshot, self._snapshot_done = [], False
        self._ready = []
        watermark = self._watermark if self._watermark != self._published else None
        self._published = self._watermark
        offset = self._safe_offset if self._safe_offset != self._committed_offset else None
        self._committed_offset = self._safe_offset
        return Batch(self.region, txs, watermark, offset)

    # --- record kinds -------------------------------------------------------------

    def _begin(self, offset: int, begin: TxBegin) -> None:
        if self._open is not None:
            if self._open.maybe_ended and self._open.begin.tx_id != begin.tx_id:
                self._abandon(offset)  # its END was likely the record dead-lettered
            else:
                # Debezium re-sends a transaction from its BEGIN after a connector restart;
                # the cut-off copy is dropped, the full one follows.
                self.discarded_partial_transactions += 1
                log.warning(
                    "assembler.partial_transaction_dropped",
                    region=self.region,
                    tx_id=self._open.begin.tx_id,
                    changes=self._open.row_count,
                )
                if self._open.spill is not None:
                    self._open.spill.close()
        self._open = _OpenTx(begin, offset)

    def _abandon(self, stop_offset: int) -> None:
        """The open transaction's END was dead-lettered: nothing says the transaction is
        whole, nor gives its commit LSN (the version of its rows and the watermark), so
        it is not applied (decision 4: whole or not at all); its records are handed to
        the caller to dead-letter (decision 7: reported, nothing lost)."""
        open_tx, self._open = self._open, None
        assert open_tx is not None
        if open_tx.spill is not None:
            open_tx.spill.close()  # the caller re-reads the records from the topic
        self.abandoned.append(
            AbandonedTx(
                open_tx.begin.tx_id, open_tx.offset, stop_offset, frozenset(open_tx.dead_offsets)
            )
        )
        log.error(
            "assembler.transaction_without_end",
            region=self.region,
            tx_id=open_tx.begin.tx_id,
            changes=open_tx.row_count,
            offsets=f"{open_tx.offset}..{stop_offset - 1}",
        )

    def _change(self, change: RowChange | Truncate) -> None:
        if self._open is None or change.tx_id != self._open.begin.tx_id:
            raise AssemblyProblem(
                "change_outside_transaction",
                f"{self.region}: {change.table} change of tx {change.tx_id} with "
                f"{'no open transaction' if self._open is None else 'another one open'}",
            )
        changes = self._open.changes
        changes.append(change)
        if len(changes) >= self.max_rows_in_memory:
            self._spill(self._open)

    def _spill(self, open_tx: _OpenTx) -> None:
        """Move the open transaction's buffered changes to its spill file."""
        if open_tx.spill is None:
            open_tx.spill = SpillFile(self.max_rows_in_memory, self.spill_dir)
            log.info(
                "assembler.transaction_spilled",
                region=self.region,
                tx_id=open_tx.begin.tx_id,
                max_rows_in_memory=self.max_rows_in_memory,
            )
        open_tx.spill.append(open_tx.changes)
        open_tx.spilled.update(map(_TABLE, open_tx.changes))
        open_tx.changes = []

    def _end(self, end: TxEnd) -> None:
        open_tx, self._open = self._open, None
        if open_tx is None or open_tx.begin.tx_id != end.tx_id:
            if open_tx is not None and open_tx.spill is not None:
                open_tx.spill.close()
            if end.commit_lsn <= self._watermark.commit_lsn:
                return  # the tail of a transaction applied before a restart: nothing to do
            raise AssemblyProblem(
                "end_without_begin", f"{self.region}: END of tx {end.tx_id} without its BEGIN"
            )
        # Spilled changes count like dead-lettered ones: they are not in `changes`.
        counted = open_tx.dead_lettered + open_tx.spilled
        try:
            tx = Transaction.from_end(end, open_tx.changes, counted)
        except IncompleteTransactionError as exc:
            # Apply what arrived (nothing is dropped) and report the mismatch loudly.
            self._ready.append(
                self._whole(
                    open_tx,
                    Transaction(
                        self.region, end.tx_id, end.commit_lsn, end.ts_ms, tuple(open_tx.changes)
                    ),
                )
            )
            self._advance(end.commit_lsn, end.ts_ms)
            raise AssemblyProblem("incomplete_transaction", str(exc)) from exc
        self._ready.append(self._whole(open_tx, tx))
        self._advance(end.commit_lsn, end.ts_ms)

    @staticmethod
    def _whole(open_tx: _OpenTx, tx: Transaction) -> Transaction | SpilledTransaction:
        """`tx` (its changes: those still in memory), with the spilled ones before."""
        return tx if open_tx.spill is None else SpilledTransaction.of(tx, open_tx.spill)

    def _wal_mark(self, mark: WalMark) -> None:
        # Everything that committed before the mark came before it: complete up to its time.
        wm = self._watermark
        if wm.heartbeat_ts_ms is None or mark.ts_ms > wm.heartbeat_ts_ms:
            self._watermark = Watermark(wm.region, wm.commit_lsn, wm.commit_ts_ms, mark.ts_ms)

    def _add_snapshot_row(self, row: RowChange) -> None:
        if self._open is not None:
            raise AssemblyProblem(
                "snapshot_inside_transaction",
                f"{self.region}: snapshot read inside tx {self._open.begin}",
            )
        self._in_snapshot = True
        self._snapshot.append(row)
        # The hot path of an initial load: plain comparisons, no max() or properties.
        if row.lsn > self._snapshot_lsn:
            self._snapshot_lsn = row.lsn
        if row.commit_ts_ms > self._snapshot_ts_ms:
            self._snapshot_ts_ms = row.commit_ts_ms
        if row.snapshot is Snapshot.LAST:  # is_last_of_snapshot
            self._end_snapshot()

    def _end_snapshot(self) -> None:
        """Snapshot rows become visible together, when the snapshot is complete."""
        self._in_snapshot = False
        self._snapshot_done = True
        self._advance(self._snapshot_lsn, self._snapshot_ts_ms)

    def _advance(self, commit_lsn: int, commit_ts_ms: int) -> None:
        """Watermarks only move forward: a replayed old transaction leaves it alone."""
        wm = self._watermark
        if commit_lsn > wm.commit_lsn:
            self._watermark = Watermark(wm.region, commit_lsn, commit_ts_ms, wm.heartbeat_ts_ms)
