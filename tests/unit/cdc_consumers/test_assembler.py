"""The assembler hands over whole transactions and only ever commits boundaries."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cdc_consumers.assembler import AssemblyProblem, Batch, RegionAssembler
from schemas.events import (
    Event,
    Heartbeat,
    Op,
    RowChange,
    Snapshot,
    Tombstone,
    Transaction,
    TxBegin,
    TxEnd,
    WalMark,
)

R = "us-west"


def change(
    tx: int | None, lsn: int, id_: int = 1, snapshot: Snapshot = Snapshot.NO, table: str = "owner"
) -> RowChange:
    op = Op.READ if snapshot is not Snapshot.NO else Op.UPDATE
    return RowChange(R, table, op, (id_,), None, lsn, tx, 1000 + lsn, snapshot)


def feed(a: RegionAssembler, events: Sequence[Event], start: int = 0) -> None:
    for offset, event in enumerate(events, start):
        a.add(offset, event)


def in_memory(batch: Batch) -> list[Transaction]:
    """The batch's transactions, all held in memory (none spilled to disk)."""
    txs = [t for t in batch.transactions if isinstance(t, Transaction)]
    assert len(txs) == len(batch.transactions), "a transaction was spilled"
    return txs


def end(tx: int, commit_lsn: int, counts: dict[str, int]) -> TxEnd:
    return TxEnd(R, tx, commit_lsn, sum(counts.values()), counts, 5000 + commit_lsn)


def test_a_transaction_is_handed_over_only_after_its_end() -> None:
    a = RegionAssembler(R)
    a.add(0, TxBegin(R, 7, 100, 0))
    a.add(1, change(7, 100, 1))
    a.add(2, change(7, 110, 2))
    batch = a.take()
    assert batch.transactions == []
    assert batch.commit_offset is None  # nothing safe yet: offset 0 is inside the tx
    assert batch.watermark is None
    a.add(3, Tombstone(R, "owner", (2,)))
    a.add(4, end(7, 130, {"owner": 2}))
    batch = a.take()
    assert [t.commit_lsn for t in batch.transactions] == [130]
    assert [c.lsn for c in in_memory(batch)[0].changes] == [100, 110]
    assert batch.commit_offset == 5
    assert batch.watermark is not None
    assert batch.watermark.commit_lsn == 130


def test_commit_offset_never_falls_inside_an_open_transaction() -> None:
    a = RegionAssembler(R)
    a.add(0, TxBegin(R, 1, 10, 0))
    a.add(1, change(1, 10))
    a.add(2, end(1, 20, {"owner": 1}))
    a.add(3, TxBegin(R, 2, 30, 0))
    a.add(4, change(2, 30))
    batch = a.take()
    assert batch.commit_offset == 3  # restart re-reads tx 2 from its BEGIN
    assert len(batch.transactions) == 1


def test_interleaved_change_lsns_still_give_a_monotonic_watermark() -> None:
    a = RegionAssembler(R)
    # tx 2 committed first although tx 1 wrote earlier in the WAL.
    feed(
        a,
        [
            TxBegin(R, 2, 110, 0),
            change(2, 110),
            end(2, 120, {"owner": 1}),
            TxBegin(R, 1, 100, 0),
            change(1, 100),
            end(1, 130, {"owner": 1}),
        ],
    )
    batch = a.take()
    assert [t.commit_lsn for t in batch.transactions] == [120, 130]
    assert batch.watermark is not None
    assert batch.watermark.commit_lsn == 130


def test_a_wal_mark_advances_freshness_and_offset_when_idle() -> None:
    a = RegionAssembler(R)
    a.add(0, WalMark(R, 900, 999))
    batch = a.take()
    assert batch.watermark is not None
    assert batch.watermark.heartbeat_ts_ms == 999
    assert batch.commit_offset == 1
    assert a.take().is_empty
    a.add(1, WalMark(R, 950, 998))  # an older clock reading never moves it back
    assert a.take().watermark is None


def test_a_debezium_heartbeat_moves_the_offset_but_not_freshness() -> None:
    """Debezium sends its heartbeat whenever its socket is empty, possibly before the
    WAL sender has sent a transaction that committed earlier: as a freshness claim it
    could let `min_as_of` answer without that transaction."""
    a = RegionAssembler(R)
    a.add(0, Heartbeat(R, 999))
    batch = a.take()
    assert batch.watermark is None
    assert a.watermark.heartbeat_ts_ms is None
    assert batch.commit_offset == 1


