"""The workload runner: worker threads per region drive a weighted mix of operations.

Each worker has its own connection (as the workload role) and runs one operation per
WMS transaction through :func:`simulator.db.run_txn` (retries on serialization
failures and deadlocks). Targets come from in-memory task pools (orders to allocate,
pick, ship; inbound lines to receive; holds to release), filled at start from the
database and by the operations themselves, or from a cheap random probe of the balance
rows. A pacer per region holds the target rate; the report gives the achieved rate and
latency percentiles of the WMS transactions.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors

from simulator import ops
from simulator.db import Conn, DbNames, connect, dbname_for, run_txn
from simulator.errors import Rejected, SimulatorError
from stockcdc.settings import Region, Settings

Cur = psycopg.Cursor[Any]

#: Default weights of the operation mix (relative; any missing key weighs 0).
DEFAULT_MIX: Final[dict[str, float]] = {
    "create_outbound": 14,
    "allocate": 14,
    "pick": 11,
    "ship": 10,
    "cancel": 2,
    "create_inbound": 4,
    "advance_inbound": 3,
    "receive": 7,
    "close_inbound": 1,
    "qc_hold": 1,
    "qc_release": 1,
    "putaway": 7,
    "move": 6,
    "adjust": 1,
    "count": 2,
    "freeze": 1,
    "unfreeze": 1,
    "damage": 1,
    "customer_return": 2,
    "return_disposition": 2,
    "scrap": 1,
    "expire": 1,
    "transfer_out": 1,
    "master_data": 2,
}


# --------------------------------------------------------------------------- region state


@dataclass
class RegionState:
    """What the workers of one region share: reference data and task pools."""

    region: Region
    dbname: str | None
    warehouses: dict[int, str]  # id → code
    locations: dict[tuple[int, str], list[int]]  # (warehouse id, loc_type) → ids
    owners: dict[int, str]  # id → code
    skus: dict[int, tuple[int, str, str, int | None]]  # id → (owner, code, tracking, shelf)
    skus_by_owner: dict[int, list[int]]
    lots: dict[int, list[int]]  # sku id → lot ids
    pools: dict[str, deque[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_inventory_id: int = 1

    def pool(self, name: str) -> deque[Any]:
        with self.lock:
            return self.pools.setdefault(name, deque(maxlen=50_000))

    @classmethod
    def load(cls, conn: Conn, region: Region, dbname: str | None) -> RegionState:
        """Reference data and open tasks of a region (one snapshot)."""
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT id, code FROM warehouse ORDER BY id")
            warehouses = {r[0]: r[1] for r in cur.fetchall()}
            if not warehouses:
                raise SimulatorError(f"{region.name}: no warehouses; seed the database first")
            cur.execute("SELECT id, warehouse_id, loc_type FROM location WHERE active ORDER BY id")
            locations: dict[tuple[int, str], list[int]] = {}
            for lid, wid, lt in cur.fetchall():
                locations.setdefault((wid, lt), []).append(lid)
            cur.execute("SELECT id, code FROM owner ORDER BY id")
            owners = {r[0]: r[1] for r in cur.fetchall()}
            cur.execute("SELECT id, owner_id, sku_code, tracking, shelf_life_days FROM sku")
            skus = {r[0]: (r[1], r[2], r[3], r[4]) for r in cur.fetchall()}
            by_owner: dict[int, list[int]] = {}
            for sid, (oid, *_rest) in sorted(skus.items()):
                by_owner.setdefault(oid, []).append(sid)
            cur.execute("SELECT id, sku_id FROM lot ORDER BY id")
            lots: dict[int, list[int]] = {}
            for lot_id, sku_id in cur.fetchall():
                lots.setdefault(sku_id, []).append(lot_id)
            state = cls(region, dbname, warehouses, locations, owners, skus, by_owner, lots)
            cur.execute(
                "SELECT id, warehouse_id, status FROM outbound_order "
                "WHERE status IN ('CREATED', 'BACKORDER', 'ALLOCATED', 'PICKING', 'PACKED') "
                "ORDER BY id DESC LIMIT 20000"
            )
            stage = {
                "CREATED": "to_allocate",
                "BACKORDER": "to_allocate",
                "ALLOCATED": "to_pick",
                "PICKING": "to_pick",
                "PACKED": "to_ship",
            }
            for oid, wid, status in cur.fetchall():
                state.pool(stage[status]).append((oid, wid))
            cur.execute(
                "SELECT o.id, o.status, l.id, o.warehouse_id FROM inbound_order o "
                "JOIN inbound_line l ON l.inbound_order_id = o.id "
                "WHERE o.status IN ('CREATED', 'IN_TRANSIT', 'ARRIVED', 'RECEIVING') "
                "AND l.qty_received < l.qty_expected ORDER BY o.id DESC LIMIT 20000"
            )
            for oid, status, line_id, wid in cur.fetchall():
                if status in ops.INBOUND_ADVANCE:
                    state.pool("to_advance").append(oid)
                state.pool("to_receive").append((line_id, wid))
            cur.execute(
                "SELECT id FROM inbound_order WHERE status = 'RECEIVED' ORDER BY id DESC LIMIT 5000"
            )
            state.pool("to_close").extend(r[0] for r in cur.fetchall())
            cur.execute("SELECT id, hold_type FROM inventory_hold WHERE status = 'ACTIVE'")
            for hid, hold_type in cur.fetchall():
                state.pool("qc_holds" if hold_type == "QC" else "freeze_holds").append(hid)
            cur.execute("SELECT coalesce(max(id), 1) FROM inventory")
            row = cur.fetchone()
            state.max_inventory_id = int(row[0]) if row else 1
        return state

    def locs(self, warehouse_id: int, *loc_types: str) -> list[int]:
        return [lid for lt in loc_types for lid in self.locations.get((warehouse_id, lt), [])]


# --------------------------------------------------------------------------- stats


@dataclass
class Stats:
    """Counters and latencies of one worker (merged per region for the report)."""

    applied: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    retries: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def merge(self, other: Stats) -> None:
        self.applied.update(other.applied)
        self.rejected.update(other.rejected)
        self.errors.update(other.errors)
        self.error_samples.extend(other.error_samples[: max(0, 10 - len(self.error_samples))])
        self.retries += other.retries
        self.latencies_ms.extend(other.latencies_ms)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


@dataclass
class RegionReport:
    """What a run did in one region."""

    region: str
    workers: int
    seconds: float
    stats: Stats
    target_rate: float | None

    @property
    def applied(self) -> int:
        return sum(self.stats.applied.values())

    @property
    def rate(self) -> float:
        return self.applied / self.seconds if self.seconds > 0 else 0.0

    def latency(self, q: float) -> float:
        return percentile(self.stats.latencies_ms, q)

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "applied": self.applied,
            "rejected": sum(self.stats.rejected.values()),
            "errors": sum(self.stats.errors.values()),
            "error_samples": self.stats.error_samples,
            "retries": self.stats.retries,
            "target_rate": self.target_rate,
            "achieved_rate": round(self.rate, 1),
            "latency_ms": {f"p{q}": round(self.latency(q), 2) for q in (50, 95, 99)},
            "by_operation": dict(sorted(self.stats.applied.items())),
        }


# --------------------------------------------------------------------------- pacing


class Pacer:
    """Shared by a region's workers: hands out evenly spaced start times at `rate` per
    second (None = as fast as possible) and stops after `count` operations or at
    `deadline` (monotonic)."""

    def __init__(
        self,
        rate: float | None,
        count: int | None,
        deadline: float | None,
        stop: threading.Event | None = None,
    ) -> None:
        self._stop = stop  # set from outside: every region's run ends
        self._interval = 1.0 / rate if rate else 0.0
        self._left = count
        self._deadline = deadline
        self._next = time.monotonic()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.stopped = threading.Event()

    def next_slot(self) -> bool:
        """Wait for the next slot; False when the run is over. Every True must be
        answered by `done()` or `give_back()`."""
        while True:
            with self._lock:
                if self._stop is not None and self._stop.is_set():
                    self.stopped.set()
                if self.stopped.is_set():
                    return False
                exhausted = self._left is not None and self._left <= 0
                if exhausted and self._in_flight == 0:
                    self.stopped.set()
                    return False
                if not exhausted:
                    if self._left is not None:
                        self._left -= 1
                    self._in_flight += 1
                    now = time.monotonic()
                    # never bank more than a second of missed slots
                    slot = max(self._next, now - 1.0)
                    self._next = slot + self._interval
                    break
            # The count is used up but an operation in flight may still give its slot
            # back (it found nothing to do): wait for it rather than end short.
            time.sleep(0.005)
        if self._deadline is not None and slot >= self._deadline:
            self.stopped.set()
            self.done()
            return False
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return True

    def done(self) -> None:
        """The operation of a slot ended, applied or failed: the slot is used."""
        with self._lock:
            self._in_flight -= 1

    def give_back(self) -> None:
        """An operation found nothing to do: it does not count towards `count`, and its
        time slot is handed out again (the rate is of operations applied: a run at 150
        ops/s applied 143 when a twentieth of them found nothing to pick or ship)."""
        with self._lock:
            self._in_flight -= 1
            if self._left is not None:
                self._left += 1
            self._next -= self._interval


# --------------------------------------------------------------------------- the worker


class Worker:
    """One thread of one region: picks an operation by weight, finds a target, runs it."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        states: Mapping[str, RegionState],
        region: Region,
        mix: Mapping[str, float],
        pacer: Pacer,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.settings = settings
        self.states = states
        self.state = states[region.name]
        self.region = region
        self.pacer = pacer
        self.rng = rng
        self.stats = Stats()
        self.error: BaseException | None = None
        self._conns: dict[str, Conn] = {}
        names = [k for k, w in mix.items() if w > 0]
        unknown = set(names) - set(DRIVERS)
        if unknown:
            raise SimulatorError(f"unknown operations in the mix: {sorted(unknown)}")
        self._ops = names
        self._weights = [mix[k] for k in names]

    def conn(self, region_name: str | None = None) -> Conn:
        name = region_name or self.region.name
        if name not in self._conns:
            st = self.states[name]
            self._conns[name] = connect(self.settings, st.region, st.dbname)
        return self._conns[name]

    def close(self) -> None:
        for c in self._conns.values():
            c.close()

    def txn(self, fn: Callable[[Cur], Any], region_name: str | None = None) -> Any:
        """Run one WMS transaction, timing it (retries included)."""

        def count_retry(_exc: Exception) -> None:
            self.stats.retries += 1

        started = time.perf_counter()
        result = run_txn(self.conn(region_name), fn, on_retry=count_retry)
        self.stats.latencies_ms.append(1000 * (time.perf_counter() - started))
        return result

    def run(self) -> None:
        try:
            while self.pacer.next_slot():
                op = self.rng.choices(self._ops, self._weights)[0]
                try:
                    self.step(op)
                except BaseException as exc:
                    self.pacer.done()  # an unexpected failure still releases its slot
                    self.error = exc  # re-raised by `run` once every worker is done
                    raise
        finally:
            self.close()

    def step(self, op: str) -> bool:
        """Run one operation; True if it changed the database."""
        try:
            done = DRIVERS[op](self)
        except Rejected:
            self.stats.rejected[op] += 1
            self.pacer.give_back()
            return False
        except (SimulatorError, psycopg.Error) as exc:
            if isinstance(exc, pg_errors.UniqueViolation):  # a random order number clashed
                self.stats.rejected[op] += 1
                self.pacer.give_back()
                return False
            self.stats.errors[op] += 1
            self.pacer.done()
            if len(self.stats.error_samples) < 10:
                self.stats.error_samples.append(f"{op}: {type(exc).__name__}: {exc}")
            if self.conn().closed:
                self._conns.pop(self.region.name, None)
            return False
        if done:
            self.stats.applied[op] += 1
            self.pacer.done()
        else:
            self.stats.rejected[op] += 1
            self.pacer.give_back()
        return bool(done)

    # ------------------------------------------------------------------ helpers

    def sample_row(
        self,
        statuses: Sequence[str],
        loc_types: Sequence[str],
        *,
        free_only: bool = True,
        extra: str = "",
    ) -> tuple[Any, ...] | None:
        """A random balance row of this region (cheap: walk the primary key from a
        random id). Returns (id, warehouse, location, sku, lot, on_hand, free, tracking)."""
        start = self.rng.randint(1, max(1, self.state.max_inventory_id))
        where = (
            "i.status = ANY(%s) AND loc.loc_type = ANY(%s) "
            + ("AND i.qty_on_hand > i.qty_allocated " if free_only else "")
            + extra
        )
        query = (
            "SELECT i.id, i.warehouse_id, i.location_id, i.sku_id, i.lot_id, i.qty_on_hand, "
            "i.qty_on_hand - i.qty_allocated, s.tracking FROM inventory i "
            "JOIN location loc ON loc.id = i.location_id JOIN sku s ON s.id = i.sku_id "
            "LEFT JOIN lot l ON l.id = i.lot_id "
            f"WHERE {where} AND i.id {{}} %s ORDER BY i.id {{}} LIMIT 1"
        )
        conn = self.conn()
        for cmp, order in ((">=", "ASC"), ("<", "DESC")):
            row = conn.execute(
                query.format(cmp, order), (list(statuses), list(loc_types), start)
            ).fetchone()
            if row is not None:
                if row[0] > self.state.max_inventory_id:
                    self.state.max_inventory_id = row[0]
                return tuple(row)
        return None

    def refresh_max_id(self) -> None:
        row = self.conn().execute("SELECT coalesce(max(id), 1) FROM inventory").fetchone()
        if row:
            self.state.max_inventory_id = int(row[0])

    def pop(self, pool: str) -> Any:
        try:
            return self.state.pool(pool).popleft()
        except IndexError:
            return None

    def order_no(self, prefix: str, warehouse_id: int) -> str:
        return f"{prefix}-{self.state.warehouses[warehouse_id]}-{uuid.uuid4().hex[:10].upper()}"

    def serial_nos(self, n: int) -> list[str]:
        return [f"SN{self.region.index}{uuid.uuid4().hex[:13].upper()}" for _ in range(n)]


