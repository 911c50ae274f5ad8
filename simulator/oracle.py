"""The truth oracle: every stock figure of OPERATIONS.md, computed by SQL over the WMS
databases themselves, keyed by global codes and joined across regions.

Each region is read in one REPEATABLE READ READ ONLY transaction (all regions' snapshots
are taken before any figure is computed), so the figures of a region are those of one
committed state. The read model must return exactly these figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from typing import Any, Final, NamedTuple

import psycopg

from simulator.db import DbNames, connect, dbname_for
from stockcdc.settings import Region, Settings

#: Quantity figures per status, in the order of OPERATIONS.md.
STATUS_FIGURES: Final[dict[str, str]] = {
    "pending_putaway": "PENDING_PUTAWAY",
    "qc_hold": "QC_HOLD",
    "frozen": "FROZEN",
    "damaged": "DAMAGED",
    "returned": "RETURNED",
    "expired": "EXPIRED",
}

_QTY_SQL: Final[str] = (
    "sum(i.qty_on_hand) AS on_hand, "
    "coalesce(sum(i.qty_on_hand - i.qty_allocated) "
    "  FILTER (WHERE i.status = 'AVAILABLE' AND loc.sellable), 0) AS available, "
    "sum(i.qty_allocated) AS allocated, "
    + ", ".join(
        f"coalesce(sum(i.qty_on_hand) FILTER (WHERE i.status = '{status}'), 0) AS {name}"
        for name, status in STATUS_FIGURES.items()
    )
)

STOCK_SQL: Final[str] = f"""
WITH bal AS (
    SELECT s.owner_id, i.warehouse_id, i.sku_id, {_QTY_SQL},
           min(l.expiry_date) FILTER (WHERE i.status = 'AVAILABLE' AND loc.sellable
                                      AND i.qty_on_hand > i.qty_allocated) AS earliest_expiry
    FROM inventory i
    JOIN sku s ON s.id = i.sku_id
    JOIN location loc ON loc.id = i.location_id
    LEFT JOIN lot l ON l.id = i.lot_id
    GROUP BY 1, 2, 3),
inb AS (
    SELECT s.owner_id, o.warehouse_id, il.sku_id,
           sum(greatest(il.qty_expected - il.qty_received, 0)) AS inbound_expected
    FROM inbound_line il
    JOIN inbound_order o ON o.id = il.inbound_order_id
    JOIN sku s ON s.id = il.sku_id
    WHERE o.status IN ('CREATED', 'IN_TRANSIT', 'ARRIVED', 'RECEIVING')
    GROUP BY 1, 2, 3),
keys AS (
    SELECT owner_id, warehouse_id, sku_id FROM bal
    UNION
    SELECT owner_id, warehouse_id, sku_id FROM inb WHERE inbound_expected > 0),
led AS (
    SELECT s.owner_id, t.warehouse_id, t.sku_id, max(t.occurred_at) AS last_movement_at
    FROM inventory_txn t JOIN sku s ON s.id = t.sku_id
    GROUP BY 1, 2, 3)
SELECT ow.code, w.code, s.sku_code,
       coalesce(b.on_hand, 0), coalesce(b.available, 0), coalesce(b.allocated, 0),
       {", ".join(f"coalesce(b.{n}, 0)" for n in STATUS_FIGURES)},
       coalesce(inb.inbound_expected, 0), b.earliest_expiry, led.last_movement_at
FROM keys k
JOIN owner ow ON ow.id = k.owner_id
JOIN warehouse w ON w.id = k.warehouse_id
JOIN sku s ON s.id = k.sku_id
LEFT JOIN bal b
    ON b.owner_id = k.owner_id AND b.warehouse_id = k.warehouse_id
   AND b.sku_id = k.sku_id
LEFT JOIN inb
    ON inb.owner_id = k.owner_id AND inb.warehouse_id = k.warehouse_id
   AND inb.sku_id = k.sku_id
LEFT JOIN led
    ON led.owner_id = k.owner_id AND led.warehouse_id = k.warehouse_id
   AND led.sku_id = k.sku_id
