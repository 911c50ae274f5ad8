"""Hand-built WMS cases for the simulator's tests: a tiny warehouse with one location of
every type, one owner and one SKU per tracking mode, in a throwaway database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

import psycopg

from simulator import ops
from simulator.db import Conn, connect, run_txn
from simulator.invariants import check_invariants
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
        """(location, lot_no, status, on_hand, allocated) balance rows of a SKU."""
        return self.all(
            "SELECT loc.code, l.lot_no, i.status, i.qty_on_hand, i.qty_allocated "
            "FROM inventory i JOIN location loc ON loc.id = i.location_id "
            "LEFT JOIN lot l ON l.id = i.lot_id WHERE i.sku_id = %s ORDER BY 1, 2, 3",
            self.sku[sku],
        )

    def ledger(self, sku: str) -> list[tuple[Any, ...]]:
        """(txn_type, qty, d_on_hand, d_allocated) of a SKU's ledger, in order."""
        return self.all(
            "SELECT txn_type, qty, d_on_hand, d_allocated FROM inventory_txn "
            "WHERE sku_id = %s ORDER BY id",
            self.sku[sku],
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
    ) -> int:
        """A new outbound order; returns its id."""
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


def build(settings: Settings, region: Region, dbname: str, wh_code: str) -> Wms:
    """Master data of the hand-built case (as the workload role)."""
    w = Wms(region, dbname, connect(settings, region, dbname))

    def make(cur: psycopg.Cursor[Any]) -> None:
        # an unrelated owner first, so ids differ between regions built in another order
        if region.index % 2:
            cur.execute("INSERT INTO owner (code, name) VALUES ('SELLER-X', 'Other')")
        cur.execute(
            "INSERT INTO warehouse (code, name, country, timezone) VALUES (%s, %s, 'US', 'UTC') "
            "RETURNING id",
            (wh_code, wh_code),
        )
        w.wh = cur.fetchone()[0]  # type: ignore[index]
        w.wh_code = wh_code
        for code, loc_type in LOCATIONS.items():
            cur.execute(
                "INSERT INTO location (warehouse_id, code, zone, loc_type, sellable) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (w.wh, code, code, loc_type, loc_type in ("STORAGE", "PICK")),
            )
            w.loc[code] = cur.fetchone()[0]  # type: ignore[index]
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