# --------------------------------------------------------------------------- drivers
# Each driver finds a target and runs one operation; returns True if it applied.


def _create_outbound(w: Worker, order_type: str = "B2C") -> bool:
    row = w.sample_row(
        ("AVAILABLE",), ("STORAGE", "PICK"), extra="AND NOT (l.expiry_date < current_date) IS TRUE "
    )
    if row is None:
        return False
    _id, wid, _loc, sku_id, lot_id, _oh, free, _tr = row
    owner_id = w.state.skus[sku_id][0]
    rule = w.rng.choices(("FEFO", "FIFO", "SPECIFIED"), (6, 3, 1))[0]
    if rule == "SPECIFIED" and lot_id is None:
        rule = "FEFO"
    lines = [
        ops.OutboundLineSpec(
            sku_id, w.rng.randint(1, max(1, min(3, free))), lot_id if rule == "SPECIFIED" else None
        )
    ]
    others = [s for s in w.state.skus_by_owner.get(owner_id, []) if s != sku_id]
    if others and rule != "SPECIFIED" and w.rng.random() < 0.3:
        lines.append(ops.OutboundLineSpec(w.rng.choice(others), w.rng.randint(1, 2)))
    dest = None
    if order_type == "TRANSFER":
        choices = [
            (name, wcode)
            for name, st in w.states.items()
            for wcode in st.warehouses.values()
            if wcode != w.state.warehouses[wid]
        ]
        if not choices:
            return False
        dest = "/".join(w.rng.choice(choices))
        rule = "FEFO"
        lines = [ops.OutboundLineSpec(sku_id, w.rng.randint(1, max(1, min(5, free))))]
    else:
        order_type = w.rng.choice(("B2C", "B2C", "B2B"))
    order_id = w.txn(
        lambda cur: ops.create_outbound(
            cur,
            warehouse_id=wid,
            owner_id=owner_id,
            order_no=w.order_no("TO" if order_type == "TRANSFER" else "SO", wid),
            lines=lines,
            order_type=order_type,
            lot_rule=rule,
            platform_order_no=dest or f"MKT-{w.rng.randrange(10**10):010d}",
        )
    )
    w.state.pool("to_allocate").append((order_id, wid))
    return True