"""

LOTS_SQL: Final[str] = f"""
SELECT ow.code, w.code, s.sku_code, l.lot_no, l.production_date, l.expiry_date,
       l.first_received_at, {_QTY_SQL}
FROM inventory i
JOIN sku s ON s.id = i.sku_id
JOIN owner ow ON ow.id = s.owner_id
JOIN warehouse w ON w.id = i.warehouse_id
JOIN location loc ON loc.id = i.location_id
JOIN lot l ON l.id = i.lot_id
GROUP BY ow.code, w.code, s.sku_code, l.id, l.lot_no, l.production_date, l.expiry_date,
         l.first_received_at
ORDER BY ow.code, w.code, s.sku_code, l.expiry_date ASC NULLS LAST,
         l.first_received_at ASC NULLS LAST, l.lot_no
"""

SERIALS_SQL: Final[str] = """
SELECT ow.code, s.sku_code, sn.serial_no, sn.status, w.code, loc.code, l.lot_no,
       sn.received_at, sn.shipped_at, sn.receive_count, sn.updated_at
FROM serial_number sn
JOIN sku s ON s.id = sn.sku_id
JOIN owner ow ON ow.id = s.owner_id
JOIN warehouse w ON w.id = sn.warehouse_id
LEFT JOIN location loc ON loc.id = sn.location_id
LEFT JOIN lot l ON l.id = sn.lot_id
"""

LEDGER_SQL: Final[str] = """
SELECT ow.code, w.code, s.sku_code, sum(t.d_on_hand), sum(t.d_allocated), count(*),
       max(t.occurred_at)
FROM inventory_txn t
JOIN sku s ON s.id = t.sku_id
JOIN owner ow ON ow.id = s.owner_id
JOIN warehouse w ON w.id = t.warehouse_id
GROUP BY ow.code, w.code, s.sku_code
"""


class StockKey(NamedTuple):
    """(owner.code, warehouse.code, sku_code): the global key of a stock figure."""

    owner: str
    warehouse: str
    sku: str


class SerialKey(NamedTuple):
    """(owner.code, sku_code, serial_no): a serial's global identity."""

    owner: str
    sku: str
    serial_no: str


@dataclass(frozen=True)
class Quantities:
    on_hand: int
    available: int
    allocated: int
    pending_putaway: int
    qc_hold: int
    frozen: int
    damaged: int
    returned: int
    expired: int


@dataclass(frozen=True)
class StockFigures(Quantities):
    """Every figure of one (owner, warehouse, SKU), as OPERATIONS.md defines it."""

    inbound_expected: int
    earliest_expiry: date | None
    last_movement_at: datetime | None
    region: str


@dataclass(frozen=True)
class LotFigures(Quantities):
    """The quantity figures of one lot of one (owner, warehouse, SKU)."""

    lot_no: str
    production_date: date | None
    expiry_date: date | None
    first_received_at: datetime | None
    fefo_rank: int  # 1 = first to ship by FEFO


@dataclass(frozen=True)
class SerialState:
    """A serial's current state (cross-region rule applied) and where it exists."""

    status: str
    region: str
    warehouse: str
    location: str | None
    lot_no: str | None
    received_at: datetime | None
    shipped_at: datetime | None
    receive_count: int
    updated_at: datetime
    regions: tuple[str, ...]  # every region whose database has a row for it


@dataclass(frozen=True)
class LedgerTotals:
    d_on_hand: int
    d_allocated: int
    rows: int
    last_occurred_at: datetime