def test_replayed_old_transaction_is_reapplied_but_watermark_stays() -> None:
    a = RegionAssembler(R)
    feed(a, [TxBegin(R, 1, 10, 0), change(1, 10), end(1, 50, {"owner": 1})])
    a.take()
    feed(a, [TxBegin(R, 0, 5, 0), change(0, 5), end(0, 40, {"owner": 1})], 3)
    batch = a.take()
    assert len(batch.transactions) == 1  # idempotent writes make this harmless
    assert batch.watermark is None
    assert a.watermark.commit_lsn == 50


def test_a_cut_off_transaction_resent_from_begin_is_dropped_for_the_full_copy() -> None:
    a = RegionAssembler(R)
    feed(
        a,
        [
            TxBegin(R, 3, 10, 0),
            change(3, 10, 1),
            TxBegin(R, 3, 10, 0),
            change(3, 10, 1),
            change(3, 11, 2),
            end(3, 12, {"owner": 2}),
        ],
    )
    batch = a.take()
    assert [len(t.changes) for t in in_memory(batch)] == [2]
    assert a.discarded_partial_transactions == 1


def test_dead_lettered_events_are_counted_so_the_end_still_adds_up() -> None:
    a = RegionAssembler(R)
    a.add(0, TxBegin(R, 4, 10, 0))
    a.add(1, change(4, 10, 1))
    a.add_dead_letter(2, "owner")
    a.add(3, end(4, 20, {"owner": 2}))
    batch = a.take()
    assert [len(t.changes) for t in in_memory(batch)] == [1]
    assert batch.commit_offset == 4


def test_a_transaction_missing_events_is_applied_and_reported() -> None:
    a = RegionAssembler(R)
    a.add(0, TxBegin(R, 5, 10, 0))
    a.add(1, change(5, 10))
    with pytest.raises(AssemblyProblem) as info:
        a.add(2, end(5, 20, {"owner": 2}))
    assert info.value.reason == "incomplete_transaction"
    a.add_dead_letter(2, None)  # the caller dead-letters the END, as for any problem
    batch = a.take()
    assert [len(t.changes) for t in in_memory(batch)] == [1]
    assert batch.commit_offset == 3


def test_change_without_begin_is_a_problem_not_a_silent_skip() -> None:
    a = RegionAssembler(R)
    with pytest.raises(AssemblyProblem) as info:
        a.add(0, change(9, 10))
    assert info.value.reason == "change_outside_transaction"


def test_snapshot_rows_become_visible_together_when_the_snapshot_ends() -> None:
    a = RegionAssembler(R)
    a.add(0, change(None, 500, 1, Snapshot.FIRST))
    a.add(1, change(None, 500, 2, Snapshot.YES))
    batch = a.take()
    assert batch.row_count == 2
    assert batch.commit_offset == 1  # a restart re-reads the latest row: still in snapshot
    assert batch.watermark is None  # written, still invisible
    a.add(2, change(None, 500, 3, Snapshot.LAST))
    batch = a.take()
    assert batch.row_count == 1
    assert batch.watermark is not None
    assert batch.watermark.commit_lsn == 500
    # Only the batch that ends the snapshot asks the writer to sweep what it did not read.
    assert [t.completes_snapshot for t in in_memory(batch)] == [True]
    assert not a.take().transactions


def test_a_streamed_record_closes_a_snapshot_without_last_marker() -> None:
    a = RegionAssembler(R)
    a.add(0, change(None, 500, 1, Snapshot.FIRST))
    assert [t.completes_snapshot for t in in_memory(a.take())] == [False]
    a.add(1, Heartbeat(R, 7))
    batch = a.take()
    assert batch.watermark is not None
    assert batch.watermark.commit_lsn == 500
    # The rows were written already: an empty unit of work completes the snapshot.
    assert [(t.completes_snapshot, t.commit_lsn, len(t.changes)) for t in in_memory(batch)] == [
        (True, 500, 0)
    ]