def _allocate(w: Worker) -> bool:
    item = w.pop("to_allocate")
    if item is None:
        return False
    order_id, _wid = item
    result: ops.AllocateResult = w.txn(
        lambda cur: ops.allocate(cur, order_id=order_id, operator=w.name)
    )
    if result.status == "ALLOCATED":
        w.state.pool("to_pick").append(item)
    elif w.rng.random() < 0.5:
        w.state.pool("backorders").append(item)
    else:
        w.state.pool("to_allocate").append(item)
    return True


def _pick(w: Worker) -> bool:
    item = w.pop("to_pick")
    if item is None:
        return False
    order_id, wid = item
    staging = w.rng.choice(w.state.locs(wid, "STAGING"))
    status = w.txn(
        lambda cur: ops.pick(
            cur,
            order_id=order_id,
            staging_location_id=staging,
            operator=w.name,
            max_allocations=1 if w.rng.random() < 0.2 else None,
        )
    )
    w.state.pool("to_pick" if status == "PICKING" else "to_ship").append(item)
    return True


def _ship(w: Worker) -> bool:
    item = w.pop("to_ship")
    if item is None:
        return False
    order_id, wid = item
    row = (
        w.conn()
        .execute(
            "SELECT order_type, platform_order_no, order_no FROM outbound_order WHERE id = %s",
            (order_id,),
        )
        .fetchone()
    )
    transfer = row is not None and row[0] == "TRANSFER" and bool(row[1])
    if transfer and row is not None and row[1].split("/", 1)[0] not in w.states:
        # Its destination region is not part of this run: it could not receive the
        # transfer, so the order waits (still picked) for a run that includes it.
        return False
    w.txn(
        lambda cur: ops.ship(
            cur,
            order_id=order_id,
            tracking_no=f"1Z{uuid.uuid4().hex[:16].upper()}",
            carrier=w.rng.choice(("UPS", "DHL", "FedEx", "GLS", "SF Express")),
            operator=w.name,
        )
    )
    if row is not None and row[0] == "TRANSFER" and row[1]:
        _create_transfer_inbound(w, w.state.warehouses[wid], row[2], row[1])
    elif w.rng.random() < 0.2:
        shipped = (
            w.conn()
            .execute(
                "SELECT sn.sku_id, sn.serial_no FROM outbound_line ol JOIN serial_number sn "
                "ON sn.sku_id = ol.sku_id AND sn.outbound_line_id = ol.id "
                "WHERE ol.outbound_order_id = %s AND sn.status = 'SHIPPED'",
                (order_id,),
            )
            .fetchall()
        )
        w.state.pool("returnable").extend(tuple(r) for r in shipped)
    return True


