"""Turns one region's ordered events into whole transactions (DESIGN decision 4).

A region's topic carries, in commit order, BEGIN, the transaction's row changes, END,
and between transactions Debezium's heartbeats (liveness only) and WAL marks (the region
is complete up to their time). The assembler buffers a transaction until its END,
then hands it over whole; it also knows the offset that is safe to commit: the one just
past the last record that is either written with the next flush or carries nothing (a
committed offset never falls inside a transaction, so a restart always begins at a
transaction boundary).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import structlog

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
    transactions: list[Transaction]
    watermark: Watermark | None  # None: unchanged since the last flush
    commit_offset: int | None  # next offset to consume after a restart; None: nothing new

    @property
    def row_count(self) -> int:
        return sum(len(t.changes) for t in self.transactions)

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


class RegionAssembler:
    """Per region (one topic partition): assemble, track the watermark and safe offset."""

    def __init__(self, region: str, watermark: Watermark | None = None) -> None:
        self.region = region
        self._watermark = watermark or Watermark(region, 0, 0, None)
        self._published = self._watermark
        self._open: _OpenTx | None = None
        self._ready: list[Transaction] = []
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
        """Changes held in memory (ready, snapshot and the open transaction)."""
        open_rows = len(self._open.changes) if self._open else 0
        return sum(len(t.changes) for t in self._ready) + len(self._snapshot) + open_rows

    def describe(self) -> dict[str, object]:
        """Where this region stands, for operators and failing tests."""
        return {
            "region": self.region,
            "watermark_lsn": self._watermark.commit_lsn,
            "open_tx": self._open.begin.tx_id if self._open else None,
            "open_tx_changes": len(self._open.changes) if self._open else 0,
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
                    changes=len(self._open.changes),
                )
        self._open = _OpenTx(begin, offset)

    def _abandon(self, stop_offset: int) -> None:
        """The open transaction's END was dead-lettered: nothing says the transaction is
        whole, nor gives its commit LSN (the version of its rows and the watermark), so
        it is not applied (decision 4: whole or not at all); its records are handed to
        the caller to dead-letter (decision 7: reported, nothing lost)."""
        open_tx, self._open = self._open, None
        assert open_tx is not None
        self.abandoned.append(
            AbandonedTx(
                open_tx.begin.tx_id, open_tx.offset, stop_offset, frozenset(open_tx.dead_offsets)
            )
        )
        log.error(
            "assembler.transaction_without_end",
            region=self.region,
            tx_id=open_tx.begin.tx_id,
            changes=len(open_tx.changes),
            offsets=f"{open_tx.offset}..{stop_offset - 1}",
        )

    def _change(self, change: RowChange | Truncate) -> None:
        if self._open is None or change.tx_id != self._open.begin.tx_id:
            raise AssemblyProblem(
                "change_outside_transaction",
                f"{self.region}: {change.table} change of tx {change.tx_id} with "
                f"{'no open transaction' if self._open is None else 'another one open'}",
            )
        self._open.changes.append(change)

    def _end(self, end: TxEnd) -> None:
        open_tx, self._open = self._open, None
        if open_tx is None or open_tx.begin.tx_id != end.tx_id:
            if end.commit_lsn <= self._watermark.commit_lsn:
                return  # the tail of a transaction applied before a restart: nothing to do
            raise AssemblyProblem(
                "end_without_begin", f"{self.region}: END of tx {end.tx_id} without its BEGIN"
            )
        try:
            tx = Transaction.from_end(end, open_tx.changes, open_tx.dead_lettered)
        except IncompleteTransactionError as exc:
            # Apply what arrived (nothing is dropped) and report the mismatch loudly.
            self._ready.append(
                Transaction(
                    self.region, end.tx_id, end.commit_lsn, end.ts_ms, tuple(open_tx.changes)
                )
            )
            self._advance(end.commit_lsn, end.ts_ms)
            raise AssemblyProblem("incomplete_transaction", str(exc)) from exc
        self._ready.append(tx)
        self._advance(end.commit_lsn, end.ts_ms)

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
