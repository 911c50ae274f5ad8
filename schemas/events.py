"""Typed change records decoded from the regions' CDC topics (the contract between the
decoder, the consumer loop and the projection writer).

Immutable once they leave the decoder: frozen slotted dataclasses, except `RowChange`,
the one built per record, which is a NamedTuple: built in C, where a frozen dataclass's
generated `__init__` (one `object.__setattr__` per field) was a quarter of decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple

from schemas.errors import TerminalError
from schemas.wms_model import WMS_MODEL, TableSpec, ms_to_datetime

#: Debezium's stand-in for an unchanged TOASTed value it did not receive.
UNAVAILABLE = "__debezium_unavailable_value"


class Op(StrEnum):
    """Debezium `op` of a row change."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot read


class Snapshot(StrEnum):
    """Debezium `source.snapshot`: which part of the initial snapshot a record is."""

    NO = "false"
    FIRST = "first"
    FIRST_IN_DATA_COLLECTION = "first_in_data_collection"
    YES = "true"
    LAST_IN_DATA_COLLECTION = "last_in_data_collection"
    LAST = "last"
    INCREMENTAL = "incremental"


#: `RowChange.extra` when there is none (read-only: one instance is shared).
NO_EXTRA: Mapping[str, str] = MappingProxyType({})


class RowChange(NamedTuple):
    """One row insert/update/delete/snapshot read of a known WMS table.

    `row` holds typed values in `spec.columns` order (None for a delete); a column listed
    in `unavailable` holds None there and must keep its previously projected value.
    `extra` keeps columns the model does not know (a WMS ADD COLUMN) as raw JSON text.
    `before` is the typed old row, same order, of an update or delete of a table in
    `FULL_BEFORE_TABLES` whose source sent it whole (REPLICA IDENTITY FULL); None for
    any other change, and whenever the source sent no full old row (a key-only image
    under REPLICA IDENTITY DEFAULT, an unavailable value): then it is not known.
    """

    region: str
    table: str
    op: Op
    key: tuple[object, ...]  # primary-key values, in spec.primary_key order
    row: tuple[object, ...] | None
    lsn: int  # source.lsn: WAL position of this change
    tx_id: int | None  # source.txId; None for incremental-snapshot reads
    commit_ts_ms: int  # source.ts_ms: commit time in the WMS database
    snapshot: Snapshot
    unavailable: frozenset[str] = frozenset()
    extra: Mapping[str, str] = NO_EXTRA
    before: tuple[object, ...] | None = None

    @property
    def spec(self) -> TableSpec:
        return WMS_MODEL[self.table]

    @property
    def is_delete(self) -> bool:
        return self.op is Op.DELETE

    @property
    def is_snapshot(self) -> bool:
        return self.snapshot is not Snapshot.NO

    @property
    def is_last_of_snapshot(self) -> bool:
        return self.snapshot is Snapshot.LAST

    @property
    def commit_ts(self) -> datetime:
        return ms_to_datetime(self.commit_ts_ms)

    def as_dict(self) -> dict[str, object] | None:
        """The typed after-row by column name (None for a delete)."""
        if self.row is None:
            return None
        return dict(zip(self.spec.column_names, self.row, strict=True))


@dataclass(frozen=True, slots=True)
class Truncate:
    """TRUNCATE of a known table (only emitted when the connector does not skip `t`)."""

    region: str
    table: str
    lsn: int
    tx_id: int | None
    commit_ts_ms: int


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The null-valued record Kafka compaction needs after a delete; carries no change."""

    region: str
    table: str
    key: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class TxBegin:
    """Start of a WMS transaction in the region's topic."""

    region: str
    tx_id: int
    lsn: int  # LSN of the transaction's first change
    ts_ms: int


