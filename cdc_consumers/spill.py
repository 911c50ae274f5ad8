"""Transactions too large to hold in memory: spilled to disk, written back in chunks.

A transaction is applied whole (DESIGN decision 4), but every row version carries its
commit LSN, known only at the END: its changes must be kept until then. Past
`max_transaction_rows_in_memory` changes the assembler appends them, a chunk at a time,
to a `SpillFile` and keeps only per-table counts (the END still checks them over the
whole transaction). After the END the writer reads the transaction back one chunk at a
time, each written by its own `Sink.write` without a watermark; the watermark comes with
the last chunk. Readers cut at the watermark, so they see the transaction whole or not
at all; every chunk carries the same tx id and commit LSN, so a replay (the committed
offset never falls inside a transaction: a restart re-reads it from its BEGIN) writes
the same versions again. Each chunk is an ordinary write for ProjectionWriter: a delete
or placeholder finds the previous version an earlier chunk wrote, and the serving
figures each chunk recomputes at the commit LSN end as the whole transaction's (every
key a chunk changes is recomputed by it, later chunks' versions win by `_seq`).

Why a file rather than Kafka as the spill (drop the changes, seek back to the BEGIN at
the END and consume the transaction again): the loop would have to rewind a partition
while the writer thread still writes its earlier flushes, and hold back or interleave
the other partitions meanwhile; a file leaves the loop, the writer and the offsets as
they are. The file is anonymous (unlinked from the start, under the state dir rather
than a /tmp that may live in memory): its space is freed when it is closed, and a crash
leaves nothing behind.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from schemas.events import NO_EXTRA, RowChange, Transaction, Truncate

Change = RowChange | Truncate


def _extra(values: dict[str, str]) -> Mapping[str, str]:
    """`RowChange.extra` read back: read-only, and the shared `NO_EXTRA` when empty."""
    return MappingProxyType(values) if values else NO_EXTRA


def _reduce_extra(extra: MappingProxyType[str, str]) -> tuple[Any, tuple[dict[str, str]]]:
    return _extra, (dict(extra),)


#: How changes are pickled: a mapping proxy (`RowChange.extra`) as its dict.
_DISPATCH = {**copyreg.dispatch_table, MappingProxyType: _reduce_extra}


class SpillFile:
    """Changes of one transaction on disk, in order, as chunks of at most `chunk_rows`."""

    def __init__(self, chunk_rows: int, directory: Path | None = None) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, not {chunk_rows}")
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.chunk_rows = chunk_rows
        self.rows = 0
        self._chunks = 0
        # Open until `close` (the transaction is written, or abandoned).
        self._file: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115
            dir=directory, prefix="stockcdc-tx-"
        )

    @property
    def chunk_count(self) -> int:
        return self._chunks

    @property
    def closed(self) -> bool:
        return self._file.closed

    def append(self, changes: Sequence[Change]) -> None:
        """Add `changes` after those already here."""
        self._file.seek(0, io.SEEK_END)
        for start in range(0, len(changes), self.chunk_rows):
            chunk = list(changes[start : start + self.chunk_rows])
            pickler = pickle.Pickler(self._file, pickle.HIGHEST_PROTOCOL)
            pickler.dispatch_table = _DISPATCH
            pickler.dump(chunk)
            self.rows += len(chunk)
            self._chunks += 1

    def chunks(self) -> Iterator[list[Change]]:
        """The changes in order, one chunk in memory at a time (again on each call)."""
        self._file.flush()
        self._file.seek(0)
        for _ in range(self._chunks):
            yield pickle.load(self._file)  # noqa: S301 (our own file, written above)

    def close(self) -> None:
        """Free the disk space (idempotent)."""
        self._file.close()


@dataclass(eq=False)
class SpilledTransaction:
    """A whole committed transaction whose changes wait in a `SpillFile`; written as
    `chunks`, each a `Transaction` with its tx id and commit LSN."""

    region: str
    tx_id: int
    commit_lsn: int
    commit_ts_ms: int
    spill: SpillFile

    @property
    def row_count(self) -> int:
        return self.spill.rows

    @property
    def chunk_count(self) -> int:
        return self.spill.chunk_count

    def chunks(self) -> Iterator[Transaction]:
        for changes in self.spill.chunks():
            yield Transaction(
                self.region, self.tx_id, self.commit_lsn, self.commit_ts_ms, tuple(changes)
            )

    def close(self) -> None:
        self.spill.close()

    @classmethod
    def of(cls, tx: Transaction, spill: SpillFile) -> SpilledTransaction:
        """`tx`, whose changes are the tail after those already in `spill`."""
        assert tx.tx_id is not None, "snapshot batches are bounded by the batch size"
        spill.append(tx.changes)
        return cls(tx.region, tx.tx_id, tx.commit_lsn, tx.commit_ts_ms, spill)


__all__ = ["SpillFile", "SpilledTransaction"]
