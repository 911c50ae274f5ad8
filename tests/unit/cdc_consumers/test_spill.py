"""A transaction larger than `max_rows_in_memory` (issue 16 item 7): bounded in memory,
spilled to disk, handed over in chunks that add up to the whole transaction in order,
its watermark with the last chunk only; the END's counts are still checked over all of
it, and the spill files are freed once written or abandoned."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import pytest

from cdc_consumers.assembler import AssemblyProblem, Batch, RegionAssembler
from cdc_consumers.spill import SpilledTransaction, SpillFile
from schemas.events import (
    NO_EXTRA,
    Event,
    Op,
    RowChange,
    Snapshot,
    Transaction,
    Truncate,
    TxBegin,
    TxEnd,
    Watermark,
)

R = "us-west"
BOUND = 10


def change(tx: int, lsn: int, table: str = "owner") -> RowChange:
    return RowChange(R, table, Op.CREATE, (lsn,), (lsn, f"O-{lsn}"), lsn, tx, 1000, Snapshot.NO)


def end(tx: int, commit_lsn: int, counts: dict[str, int]) -> TxEnd:
    return TxEnd(R, tx, commit_lsn, sum(counts.values()), counts, 5000 + commit_lsn)


def open_spills(directory: Path) -> list[str]:
    """This process's open files in `directory` (spill files are anonymous: an open
    descriptor is what holds their space)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            out.append(target)
    return out


@pytest.fixture
def assembler(tmp_path: Path) -> Iterator[RegionAssembler]:
    a = RegionAssembler(R, max_rows_in_memory=BOUND, spill_dir=tmp_path)
    yield a
    a.close()


def feed(a: RegionAssembler, events: Sequence[Event], start: int = 0) -> None:
    for offset, event in enumerate(events, start):
        a.add(offset, event)


def feed_big(a: RegionAssembler, tx: int, n: int, start: int = 0) -> int:
    """BEGIN and `n` changes of tx `tx` from offset `start`; the peak of rows in memory."""
    a.add(start, TxBegin(R, tx, 100, 0))
    peak = 0
    for i in range(n):
        a.add(start + 1 + i, change(tx, 100 + i, "owner" if i % 3 else "sku"))
        peak = max(peak, a.pending_rows)
    return peak


def flatten(parts: list[tuple[list[Transaction], Watermark | None]]) -> list[RowChange | Truncate]:
    return [ch for txs, _ in parts for tx in txs for ch in tx.changes]


def test_a_huge_transaction_is_bounded_in_memory_and_handed_over_in_chunks(
    assembler: RegionAssembler,
) -> None:
    n = 1000
    assert feed_big(assembler, 7, n) <= BOUND
    assert assembler.describe()["open_tx_changes"] == n
    assert assembler.take().commit_offset is None  # still inside the transaction
    assembler.add(n + 1, end(7, 5000, {"owner": 666, "sku": 334}))
    assert assembler.pending_rows == 0  # the tail went to disk too
    batch = assembler.take()
    assert batch.row_count == n
    assert batch.commit_offset == n + 2
    [spilled] = batch.transactions
    assert isinstance(spilled, SpilledTransaction)
    parts = list(batch.parts())
    assert all(len(txs) == 1 and len(txs[0].changes) <= BOUND for txs, _ in parts)
    assert len(parts) == n // BOUND
    # whole and in order, every chunk with the transaction's id and commit
    assert [ch.lsn for ch in flatten(parts)] == list(range(100, 100 + n))
    assert {(tx.tx_id, tx.commit_lsn, tx.commit_ts_ms) for txs, _ in parts for tx in txs} == {
        (7, 5000, 10000)
    }
    # visible only with the last chunk
    assert [wm for _, wm in parts[:-1]] == [None] * (len(parts) - 1)
    assert parts[-1][1] == Watermark(R, 5000, 10000)


def test_neighbours_of_a_spilled_transaction_keep_their_order(
    assembler: RegionAssembler,
) -> None:
    feed(assembler, [TxBegin(R, 1, 10, 0), change(1, 10), end(1, 20, {"owner": 1})])
    feed_big(assembler, 2, 25, start=3)
    assembler.add(29, end(2, 40, {"owner": 16, "sku": 9}))
    feed(assembler, [TxBegin(R, 3, 50, 0), change(3, 50), end(3, 60, {"owner": 1})], 30)
    parts = list(assembler.take().parts())
    assert [[(tx.tx_id, len(tx.changes)) for tx in txs] for txs, _ in parts] == [
        [(1, 1)],
        [(2, 10)],
        [(2, 10)],
        [(2, 5), (3, 1)],
    ]
    assert [None if wm is None else wm.commit_lsn for _, wm in parts] == [None, None, None, 60]