#: The master data of a SKU that a transfer's destination copies when it does not know it.
SKU_MASTER_SQL: Final[str] = (
    "SELECT s.sku_code, s.name, s.barcode, s.tracking, s.shelf_life_days, s.weight_kg::text, "
    "s.unit_cost::text, s.attributes FROM sku s JOIN owner o ON o.id = s.owner_id "
    "WHERE o.code = %s AND s.sku_code = ANY(%s)"
)


def _sku_at_destination(
    cur: Cur, owner_code: str, sku_code: str, master: Mapping[str, tuple[Any, ...]]
) -> tuple[int, int, bool]:
    """(sku id, owner id, created) of a global SKU in the destination's database. A SKU
    created in the source region only (master data) is created here with the source's
    master data, as the WMS registers an unknown SKU before it can expect it."""
    query = (
        "SELECT s.id, s.owner_id FROM sku s JOIN owner o ON o.id = s.owner_id "
        "WHERE o.code = %s AND s.sku_code = %s"
    )
    found = cur.execute(query, (owner_code, sku_code)).fetchone()
    if found is not None:
        return int(found[0]), int(found[1]), False
    owner = cur.execute("SELECT id FROM owner WHERE code = %s", (owner_code,)).fetchone()
    if owner is None:  # every seller exists in every region (OPERATIONS.md)
        raise SimulatorError(f"owner {owner_code} unknown at a transfer's destination")
    _code, name, barcode, tracking, shelf, weight, cost, attributes = master[sku_code]
    try:
        sku_id = ops.create_sku(
            cur,
            owner_id=owner[0],
            sku_code=sku_code,
            name=name,
            tracking=tracking,
            barcode=barcode,
            shelf_life_days=shelf,
            weight_kg=weight,
            unit_cost=cost,
            attributes=attributes,
        )
    except Rejected:  # another worker's transfer created it meanwhile
        found = cur.execute(query, (owner_code, sku_code)).fetchone()
        if found is None:
            raise
        return int(found[0]), int(found[1]), False
    return sku_id, int(owner[0]), True


