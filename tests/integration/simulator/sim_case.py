"""Hand-built WMS cases for the simulator's tests: a tiny warehouse with one location of
every type, one owner and one SKU per tracking mode, in a throwaway database (a second
warehouse may share it), and a workload worker driving hand-built databases."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

import psycopg

from simulator import ops
from simulator.db import Conn, connect, run_txn
from simulator.invariants import check_invariants
from simulator.workload import Pacer, RegionState, Worker
from stockcdc.settings import Region, Settings

T = TypeVar("T")
OP = "test"
TODAY = date.today()


@dataclass
class Wms:
    """One region's scratch WMS with hand-made master data; ids by short names."""

    region: Region
    dbname: str
    conn: Conn
    wh: int = 0
    wh_code: str = ""
    loc: dict[str, int] = field(default_factory=dict)
    owner: int = 0
    sku: dict[str, int] = field(default_factory=dict)
    lot: dict[str, int] = field(default_factory=dict)

    def tx(self, fn: Callable[[psycopg.Cursor[Any]], T]) -> T:
        return run_txn(self.conn, fn)

    def one(self, query: str, *params: Any) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else (row[0] if len(row) == 1 else tuple(row))

    def all(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(query, params).fetchall()]

    def rows(self, sku: str) -> list[tuple[Any, ...]]:
        """(location, lot_no, status, on_hand, allocated) balance rows of a SKU in this
        warehouse."""
        return self.all(
            "SELECT loc.code, l.lot_no, i.status, i.qty_on_hand, i.qty_allocated "
            "FROM inventory i JOIN location loc ON loc.id = i.location_id "
            "LEFT JOIN lot l ON l.id = i.lot_id WHERE i.sku_id = %s AND i.warehouse_id = %s "
            "ORDER BY 1, 2, 3",
            self.sku[sku],
            self.wh,
        )

    def ledger(self, sku: str) -> list[tuple[Any, ...]]:
        """(txn_type, qty, d_on_hand, d_allocated) of a SKU's ledger in this warehouse, in
        order."""
        return self.all(
            "SELECT txn_type, qty, d_on_hand, d_allocated FROM inventory_txn "
            "WHERE sku_id = %s AND warehouse_id = %s ORDER BY id",
            self.sku[sku],
            self.wh,
        )

    def moves(self, sku: str, txn_type: str) -> list[tuple[Any, ...]]:
        """(from location, to location, from_status, to_status, ref_type, ref_no) of a
        SKU's ledger rows of one type in this warehouse, in order."""
        return self.all(
            "SELECT fl.code, tl.code, t.from_status, t.to_status, t.ref_type, t.ref_no "
            "FROM inventory_txn t LEFT JOIN location fl ON fl.id = t.from_location_id "
            "LEFT JOIN location tl ON tl.id = t.to_location_id "
            "WHERE t.sku_id = %s AND t.warehouse_id = %s AND t.txn_type = %s ORDER BY t.id",
            self.sku[sku],
            self.wh,
            txn_type,
        )

    def inv_id(
        self, sku: str, location: str, status: str = "AVAILABLE", lot: str | None = None
    ) -> int:
        return int(
            self.one(
                "SELECT i.id FROM inventory i JOIN location loc ON loc.id = i.location_id "
                "LEFT JOIN lot l ON l.id = i.lot_id WHERE i.sku_id = %s AND loc.code = %s "
                "AND i.status = %s AND l.lot_no IS NOT DISTINCT FROM %s",
                self.sku[sku],
                location,
                status,
                lot,
            )
        )

    def inbound(self, sku: str, qty: int, lot_no: str | None = None, **kw: Any) -> int:
        """A new PURCHASE order of one line; returns the line id."""
        spec = ops.InboundLineSpec(
            self.sku[sku], qty, lot_no, kw.get("production"), kw.get("expiry")
        )
        order = self.tx(
            lambda c: ops.create_inbound(
                c,
                warehouse_id=self.wh,
                owner_id=self.owner,
                order_no=f"PO-{uuid.uuid4().hex[:8]}",
                lines=[spec],
                order_type=kw.get("order_type", "PURCHASE"),
            )
        )
        return int(self.one("SELECT id FROM inbound_line WHERE inbound_order_id = %s", order))

    def stock(
        self,
        sku: str,
        qty: int,
        location: str,
        lot_no: str | None = None,
        serial_nos: list[str] | None = None,
    ) -> int:
        """Receive and put away `qty` units; returns the AVAILABLE row id."""
        line = self.inbound(sku, qty, lot_no)
        self.tx(
            lambda c: ops.receive(
                c,
                line_id=line,
                qty=qty,
                location_id=self.loc["RCV"],
                operator=OP,
                serial_nos=serial_nos,
            )
        )
        inv = self.inv_id(sku, "RCV", "PENDING_PUTAWAY", lot_no)
        return int(
            self.tx(
                lambda c: ops.putaway(
                    c, inventory_id=inv, qty=qty, to_location_id=self.loc[location], operator=OP
                )
            )
        )

    def order(
        self,
        lines: list[tuple[str, int]],
        rule: str = "FEFO",
        lot: str | None = None,
        order_type: str = "B2C",
        platform_order_no: str | None = None,
    ) -> int:
        """A new outbound order; returns its id. A TRANSFER names its destination
        ('region/warehouse code') in `platform_order_no`, as the workload does."""
        specs = [
            ops.OutboundLineSpec(self.sku[s], q, self.lot[lot] if lot else None) for s, q in lines
        ]
        return int(
            self.tx(
                lambda c: ops.create_outbound(
                    c,
                    warehouse_id=self.wh,
                    owner_id=self.owner,
                    order_no=f"SO-{uuid.uuid4().hex[:8]}",
                    lines=specs,
                    lot_rule=rule,
                    order_type=order_type,
                    platform_order_no=platform_order_no,
                )
            )
        )

    def serials(self, sku: str) -> list[tuple[Any, ...]]:
        """(serial_no, status, location code) of a SKU."""
        return self.all(
            "SELECT sn.serial_no, sn.status, loc.code FROM serial_number sn "
            "LEFT JOIN location loc ON loc.id = sn.location_id WHERE sn.sku_id = %s ORDER BY 1",
            self.sku[sku],
        )

    def assert_invariants(self) -> None:
        assert check_invariants(self.conn) == []


