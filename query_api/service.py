"""What each endpoint does, between HTTP (app.py) and ClickHouse (read_model.queries,
query_api.repository): tenant scoping, consistency controls, freshness and cursors.

Reads are blocking driver calls; they run in worker threads, each on a client checked
out of a small pool (a clickhouse-connect client serialises its own calls, chDB or HTTP
session alike). The watermarks are read *before* the data, so the freshness an answer
reports is a lower bound of what it reflects (watermarks only move forward).
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple, TypeVar

import structlog
from anyio import CapacityLimiter
from anyio.to_thread import run_sync
from clickhouse_connect.driver.client import Client

from query_api import repository
from query_api.auth import Principal
from query_api.cursor import CursorCodec
from query_api.errors import ApiError, bad_request, not_found
from query_api.models import (
    MAX_TIME,
    MIN_TIME,
    ConsistencyParams,
    FreshnessState,
    MovementParams,
    SerialListParams,
    StockHistoryParams,
    StockListParams,
)
from read_model import queries
from read_model.client import make_client
from read_model.queries import StockRow
from read_model.writer import OnAdvance
from schemas.events import Watermark
from schemas.wms_model import ms_to_datetime
from stockcdc.settings import Settings

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: With the writer in this process telling the API its watermarks, they are still read
#: from ClickHouse this often (what it says is the truth; the push only comes first).
_PUSHED_REREAD_S = 5.0
#: How long the warehouse → region map is reused (refreshed on a miss anyway).
_WAREHOUSE_TTL_S = 5.0
#: Owner codes read per round trip when an all-owner page walks owners.
_OWNER_BATCH = 200


class ReadModel:
    """The API's access to ClickHouse: a pool of clients used from worker threads."""

    def __init__(self, clients: Sequence[Client]) -> None:
        if not clients:
            raise ValueError("at least one client")
        self.clients = list(clients)
        self._free: queue.SimpleQueue[Client] = queue.SimpleQueue()
        for c in clients:
            self._free.put(c)
        self._limiter = CapacityLimiter(len(clients))

    @classmethod
    def open(cls, settings: Settings) -> ReadModel:
        """`api_clickhouse_pool` clients on `settings.clickhouse_dsn`; for chDB (one
        engine in this process) no more than the cores it can run queries on."""
        n = max(1, settings.api_clickhouse_pool)
        if settings.clickhouse_dsn.startswith("chdb://"):
            n = min(n, os.cpu_count() or 1)
        return cls([make_client(settings) for _ in range(n)])

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(client, *args)` on a free client (blocking; from a worker thread)."""
        client = self._free.get()
        try:
            return fn(client, *args)
        finally:
            self._free.put(client)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`call` in a worker thread, at most one per client at a time."""
        return await run_sync(self.call, fn, *args, limiter=self._limiter)

    def close(self) -> None:
        for c in self.clients:
            c.close()


@dataclass(frozen=True, slots=True)
class Mark:
    """A region's watermark as readers see it."""

    region: str
    lsn: int
    commit_ts: datetime
    heartbeat_ts: datetime | None
    updated_at: datetime

    @property
    def as_of(self) -> datetime:
        """max(source commit time of the last applied transaction, latest heartbeat)."""
        hb = self.heartbeat_ts
        return self.commit_ts if hb is None or hb < self.commit_ts else hb

    def lag_ms(self, now: datetime) -> int:
        return max(0, int((now - self.as_of).total_seconds() * 1000))

    def advanced(self, wm: Watermark, now: datetime) -> Mark:
        """This mark after the writer wrote `wm`, as the `watermarks` view folds it: the
        highest LSN wins with its commit time, the latest heartbeat wins (a replay writes
        older watermarks again; they change nothing)."""
        lsn, commit_ts = wm.commit_lsn, ms_to_datetime(wm.commit_ts_ms)
        if self.lsn >= lsn:
            lsn, commit_ts = self.lsn, self.commit_ts
        hb = None if wm.heartbeat_ts_ms is None else ms_to_datetime(wm.heartbeat_ts_ms)
        if hb is None or (self.heartbeat_ts is not None and self.heartbeat_ts > hb):
            hb = self.heartbeat_ts
        return Mark(self.region, lsn, commit_ts, hb, now)


class Marks(NamedTuple):
    """Every region's watermarks: of everything (`watermarks`: drill-downs read there) and
    of the stock figures (`figure_watermarks`, written first: stock reads read there)."""

    rows: dict[str, Mark]
    figures: dict[str, Mark]

    def advanced(self, watermarks: Sequence[Watermark], rows: bool, now: datetime) -> Marks | None:
        """These marks after the writer wrote `watermarks` (the rows' when `rows`, which
        move the figures' too); None when one is of a region they do not know yet."""
        moved = Marks(dict(self.rows) if rows else self.rows, dict(self.figures))
        for wm in watermarks:
            kinds = (moved.rows, moved.figures) if rows else (moved.figures,)
            for marks in kinds:
                mark = marks.get(wm.region)
                if mark is None:
                    return None
                marks[wm.region] = mark.advanced(wm, now)
        return moved


def _marks(client: Client) -> Marks:
    def of(rows: list[queries.WatermarkRow]) -> dict[str, Mark]:
        return {
            w.region: Mark(
                w.region, w.applied_commit_lsn, w.source_commit_ts, w.heartbeat_ts, w.updated_at
            )
            for w in rows
        }

    return Marks(of(queries.watermarks(client)), of(queries.figure_watermarks(client)))


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class QueryService:
    """The endpoints' logic; one per app, shared by every request."""

    def __init__(self, settings: Settings, db: ReadModel) -> None:
        self.settings = settings
        self.db = db
        self.cursors = CursorCodec(settings.api_cursor_secret.get_secret_value().encode())
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._marks: tuple[float, Marks] = (-math.inf, Marks({}, {}))
        # Set by `follow_writer`: the loop the writer's watermarks are handed to.
        self._pushed_to: asyncio.AbstractEventLoop | None = None
        self._pushing = False
        # stock_point is node-local: on a replicated cluster single keys read stock_current.
        self._point = settings.clickhouse_cluster is None
        self._warehouses: tuple[float, dict[str, str]] = (-math.inf, {})

    # -- freshness and consistency ---------------------------------------------------

    async def marks(self, fresh: bool = False, figures: bool = False) -> dict[str, Mark]:
        """Every region's watermark (of the stock figures with `figures`) as
        `refresh_marks` last read it (an older watermark is still a true lower bound);
        read here when that is more than two refresh periods old (no refresher, or it
        fell behind), and always when `fresh`."""
        at, cached = self._marks
        now = time.monotonic()
        if fresh or now - at >= 2 * self._refresh_s():
            cached = await self.db.run(_marks)
            self._marks = (now, cached)
        return cached.figures if figures else cached.rows

    def _refresh_s(self) -> float:
        return _PUSHED_REREAD_S if self._pushing else self.settings.api_watermark_cache_ms / 1000

    async def refresh_marks(self) -> None:
        """Re-read the watermarks every `api_watermark_cache_ms` (with the writer in this
        process pushing them, every `_PUSHED_REREAD_S`), off the requests' path (the app
        runs it for its lifetime; with 0 every request reads them itself)."""
        self._pushed_to = asyncio.get_running_loop()
        if self.settings.api_watermark_cache_ms <= 0:
            return
        while True:
            try:
                await self.marks(fresh=True)
            except Exception as exc:  # the read model is down: each request says so itself
                log.warning("api.watermarks_unavailable", error=str(exc))
            await asyncio.sleep(self._refresh_s())

    def follow_writer(self) -> OnAdvance:
        """The projection writer of this process writes every region's watermarks (embedded
        mode): the callback it calls, from its thread, after writing some. Readers see them
        at once, instead of at the next re-read (a ClickHouse query every
        `api_watermark_cache_ms`, which is then needed only every `_PUSHED_REREAD_S`)."""
        self._pushing = True

        def pushed(watermarks: Sequence[Watermark], rows: bool) -> None:
            loop = self._pushed_to
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._advance_marks, tuple(watermarks), rows)

        return pushed

    def _advance_marks(self, watermarks: Sequence[Watermark], rows: bool) -> None:
        """On the event loop: fold the writer's watermarks into the cached marks."""
        at, marks = self._marks
        if at == -math.inf:
            return  # never read yet: the first read has them
        moved = marks.advanced(watermarks, rows, self.clock())
        if moved is None:  # a region new to the cache: the next re-read names it
            self._marks = (-math.inf, marks)
            return
        self._marks = (time.monotonic(), moved)

    async def warehouses(self) -> dict[str, str]:
        """Warehouse code → region, cached briefly: warehouses never change region."""
        at, cached = self._warehouses
        now = time.monotonic()
        if now - at < _WAREHOUSE_TTL_S:
            return cached
        found = await self.db.run(repository.warehouse_regions)
        self._warehouses = (now, found)
        return found

    def freshness(self, marks: dict[str, Mark], regions: Iterable[str]) -> dict[str, Any]:
        """`{region: {as_of, lsn, lag_ms}}` of the regions involved in an answer."""
        now = self.clock()
        return {
            r: {"as_of": _iso(m.as_of), "lsn": m.lsn, "lag_ms": m.lag_ms(now)}
            for r in sorted(set(regions))
            if (m := marks.get(r)) is not None
        }

    def state(self, mark: Mark | None, now: datetime) -> FreshnessState:
        if mark is None:
            return FreshnessState.UNKNOWN
        live = self.settings.api_live_lag_ms
        if mark.lag_ms(now) <= live:
            return FreshnessState.LIVE
        if (now - mark.updated_at).total_seconds() * 1000 <= live:
            return FreshnessState.CATCHING_UP
        return FreshnessState.STALE

    async def wait_for(
        self, min_as_of: datetime, regions: Collection[str], figures: bool = False
    ) -> dict[str, Mark]:
        """Poll the watermarks (the figures' with `figures`) until every region in
        `regions` (every known region when empty) is at or past `min_as_of`; 504 when the
        server's timeout runs out first."""
        s = self.settings
        deadline = time.monotonic() + s.api_min_as_of_timeout_ms / 1000
        while True:
            marks = await self.marks(fresh=True, figures=figures)
            wanted = regions or marks.keys()
            behind = sorted(r for r in wanted if r not in marks or marks[r].as_of < min_as_of)
            if not behind:
                return marks
            left = deadline - time.monotonic()
            # A watermark never runs ahead of the clock: no point waiting past the deadline.
            future = (min_as_of - self.clock()).total_seconds() > max(left, 0)
            if left <= 0 or future:
                raise ApiError(
                    504,
                    "not_caught_up",
                    f"region(s) {', '.join(behind)} did not reach min_as_of "
                    f"{_iso(min_as_of)} within {s.api_min_as_of_timeout_ms} ms",
                )
            await asyncio.sleep(min(s.api_min_as_of_poll_ms / 1000, left))

    async def consistent(
        self,
        params: ConsistencyParams,
        regions: Callable[[], Awaitable[Collection[str]]],
        figures: bool = False,
    ) -> tuple[dict[str, Mark], set[str]]:
        """Apply `min_as_of`, then `max_staleness_ms`, to the regions an answer involves;
        returns the watermarks (read before the data; the figures' for an answer of stock
        figures only) and those regions. `regions` is asked again after a wait: data that
        arrived meanwhile may involve new regions."""
        involved = set(await regions())
        if params.min_as_of is not None:
            marks = await self.wait_for(params.min_as_of, involved, figures)
            involved = set(await regions())
        else:
            marks = await self.marks(figures=figures)
        if params.max_staleness_ms is not None:
            self._check_staleness(marks, involved, params.max_staleness_ms)
        return marks, involved

    def _check_staleness(self, marks: dict[str, Mark], involved: set[str], max_ms: int) -> None:
        now = self.clock()
        stale = {
            r: (marks[r].lag_ms(now) if r in marks else None)
            for r in sorted(involved)
            if r not in marks or marks[r].lag_ms(now) > max_ms
        }
        if not stale:
            return
        worst = max((lag or 0) - max_ms for lag in stale.values())
        retry = max(1, min(60, math.ceil(worst / 1000)))
        detail = ", ".join(
            f"region {r} is {lag} ms behind" if lag is not None else f"region {r} has no watermark"
            for r, lag in stale.items()
        )
        raise ApiError(
            503, "stale", f"{detail} (max_staleness_ms={max_ms})", {"Retry-After": str(retry)}
        )

    # -- regions an answer involves ----------------------------------------------------

    async def _warehouse_region(self, warehouse: str) -> set[str]:
        region = (await self.warehouses()).get(warehouse)
        if region is None:  # new since the cache was filled, or unknown
            self._warehouses = (-math.inf, {})
            region = (await self.warehouses()).get(warehouse)
        return {region} if region else set()

    async def _owner_regions(self, owner: str) -> set[str]:
        # at the watermarks the answer will be read at (cached, so no read of its own)
        cut = _cut(await self.marks())
        return set(await self.db.run(partial(queries.owner_ids, point=self._point), owner, cut))

    async def _all_regions(self) -> set[str]:
        return set(await self.marks())

    # -- endpoints ---------------------------------------------------------------------

    async def stock_one(
        self, who: Principal, owner: str, warehouse: str, sku: str, p: ConsistencyParams
    ) -> dict[str, Any]:
        if not who.may_see(owner):
            raise not_found("no such stock key")
        marks, involved = await self.consistent(
            p, lambda: self._warehouse_region(warehouse), figures=True
        )
        # as of the figure watermarks the freshness reports (a watermark is a batch's
        # end: the serving figures are exact there), without reading them again
        cut = _cut(marks)
        row = await self.db.run(self._stock_one, owner, warehouse, sku, cut) if involved else None
        if row is None:
            raise not_found("no such stock key")
        out = _as_dict(row)
        out["freshness"] = self.freshness(marks, involved)
        return out

    def _stock_one(
        self, client: Client, owner: str, warehouse: str, sku: str, cut: dict[str, int]
    ) -> StockRow | None:
        return queries.stock_one(client, owner, warehouse, sku, cut, point=self._point)

    async def stock_list(self, who: Principal, p: StockListParams) -> dict[str, Any]:
        owner = p.owner
        if who.owner is not None:
            if owner is not None and owner != who.owner:
                return {"items": [], "next_cursor": None, "freshness": {}}  # as if absent
            owner = who.owner
        filters = [owner or "", p.warehouse or "", p.sku or ""]
        after: tuple[str, str, str] | None = None
        if p.cursor is not None:
            pos = self.cursors.decode(p.cursor, "stock", filters, (str, str, str))
            after = (pos[0], pos[1], pos[2])

        async def regions() -> set[str]:
            if p.warehouse is not None:
                return await self._warehouse_region(p.warehouse)
            if owner is not None:
                return await self._owner_regions(owner)
            return await self._all_regions()

        marks, involved = await self.consistent(p, regions, figures=True)
        rows = await self.db.run(_stock_rows, owner, p.warehouse, p.sku, p.limit + 1, after)
        more = len(rows) > p.limit
        rows = rows[: p.limit]
        nxt = None
        if more:
            last = rows[-1]
            nxt = self.cursors.encode("stock", filters, [last.owner, last.warehouse, last.sku])
        return {"items": rows, "next_cursor": nxt, "freshness": self.freshness(marks, involved)}

    async def lots(
        self, who: Principal, owner: str, warehouse: str, sku: str, p: ConsistencyParams
    ) -> dict[str, Any]:
        marks, involved = await self._key_scope(who, owner, warehouse, p)
        rows = (
            await self.db.run(
                partial(_of_key, point=self._point),
                partial(queries.key_lots, point=self._point),
                owner,
                warehouse,
                sku,
                _cut(marks),
            )
            if involved
            else None
        )
        if rows is None:
            raise not_found("no such stock key")
        return {"items": rows, "freshness": self.freshness(marks, involved)}

    async def serials(
        self, who: Principal, owner: str, warehouse: str, sku: str, p: SerialListParams
    ) -> dict[str, Any]:
        marks, involved = await self._key_scope(who, owner, warehouse, p)
        status = p.status.value if p.status is not None else None
        rows = (
            await self.db.run(
                partial(_of_key, point=self._point),
                queries.key_serials,
                owner,
                warehouse,
                sku,
                _cut(marks),
                status,
            )
            if involved
            else None
        )
        if rows is None:
            raise not_found("no such stock key")
        return {"items": rows, "freshness": self.freshness(marks, involved)}

    async def _key_scope(
        self, who: Principal, owner: str, warehouse: str, p: ConsistencyParams
    ) -> tuple[dict[str, Mark], set[str]]:
        """The watermarks and regions of an answer about one stock key; 404 for a key of
        an owner `who` may not see."""
        if not who.may_see(owner):
            raise not_found("no such stock key")
        return await self.consistent(p, lambda: self._warehouse_region(warehouse))

    async def serial(
        self, who: Principal, owner: str, sku: str, serial_no: str, p: ConsistencyParams
    ) -> dict[str, Any]:
        if not who.may_see(owner):
            raise not_found("no such serial")
        marks, involved = await self.consistent(p, lambda: self._owner_regions(owner))
        cut = _cut(marks)
        read = partial(queries.serial, point=self._point)
        found = await self.db.run(read, owner, sku, serial_no, cut) if involved else None
        if found is None:
            raise not_found("no such serial")
        current, history = found
        return {
            "owner": owner,
            "sku": sku,
            "serial_no": serial_no,
            "current": current,
            "history": history,
            "freshness": self.freshness(marks, involved),
        }

    async def movements(self, who: Principal, p: MovementParams) -> dict[str, Any]:
        if p.since is not None and p.until is not None and p.since >= p.until:
            raise bad_request("invalid_parameter", "since must be before until")
        owner = p.owner
        if who.owner is not None:
            if owner is not None and owner != who.owner:
                return {"items": [], "next_cursor": None, "freshness": {}}  # as if absent
            owner = who.owner
        filters = [
            owner or "",
            p.warehouse or "",
            p.sku or "",
            _iso(p.since) if p.since else "",
            _iso(p.until) if p.until else "",
        ]
        after: tuple[datetime, str, int] | None = None
        if p.cursor is not None:
            pos = self.cursors.decode(p.cursor, "movements", filters, (str, str, int))
            after = _movement_position(pos)

        async def regions() -> set[str]:
            if p.warehouse is not None:
                return await self._warehouse_region(p.warehouse)
            if owner is not None:
                return await self._owner_regions(owner)
            return await self._all_regions()

        marks, involved = await self.consistent(p, regions)
        rows = await self.db.run(
            partial(_movement_rows, point=self._point),
            owner,
            p.warehouse,
            p.sku,
            p.since,
            p.until,
            p.limit + 1,
            after,
            _cut(marks),
        )
        more = len(rows) > p.limit
        rows = rows[: p.limit]
        nxt = None
        if more:
            last = rows[-1]
            nxt = self.cursors.encode(
                "movements", filters, [_iso(last.occurred_at), last.region, last.id]
            )
        return {"items": rows, "next_cursor": nxt, "freshness": self.freshness(marks, involved)}

    async def stock_history(
        self, who: Principal, owner: str, sku: str, p: StockHistoryParams
    ) -> dict[str, Any]:
        """A SKU's on-hand and allocated over time per warehouse, from its ledger."""
        if p.since is not None and p.until is not None and p.since >= p.until:
            raise bad_request("invalid_parameter", "since must be before until")
        if not who.may_see(owner):
            raise not_found("no such sku")

        async def regions() -> set[str]:
            if p.warehouse is not None:
                return await self._warehouse_region(p.warehouse)
            return await self._owner_regions(owner)

        marks, involved = await self.consistent(p, regions)
        now = self.clock()
        found = (
            await self.db.run(
                queries.sku_history, owner, sku, p.warehouse, p.since, p.until, p.points, now
            )
            if involved
            else None
        )
        if found is None:
            raise not_found("no such sku")
        start, step_us, buckets = found
        end = max(p.until or now, start)
        return {
            "owner": owner,
            "sku": sku,
            "since": _iso(start),
            "until": _iso(end),
            "step_ms": step_us // 1000,
            "series": history_series(start, step_us, end, buckets),
            "freshness": self.freshness(marks, involved),
        }

    async def freshness_report(self) -> dict[str, Any]:
        marks = await self.marks()
        figures = await self.marks(figures=True)
        warehouses = await self.warehouses()
        now = self.clock()
        names = sorted(set(self.settings.regions) | set(marks))
        regions = []
        for r in names:
            m, f = marks.get(r), figures.get(r)
            regions.append(
                {
                    "region": r,
                    "applied_lsn": m.lsn if m else None,
                    "source_commit_ts": m.commit_ts if m else None,
                    "heartbeat_ts": m.heartbeat_ts if m else None,
                    "as_of": m.as_of if m else None,
                    "lag_ms": m.lag_ms(now) if m else None,
                    "figures_lsn": f.lsn if f else None,
                    "figures_lag_ms": f.lag_ms(now) if f else None,
                    "state": self.state(m, now).value,
                }
            )
        wh = [
            {
                "warehouse": code,
                "region": r,
                "lag_ms": marks[r].lag_ms(now) if r in marks else None,
                "state": self.state(marks.get(r), now).value,
            }
            for code, r in sorted(warehouses.items())
        ]
        return {"regions": regions, "warehouses": wh, "freshness": self.freshness(marks, marks)}

    async def ready(self) -> tuple[bool, str, list[str]]:
        """Projection reachable and every configured region has a watermark."""
        marks = await self.marks(fresh=True)
        missing = [r for r in self.settings.regions if r not in marks]
        if missing:
            return False, f"no watermark yet for {', '.join(missing)}", sorted(marks)
        return True, "projection reachable, watermarks known", sorted(marks)


_STOCK_FIELDS = tuple(f.name for f in fields(StockRow))


def _as_dict(row: StockRow) -> dict[str, Any]:
    return {f: getattr(row, f) for f in _STOCK_FIELDS}


def _stock_rows(
    client: Client,
    owner: str | None,
    warehouse: str | None,
    sku: str | None,
    limit: int,
    after: tuple[str, str, str] | None,
) -> list[StockRow]:
    """Up to `limit` keys after the keyset position `after` = (owner, warehouse, sku),
    ordered by (owner, warehouse, sku); one owner, or every owner in code order."""
    out: list[StockRow] = []
    start = after[0] if after else ""
    done = ""  # owners already read (codes <= done), when walking every owner
    while len(out) < limit:
        if owner is not None:
            batch = [owner] if not after or owner >= after[0] else []
        else:
            batch = [o for o in repository.owner_codes(client, start, _OWNER_BATCH) if o > done]
        for o in batch:
            resume = after is not None and o == after[0]
            need = limit - len(out)
            if sku is not None:
                if resume and after is not None and after[2] != sku:
                    continue
                aw = after[1] if resume and after is not None else ""
                out += queries.stock_page_sku(client, o, sku, warehouse, need, aw)
            else:
                pos = (after[1], after[2]) if resume and after is not None else None
                out += queries.stock_page(client, o, warehouse, need, pos)
            done = o
            if len(out) >= limit:
                break
        if owner is not None or len(batch) == 0:
            break
        start = done
    return out[:limit]


def _cut(marks: Mapping[str, Mark]) -> dict[str, int]:
    """The visibility cut of the watermarks an answer reports: its data is read as of
    them, so the freshness it carries is exactly its data's."""
    return {r: m.lsn for r, m in marks.items()}


def _of_key(
    client: Client,
    read: Callable[..., T],
    owner: str,
    warehouse: str,
    sku: str,
    cut: Mapping[str, int],
    *args: Any,
    point: bool,
) -> T | None:
    """`read(client, key, *args, cut)` of a key resolved at `cut` (by gets where they
    settle it, with `point`: not on a replicated cluster); None when unknown."""
    key = queries.resolve(client, owner, warehouse, sku, cut, point=point)
    return None if key is None else read(client, key, *args, cut)


def _movement_position(pos: list[Any]) -> tuple[datetime, str, int]:
    """(occurred_at, region, id) of a decoded movements cursor: its time an ISO time with
    an offset within the API's time range (ClickHouse's DateTime64 refuses others)."""
    ts, region, id_ = pos
    try:
        at = datetime.fromisoformat(ts)
    except ValueError:
        raise bad_request("bad_cursor", "the cursor is malformed") from None
    if at.tzinfo is None or not MIN_TIME <= at < MAX_TIME:
        raise bad_request("bad_cursor", "the cursor is malformed")
    return at, region, id_


def _movement_rows(
    client: Client,
    owner: str | None,
    warehouse: str | None,
    sku: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: tuple[datetime, str, int] | None,
    cut: Mapping[str, int],
    *,
    point: bool,
) -> list[repository.OwnedMovement]:
    if owner is None:
        return repository.movements_all_owners(client, warehouse, sku, since, until, limit, after)
    rows = queries.movements(
        client, owner, warehouse, sku, since, until, limit, after, cut, point=point
    )
    return repository.with_owner(owner, rows)


def history_series(
    start: datetime, step_us: int, end: datetime, buckets: Sequence[queries.HistoryBucket]
) -> list[dict[str, Any]]:
    """Per warehouse, the running sums of its ledger buckets (ordered by warehouse, then
    bucket; bucket -1 holds everything before `start`) as points: the opening figures at
    `start`, the figures at the end of each bucket (capped at `end`), the closing
    figures at `end`."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    on_hand = allocated = 0

    def close(series: dict[str, Any]) -> None:
        if series["points"][-1]["at"] != _iso(end):  # the last bucket may end at `end`
            series["points"].append(_point(end, on_hand, allocated))

    for b in buckets:
        if current is None or current["warehouse"] != b.warehouse:
            if current is not None:
                close(current)
            on_hand = allocated = 0
            current = {"warehouse": b.warehouse, "region": b.region, "points": []}
            out.append(current)
            if b.bucket >= 0:
                current["points"].append(_point(start, 0, 0))
        on_hand += b.d_on_hand
        allocated += b.d_allocated
        if b.bucket < 0:
            current["points"].append(_point(start, on_hand, allocated))
        else:
            at = min(start + timedelta(microseconds=step_us * (b.bucket + 1)), end)
            current["points"].append(_point(at, on_hand, allocated))
    if current is not None:
        close(current)
    return out


def _point(at: datetime, on_hand: int, allocated: int) -> dict[str, Any]:
    return {"at": _iso(at), "on_hand": on_hand, "allocated": allocated}