def _create_transfer_inbound(w: Worker, src_wh: str, order_no: str, dest: str) -> None:
    """At the destination: the inbound TRANSFER order (IN_TRANSIT) of a shipped transfer.
    The source has shipped already, so this never gives up on a SKU the destination
    does not know: it creates it from the source's master data."""
    dest_region, dest_wh = dest.split("/", 1)
    lines = ops.shipped_lines(w.conn().cursor(), order_no=order_no, warehouse_code=src_wh)
    if not lines:
        raise SimulatorError(f"transfer {order_no} shipped nothing")
    master = {
        r[0]: tuple(r)
        for r in w.conn()
        .execute(SKU_MASTER_SQL, (lines[0].owner_code, [ln.sku_code for ln in lines]))
        .fetchall()
    }
    dstate = w.states[dest_region]
    dest_wid = next(i for i, c in dstate.warehouses.items() if c == dest_wh)

    def create(cur: Cur) -> tuple[int, list[int], list[tuple[int, int, str]]]:
        specs = []
        owner_id = 0
        created: list[tuple[int, int, str]] = []
        for ln in lines:
            sku_id, owner_id, new = _sku_at_destination(cur, ln.owner_code, ln.sku_code, master)
            if new:
                created.append((sku_id, owner_id, ln.sku_code))
            specs.append(
                ops.InboundLineSpec(sku_id, ln.qty, ln.lot_no, ln.production_date, ln.expiry_date)
            )
        oid = ops.create_inbound(
            cur,
            warehouse_id=dest_wid,
            owner_id=owner_id,
            order_no=f"TI-{order_no}",
            lines=specs,
            order_type="TRANSFER",
            status="IN_TRANSIT",
            owner_ref=f"{w.region.name}/{src_wh}/{order_no}",
            eta=date.today() + timedelta(days=3),
        )
        cur.execute("SELECT id FROM inbound_line WHERE inbound_order_id = %s ORDER BY id", (oid,))
        return oid, [r[0] for r in cur.fetchall()], created

    # pools change only once the transaction committed (a retried attempt's ids are gone)
    oid, line_ids, created = w.txn(create, dest_region)
    with dstate.lock:
        for sku_id, owner_id, sku_code in created:
            _code, _name, _barcode, tracking, shelf, *_rest = master[sku_code]
            dstate.skus[sku_id] = (owner_id, sku_code, tracking, shelf)
            dstate.skus_by_owner.setdefault(owner_id, []).append(sku_id)
    dstate.pool("to_receive").extend((line_id, dest_wid) for line_id in line_ids)
    dstate.pool("to_advance").append(oid)


def _cancel(w: Worker) -> bool:
    pool = w.rng.choice(("backorders", "to_allocate", "to_pick", "to_ship"))
    item = w.pop(pool)
    if item is None:
        return False
    w.txn(lambda cur: ops.cancel(cur, order_id=item[0], operator=w.name))
    return True


def _create_inbound(w: Worker) -> bool:
    wid = w.rng.choice(list(w.state.warehouses))
    owner_id = w.rng.choice(list(w.state.skus_by_owner))
    sku_ids = w.rng.sample(
        w.state.skus_by_owner[owner_id], min(3, len(w.state.skus_by_owner[owner_id]))
    )
    today = date.today()
    specs = []
    for sku_id in sku_ids[: w.rng.randint(1, len(sku_ids))]:
        _o, _code, tracking, shelf = w.state.skus[sku_id]
        lot_no = prod = exp = None
        if tracking == "LOT":
            prod = today - timedelta(days=w.rng.randint(1, 60))
            exp = prod + timedelta(days=shelf or 365)
            lot_no = f"L{prod:%y%m%d}-{uuid.uuid4().hex[:4].upper()}"
        qty = w.rng.randint(1, 6) if tracking == "SERIAL" else w.rng.randint(10, 300)
        specs.append(ops.InboundLineSpec(sku_id, qty, lot_no, prod, exp))

    def create(cur: Cur) -> int:
        oid = ops.create_inbound(
            cur,
            warehouse_id=wid,
            owner_id=owner_id,
            order_no=w.order_no("PO", wid),
            lines=specs,
            owner_ref=f"REF-{w.rng.randrange(10**8):08d}",
            eta=today + timedelta(days=w.rng.randint(1, 20)),
        )
        cur.execute("SELECT id FROM inbound_line WHERE inbound_order_id = %s", (oid,))
        for (line_id,) in cur.fetchall():
            w.state.pool("to_receive").append((line_id, wid))
        return oid

    w.state.pool("to_advance").append(w.txn(create))
    return True


def _advance_inbound(w: Worker) -> bool:
    order_id = w.pop("to_advance")
    if order_id is None:
        return False
    new = w.txn(lambda cur: ops.advance_inbound(cur, order_id=order_id))
    if new in ops.INBOUND_ADVANCE:
        w.state.pool("to_advance").append(order_id)
    return True