def test_the_end_still_checks_the_counts_of_the_whole_spilled_transaction(
    assembler: RegionAssembler,
) -> None:
    feed_big(assembler, 7, 1000)
    with pytest.raises(AssemblyProblem) as info:  # one change never arrived
        assembler.add(1001, end(7, 5000, {"owner": 667, "sku": 334}))
    assert info.value.reason == "incomplete_transaction"
    assembler.add_dead_letter(1001, None)  # the caller dead-letters the END
    batch = assembler.take()
    assert batch.row_count == 1000  # what arrived is applied, nothing dropped
    assert batch.commit_offset == 1002
    batch.release()

    feed_big(assembler, 8, 1000, start=1002)
    with pytest.raises(AssemblyProblem):  # the right total, split wrongly per table
        assembler.add(2003, end(8, 6000, {"owner": 667, "sku": 333}))


def test_dead_letters_inside_a_spilled_transaction_still_count(
    assembler: RegionAssembler,
) -> None:
    feed_big(assembler, 7, 100)
    assembler.add_dead_letter(101, "sku")
    assembler.add(102, end(7, 5000, {"owner": 66, "sku": 35}))
    batch = assembler.take()
    assert batch.row_count == 100
    assert batch.commit_offset == 103
    batch.release()


def test_spill_files_are_freed_once_written_and_when_abandoned(
    assembler: RegionAssembler, tmp_path: Path
) -> None:
    feed_big(assembler, 7, 100)
    assert open_spills(tmp_path)
    assembler.add(101, end(7, 5000, {"owner": 66, "sku": 34}))
    batch = assembler.take()
    list(batch.parts())
    batch.release()
    assert open_spills(tmp_path) == []
    assert os.listdir(tmp_path) == []  # anonymous: nothing left even after a crash

    # a cut-off transaction re-sent from its BEGIN frees the cut-off copy
    feed_big(assembler, 8, 50, start=102)
    feed_big(assembler, 8, 50, start=153)
    assert len(open_spills(tmp_path)) == 1
    # the partition is revoked with a transaction open and another one ready
    assembler.add(204, end(8, 6000, {"owner": 33, "sku": 17}))
    feed_big(assembler, 9, 50, start=205)
    assert len(open_spills(tmp_path)) == 2
    assembler.close()
    assert open_spills(tmp_path) == []


def test_a_transaction_within_the_bound_stays_in_memory(
    assembler: RegionAssembler, tmp_path: Path
) -> None:
    feed_big(assembler, 7, BOUND - 1)
    assembler.add(BOUND, end(7, 5000, {"owner": 6, "sku": 3}))
    assert assembler.pending_rows == BOUND - 1
    batch = assembler.take()
    assert [type(t) for t in batch.transactions] == [Transaction]
    assert [len(txs) for txs, _ in batch.parts()] == [1]
    assert open_spills(tmp_path) == []


def test_changes_read_back_equal_those_spilled(tmp_path: Path) -> None:
    at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    changes: list[RowChange | Truncate] = [
        RowChange(
            R,
            "inventory",
            Op.UPDATE,
            (5,),
            (5, Decimal("1.500"), at, None, True),
            77,
            3,
            1000,
            Snapshot.NO,
            frozenset({"note"}),
            MappingProxyType({"added_col": '"x"'}),
        ),
        RowChange(R, "owner", Op.DELETE, (6,), None, 78, 3, 1000, Snapshot.NO),
        Truncate(R, "lot", 79, 3, 1000),
    ]
    spill = SpillFile(2, tmp_path)
    spill.append(changes)
    chunks = list(spill.chunks())
    assert [len(c) for c in chunks] == [2, 1]
    assert [ch for c in chunks for ch in c] == changes
    assert list(spill.chunks()) == chunks  # read again, e.g. a batch written twice
    extra, deleted = chunks[0]
    assert isinstance(extra, RowChange)
    assert isinstance(deleted, RowChange)
    assert isinstance(extra.extra, MappingProxyType)  # still read-only
    assert deleted.extra is NO_EXTRA
    spill.close()
    spill.close()
    assert spill.closed


def test_a_bound_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        RegionAssembler(R, max_rows_in_memory=0)
    with pytest.raises(ValueError, match="positive"):
        SpillFile(0, tmp_path)


def test_a_batch_holds_what_it_is_given() -> None:
    """`Batch.parts` of in-memory transactions: one write, with the watermark."""
    txs = [Transaction(R, 1, 20, 0, (change(1, 10),)), Transaction(R, 2, 30, 0, ())]
    wm = Watermark(R, 30, 0)
    assert list(Batch(R, list(txs), wm, 5).parts()) == [(txs, wm)]
    assert list(Batch(R, [], wm, 5).parts()) == [([], wm)]
    assert list(Batch(R, [], None, 5).parts()) == []


def test_chunks_are_read_back_one_at_a_time(
    assembler: RegionAssembler, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_big(assembler, 7, 100)
    assembler.add(101, end(7, 5000, {"owner": 66, "sku": 34}))
    batch = assembler.take()
    read = 0
    chunks = SpillFile.chunks

    def counted(self: SpillFile) -> Iterator[list[RowChange | Truncate]]:
        nonlocal read
        for chunk in chunks(self):
            read += 1
            yield chunk

    monkeypatch.setattr(SpillFile, "chunks", counted)
    for written, _ in enumerate(batch.parts(), 1):
        assert read == written  # the next chunk stays on disk while one is written
    assert read == 10