def restart(records: Sequence[Event | None], commit_offset: int | None) -> RegionAssembler:
    """A new assembler fed `records` from `commit_offset` on (None: dead-lettered)."""
    a = RegionAssembler(R)
    for offset in range(commit_offset or 0, len(records)):
        event = records[offset]
        if event is None:
            a.add_dead_letter(offset, None)
        else:
            a.add(offset, event)
    return a


def test_a_snapshot_whose_last_record_is_dead_lettered_completes_after_a_restart() -> None:
    records: list[Event | None] = [
        change(None, 500, 1, Snapshot.FIRST),
        change(None, 500, 2, Snapshot.YES),
        None,  # the snapshot's LAST, undecodable: dead-lettered
    ]
    a = restart(records, 0)
    batch = a.take()
    assert [t.completes_snapshot for t in in_memory(batch)] == [False]
    assert batch.commit_offset == 1  # not past the last row read: the snapshot is open
    # The projector restarts from there before any streamed record arrives.
    records.append(Heartbeat(R, 7))
    b = restart(records, batch.commit_offset)
    batch = b.take()
    assert [(t.completes_snapshot, t.commit_lsn) for t in in_memory(batch)] == [(True, 500)]
    assert batch.watermark is not None
    assert batch.watermark.commit_lsn == 500
    assert batch.commit_offset == 4


def test_a_restart_mid_snapshot_reads_its_latest_row_again_then_goes_on() -> None:
    records: list[Event | None] = [
        change(None, 500, 1, Snapshot.FIRST),
        change(None, 500, 2, Snapshot.YES),
    ]
    batch = restart(records, 0).take()
    records.append(change(None, 500, 3, Snapshot.LAST))
    b = restart(records, batch.commit_offset)
    batch = b.take()
    assert [(t.completes_snapshot, len(t.changes)) for t in in_memory(batch)] == [(True, 2)]
    assert batch.commit_offset == 3


def test_a_transaction_whose_end_is_dead_lettered_is_abandoned_not_dropped() -> None:
    a = RegionAssembler(R)
    a.add(0, WalMark(R, 5, 900))
    feed(a, [TxBegin(R, 6, 10, 0), change(6, 10, 1), change(6, 11, 2)], 1)
    a.add_dead_letter(4, None, 6)  # its END, undecodable (the key names tx 6)
    assert [(t.tx_id, t.first_offset, t.stop_offset) for t in a.abandoned] == [(6, 1, 4)]
    batch = a.take()
    assert batch.transactions == []  # no END: neither whole nor versioned, not applied
    assert batch.commit_offset == 5  # the caller dead-letters offsets 1-3 before that
    feed(a, [TxBegin(R, 7, 20, 0), change(7, 20), end(7, 30, {"owner": 1})], 5)
    assert [t.tx_id for t in a.take().transactions] == [7]
    assert a.discarded_partial_transactions == 0


def test_an_end_dead_lettered_with_an_unreadable_key_is_abandoned_at_the_next_begin() -> None:
    a = RegionAssembler(R)
    feed(a, [TxBegin(R, 6, 10, 0), change(6, 10, 1)])
    a.add_dead_letter(2, "owner")  # a change of it: counted, not its END
    a.add_dead_letter(3, None)  # no key to tell: maybe its END
    assert not a.abandoned
    feed(a, [TxBegin(R, 7, 20, 0), change(7, 20), end(7, 30, {"owner": 1})], 4)
    (tx,) = a.abandoned
    assert (tx.tx_id, tx.first_offset, tx.stop_offset, tx.dead_lettered) == (
        6,
        0,
        4,
        frozenset({2, 3}),
    )
    assert [t.tx_id for t in a.take().transactions] == [7]
    assert a.discarded_partial_transactions == 0


def test_a_cut_off_transaction_resent_after_an_unreadable_record_is_still_dropped() -> None:
    a = RegionAssembler(R)
    a.add(0, TxBegin(R, 3, 10, 0))
    a.add(1, change(3, 10, 1))
    a.add_dead_letter(2, None)
    feed(a, [TxBegin(R, 3, 10, 0), change(3, 10, 1), end(3, 12, {"owner": 1})], 3)
    assert not a.abandoned
    assert a.discarded_partial_transactions == 1
    assert [len(t.changes) for t in in_memory(a.take())] == [1]