def _receive(w: Worker) -> bool:
    item = w.pop("to_receive")
    if item is None:
        return False
    line_id, wid = item
    row = (
        w.conn()
        .execute(
            "SELECT l.qty_expected - l.qty_received, s.tracking, s.sku_code, l.lot_no, "
            "o.order_type, o.owner_ref FROM inbound_line l JOIN sku s ON s.id = l.sku_id "
            "JOIN inbound_order o ON o.id = l.inbound_order_id WHERE l.id = %s",
            (line_id,),
        )
        .fetchone()
    )
    if row is None or row[0] <= 0:
        return False
    left, tracking, sku_code, lot_no, order_type, owner_ref = row
    serial_nos: list[str] | None = None
    qty, damaged = left, 0
    if order_type == "TRANSFER":
        if tracking == "SERIAL":
            src_region, src_wh, src_order = owner_ref.split("/", 2)
            if src_region not in w.states:
                # The serials come from the source region's shipment, which this run
                # cannot read: the line waits for a run that includes that region.
                return False
            shipped = ops.shipped_lines(
                w.conn(src_region).cursor(), order_no=src_order, warehouse_code=src_wh
            )
            serial_nos = next(
                (
                    list(s.serial_nos)
                    for s in shipped
                    if s.sku_code == sku_code and s.lot_no == lot_no
                ),
                None,
            )
            if serial_nos is None or len(serial_nos) != left:
                raise Rejected("transfer serials not found at the source")
    else:
        if w.rng.random() < 0.4 and left > 1:
            qty = w.rng.randint(1, left - 1)
        if w.rng.random() < 0.1:
            damaged = 1
        if tracking == "SERIAL":
            serial_nos = w.serial_nos(qty)
    location = w.rng.choice(w.state.locs(wid, "RECEIVING"))
    w.txn(
        lambda cur: ops.receive(
            cur,
            line_id=line_id,
            qty=qty,
            damaged=damaged,
            location_id=location,
            serial_nos=serial_nos,
            operator=w.name,
        )
    )
    if qty < left:
        w.state.pool("to_receive").append(item)
    return True


def _close_inbound(w: Worker) -> bool:
    row = (
        w.conn()
        .execute(
            "SELECT id FROM inbound_order WHERE status = 'RECEIVED' "
            "ORDER BY id DESC OFFSET %s LIMIT 1",
            (w.rng.randint(0, 5),),
        )
        .fetchone()
    )
    if row is None:
        return False
    w.txn(lambda cur: ops.close_inbound(cur, order_id=row[0]))
    return True


def _qc_hold(w: Worker) -> bool:
    row = w.sample_row(("PENDING_PUTAWAY",), ("RECEIVING",))
    if row is None:
        return False
    inv_id, _wh, _loc, _sku, _lot, on_hand, _free, _tr = row
    hold = w.txn(
        lambda cur: ops.qc_hold(
            cur, inventory_id=inv_id, qty=w.rng.randint(1, on_hand), operator=w.name
        )
    )
    w.state.pool("qc_holds").append(hold)
    return True


def _qc_release(w: Worker) -> bool:
    hold = w.pop("qc_holds")
    if hold is None:
        return False
    fn = ops.qc_pass if w.rng.random() < 0.8 else ops.qc_fail
    w.txn(lambda cur: fn(cur, hold_id=hold, operator=w.name))
    return True


def _putaway(w: Worker) -> bool:
    row = w.sample_row(("PENDING_PUTAWAY",), ("RECEIVING", "QC"))
    if row is None:
        return False
    inv_id, wid, _loc, _sku, _lot, on_hand, _free, _tr = row
    dest = w.rng.choice(w.state.locs(wid, "STORAGE", "PICK"))
    qty = on_hand if w.rng.random() < 0.7 else w.rng.randint(1, on_hand)
    w.txn(
        lambda cur: ops.putaway(
            cur, inventory_id=inv_id, qty=qty, to_location_id=dest, operator=w.name
        )
    )
    return True


def _move(w: Worker) -> bool:
    row = w.sample_row(("AVAILABLE",), ("STORAGE", "PICK"))
    if row is None:
        return False
    inv_id, wid, loc, _sku, _lot, _oh, free, _tr = row
    dests = [d for d in w.state.locs(wid, "STORAGE", "PICK") if d != loc]
    if not dests:  # a warehouse with a single storage location: nowhere to move to
        return False
    dest = w.rng.choice(dests)
    qty = w.rng.randint(1, free)
    w.txn(
        lambda cur: ops.move(
            cur, inventory_id=inv_id, qty=qty, to_location_id=dest, operator=w.name
        )
    )
    return True


def _adjust_or_count(w: Worker, counted: bool) -> bool:
    row = w.sample_row(("AVAILABLE",), ("STORAGE", "PICK"))
    if row is None:
        return False
    inv_id, _wh, _loc, _sku, _lot, on_hand, free, tracking = row
    delta = w.rng.choice([d for d in (-2, -1, 1, 2) if d >= -free])
    new = w.serial_nos(delta) if tracking == "SERIAL" and delta > 0 else None
    if counted:
        w.txn(
            lambda cur: ops.count(
                cur,
                inventory_id=inv_id,
                counted_qty=on_hand + delta,
                operator=w.name,
                new_serial_nos=new,
            )
        )
    else:
        w.txn(
            lambda cur: ops.adjust(
                cur, inventory_id=inv_id, delta=delta, operator=w.name, new_serial_nos=new
            )
        )
    return True