@dataclass(frozen=True, slots=True)
class TxEnd:
    """End of a WMS transaction: its commit LSN and how many events it carried.

    `commit_lsn` is the LSN in the END id: the end of the commit record (pgoutput's
    end_lsn), the same value the next transaction reports as `source.sequence[0]`
    (lastCommitLsn). It grows monotonically in the topic, unlike change LSNs, which
    interleave across concurrent transactions.
    """

    region: str
    tx_id: int
    commit_lsn: int
    event_count: int
    table_counts: Mapping[str, int]  # per source table name (schema prefix dropped)
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Debezium's own heartbeat record: the connector is alive at `ts_ms` (its clock).

    It says nothing about freshness: Debezium sends it whenever its socket is empty,
    which may be before the WAL sender has delivered a transaction that already
    committed, so it never advances a watermark (a `WalMark` does)."""

    region: str
    ts_ms: int

    @property
    def ts(self) -> datetime:
        return ms_to_datetime(self.ts_ms)


#: Prefix of the logical-decoding message the connector's heartbeat action writes.
WAL_MARK_PREFIX = "stockcdc.heartbeat"


@dataclass(frozen=True, slots=True)
class WalMark:
    """A logical-decoding message the connector's heartbeat action wrote into the WMS's
    WAL (non-transactional, content: the WMS server's clock in epoch ms).

    It travels in WAL order, so every transaction that committed before `ts_ms` reached
    the topic before it: the region is complete up to `ts_ms` even when it is idle
    (DESIGN decision 5), by the same clock as the commit times."""

    region: str
    lsn: int
    ts_ms: int

    @property
    def ts(self) -> datetime:
        return ms_to_datetime(self.ts_ms)


Event = RowChange | Truncate | Tombstone | TxBegin | TxEnd | Heartbeat | WalMark


@dataclass(frozen=True, slots=True)
class Transaction:
    """A whole committed WMS transaction, ready for the projection writer.

    Snapshot reads have no BEGIN/END: each snapshot batch is written as one
    `Transaction` whose `commit_lsn` is the snapshot LSN (all snapshot rows share it);
    the last one `completes_snapshot` (keys the snapshot did not read are gone).
    """

    region: str
    tx_id: int | None
    commit_lsn: int
    commit_ts_ms: int
    changes: Sequence[RowChange | Truncate]
    completes_snapshot: bool = False

    @classmethod
    def from_end(
        cls,
        end: TxEnd,
        changes: Sequence[RowChange | Truncate],
        dead_lettered: Mapping[str, int] | None = None,
    ) -> Transaction:
        """Assemble from the buffered changes and the END record; raises
        `IncompleteTransactionError` when the counts do not add up (events lost or from
        another transaction). `dead_lettered` counts per table the events of this
        transaction that went to the dead-letter topic instead."""
        counts: dict[str, int] = dict(dead_lettered or {})
        for ch in changes:
            if ch.tx_id != end.tx_id:
                raise IncompleteTransactionError(
                    f"{end.region}: change of tx {ch.tx_id} inside tx {end.tx_id}"
                )
            counts[ch.table] = counts.get(ch.table, 0) + 1
        if counts != dict(end.table_counts) or sum(counts.values()) != end.event_count:
            raise IncompleteTransactionError(
                f"{end.region}: tx {end.tx_id} END says {dict(end.table_counts)}"
                f" ({end.event_count} events), buffered {counts}"
            )
        return cls(end.region, end.tx_id, end.commit_lsn, end.ts_ms, tuple(changes))

    @classmethod
    def from_snapshot(cls, changes: Sequence[RowChange]) -> Transaction:
        """Group snapshot reads (one region, one snapshot LSN) into one unit of work."""
        if not changes:
            raise ValueError("empty snapshot batch")
        first = changes[0]
        # map/attrgetter: the loops run in C (a batch is tens of thousands of rows)
        if set(map(_REGION, changes)) != {first.region} or Snapshot.NO in set(
            map(_SNAPSHOT, changes)
        ):
            raise ValueError("a snapshot batch holds snapshot reads of one region only")
        lsn = max(map(_LSN, changes))
        ts = max(map(_COMMIT_TS, changes))
        return cls(first.region, None, lsn, ts, tuple(changes))


_REGION = attrgetter("region")
_SNAPSHOT = attrgetter("snapshot")
_LSN = attrgetter("lsn")
_COMMIT_TS = attrgetter("commit_ts_ms")


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far a region is applied: every transaction with commit LSN ≤ `commit_lsn`.

    `commit_ts_ms` is the source commit time of the last applied transaction;
    `heartbeat_ts_ms` the time of the latest WAL mark (`WalMark`): complete up to it, so
    an idle region stays fresh by it.
    """

    region: str
    commit_lsn: int
    commit_ts_ms: int
    heartbeat_ts_ms: int | None = None


class RegionWrite(NamedTuple):
    """One region's part of a sink write: whole transactions in commit order, then the
    watermark that makes them visible (None: unchanged, the rows stay invisible)."""

    region: str
    transactions: Sequence[Transaction]
    watermark: Watermark | None


class IncompleteTransactionError(TerminalError, ValueError):
    """A buffered transaction does not match its END record."""
