"""The projection sink: writes whole WMS transactions into the `wms_*` tables, then the
regions' watermarks, which is what makes them visible (decision 4).

A flush of every region's batch becomes at most one columnar INSERT per table (plus, per
region, one lookup query per table for rows whose previous values are needed), one of
the stock figures, then one of the watermarks. Replaying a flush writes the same
versions again (same _commit_lsn and _lsn), which changes nothing.

With `rows_later` the figures go first (issue 15): a flush writes `stock_current` and
the figure watermarks at once, and the rows wait in memory for `write_rows`, which
writes every flush's since in one insert per table, then the watermarks of everything
(`watermarks`). An insert costs a part per table whatever its size, and the rows were
most of a flush's cost. Anything that reads rows back writes the waiting rows first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import structlog
from clickhouse_connect.driver.client import Client

from read_model.client import ColumnInserter, inserting
from read_model.ddl import table_name
from read_model.errors import classify
from read_model.figures import FigureKeeper
from schemas.events import RegionWrite, RowChange, Transaction, Truncate, Watermark
from schemas.wms_model import WMS_MODEL, TableSpec, ms_to_datetime

log = structlog.get_logger(__name__)

_META = ("_lsn", "_commit_lsn", "_is_deleted", "_extra")

#: Value written for a NOT NULL column of a delete whose row the projection never had
#: (deletes carry only the key). Keyed by PostgreSQL base type.
_FILLER: Mapping[str, object] = {
    "bigint": 0,
    "integer": 0,
    "text": "",
    "char": "",
    "jsonb": "",
    "boolean": False,
    "numeric": Decimal(0),
    "date": date(1970, 1, 1),
    "timestamptz": datetime(1970, 1, 1, tzinfo=UTC),
}


def _fillers(spec: TableSpec) -> tuple[object, ...]:
    return tuple(None if c.nullable else _FILLER[c.base_type] for c in spec.columns)


_FILLERS: Mapping[str, tuple[object, ...]] = {n: _fillers(s) for n, s in WMS_MODEL.items()}

#: Per table, where its timestamptz columns are in `_Columns.data`: they go to ClickHouse
#: as microseconds since the epoch, computed in C (the driver's per-datetime conversion in
#: Python was a tenth of the writer's time).
_TIMESTAMPS: Mapping[str, tuple[int, ...]] = {
    n: tuple(1 + i for i, c in enumerate(s.columns) if c.base_type == "timestamptz")
    for n, s in WMS_MODEL.items()
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(column: list[Any]) -> list[Any]:
    """Aware datetimes as microseconds since the epoch (DateTime64(6) ticks, the value
    the driver would compute); a column holding a naive one is left to the driver."""
    try:
        return [None if d is None else (d - _EPOCH) // _MICROSECOND for d in column]
    except TypeError:
        return column


#: The watermarks of a flush, after `INSERT INTO _watermark_max` (or 017's
#: `_figure_watermark_max`): per region its LSN, the commit time that goes with it
#: (argMax by LSN) and the heartbeat (epoch ms; -1: none).
_ADVANCE = (
    " (region, applied_commit_lsn, source_commit_ts, heartbeat_ts, updated_at)"
    " SELECT w.1, max(w.2), argMaxState(fromUnixTimestamp64Milli(w.3, 'UTC'), w.2),"
    " max(if(w.4 < 0, NULL, fromUnixTimestamp64Milli(w.4, 'UTC'))),"
    " {up:DateTime64(6, 'UTC')}"
    " FROM (SELECT arrayJoin(arrayZip({r:Array(String)}, {l:Array(UInt64)},"
    " {t:Array(Int64)}, {h:Array(Int64)})) AS w) GROUP BY w.1"
)


def _check(writes: Sequence[RegionWrite]) -> None:
    """One batch per region, each holding its own region's transactions only, and no
    watermark below a streamed commit it carries (it would hide applied rows)."""
    regions = [w.region for w in writes]
    if len(set(regions)) != len(regions):
        raise ValueError(f"two batches of one region in a write: {regions}")
    for region, transactions, watermark in writes:
        if watermark is not None and watermark.region != region:
            raise ValueError(f"watermark of {watermark.region} written for {region}")
        for tx in transactions:
            if tx.region != region:
                raise ValueError(f"transaction of {tx.region} in a batch of {region}")
            streamed = tx.tx_id is not None
            if streamed and watermark is not None and tx.commit_lsn > watermark.commit_lsn:
                raise ValueError(
                    f"watermark {watermark.commit_lsn} below commit {tx.commit_lsn}: "
                    "it would hide applied rows"
                )


class _Befores(NamedTuple):
    """What buffering a region's batch tells its figures: the rows its deletes without a
    before image deleted, by (table, LSN), and whether a truncate was among them."""

    rows: dict[tuple[str, int], tuple[object, ...]]
    truncated: bool


@dataclass(slots=True)
class WriteStats:
    """What one `write` did (for metrics and logs)."""

    rows: dict[str, int] = field(default_factory=dict)  # per source table
    looked_up: int = 0  # keys whose previous version was read back
    unresolved_placeholders: int = 0  # placeholder columns with no previous value
    truncates: int = 0


@dataclass(slots=True)
class _Columns:
    """One table's rows, buffered as tuples and turned into columns once, when `data` is
    read (a transpose in C: appending value by value to every column was the writer's
    hottest Python)."""

    spec: TableSpec
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    _data: list[list[Any]] | None = None

    @classmethod
    def empty(cls, spec: TableSpec) -> _Columns:
        return cls(spec)

    def append(
        self, region: str, row: Sequence[object], lsn: int, commit: int, deleted: int, extra: Any
    ) -> None:
        self.rows.append((region, *row, lsn, commit, deleted, extra))
        self._data = None

    @property
    def data(self) -> list[list[Any]]:
        """The rows as columns, in `names` order (timestamps as epoch microseconds)."""
        if self._data is None:
            data = [list(column) for column in zip(*self.rows, strict=True)]
            for i in _TIMESTAMPS[self.spec.name] if data else ():
                data[i] = _micros(data[i])
            self._data = data
        return self._data

    @property
    def names(self) -> list[str]:
        return ["region", *self.spec.column_names, *_META]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(slots=True)
class _Waiting:
    """Rows written after their figures (`rows_later`): every table's rows, the commits
    for `_commit_log`, and the watermarks they make true once written."""

    buffers: dict[str, _Columns] = field(default_factory=dict)
    commits: list[Transaction] = field(default_factory=list)
    watermarks: list[Watermark] = field(default_factory=list)
    since: float | None = None  # when the oldest was buffered (monotonic)

    def __bool__(self) -> bool:
        return bool(self.commits or self.watermarks or any(self.buffers.values()))


#: Told the watermarks a write made true, once written, and whether they are the rows'
#: (`watermarks`: everything applied) or only the figures' (`figure_watermarks`).
OnAdvance = Callable[[Sequence[Watermark], bool], None]


class ProjectionWriter:
    """Sink of committed WMS transactions into ClickHouse (one per process and client)."""

    def __init__(self, client: Client, on_advance: OnAdvance | None = None) -> None:
        self._client = client
        self._inserter = ColumnInserter(client)
        self._waiting = _Waiting()  # buffered by `write_all(rows_later=True)`
        self._sealed: _Waiting | None = None  # taken by a `write_rows` under way
        self.figures = FigureKeeper(client, self._inserter, self._write_waiting_rows)
        self._on_advance = on_advance

    def write(
        self, region: str, transactions: Sequence[Transaction], watermark: Watermark | None
    ) -> WriteStats:
        """`write_all` of one region's batch."""
        return self.write_all([RegionWrite(region, transactions, watermark)])

    def write_all(self, writes: Sequence[RegionWrite], rows_later: bool = False) -> WriteStats:
        """Write the batches of several regions as one: their transactions (whole, in
        commit order) with one insert per table, then the stock figures, then every
        region's new watermark (None: leave it; the rows stay invisible, as snapshot rows
        do until the snapshot is complete). With `rows_later`, only the figures and their
        watermarks now; the rows wait for `write_rows`. Raises `ReadModelTransientError`
        (retry the same call) or `ReadModelTerminalError`. Safe to repeat after any
        failure."""
        _check(writes)
        stats = WriteStats()
        waiting = self._waiting
        if waiting.since is None:
            waiting.since = time.monotonic()
        # A retry buffers the same rows again: the same versions, which change nothing.
        waiting.commits += (tx for w in writes for tx in w.transactions)
        befores: dict[str, _Befores] = {}
        for region, transactions, _ in writes:
            befores[region] = self._buffer_region(region, transactions, stats)
        if not rows_later:
            self._write_waiting_rows(stats)
        with self.figures.publishing():
            for region, transactions, _ in writes:
                self._figures(region, transactions, befores[region])
        marks = [w.watermark for w in writes if w.watermark is not None]
        if rows_later:
            self._advance(marks, "_figure_watermark_max")
            waiting.watermarks += marks
        else:  # everything is in, what waited included
            sealed = self._sealed.watermarks if self._sealed else []
            self._advance([*sealed, *waiting.watermarks, *marks], "_watermark_max")
            self._sealed, self._waiting = None, _Waiting()
        return stats

    @property
    def rows_waiting_since(self) -> float | None:
        """When the oldest rows still waiting for `write_rows` were buffered (monotonic);
        None when nothing waits."""
        times = [w.since for w in (self._sealed, self._waiting) if w and w.since is not None]
        return min(times, default=None)

    def write_rows(self, give_way: Callable[[], bool] = lambda: False) -> bool:
        """Write the rows waiting (those of the `write_all(rows_later=True)` calls so
        far), then the watermarks they make true (`watermarks`); True once done. One
        insert at a time: between two, when `give_way()` says so (figures wait to be
        written), it stops and returns False, and the next call goes on with the same
        rows (those of a `write_all` in between wait for the call after: its tables would
        be written twice). Safe to repeat after any failure."""
        if self._sealed is None:
            self._sealed, self._waiting = self._waiting, _Waiting()
        sealed = self._sealed
        while self._write_rows_of(sealed, one=True):
            if give_way():
                return False
        self._advance(sealed.watermarks, "_watermark_max")
        self._sealed = None
        return True

    def _write_every_row(self) -> None:
        """`write_rows` until nothing waits."""
        while self._sealed or self._waiting:
            self.write_rows()

    def _buffer_region(
        self, region: str, transactions: Sequence[Transaction], stats: WriteStats
    ) -> _Befores:
        """Buffer one region's rows (a truncate writes what came before it, of every
        region, and deletes at once); returns the rows its deletes without a before
        image deleted, by (table, LSN), for the figures, and whether it truncated."""
        state, watched = self._previous_versions(region, transactions, stats)
        buffers = self._waiting.buffers
        befores: dict[tuple[str, int], tuple[object, ...]] = {}
        truncated = False
        for tx in transactions:
            for ch in tx.changes:
                if isinstance(ch, Truncate):
                    # Rare (the connector skips truncates by default): the rows before it
                    # are written first (`_delete_current`), then every current key goes.
                    self._truncate(region, ch, tx.commit_lsn)
                    state = {k: v for k, v in state.items() if k[0] != ch.table}
                    stats.truncates += 1
                    truncated = True
                    continue
                self._buffer(region, ch, tx.commit_lsn, state, buffers, stats, watched, befores)
        return _Befores(befores, truncated)

    def _figures(
        self,
        region: str,
        transactions: Sequence[Transaction],
        befores: _Befores,
    ) -> None:
        """After the rows are in: sweep a completed snapshot and stage the figures. They
        follow streamed changes batch by batch; a snapshot's rows stay invisible until it
        completes, and then the region is loaded whole (after a truncate too)."""
        done = [tx.commit_lsn for tx in transactions if tx.completes_snapshot]
        for lsn in done:
            self._sweep(region, lsn)
        live = [tx for tx in transactions if tx.tx_id is not None]
        if done or befores.truncated:
            self.figures.rebuild(region, max(tx.commit_lsn for tx in transactions))
        elif live:
            self.figures.maintain(region, live, befores.rows)

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        """The applied watermark of every region, to resume from after a restart or a
        rebalance; the figures of `regions` (just assigned: another member may have
        moved them on) are loaded at it, and what is served is brought in line."""
        self._write_every_row()  # what this writer buffered is applied, of any region
        rows = self._query(
            "SELECT region, applied_commit_lsn, toUnixTimestamp64Milli(source_commit_ts), "
            "toUnixTimestamp64Milli(heartbeat_ts) FROM watermarks",
            {},
        ).result_rows
        marks = {
            r: Watermark(r, int(lsn), int(ts), None if hb is None else int(hb))
            for r, lsn, ts, hb in rows
        }
        with self.figures.publishing():
            for region in regions:
                mark = marks.get(region)
                self.figures.rebuild(region, mark.commit_lsn if mark else 0)
        return marks

    def advance(self, watermark: Watermark) -> None:
        """Write a watermark row (alone: an idle region's heartbeat). The rows still
        waiting go first: a watermark says everything before it is in."""
        self._write_every_row()
        self._advance([watermark], "_watermark_max")

    def _advance(self, watermarks: Sequence[Watermark], table: str) -> None:
        """One insert of the regions' watermarks: last, once all their rows (or, into
        `_figure_watermark_max`, their figures) are in. It goes straight into the table
        as aggregate states (migration 016: a view made it two parts per flush), one row
        per region; max wins, so a replay's older watermark changes nothing."""
        if not watermarks:
            return
        params = {
            "r": [w.region for w in watermarks],
            "l": [w.commit_lsn for w in watermarks],
            "t": [w.commit_ts_ms for w in watermarks],
            "h": [-1 if w.heartbeat_ts_ms is None else w.heartbeat_ts_ms for w in watermarks],
            "up": datetime.now(UTC),
        }
        with inserting(table):
            self._client.command(f"INSERT INTO {table}" + _ADVANCE, params)
        if self._on_advance is not None:
            self._on_advance(watermarks, table == "_watermark_max")

    # -- internals -----------------------------------------------------------------

    def _write_waiting_rows(self, stats: WriteStats | None = None) -> None:
        """Write every row waiting (before anything reads rows back); their watermarks
        are left to `write_rows`."""
        for waiting in (self._sealed, self._waiting):
            if waiting is not None:
                self._write_rows_of(waiting, stats)

    def _write_rows_of(
        self, waiting: _Waiting, stats: WriteStats | None = None, one: bool = False
    ) -> bool:
        """Write `waiting`'s rows: their commits into `_commit_log` first (a visible
        commit always has its time, and a projected row always has its commit there:
        read_model.bi's daily snapshots), then one insert per table; with `one`, only the
        first of those inserts. Returns whether it wrote anything."""
        logged = waiting.commits
        wrote = False
        if logged:
            self._inserter(
                "_commit_log",
                [
                    [tx.region for tx in logged],
                    [tx.commit_lsn for tx in logged],
                    [ms_to_datetime(tx.commit_ts_ms) for tx in logged],
                ],
                ["region", "commit_lsn", "commit_ts"],
            )
            waiting.commits = []
            wrote = True
        for table, buf in waiting.buffers.items():
            if len(buf) and not (one and wrote):
                self._inserter(table_name(table), buf.data, buf.names)
                if stats is not None:
                    stats.rows[table] = stats.rows.get(table, 0) + len(buf)
                # emptied table by table: a retry after a failure writes only the rest
                waiting.buffers[table] = _Columns.empty(buf.spec)
                wrote = True
        return wrote

    def _buffer(
        self,
        region: str,
        ch: RowChange,
        commit_lsn: int,
        state: dict[tuple[str, tuple[object, ...]], tuple[tuple[object, ...], Any]],
        buffers: dict[str, _Columns],
        stats: WriteStats,
        watched: set[tuple[str, tuple[object, ...]]] | None = None,
        befores: dict[tuple[str, int], tuple[object, ...]] | None = None,
    ) -> None:
        """Buffer one change; `state` follows the rows of the `watched` keys (None: all)
        through the batch, for a later delete or placeholder of the same key. A delete
        without a before image gets the row it deletes in `befores` (by table and LSN),
        for the figures."""
        row = ch.row
        if (
            row is not None
            and not ch.unavailable
            and watched is not None
            and (ch.table, ch.key) not in watched
        ):
            # The common case, kept short: nothing in the batch needs this row later.
            buf = buffers.get(ch.table)
            if buf is None:
                buf = buffers[ch.table] = _Columns.empty(ch.spec)
            buf.append(region, row, ch.lsn, commit_lsn, 0, ch.extra)
            return
        k = (ch.table, ch.key)
        prev = state.get(k)
        extra: Any = ch.extra
        if ch.row is None:
            # A delete carries the row it deletes with REPLICA IDENTITY FULL, else only
            # the key: keep the last known values so the deleted version lands under the
            # same read-path keys (owner_id, sku_id, ...).
            if ch.before is not None:
                row = ch.before
            elif prev is not None:
                row, extra = prev
                if befores is not None:
                    befores[(ch.table, ch.lsn)] = row
            else:
                row = _FILLERS[ch.table]
            deleted = 1
        else:
            row = ch.row
            if ch.unavailable:
                row = self._fill_unavailable(ch, prev, stats)
            deleted = 0
            state[k] = (row, extra)
        buf = buffers.get(ch.table)
        if buf is None:
            buf = buffers[ch.table] = _Columns.empty(ch.spec)
        buf.append(region, row, ch.lsn, commit_lsn, deleted, extra)
        if ch.row is None:
            state.pop(k, None)

    @staticmethod
    def _fill_unavailable(
        ch: RowChange, prev: tuple[tuple[object, ...], Any] | None, stats: WriteStats
    ) -> tuple[object, ...]:
        assert ch.row is not None
        values = list(ch.row)
        index = ch.spec.index
        for name in ch.unavailable:
            i = index[name]
            if prev is not None:
                values[i] = prev[0][i]
            else:
                # Never write the placeholder; NULL or a filler, and say so loudly.
                values[i] = _FILLERS[ch.table][i]
                stats.unresolved_placeholders += 1
                log.warning(
                    "writer.placeholder.unresolved",
                    region=ch.region,
                    table=ch.table,
                    key=ch.key,
                    column=name,
                )
        return tuple(values)

    def _previous_versions(
        self, region: str, transactions: Sequence[Transaction], stats: WriteStats
    ) -> tuple[
        dict[tuple[str, tuple[object, ...]], tuple[tuple[object, ...], Any]],
        set[tuple[str, tuple[object, ...]]],
    ]:
        """Latest projected row (any commit, deleted or not ignored) of every key whose
        first change in the batch needs it: a delete or a change with placeholders; and
        the keys with any such change (only their rows are followed through the batch)."""
        watched: set[tuple[str, tuple[object, ...]]] = set()
        for tx in transactions:
            for ch in tx.changes:
                if isinstance(ch, RowChange) and (
                    (ch.row is None and ch.before is None) or ch.unavailable
                ):
                    watched.add((ch.table, ch.key))
        seen: set[tuple[str, tuple[object, ...]]] = set()
        wanted: dict[str, list[object]] = {}
        for tx in transactions if watched else ():
            for ch in tx.changes:
                if not isinstance(ch, RowChange):
                    continue
                k = (ch.table, ch.key)
                if k in seen or k not in watched:
                    continue
                seen.add(k)
                if (ch.row is None and ch.before is None) or ch.unavailable:
                    wanted.setdefault(ch.table, []).append(ch.key[0])
        state: dict[tuple[str, tuple[object, ...]], tuple[tuple[object, ...], Any]] = {}
        for table, ids in wanted.items():
            spec = WMS_MODEL[table]
            (pk,) = spec.primary_key  # every WMS table has a single bigint key
            cols = ", ".join(f"`{c}`" for c in (*spec.column_names, "_extra", "_is_deleted"))
            sql = (
                f"SELECT v.* FROM (SELECT argMax(tuple({cols}), (_commit_lsn, _lsn)) AS v"
                f" FROM {table_name(table)} WHERE region = {{region:String}}"
                f" AND `{pk}` IN {{ids:Array(Int64)}} GROUP BY `{pk}`)"
            )
            rows = self._query(sql, {"region": region, "ids": ids}).result_rows
            n = len(spec.columns)
            for r in rows:
                if r[n + 1]:  # latest version is a delete: nothing to carry over
                    continue
                state[(table, (r[spec.index[pk]],))] = (tuple(r[:n]), r[n])
            stats.looked_up += len(ids)
        return state, watched

    def _truncate(self, region: str, ch: Truncate, commit_lsn: int) -> None:
        self._delete_current(region, ch.table, ch.lsn, commit_lsn, "truncate", before_lsn=ch.lsn)

    def _sweep(self, region: str, snapshot_lsn: int) -> None:
        """After a complete snapshot: keys it did not read again (their latest version is
        older than it) no longer exist in the WMS, e.g. rows deleted while the region's
        replication slot was lost; they get a delete version at the snapshot's LSN. A
        first snapshot sweeps nothing (every row has its LSN); repeating is harmless.
        A table with no version older than the snapshot is skipped: it has nothing to
        sweep, and the sweep's GROUP BY over every key cost seconds and GBs at 1M rows."""
        for table in WMS_MODEL:
            older = self._query(
                f"SELECT 1 FROM {table_name(table)} WHERE region = {{region:String}}"
                " AND _commit_lsn < {lsn:UInt64} LIMIT 1",
                {"region": region, "lsn": snapshot_lsn},
            ).result_rows
            if older:
                self._delete_current(region, table, snapshot_lsn, snapshot_lsn, "snapshot sweep")

    def _delete_current(
        self, region: str, table: str, lsn: int, commit_lsn: int, what: str, before_lsn: int = 0
    ) -> None:
        """A delete version at (`commit_lsn`, `lsn`) for every current key of `table` whose
        latest version is older than (`commit_lsn`, `before_lsn`) in version order: with
        the default 0, every key last written by an earlier commit (the snapshot sweep);
        for a truncate, its own LSN, so rows written earlier in its transaction go too
        and rows after it (higher LSN) stay."""
        spec = WMS_MODEL[table]
        (pk,) = spec.primary_key
        others = [c for c in (*spec.column_names, "_extra") if c != pk]
        cols = ", ".join(f"`{c}`" for c in (pk, *others))
        packed = ", ".join(f"`{c}`" for c in (*others, "_is_deleted", "_commit_lsn", "_lsn"))
        unpacked = ", ".join(f"v.{i}" for i in range(1, len(others) + 1))
        deleted, commit, change = len(others) + 1, len(others) + 2, len(others) + 3
        sql = (
            f"INSERT INTO {table_name(table)} (region, {cols}, _lsn, _commit_lsn, _is_deleted)"
            f" SELECT region, `{pk}`, {unpacked}, {{lsn:UInt64}}, {{commit:UInt64}}, 1 FROM"
            f" (SELECT region, `{pk}`, argMax(tuple({packed}), (_commit_lsn, _lsn)) AS v"
            f" FROM {table_name(table)} WHERE region = {{region:String}}"
            f" GROUP BY region, `{pk}`) WHERE v.{deleted} = 0"
            f" AND (v.{commit}, v.{change}) < ({{commit:UInt64}}, {{before:UInt64}})"
        )
        params = {"region": region, "lsn": lsn, "commit": commit_lsn, "before": before_lsn}
        self._write_waiting_rows()
        try:
            self._client.command(sql, params)
        except Exception as exc:  # driver errors have no common base; classify decides
            raise classify(exc, f"{what} of {table_name(table)}") from exc

    def _query(self, sql: str, params: dict[str, Any]) -> Any:
        """A read of rows: the rows waiting go in first."""
        self._write_waiting_rows()
        try:
            return self._client.query(sql, parameters=params)
        except Exception as exc:  # driver errors have no common base; classify decides
            raise classify(exc, "lookup of previous versions") from exc