def _freeze(w: Worker) -> bool:
    row = w.sample_row(("AVAILABLE",), ("STORAGE", "PICK"))
    if row is None:
        return False
    inv_id, _wh, _loc, _sku, _lot, _oh, free, _tr = row
    hold = w.txn(
        lambda cur: ops.freeze(
            cur,
            inventory_id=inv_id,
            qty=w.rng.randint(1, free),
            hold_type=w.rng.choice(ops.FREEZE_HOLD_TYPES),
            operator=w.name,
        )
    )
    w.state.pool("freeze_holds").append(hold)
    return True


def _unfreeze(w: Worker) -> bool:
    hold = w.pop("freeze_holds")
    if hold is None:
        return False
    w.txn(lambda cur: ops.unfreeze(cur, hold_id=hold, operator=w.name))
    return True


def _damage(w: Worker) -> bool:
    row = w.sample_row(("AVAILABLE",), ("STORAGE", "PICK"))
    if row is None:
        return False
    inv_id, wid, *_rest = row
    dest = w.rng.choice(w.state.locs(wid, "DAMAGE"))
    w.txn(
        lambda cur: ops.damage(
            cur, inventory_id=inv_id, qty=1, damage_location_id=dest, operator=w.name
        )
    )
    return True


def _customer_return(w: Worker) -> bool:
    wid = w.rng.choice(list(w.state.warehouses))
    dest = w.rng.choice(w.state.locs(wid, "RETURNS"))
    order_no = w.order_no("RMA", wid)
    row = w.pop("returnable")
    if row is not None and w.rng.random() < 0.6:
        sku_id, serial_no = row
        w.txn(
            lambda cur: ops.customer_return(
                cur,
                warehouse_id=wid,
                sku_id=sku_id,
                returns_location_id=dest,
                order_no=order_no,
                serial_nos=[serial_no],
                operator=w.name,
            )
        )
        return True
    sku_id = w.rng.choice([s for s, v in w.state.skus.items() if v[2] != "SERIAL"])
    lots = w.state.lots.get(sku_id, [])
    if w.state.skus[sku_id][2] == "LOT" and not lots:
        return False
    w.txn(
        lambda cur: ops.customer_return(
            cur,
            warehouse_id=wid,
            sku_id=sku_id,
            returns_location_id=dest,
            order_no=order_no,
            qty=w.rng.randint(1, 3),
            lot_id=w.rng.choice(lots) if lots else None,
            operator=w.name,
        )
    )
    return True


def _return_disposition(w: Worker) -> bool:
    row = w.sample_row(("RETURNED",), ("RETURNS",))
    if row is None:
        return False
    inv_id, wid, _loc, _sku, _lot, on_hand, _free, _tr = row
    if w.rng.random() < 0.8:
        dest = w.rng.choice(w.state.locs(wid, "STORAGE", "PICK"))
        w.txn(
            lambda cur: ops.putaway(
                cur, inventory_id=inv_id, qty=on_hand, to_location_id=dest, operator=w.name
            )
        )
    else:
        dest = w.rng.choice(w.state.locs(wid, "DAMAGE"))
        w.txn(
            lambda cur: ops.damage(
                cur, inventory_id=inv_id, qty=on_hand, damage_location_id=dest, operator=w.name
            )
        )
    return True


def _scrap(w: Worker) -> bool:
    row = w.sample_row(("DAMAGED", "EXPIRED"), ("DAMAGE", "STORAGE", "PICK", "RECEIVING", "QC"))
    if row is None:
        return False
    inv_id, _wh, _loc, _sku, _lot, on_hand, _free, _tr = row
    w.txn(lambda cur: ops.scrap(cur, inventory_id=inv_id, qty=on_hand, operator=w.name))
    return True


def _expire(w: Worker) -> bool:
    row = w.sample_row(
        ("AVAILABLE",), ("STORAGE", "PICK"), extra="AND l.expiry_date < current_date "
    )
    if row is None:
        return False
    _id, wid, _loc, _sku, lot_id, *_rest = row
    w.txn(lambda cur: ops.expire(cur, lot_id=lot_id, warehouse_id=wid, operator=w.name))
    return True


def _transfer_out(w: Worker) -> bool:
    return _create_outbound(w, "TRANSFER")