@dataclass(frozen=True)
class Truth:
    """Everything the oracle knows, across the regions read."""

    stock: dict[StockKey, StockFigures]
    lots: dict[StockKey, list[LotFigures]]  # FEFO order
    serials: dict[SerialKey, SerialState]
    ledger: dict[StockKey, LedgerTotals]
    snapshots: dict[str, str]  # region → pg_current_snapshot() of its read

    def as_json(self) -> dict[str, Any]:
        """Plain JSON-able structure (dates as ISO strings), keys spelled out."""

        def enc(value: Any) -> Any:
            if isinstance(value, date | datetime):
                return value.isoformat()
            if isinstance(value, tuple | list):
                return [enc(v) for v in value]
            if isinstance(value, dict):
                return {k: enc(v) for k, v in value.items()}
            return value

        result: dict[str, Any] = enc(
            {
                "snapshots": self.snapshots,
                "stock": [{**k._asdict(), **vars(v)} for k, v in sorted(self.stock.items())],
                "lots": [
                    {**k._asdict(), **vars(lot)}
                    for k, lots in sorted(self.lots.items())
                    for lot in lots
                ],
                "serials": [{**k._asdict(), **vars(v)} for k, v in sorted(self.serials.items())],
                "ledger": [{**k._asdict(), **vars(v)} for k, v in sorted(self.ledger.items())],
            }
        )
        return result


_QTY_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(Quantities))
STOCK_FIELDS: Final[tuple[str, ...]] = (
    *_QTY_FIELDS,
    "inbound_expected",
    "earliest_expiry",
    "last_movement_at",
)


def _read_region(cur: psycopg.Cursor[Any], region: str, truth: Truth) -> list[tuple[Any, ...]]:
    """Stock, lots and ledger of one region into `truth`; returns its serial rows."""
    cur.execute(STOCK_SQL)
    for r in cur.fetchall():
        truth.stock[StockKey(r[0], r[1], r[2])] = StockFigures(
            **dict(zip(STOCK_FIELDS, r[3:], strict=True)), region=region
        )
    cur.execute(LOTS_SQL)
    for r in cur.fetchall():
        key = StockKey(r[0], r[1], r[2])
        lots = truth.lots.setdefault(key, [])
        lots.append(
            LotFigures(
                **dict(zip(_QTY_FIELDS, r[7:], strict=True)),
                lot_no=r[3],
                production_date=r[4],
                expiry_date=r[5],
                first_received_at=r[6],
                fefo_rank=len(lots) + 1,
            )
        )
    cur.execute(LEDGER_SQL)
    for r in cur.fetchall():
        truth.ledger[StockKey(r[0], r[1], r[2])] = LedgerTotals(int(r[3]), int(r[4]), r[5], r[6])
    cur.execute(SERIALS_SQL)
    return [(region, *r) for r in cur.fetchall()]


def current_serial(rows: Sequence[tuple[str, SerialState]]) -> SerialState:
    """The cross-region rule: the row that is not SHIPPED, else the latest updated_at."""
    live = [s for _r, s in rows if s.status != "SHIPPED"]
    pool = live or [s for _r, s in rows]
    best = max(pool, key=lambda s: s.updated_at)
    return SerialState(**{**asdict(best), "regions": tuple(sorted({r for r, _s in rows}))})


def read_truth(
    settings: Settings,
    regions: Sequence[Region],
    *,
    dbname: DbNames = None,
    role: str = "app",
) -> Truth:
    """Every figure of every key in `regions`, each region read from one snapshot."""
    truth = Truth(stock={}, lots={}, serials={}, ledger={}, snapshots={})
    conns = [connect(settings, r, dbname_for(dbname, r), role=role) for r in regions]
    try:
        # take every region's snapshot first, then compute
        for conn in conns:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for r, conn in zip(regions, conns, strict=True):
            row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
            truth.snapshots[r.name] = str(row[0]) if row else ""
        serial_rows: dict[SerialKey, list[tuple[str, SerialState]]] = {}
        for r, conn in zip(regions, conns, strict=True):
            with conn.cursor() as cur:
                for row in _read_region(cur, r.name, truth):
                    region, owner, sku, serial_no, status, wh, loc, lot_no, *rest = row
                    received, shipped, receive_count, updated = rest
                    serial_rows.setdefault(SerialKey(owner, sku, serial_no), []).append(
                        (
                            region,
                            SerialState(
                                status,
                                region,
                                wh,
                                loc,
                                lot_no,
                                received,
                                shipped,
                                receive_count,
                                updated,
                                (region,),
                            ),
                        )
                    )
        for key, rows in serial_rows.items():
            truth.serials[key] = current_serial(rows)
    finally:
        for conn in conns:
            if not conn.closed:
                conn.execute("ROLLBACK")
                conn.close()
    return truth