LOCATIONS = {
    "S1": "STORAGE",
    "S2": "STORAGE",
    "P1": "PICK",
    "RCV": "RECEIVING",
    "QC": "QC",
    "DMG": "DAMAGE",
    "RET": "RETURNS",
    "STG": "STAGING",
}


def _make_warehouse(cur: psycopg.Cursor[Any], w: Wms, wh_code: str) -> None:
    """A warehouse with one location of every type (LOCATIONS), into `w`."""
    cur.execute(
        "INSERT INTO warehouse (code, name, country, timezone) VALUES (%s, %s, 'US', 'UTC') "
        "RETURNING id",
        (wh_code, wh_code),
    )
    w.wh = cur.fetchone()[0]  # type: ignore[index]
    w.wh_code = wh_code
    w.loc = {}
    for code, loc_type in LOCATIONS.items():
        cur.execute(
            "INSERT INTO location (warehouse_id, code, zone, loc_type, sellable) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (w.wh, code, code, loc_type, loc_type in ("STORAGE", "PICK")),
        )
        w.loc[code] = cur.fetchone()[0]  # type: ignore[index]


def build(settings: Settings, region: Region, dbname: str, wh_code: str) -> Wms:
    """Master data of the hand-built case (as the workload role)."""
    w = Wms(region, dbname, connect(settings, region, dbname))

    def make(cur: psycopg.Cursor[Any]) -> None:
        # an unrelated owner first, so ids differ between regions built in another order
        if region.index % 2:
            cur.execute("INSERT INTO owner (code, name) VALUES ('SELLER-X', 'Other')")
        _make_warehouse(cur, w, wh_code)
        cur.execute("INSERT INTO owner (code, name) VALUES ('SELLER-1', 'Seller') RETURNING id")
        w.owner = cur.fetchone()[0]  # type: ignore[index]
        for code, tracking in (("MUG", "NONE"), ("TEA", "LOT"), ("PHONE", "SERIAL")):
            cur.execute(
                "INSERT INTO sku (owner_id, sku_code, name, tracking, weight_kg, unit_cost) "
                "VALUES (%s, %s, %s, %s, 0.5, 3.25) RETURNING id",
                (w.owner, code, code.title(), tracking),
            )
            w.sku[code] = cur.fetchone()[0]  # type: ignore[index]
        for lot_no, days in (("EXPIRED", -5), ("SOON", 10), ("LATE", 200)):
            cur.execute(
                "INSERT INTO lot (sku_id, lot_no, production_date, expiry_date, "
                "first_received_at) VALUES (%s, %s, %s, %s, now()) RETURNING id",
                (
                    w.sku["TEA"],
                    lot_no,
                    TODAY - timedelta(days=300),
                    TODAY + timedelta(days=days),
                ),
            )
            w.lot[lot_no] = cur.fetchone()[0]  # type: ignore[index]

    w.tx(make)
    return w


def add_warehouse(base: Wms, wh_code: str) -> Wms:
    """A second warehouse (same location codes) in `base`'s database, sharing its
    connection, owner, SKUs and lots."""
    w = Wms(
        base.region,
        base.dbname,
        base.conn,
        owner=base.owner,
        sku=dict(base.sku),
        lot=dict(base.lot),
    )
    w.tx(lambda cur: _make_warehouse(cur, w, wh_code))
    return w


class FixedRandom(random.Random):
    """A generator whose `random()` is fixed (it picks a driver's branch); the other
    draws are seeded as usual."""

    def __init__(self, value: float, seed: int = 1) -> None:
        super().__init__(seed)
        self.value = value

    def random(self) -> float:
        return self.value


def make_worker(
    settings: Settings,
    home: Wms,
    peers: Sequence[Wms] = (),
    *,
    rng: random.Random | None = None,
    states: dict[str, RegionState] | None = None,
) -> Worker:
    """A workload worker of `home`'s region over the hand-built databases of `home` and
    `peers` (one region state per database). Workers given the same `states` share
    their task pools, as the workers of one run do. Close it with `close()`."""
    states = {} if states is None else states
    for w in (home, *peers):
        if w.region.name not in states:
            states[w.region.name] = RegionState.load(w.conn, w.region, w.dbname)
    return Worker(
        f"test-{home.region.name}",
        settings,
        states,
        home.region,
        {"ship": 1.0},
        Pacer(None, None, None),
        rng or random.Random(1),
    )