def _master_data(w: Worker) -> bool:
    st = w.state
    sku_id = w.rng.choice(list(st.skus))
    owner_id, code, tracking, shelf = st.skus[sku_id]
    kind = w.rng.choice(("rename", "weight", "attributes", "new_lot", "new_sku"))
    if kind == "new_lot" and tracking == "LOT":
        prod = date.today() - timedelta(days=w.rng.randint(0, 30))
        lot_id = w.txn(
            lambda cur: ops.create_lot(
                cur,
                sku_id=sku_id,
                lot_no=f"L{prod:%y%m%d}-{uuid.uuid4().hex[:4].upper()}",
                production_date=prod,
                expiry_date=prod + timedelta(days=shelf or 365),
                origin_country="CN",
            )
        )
        with st.lock:
            st.lots.setdefault(sku_id, []).append(lot_id)
        return True
    if kind == "new_sku":
        new_code = f"{code.split('-')[0]}-NEW-{uuid.uuid4().hex[:6].upper()}"
        track = w.rng.choice(("NONE", "LOT", "SERIAL"))
        new_shelf = 365 if track == "LOT" else None
        new_id = w.txn(
            lambda cur: ops.create_sku(
                cur,
                owner_id=owner_id,
                sku_code=new_code,
                name=f"New product {new_code}",
                tracking=track,
                shelf_life_days=new_shelf,
                weight_kg=f"{w.rng.uniform(0.05, 3):.3f}",
                unit_cost=f"{w.rng.uniform(1, 50):.4f}",
                attributes={"category": "new", "launch": str(date.today())},
            )
        )
        with st.lock:
            st.skus[new_id] = (owner_id, new_code, track, new_shelf)
            st.skus_by_owner.setdefault(owner_id, []).append(new_id)
        return True
    updates: dict[str, dict[str, Any]] = {
        "rename": {"name": f"Product {code} rev {w.rng.randint(2, 99)}"},
        "weight": {"weight_kg": f"{w.rng.uniform(0.05, 5):.3f}"},
        "attributes": {
            "attributes": {
                "color": w.rng.choice(("black", "white", "navy")),
                "rev": w.rng.randint(1, 9),
            }
        },
    }
    changes = updates.get(kind, updates["rename"])
    w.txn(lambda cur: ops.update_sku(cur, sku_id=sku_id, **changes))
    return True


DRIVERS: Final[dict[str, Callable[[Worker], bool]]] = {
    "create_outbound": _create_outbound,
    "allocate": _allocate,
    "pick": _pick,
    "ship": _ship,
    "cancel": _cancel,
    "create_inbound": _create_inbound,
    "advance_inbound": _advance_inbound,
    "receive": _receive,
    "close_inbound": _close_inbound,
    "qc_hold": _qc_hold,
    "qc_release": _qc_release,
    "putaway": _putaway,
    "move": _move,
    "adjust": lambda w: _adjust_or_count(w, counted=False),
    "count": lambda w: _adjust_or_count(w, counted=True),
    "freeze": _freeze,
    "unfreeze": _unfreeze,
    "damage": _damage,
    "customer_return": _customer_return,
    "return_disposition": _return_disposition,
    "scrap": _scrap,
    "expire": _expire,
    "transfer_out": _transfer_out,
    "master_data": _master_data,
}


# --------------------------------------------------------------------------- the run


def parse_mix(text: str | None) -> dict[str, float]:
    """'allocate=20,ship=10' over the default mix (unknown names are an error)."""
    mix = dict(DEFAULT_MIX)
    if not text:
        return mix
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in DRIVERS:
            raise SimulatorError(f"unknown operation {name!r}; known: {', '.join(sorted(DRIVERS))}")
        try:
            mix[name] = float(weight)
        except ValueError as exc:
            raise SimulatorError(f"bad weight in {part!r}") from exc
    return mix


def run(
    settings: Settings,
    regions: Sequence[Region],
    *,
    dbname: DbNames = None,
    workers: int = 4,
    rate: float | None = None,
    count: int | None = None,
    duration: float | None = None,
    mix: Mapping[str, float] | None = None,
    seed: int | None = None,
    peers: Sequence[Region] | None = None,
    stop: threading.Event | None = None,
) -> list[RegionReport]:
    """Run the workload in each region (`rate` and `count` are per region) until `count`
    operations applied, `duration` seconds passed or `stop` is set; transfers may go to
    any of `peers` (default: the same regions)."""
    mix = dict(mix or DEFAULT_MIX)
    involved = {r.name: r for r in [*regions, *(peers or ())]}
    states: dict[str, RegionState] = {}
    for r in involved.values():
        name = dbname_for(dbname, r)
        with connect(settings, r, name) as conn:
            states[r.name] = RegionState.load(conn, r, name)
    if peers is None:
        states = {r.name: states[r.name] for r in regions}
    deadline = time.monotonic() + duration if duration else None
    master = random.Random(seed)
    pacers: dict[str, Pacer] = {}
    threads: list[tuple[str, threading.Thread, Worker]] = []
    for r in regions:
        pacers[r.name] = Pacer(rate, count, deadline, stop)
        for i in range(workers):
            wk = Worker(
                f"sim-{r.name}-w{i + 1}",
                settings,
                states,
                r,
                mix,
                pacers[r.name],
                random.Random(master.random()),
            )
            threads.append((r.name, threading.Thread(target=wk.run, name=wk.name, daemon=True), wk))
    started = time.monotonic()
    ended: dict[str, float] = {}
    for _n, t, _w in threads:
        t.start()
    try:
        for name, t, _w in threads:
            t.join()
            ended[name] = time.monotonic()
    except KeyboardInterrupt:
        for p in pacers.values():
            p.stopped.set()
        for name, t, _w in threads:
            t.join()
            ended[name] = time.monotonic()
    failed = [wk for _n, _t, wk in threads if wk.error is not None]
    if failed:
        raise SimulatorError(
            f"{len(failed)} worker(s) failed, first {failed[0].name}: {failed[0].error!r}"
        ) from failed[0].error
    reports = []
    for r in regions:
        stats = Stats()
        for name, _t, wk in threads:
            if name == r.name:
                stats.merge(wk.stats)
        reports.append(RegionReport(r.name, workers, ended[r.name] - started, stats, rate))
    return reports
