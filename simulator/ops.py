"""Every WMS operation of OPERATIONS.md, each run inside one transaction by the caller.

Each function takes a cursor of an open transaction (see :func:`simulator.db.run_txn`),
locks what it changes with ``SELECT … FOR UPDATE`` in a fixed order (order rows, then
order lines, then balance rows by id, then serials by id), applies exactly the effects
of the spec (balance rows with delete-at-zero, allocations, order lines and statuses,
serials, holds) and writes the ledger rows in the same transaction. A precondition that
does not hold raises :class:`Rejected`; the caller rolls back.

For serial-tracked SKUs the ledger has one row per serial (``serial_id`` set, qty 1) so
that a serial's history is its ledger rows; other SKUs get one row per balance movement.

Cancel after pick (not in the table of OPERATIONS.md) is defined here: the picked units
go back from the STAGING row to the location they were allocated from, as AVAILABLE and
unallocated, posted as one DEALLOCATE row with both locations (d_on_hand 0,
d_allocated -q); allocations not yet picked are released as by deallocate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from simulator.errors import Rejected, SimulatorError
from simulator.model import (
    INBOUND_OPEN_STATUSES,
    RECEIVE_TXN_BY_ORDER_TYPE,
    SHIP_TXN_BY_ORDER_TYPE,
)

Cur = psycopg.Cursor[Any]

#: ORDER BY of allocation candidates, by the order's lot rule.
ALLOCATION_ORDER: Final[dict[str, str]] = {
    "FEFO": "l.expiry_date ASC NULLS LAST, i.in_date, i.id",
    "FIFO": "i.in_date, i.id",
    "SPECIFIED": "i.in_date, i.id",
}

#: Statuses a balance row may have to be the source of each operation.
PUTAWAY_SOURCES: Final[tuple[str, ...]] = ("PENDING_PUTAWAY", "RETURNED")
DAMAGE_SOURCES: Final[tuple[str, ...]] = ("AVAILABLE", "RETURNED")
SCRAP_SOURCES: Final[tuple[str, ...]] = ("DAMAGED", "EXPIRED")

#: Serial status of the units of a balance row (unallocated part), by row status.
SERIAL_OF_ROW: Final[dict[str, str]] = {
    "AVAILABLE": "IN_STOCK",
    "PENDING_PUTAWAY": "IN_STOCK",
    "QC_HOLD": "IN_STOCK",
    "FROZEN": "IN_STOCK",
    "EXPIRED": "IN_STOCK",
    "DAMAGED": "DAMAGED",
    "RETURNED": "RETURNED",
}

#: Hold types that freeze stock (QC holds are the QC operation's).
FREEZE_HOLD_TYPES: Final[tuple[str, ...]] = ("RECALL", "CUSTOMER", "COUNT", "DAMAGE")

INV_COLUMNS: Final[str] = (
    "i.id, i.warehouse_id, i.location_id, i.owner_id, i.sku_id, i.lot_id, i.container_id, "
    "i.status, i.qty_on_hand, i.qty_allocated, i.in_date, s.tracking, loc.loc_type"
)


@dataclass(frozen=True)
class Inv:
    """A locked balance row with its SKU's tracking and its location's type."""

    id: int
    warehouse_id: int
    location_id: int
    owner_id: int
    sku_id: int
    lot_id: int | None
    container_id: int | None
    status: str
    qty_on_hand: int
    qty_allocated: int
    in_date: datetime
    tracking: str
    loc_type: str

    @property
    def free(self) -> int:
        return self.qty_on_hand - self.qty_allocated

    @property
    def serial(self) -> bool:
        return self.tracking == "SERIAL"


@dataclass(frozen=True)
class InboundLineSpec:
    sku_id: int
    qty_expected: int
    lot_no: str | None = None
    production_date: date | None = None
    expiry_date: date | None = None


@dataclass(frozen=True)
class OutboundLineSpec:
    sku_id: int
    qty_ordered: int
    lot_id: int | None = None


@dataclass(frozen=True)
class AllocateResult:
    status: str  # ALLOCATED or BACKORDER
    allocated: int  # units allocated by this call
    short: int  # units still missing


@dataclass(frozen=True)
class Movement:
    """Ledger context of one movement; `post` writes it (per serial for serial SKUs)."""

    txn_type: str
    warehouse_id: int
    owner_id: int
    sku_id: int
    lot_id: int | None
    operator: str
    from_location_id: int | None = None
    to_location_id: int | None = None
    from_status: str | None = None
    to_status: str | None = None
    reason_code: str | None = None
    ref_type: str | None = None
    ref_no: str | None = None


# --------------------------------------------------------------------------- primitives

_INSERT_TXN = """
INSERT INTO inventory_txn (occurred_at, txn_type, warehouse_id, owner_id, sku_id, lot_id,
    serial_id, from_location_id, to_location_id, from_status, to_status, qty, d_on_hand,
    d_allocated, reason_code, ref_type, ref_no, operator)
VALUES (now(), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def post(
    cur: Cur,
    mv: Movement,
    qty: int,
    d_on_hand: int = 0,
    d_allocated: int = 0,
    serial_ids: Sequence[int] | None = None,
) -> None:
    """Write the ledger: one row, or one row per serial (each with its share of the deltas)."""
    head = (mv.txn_type, mv.warehouse_id, mv.owner_id, mv.sku_id, mv.lot_id)
    tail = (mv.reason_code, mv.ref_type, mv.ref_no, mv.operator)
    locs = (mv.from_location_id, mv.to_location_id, mv.from_status, mv.to_status)
    if not serial_ids:
        cur.execute(_INSERT_TXN, (*head, None, *locs, qty, d_on_hand, d_allocated, *tail))
        return
    if len(serial_ids) != abs(qty):
        raise SimulatorError(f"{len(serial_ids)} serials for a movement of {qty}")
    unit = 1 if qty > 0 else -1
    per_oh, per_al = d_on_hand // abs(qty), d_allocated // abs(qty)
    cur.executemany(
        _INSERT_TXN, [(*head, sid, *locs, unit, per_oh, per_al, *tail) for sid in serial_ids]
    )


def lock_rows(cur: Cur, ids: Sequence[int]) -> list[Inv]:
    """Lock balance rows in id order (the global lock order) and return them."""
    cur.execute(
        f"SELECT {INV_COLUMNS} FROM inventory i JOIN sku s ON s.id = i.sku_id "
        "JOIN location loc ON loc.id = i.location_id "
        "WHERE i.id = ANY(%s) ORDER BY i.id FOR UPDATE OF i",
        (list(ids),),
    )
    return [Inv(*r) for r in cur.fetchall()]


def lock_row(cur: Cur, inventory_id: int, statuses: Sequence[str] | None = None) -> Inv:
    rows = lock_rows(cur, [inventory_id])
    if not rows:
        raise Rejected(f"balance row {inventory_id} is gone")
    if statuses is not None and rows[0].status not in statuses:
        raise Rejected(f"balance row {inventory_id} is {rows[0].status}, not {statuses}")
    return rows[0]


def take(cur: Cur, inv_id: int, qty: int, allocated: int = 0) -> int:
    """Remove units from a balance row; delete it when on-hand reaches 0. Returns what is
    left."""
    cur.execute(
        "UPDATE inventory SET qty_on_hand = qty_on_hand - %s, "
        "qty_allocated = qty_allocated - %s, version = version + 1, last_movement_at = now() "
        "WHERE id = %s RETURNING qty_on_hand",
        (qty, allocated, inv_id),
    )
    row = cur.fetchone()
    if row is None:
        raise SimulatorError(f"balance row {inv_id} vanished under a lock")
    if row[0] == 0:
        cur.execute("DELETE FROM inventory WHERE id = %s", (inv_id,))
    return int(row[0])


def put(
    cur: Cur,
    *,
    warehouse_id: int,
    location_id: int,
    owner_id: int,
    sku_id: int,
    lot_id: int | None,
    status: str,
    qty: int,
    allocated: int = 0,
    container_id: int | None = None,
    in_date: datetime | None = None,
) -> int:
    """Add units to the balance row of (location, SKU, lot, container, status), creating
    it if needed; an existing row keeps the earlier in_date. Returns the row id."""
    cur.execute(
        """
        INSERT INTO inventory (warehouse_id, location_id, owner_id, sku_id, lot_id,
            container_id, status, qty_on_hand, qty_allocated, in_date, last_movement_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), now())
        ON CONFLICT (location_id, sku_id, lot_id, container_id, status) DO UPDATE SET
            qty_on_hand = inventory.qty_on_hand + EXCLUDED.qty_on_hand,
            qty_allocated = inventory.qty_allocated + EXCLUDED.qty_allocated,
            in_date = LEAST(inventory.in_date, EXCLUDED.in_date),
            last_movement_at = EXCLUDED.last_movement_at,
            version = inventory.version + 1
        RETURNING id
        """,
        (
            warehouse_id,
            location_id,
            owner_id,
            sku_id,
            lot_id,
            container_id,
            status,
            qty,
            allocated,
            in_date,
        ),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def move_units(
    cur: Cur,
    src: Inv,
    qty: int,
    *,
    to_location_id: int,
    to_status: str,
    allocated: int = 0,
    keep_container: bool = False,
) -> int:
    """Take `qty` (of which `allocated` allocated) from `src` and put it elsewhere or in
    another status, keeping the stock's in_date. Returns the destination row id."""
    take(cur, src.id, qty, allocated)
    return put(
        cur,
        warehouse_id=src.warehouse_id,
        location_id=to_location_id,
        owner_id=src.owner_id,
        sku_id=src.sku_id,
        lot_id=src.lot_id,
        status=to_status,
        qty=qty,
        allocated=allocated,
        container_id=src.container_id if keep_container else None,
        in_date=src.in_date,
    )


def pick_serials(
    cur: Cur,
    *,
    sku_id: int,
    location_id: int,
    lot_id: int | None,
    status: str,
    n: int,
    outbound_line_id: int | None = None,
) -> list[int]:
    """Lock `n` serials of a balance row's units (by id); the invariant says they exist."""
    if n <= 0:
        return []
    line_filter = "AND outbound_line_id = %s" if outbound_line_id is not None else ""
    params: list[Any] = [sku_id, location_id, lot_id, status]
    if outbound_line_id is not None:
        params.append(outbound_line_id)
    cur.execute(
        "SELECT id FROM serial_number WHERE sku_id = %s AND location_id = %s "
        f"AND lot_id IS NOT DISTINCT FROM %s AND status = %s {line_filter} "
        "ORDER BY id LIMIT %s FOR UPDATE",
        (*params, n),
    )
    ids = [r[0] for r in cur.fetchall()]
    if len(ids) != n:
        raise SimulatorError(
            f"serial invariant broken: {len(ids)} {status} serials of sku {sku_id} at "
            f"location {location_id}, needed {n}"
        )
    return ids


def set_serials(cur: Cur, ids: Sequence[int], **changes: Any) -> None:
    """Update serial rows; `location_id=None` etc. are written as given."""
    if not ids:
        return
    cols = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes)
    cur.execute(
        sql.SQL("UPDATE serial_number SET {}, updated_at = now() WHERE id = ANY(%s)").format(cols),
        (*changes.values(), list(ids)),
    )


def _location(cur: Cur, location_id: int, warehouse_id: int, loc_types: Sequence[str]) -> None:
    cur.execute(
        "SELECT loc_type FROM location WHERE id = %s AND warehouse_id = %s AND active",
        (location_id, warehouse_id),
    )
    row = cur.fetchone()
    if row is None or row[0] not in loc_types:
        raise Rejected(f"location {location_id} is not a {'/'.join(loc_types)} location here")


def _movement(src: Inv, txn_type: str, operator: str, **kw: Any) -> Movement:
    return Movement(
        txn_type=txn_type,
        warehouse_id=src.warehouse_id,
        owner_id=src.owner_id,
        sku_id=src.sku_id,
        lot_id=src.lot_id,
        operator=operator,
        from_location_id=src.location_id,
        from_status=src.status,
        **kw,
    )


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise Rejected(message)


# --------------------------------------------------------------------------- inbound


def create_inbound(
    cur: Cur,
    *,
    warehouse_id: int,
    owner_id: int,
    order_no: str,
    lines: Sequence[InboundLineSpec],
    order_type: str = "PURCHASE",
    status: str = "CREATED",
    owner_ref: str | None = None,
    eta: date | None = None,
) -> int:
    """A new inbound order with its lines (no stock moves)."""
    _need(bool(lines), "an inbound order needs lines")
    cur.execute(
        "INSERT INTO inbound_order (warehouse_id, owner_id, order_no, order_type, status, "
        "owner_ref, eta) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (warehouse_id, owner_id, order_no, order_type, status, owner_ref, eta),
    )
    row = cur.fetchone()
    assert row is not None
    order_id = int(row[0])
    cur.executemany(
        "INSERT INTO inbound_line (inbound_order_id, sku_id, lot_no, production_date, "
        "expiry_date, qty_expected) VALUES (%s, %s, %s, %s, %s, %s)",
        [
            (order_id, ln.sku_id, ln.lot_no, ln.production_date, ln.expiry_date, ln.qty_expected)
            for ln in lines
        ],
    )
    return order_id


#: Next status of an inbound order on its way to the dock.
INBOUND_ADVANCE: Final[dict[str, str]] = {"CREATED": "IN_TRANSIT", "IN_TRANSIT": "ARRIVED"}


def advance_inbound(cur: Cur, *, order_id: int) -> str:
    """CREATED → IN_TRANSIT → ARRIVED."""
    cur.execute("SELECT status FROM inbound_order WHERE id = %s FOR UPDATE", (order_id,))
    row = cur.fetchone()
    _need(row is not None and row[0] in INBOUND_ADVANCE, f"inbound {order_id} cannot advance")
    assert row is not None
    new = INBOUND_ADVANCE[row[0]]
    cur.execute(
        "UPDATE inbound_order SET status = %s, updated_at = now() WHERE id = %s", (new, order_id)
    )
    return new


def close_inbound(cur: Cur, *, order_id: int) -> None:
    """RECEIVED → CLOSED (paperwork done)."""
    cur.execute(
        "UPDATE inbound_order SET status = 'CLOSED', updated_at = now() "
        "WHERE id = %s AND status = 'RECEIVED' RETURNING id",
        (order_id,),
    )
    _need(cur.fetchone() is not None, f"inbound {order_id} is not RECEIVED")


def _lot_for_receipt(
    cur: Cur, sku_id: int, lot_no: str, production: date | None, expiry: date | None
) -> int:
    """The SKU's lot `lot_no`, created on first receipt with the line's dates."""
    cur.execute(
        "INSERT INTO lot (sku_id, lot_no, production_date, expiry_date, first_received_at) "
        "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (sku_id, lot_no) DO NOTHING",
        (sku_id, lot_no, production, expiry),
    )
    cur.execute(
        "UPDATE lot SET first_received_at = coalesce(first_received_at, now()) "
        "WHERE sku_id = %s AND lot_no = %s RETURNING id",
        (sku_id, lot_no),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _receive_serials(
    cur: Cur,
    *,
    serial_nos: Sequence[str],
    status: str,
    sku_id: int,
    owner_id: int,
    lot_id: int | None,
    warehouse_id: int,
    location_id: int,
    inbound_line_id: int | None,
) -> list[int]:
    """Create serials, or bring back ones this database shipped earlier (receive_count+1)."""
    ids: list[int] = []
    for serial_no in serial_nos:
        cur.execute(
            """
            INSERT INTO serial_number AS sn (sku_id, owner_id, serial_no, lot_id, warehouse_id,
                location_id, status, inbound_line_id, received_at, receive_count)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), 1)
            ON CONFLICT (sku_id, serial_no) DO UPDATE SET
                lot_id = EXCLUDED.lot_id, warehouse_id = EXCLUDED.warehouse_id,
                location_id = EXCLUDED.location_id, status = EXCLUDED.status,
                inbound_line_id = EXCLUDED.inbound_line_id, outbound_line_id = NULL,
                received_at = now(), receive_count = sn.receive_count + 1, updated_at = now()
            WHERE sn.status = 'SHIPPED'
            RETURNING id
            """,
            (
                sku_id,
                owner_id,
                serial_no,
                lot_id,
                warehouse_id,
                location_id,
                status,
                inbound_line_id,
            ),
        )
        row = cur.fetchone()
        _need(row is not None, f"serial {serial_no} is already in stock here")
        assert row is not None
        ids.append(int(row[0]))
    return ids


def receive(
    cur: Cur,
    *,
    line_id: int,
    qty: int,
    location_id: int,
    operator: str,
    damaged: int = 0,
    serial_nos: Sequence[str] | None = None,
) -> list[int]:
    """Receive `qty` units of an inbound line (`damaged` of them damaged) at a RECEIVING
    location. Returns the balance row ids written."""
    _need(qty > 0 and 0 <= damaged <= qty, "bad receipt quantities")
    cur.execute(
        "SELECT o.id, o.warehouse_id, o.owner_id, o.order_no, o.order_type, o.status "
        "FROM inbound_order o JOIN inbound_line l ON l.inbound_order_id = o.id "
        "WHERE l.id = %s FOR UPDATE OF o",
        (line_id,),
    )
    order = cur.fetchone()
    _need(order is not None, f"no inbound line {line_id}")
    assert order is not None
    order_id, warehouse_id, owner_id, order_no, order_type, status = order
    _need(status in INBOUND_OPEN_STATUSES, f"inbound {order_no} is {status}")
    cur.execute(
        "SELECT l.sku_id, l.lot_no, l.production_date, l.expiry_date, l.qty_expected, "
        "l.qty_received, s.tracking, s.owner_id FROM inbound_line l JOIN sku s ON s.id = l.sku_id "
        "WHERE l.id = %s FOR UPDATE OF l",
        (line_id,),
    )
    line = cur.fetchone()
    assert line is not None
    sku_id, lot_no, production, expiry, expected, received, tracking, sku_owner = line
    _need(sku_owner == owner_id, "line SKU belongs to another owner")
    _need(received + qty <= expected, f"over-receipt on line {line_id}")
    _location(cur, location_id, warehouse_id, ("RECEIVING",))
    _need(tracking != "LOT" or lot_no is not None, "lot-tracked SKU needs a lot number")
    lot_id = (
        _lot_for_receipt(cur, sku_id, lot_no, production, expiry)
        if lot_no is not None and tracking != "NONE"
        else None
    )
    if tracking == "SERIAL":
        _need(serial_nos is not None and len(serial_nos) == qty, "one serial per unit needed")
    mv = Movement(
        txn_type=RECEIVE_TXN_BY_ORDER_TYPE[order_type],
        warehouse_id=warehouse_id,
        owner_id=owner_id,
        sku_id=sku_id,
        lot_id=lot_id,
        operator=operator,
        to_location_id=location_id,
        ref_type="INBOUND",
        ref_no=order_no,
    )
    row_ids: list[int] = []
    for row_status, n, serial_status, offset in (
        ("PENDING_PUTAWAY", qty - damaged, "IN_STOCK", 0),
        ("DAMAGED", damaged, "DAMAGED", qty - damaged),
    ):
        if n == 0:
            continue
        row_ids.append(
            put(
                cur,
                warehouse_id=warehouse_id,
                location_id=location_id,
                owner_id=owner_id,
                sku_id=sku_id,
                lot_id=lot_id,
                status=row_status,
                qty=n,
            )
        )
        serial_ids = (
            _receive_serials(
                cur,
                serial_nos=list(serial_nos[offset : offset + n]),
                status=serial_status,
                sku_id=sku_id,
                owner_id=owner_id,
                lot_id=lot_id,
                warehouse_id=warehouse_id,
                location_id=location_id,
                inbound_line_id=line_id,
            )
            if serial_nos is not None and tracking == "SERIAL"
            else None
        )
        post(
            cur,
            replace(mv, to_status=row_status),
            n,
            d_on_hand=n,
            serial_ids=serial_ids,
        )
    cur.execute(
        "UPDATE inbound_line SET qty_received = qty_received + %s, "
        "qty_damaged = qty_damaged + %s, updated_at = now() WHERE id = %s",
        (qty, damaged, line_id),
    )
    cur.execute(
        "UPDATE inbound_order SET updated_at = now(), status = CASE WHEN EXISTS ("
        "SELECT 1 FROM inbound_line WHERE inbound_order_id = %s AND qty_received < qty_expected"
        ") THEN 'RECEIVING' ELSE 'RECEIVED' END WHERE id = %s",
        (order_id, order_id),
    )
    return row_ids


# --------------------------------------------------------------------------- QC and holds


def _hold(cur: Cur, src: Inv, hold_type: str, qty: int, reason: str, operator: str) -> int:
    cur.execute(
        "INSERT INTO inventory_hold (warehouse_id, owner_id, sku_id, lot_id, location_id, "
        "hold_type, status, qty, reason, created_by) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'ACTIVE', %s, %s, %s) RETURNING id",
        (
            src.warehouse_id,
            src.owner_id,
            src.sku_id,
            src.lot_id,
            src.location_id,
            hold_type,
            qty,
            reason,
            operator,
        ),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _status_change(
    cur: Cur,
    src: Inv,
    qty: int,
    to_status: str,
    txn_type: str,
    operator: str,
    *,
    to_location_id: int | None = None,
    reason: str | None = None,
    ref: tuple[str, str] | None = None,
) -> int:
    """Move unallocated units of `src` to another status (and location), with serials
    and one ledger movement (0 / 0)."""
    dest = to_location_id if to_location_id is not None else src.location_id
    serial_ids: list[int] | None = None
    if src.serial:
        serial_ids = pick_serials(
            cur,
            sku_id=src.sku_id,
            location_id=src.location_id,
            lot_id=src.lot_id,
            status=SERIAL_OF_ROW[src.status],
            n=qty,
        )
        set_serials(cur, serial_ids, location_id=dest, status=SERIAL_OF_ROW[to_status])
    row_id = move_units(
        cur,
        src,
        qty,
        to_location_id=dest,
        to_status=to_status,
        keep_container=dest == src.location_id,
    )
    post(
        cur,
        _movement(
            src,
            txn_type,
            operator,
            to_location_id=dest,
            to_status=to_status,
            reason_code=reason,
            ref_type=ref[0] if ref else None,
            ref_no=ref[1] if ref else None,
        ),
        qty,
        serial_ids=serial_ids,
    )
    return row_id


def qc_hold(cur: Cur, *, inventory_id: int, qty: int, operator: str) -> int:
    """PENDING_PUTAWAY → QC_HOLD in place, with an ACTIVE QC hold. Returns the hold id.
    The ledger has no QC_HOLD type: this posts FREEZE with reason_code 'QC_HOLD'."""
    src = lock_row(cur, inventory_id, ("PENDING_PUTAWAY",))
    _need(0 < qty <= src.qty_on_hand, "not enough units to hold")
    hold_id = _hold(cur, src, "QC", qty, "inbound QC", operator)
    _status_change(
        cur, src, qty, "QC_HOLD", "FREEZE", operator, reason="QC_HOLD", ref=("HOLD", str(hold_id))
    )
    return hold_id


def _release_hold(
    cur: Cur,
    *,
    hold_id: int,
    hold_types: Sequence[str],
    held_status: str,
    to_status: str,
    txn_type: str,
    operator: str,
) -> None:
    cur.execute(
        "SELECT location_id, sku_id, lot_id, qty, hold_type FROM inventory_hold "
        "WHERE id = %s AND status = 'ACTIVE' FOR UPDATE",
        (hold_id,),
    )
    hold = cur.fetchone()
    _need(hold is not None and hold[4] in hold_types, f"no active {hold_types} hold {hold_id}")
    assert hold is not None
    location_id, sku_id, lot_id, qty, _t = hold
    cur.execute(
        "SELECT id FROM inventory WHERE location_id = %s AND sku_id = %s "
        "AND lot_id IS NOT DISTINCT FROM %s AND status = %s ORDER BY id",
        (location_id, sku_id, lot_id, held_status),
    )
    rows = lock_rows(cur, [r[0] for r in cur.fetchall()])
    if sum(r.qty_on_hand for r in rows) < qty:
        raise SimulatorError(f"hold {hold_id} covers {qty} but fewer units are {held_status}")
    left = qty
    for src in rows:
        n = min(left, src.qty_on_hand)
        _status_change(cur, src, n, to_status, txn_type, operator, ref=("HOLD", str(hold_id)))
        left -= n
        if left == 0:
            break
    cur.execute(
        "UPDATE inventory_hold SET status = 'RELEASED', released_at = now() WHERE id = %s",
        (hold_id,),
    )


def qc_pass(cur: Cur, *, hold_id: int, operator: str) -> None:
    """QC_HOLD → PENDING_PUTAWAY; the QC hold is released."""
    _release_hold(
        cur,
        hold_id=hold_id,
        hold_types=("QC",),
        held_status="QC_HOLD",
        to_status="PENDING_PUTAWAY",
        txn_type="QC_PASS",
        operator=operator,
    )


def qc_fail(cur: Cur, *, hold_id: int, operator: str) -> None:
    """QC_HOLD → DAMAGED (serials DAMAGED); the QC hold is released."""
    _release_hold(
        cur,
        hold_id=hold_id,
        hold_types=("QC",),
        held_status="QC_HOLD",
        to_status="DAMAGED",
        txn_type="QC_FAIL",
        operator=operator,
    )


def freeze(
    cur: Cur,
    *,
    inventory_id: int,
    qty: int,
    operator: str,
    hold_type: str = "CUSTOMER",
    reason: str | None = None,
) -> int:
    """Unallocated AVAILABLE units → FROZEN in place, with an ACTIVE hold. Returns its id."""
    _need(hold_type in FREEZE_HOLD_TYPES, f"{hold_type} is not a freeze hold type")
    src = lock_row(cur, inventory_id, ("AVAILABLE",))
    _need(src.loc_type != "STAGING" and 0 < qty <= src.free, "not enough free units to freeze")
    hold_id = _hold(cur, src, hold_type, qty, reason or hold_type.lower(), operator)
    _status_change(cur, src, qty, "FROZEN", "FREEZE", operator, ref=("HOLD", str(hold_id)))
    return hold_id


def unfreeze(cur: Cur, *, hold_id: int, operator: str) -> None:
    """FROZEN → AVAILABLE for the units of an ACTIVE freeze hold; the hold is released."""
    _release_hold(
        cur,
        hold_id=hold_id,
        hold_types=FREEZE_HOLD_TYPES,
        held_status="FROZEN",
        to_status="AVAILABLE",
        txn_type="UNFREEZE",
        operator=operator,
    )


# --------------------------------------------------------------------------- moves


def putaway(cur: Cur, *, inventory_id: int, qty: int, to_location_id: int, operator: str) -> int:
    """PENDING_PUTAWAY (or RETURNED) units → AVAILABLE at a STORAGE or PICK location."""
    src = lock_row(cur, inventory_id, PUTAWAY_SOURCES)
    _need(0 < qty <= src.qty_on_hand, "not enough units to put away")
    _location(cur, to_location_id, src.warehouse_id, ("STORAGE", "PICK"))
    return _status_change(
        cur, src, qty, "AVAILABLE", "PUTAWAY", operator, to_location_id=to_location_id
    )


def move(cur: Cur, *, inventory_id: int, qty: int, to_location_id: int, operator: str) -> int:
    """Unallocated AVAILABLE units from one sellable location to another."""
    src = lock_row(cur, inventory_id, ("AVAILABLE",))
    _need(src.loc_type in ("STORAGE", "PICK"), "only stored stock moves")
    _need(0 < qty <= src.free, "not enough free units to move")
    _need(to_location_id != src.location_id, "same location")
    _location(cur, to_location_id, src.warehouse_id, ("STORAGE", "PICK"))
    return _status_change(
        cur, src, qty, "AVAILABLE", "MOVE", operator, to_location_id=to_location_id
    )


def damage(cur: Cur, *, inventory_id: int, qty: int, damage_location_id: int, operator: str) -> int:
    """Unallocated AVAILABLE (or RETURNED) units → DAMAGED at a DAMAGE location."""
    src = lock_row(cur, inventory_id, DAMAGE_SOURCES)
    _need(src.loc_type != "STAGING" and 0 < qty <= src.free, "not enough free units")
    _location(cur, damage_location_id, src.warehouse_id, ("DAMAGE",))
    return _status_change(
        cur, src, qty, "DAMAGED", "DAMAGE", operator, to_location_id=damage_location_id
    )


def expire(cur: Cur, *, lot_id: int, warehouse_id: int, operator: str) -> int:
    """Unallocated AVAILABLE units of a lot past its expiry date → EXPIRED, in place, in
    one warehouse. Returns the units expired."""
    cur.execute("SELECT expiry_date < current_date FROM lot WHERE id = %s", (lot_id,))
    row = cur.fetchone()
    _need(row is not None and bool(row[0]), f"lot {lot_id} is not past expiry")
    cur.execute(
        "SELECT id FROM inventory WHERE lot_id = %s AND warehouse_id = %s "
        "AND status = 'AVAILABLE' AND qty_on_hand > qty_allocated ORDER BY id",
        (lot_id, warehouse_id),
    )
    rows = lock_rows(cur, [r[0] for r in cur.fetchall()])
    total = 0
    for src in rows:
        if src.free > 0 and src.status == "AVAILABLE":
            _status_change(cur, src, src.free, "EXPIRED", "EXPIRE", operator)
            total += src.free
    _need(total > 0, "nothing to expire")
    return total


def scrap(cur: Cur, *, inventory_id: int, qty: int, operator: str) -> None:
    """Destroy DAMAGED or EXPIRED units (serials SCRAPPED)."""
    src = lock_row(cur, inventory_id, SCRAP_SOURCES)
    _need(0 < qty <= src.qty_on_hand, "not enough units to scrap")
    serial_ids = None
    if src.serial:
        serial_ids = pick_serials(
            cur,
            sku_id=src.sku_id,
            location_id=src.location_id,
            lot_id=src.lot_id,
            status=SERIAL_OF_ROW[src.status],
            n=qty,
        )
        set_serials(cur, serial_ids, status="SCRAPPED", location_id=None)
    take(cur, src.id, qty)
    post(cur, _movement(src, "SCRAP", operator), qty, d_on_hand=-qty, serial_ids=serial_ids)


def adjust(
    cur: Cur,
    *,
    inventory_id: int,
    delta: int,
    operator: str,
    counted: bool = False,
    reason: str | None = None,
    new_serial_nos: Sequence[str] | None = None,
) -> None:
    """Post ±delta on the unallocated part of an AVAILABLE row (ADJUST, or COUNT for a
    cycle count). Serials removed become LOST; found ones are created IN_STOCK (or a
    LOST serial of the SKU in this warehouse turns up again)."""
    src = lock_row(cur, inventory_id, ("AVAILABLE",))
    _need(delta != 0 and src.loc_type in ("STORAGE", "PICK"), "nothing to adjust")
    _need(delta > 0 or -delta <= src.free, "cannot adjust away allocated units")
    txn_type = "COUNT" if counted else "ADJUST"
    serial_ids: list[int] | None = None
    if src.serial and delta < 0:
        serial_ids = pick_serials(
            cur,
            sku_id=src.sku_id,
            location_id=src.location_id,
            lot_id=src.lot_id,
            status="IN_STOCK",
            n=-delta,
        )
        set_serials(cur, serial_ids, status="LOST", location_id=None)
    elif src.serial:
        serial_ids = _found_serials(cur, src, delta, new_serial_nos or ())
    if delta < 0:
        take(cur, src.id, -delta)
    else:
        put(
            cur,
            warehouse_id=src.warehouse_id,
            location_id=src.location_id,
            owner_id=src.owner_id,
            sku_id=src.sku_id,
            lot_id=src.lot_id,
            status="AVAILABLE",
            qty=delta,
            container_id=src.container_id,
            in_date=src.in_date,
        )
    mv = _movement(
        src,
        txn_type,
        operator,
        to_location_id=src.location_id,
        to_status="AVAILABLE",
        reason_code=reason or ("CYCLE_COUNT" if counted else "ADJUSTMENT"),
        ref_type="COUNT" if counted else "ADJUST",
    )
    post(cur, mv, delta, d_on_hand=delta, serial_ids=serial_ids)


def _found_serials(cur: Cur, src: Inv, n: int, new_serial_nos: Sequence[str]) -> list[int]:
    cur.execute(
        "SELECT id FROM serial_number WHERE sku_id = %s AND warehouse_id = %s "
        "AND status = 'LOST' ORDER BY id LIMIT %s FOR UPDATE",
        (src.sku_id, src.warehouse_id, n),
    )
    ids = [r[0] for r in cur.fetchall()]
    set_serials(cur, ids, status="IN_STOCK", location_id=src.location_id, lot_id=src.lot_id)
    missing = n - len(ids)
    _need(len(new_serial_nos) >= missing, f"{missing} new serial numbers needed")
    for serial_no in new_serial_nos[:missing]:
        cur.execute(
            "INSERT INTO serial_number (sku_id, owner_id, serial_no, lot_id, warehouse_id, "
            "location_id, status, received_at) VALUES (%s, %s, %s, %s, %s, %s, 'IN_STOCK', now()) "
            "ON CONFLICT (sku_id, serial_no) DO NOTHING RETURNING id",
            (src.sku_id, src.owner_id, serial_no, src.lot_id, src.warehouse_id, src.location_id),
        )
        row = cur.fetchone()
        _need(row is not None, f"serial {serial_no} already known")
        assert row is not None
        ids.append(int(row[0]))
    return ids


def count(
    cur: Cur,
    *,
    inventory_id: int,
    counted_qty: int,
    operator: str,
    new_serial_nos: Sequence[str] | None = None,
) -> int:
    """Cycle count of a row: post the difference (COUNT). Returns the difference."""
    src = lock_row(cur, inventory_id, ("AVAILABLE",))
    delta = counted_qty - src.qty_on_hand
    _need(delta != 0, "count matches")
    adjust(
        cur,
        inventory_id=inventory_id,
        delta=delta,
        operator=operator,
        counted=True,
        new_serial_nos=new_serial_nos,
    )
    return delta


# --------------------------------------------------------------------------- outbound


def create_outbound(
    cur: Cur,
    *,
    warehouse_id: int,
    owner_id: int,
    order_no: str,
    lines: Sequence[OutboundLineSpec],
    order_type: str = "B2C",
    lot_rule: str = "FEFO",
    platform_order_no: str | None = None,
    carrier: str | None = None,
) -> int:
    """A new outbound order (CREATED) with its lines."""
    _need(bool(lines), "an outbound order needs lines")
    cur.execute(
        "INSERT INTO outbound_order (warehouse_id, owner_id, order_no, order_type, status, "
        "lot_rule, platform_order_no, carrier) VALUES (%s, %s, %s, %s, 'CREATED', %s, %s, %s) "
        "RETURNING id",
        (warehouse_id, owner_id, order_no, order_type, lot_rule, platform_order_no, carrier),
    )
    row = cur.fetchone()
    assert row is not None
    order_id = int(row[0])
    cur.executemany(
        "INSERT INTO outbound_line (outbound_order_id, sku_id, lot_id, qty_ordered) "
        "VALUES (%s, %s, %s, %s)",
        [(order_id, ln.sku_id, ln.lot_id, ln.qty_ordered) for ln in lines],
    )
    return order_id


def _lock_order(cur: Cur, order_id: int, statuses: Sequence[str]) -> tuple[Any, ...]:
    cur.execute(
        "SELECT id, warehouse_id, owner_id, order_no, order_type, status, lot_rule "
        "FROM outbound_order WHERE id = %s FOR UPDATE",
        (order_id,),
    )
    order = cur.fetchone()
    _need(order is not None, f"no outbound order {order_id}")
    assert order is not None
    _need(order[5] in statuses, f"order {order[3]} is {order[5]}, not {'/'.join(statuses)}")
    return tuple(order)


def allocate(cur: Cur, *, order_id: int, operator: str) -> AllocateResult:
    """Reserve stock for every open line of a CREATED or BACKORDER order by its lot rule,
    never from a lot past expiry; the order becomes ALLOCATED, or BACKORDER when short."""
    _oid, warehouse_id, _owner, order_no, _t, _s, lot_rule = _lock_order(
        cur, order_id, ("CREATED", "BACKORDER")
    )
    cur.execute(
        "SELECT l.id, l.sku_id, l.lot_id, l.qty_ordered - l.qty_allocated, s.tracking "
        "FROM outbound_line l JOIN sku s ON s.id = l.sku_id "
        "WHERE l.outbound_order_id = %s ORDER BY l.id FOR UPDATE OF l",
        (order_id,),
    )
    lines = cur.fetchall()
    needs = {ln[0]: ln for ln in lines if ln[3] > 0}
    # candidates of every line, then one lock of all of them in id order
    candidates: dict[int, list[int]] = {}
    for line_id, sku_id, lot_id, _need_qty, _tr in needs.values():
        if lot_rule == "SPECIFIED" and lot_id is None:
            candidates[line_id] = []
            continue
        lot_filter = "AND i.lot_id = %s" if lot_rule == "SPECIFIED" else ""
        params: list[Any] = [warehouse_id, sku_id]
        if lot_rule == "SPECIFIED":
            params.append(lot_id)
        cur.execute(
            "SELECT i.id FROM inventory i JOIN location loc ON loc.id = i.location_id "
            "LEFT JOIN lot l ON l.id = i.lot_id "
            "WHERE i.warehouse_id = %s AND i.sku_id = %s AND i.status = 'AVAILABLE' "
            "AND loc.sellable AND i.qty_on_hand > i.qty_allocated "
            f"AND (l.expiry_date IS NULL OR l.expiry_date >= current_date) {lot_filter} "
            f"ORDER BY {ALLOCATION_ORDER[lot_rule]}",
            params,
        )
        candidates[line_id] = [r[0] for r in cur.fetchall()]
    locked = {
        r.id: r for r in lock_rows(cur, sorted({i for ids in candidates.values() for i in ids}))
    }
    free = {i: r.free for i, r in locked.items() if r.status == "AVAILABLE"}
    allocated_total = short_total = 0
    for line_id, _sku, _lot, need, _tracking in needs.values():
        for inv_id in candidates[line_id]:
            if need == 0:
                break
            n = min(need, free.get(inv_id, 0))
            if n <= 0:
                continue
            src = locked[inv_id]
            _allocate_from(cur, src, n, line_id, order_no, operator)
            free[inv_id] -= n
            need -= n
            allocated_total += n
        short_total += need
    status = "BACKORDER" if short_total else "ALLOCATED"
    cur.execute(
        "UPDATE outbound_order SET status = %s, updated_at = now() WHERE id = %s",
        (status, order_id),
    )
    return AllocateResult(status=status, allocated=allocated_total, short=short_total)


def _allocate_from(cur: Cur, src: Inv, n: int, line_id: int, order_no: str, operator: str) -> None:
    cur.execute(
        "UPDATE inventory SET qty_allocated = qty_allocated + %s, version = version + 1 "
        "WHERE id = %s",
        (n, src.id),
    )
    cur.execute(
        "INSERT INTO allocation (outbound_line_id, inventory_id, sku_id, lot_id, location_id, "
        "qty, status) VALUES (%s, %s, %s, %s, %s, %s, 'ALLOCATED')",
        (line_id, src.id, src.sku_id, src.lot_id, src.location_id, n),
    )
    cur.execute(
        "UPDATE outbound_line SET qty_allocated = qty_allocated + %s, updated_at = now() "
        "WHERE id = %s",
        (n, line_id),
    )
    serial_ids = None
    if src.serial:
        serial_ids = pick_serials(
            cur,
            sku_id=src.sku_id,
            location_id=src.location_id,
            lot_id=src.lot_id,
            status="IN_STOCK",
            n=n,
        )
        set_serials(cur, serial_ids, status="ALLOCATED", outbound_line_id=line_id)
    mv = _movement(
        src,
        "ALLOCATE",
        operator,
        to_location_id=src.location_id,
        to_status="AVAILABLE",
        ref_type="OUTBOUND",
        ref_no=order_no,
    )
    post(cur, mv, n, d_allocated=n, serial_ids=serial_ids)


def _allocations(cur: Cur, order_id: int, statuses: Sequence[str]) -> list[tuple[Any, ...]]:
    """Allocation rows of an order, locked (by id)."""
    cur.execute(
        "SELECT a.id, a.outbound_line_id, a.inventory_id, a.location_id, a.qty, a.status "
        "FROM allocation a JOIN outbound_line l ON l.id = a.outbound_line_id "
        "WHERE l.outbound_order_id = %s AND a.status = ANY(%s) ORDER BY a.id FOR UPDATE OF a",
        (order_id, list(statuses)),
    )
    return [tuple(r) for r in cur.fetchall()]


def pick(
    cur: Cur,
    *,
    order_id: int,
    staging_location_id: int,
    operator: str,
    max_allocations: int | None = None,
) -> str:
    """Move allocated units of an ALLOCATED (or PICKING) order to a STAGING location,
    still allocated. The order becomes PICKING, or PACKED once everything is picked."""
    _oid, warehouse_id, _own, order_no, _t, _s, _r = _lock_order(
        cur, order_id, ("ALLOCATED", "PICKING")
    )
    _location(cur, staging_location_id, warehouse_id, ("STAGING",))
    allocs = _allocations(cur, order_id, ("ALLOCATED",))
    _need(bool(allocs), f"nothing to pick on {order_no}")
    todo = allocs[:max_allocations] if max_allocations else allocs
    rows = {r.id: r for r in lock_rows(cur, sorted({a[2] for a in todo}))}
    for alloc_id, line_id, inv_id, _loc, qty, _st in todo:
        src = rows.get(inv_id)
        if src is None:
            raise SimulatorError(f"allocation {alloc_id} points at missing row {inv_id}")
        serial_ids = None
        if src.serial:
            serial_ids = pick_serials(
                cur,
                sku_id=src.sku_id,
                location_id=src.location_id,
                lot_id=src.lot_id,
                status="ALLOCATED",
                n=qty,
                outbound_line_id=line_id,
            )
            set_serials(cur, serial_ids, location_id=staging_location_id)
        dest = move_units(
            cur, src, qty, to_location_id=staging_location_id, to_status="AVAILABLE", allocated=qty
        )
        cur.execute(
            "UPDATE allocation SET status = 'PICKED', inventory_id = %s, updated_at = now() "
            "WHERE id = %s",
            (dest, alloc_id),
        )
        mv = _movement(
            src,
            "PICK",
            operator,
            to_location_id=staging_location_id,
            to_status="AVAILABLE",
            ref_type="OUTBOUND",
            ref_no=order_no,
        )
        post(cur, mv, qty, serial_ids=serial_ids)
    status = "PICKING" if len(todo) < len(allocs) else "PACKED"
    cur.execute(
        "UPDATE outbound_order SET status = %s, updated_at = now() WHERE id = %s",
        (status, order_id),
    )
    return status


def ship(
    cur: Cur, *, order_id: int, tracking_no: str, operator: str, carrier: str | None = None
) -> int:
    """Ship a PACKED order from its STAGING rows (SHIP, or TRANSFER_OUT for a transfer).
    Returns the units shipped."""
    _oid, _wh, _own, order_no, order_type, _s, _r = _lock_order(cur, order_id, ("PACKED",))
    allocs = _allocations(cur, order_id, ("PICKED",))
    rows = {r.id: r for r in lock_rows(cur, sorted({a[2] for a in allocs}))}
    txn_type = SHIP_TXN_BY_ORDER_TYPE[order_type]
    total = 0
    for alloc_id, line_id, inv_id, _loc, qty, _st in allocs:
        src = rows.get(inv_id)
        if src is None:
            raise SimulatorError(f"picked allocation {alloc_id} points at missing row {inv_id}")
        serial_ids = None
        if src.serial:
            serial_ids = pick_serials(
                cur,
                sku_id=src.sku_id,
                location_id=src.location_id,
                lot_id=src.lot_id,
                status="ALLOCATED",
                n=qty,
                outbound_line_id=line_id,
            )
            cur.execute(
                "UPDATE serial_number SET status = 'SHIPPED', location_id = NULL, "
                "shipped_at = now(), updated_at = now() WHERE id = ANY(%s)",
                (serial_ids,),
            )
        take(cur, src.id, qty, qty)
        cur.execute(
            "UPDATE allocation SET status = 'SHIPPED', updated_at = now() WHERE id = %s",
            (alloc_id,),
        )
        cur.execute(
            "UPDATE outbound_line SET qty_shipped = qty_shipped + %s, updated_at = now() "
            "WHERE id = %s",
            (qty, line_id),
        )
        mv = _movement(src, txn_type, operator, ref_type="OUTBOUND", ref_no=order_no)
        post(cur, mv, qty, d_on_hand=-qty, d_allocated=-qty, serial_ids=serial_ids)
        total += qty
    cur.execute(
        "UPDATE outbound_order SET status = 'SHIPPED', tracking_no = %s, "
        "carrier = coalesce(%s, carrier), shipped_at = now(), updated_at = now() WHERE id = %s",
        (tracking_no, carrier, order_id),
    )
    return total


def cancel(cur: Cur, *, order_id: int, operator: str) -> int:
    """Cancel an order before it ships: release what is allocated (DEALLOCATE) and bring
    picked units back from STAGING to the location they were allocated from (see the
    module docstring). Returns the units released."""
    _oid, _wh, _own, order_no, _t, _s, _r = _lock_order(
        cur, order_id, ("CREATED", "ALLOCATED", "BACKORDER", "PICKING", "PACKED")
    )
    allocs = _allocations(cur, order_id, ("ALLOCATED", "PICKED"))
    rows = {r.id: r for r in lock_rows(cur, sorted({a[2] for a in allocs}))}
    total = 0
    for alloc_id, line_id, inv_id, home_loc, qty, status in allocs:
        src = rows.get(inv_id)
        if src is None:
            raise SimulatorError(f"allocation {alloc_id} points at missing row {inv_id}")
        serial_ids = None
        if src.serial:
            serial_ids = pick_serials(
                cur,
                sku_id=src.sku_id,
                location_id=src.location_id,
                lot_id=src.lot_id,
                status="ALLOCATED",
                n=qty,
                outbound_line_id=line_id,
            )
            set_serials(
                cur, serial_ids, status="IN_STOCK", outbound_line_id=None, location_id=home_loc
            )
        if status == "PICKED":
            take(cur, src.id, qty, qty)
            put(
                cur,
                warehouse_id=src.warehouse_id,
                location_id=home_loc,
                owner_id=src.owner_id,
                sku_id=src.sku_id,
                lot_id=src.lot_id,
                status="AVAILABLE",
                qty=qty,
                in_date=src.in_date,
            )
            reason = "CANCEL_AFTER_PICK"
        else:
            cur.execute(
                "UPDATE inventory SET qty_allocated = qty_allocated - %s, version = version + 1 "
                "WHERE id = %s",
                (qty, src.id),
            )
            reason = "CANCEL"
        cur.execute(
            "UPDATE allocation SET status = 'RELEASED', updated_at = now() WHERE id = %s",
            (alloc_id,),
        )
        mv = _movement(
            src,
            "DEALLOCATE",
            operator,
            to_location_id=home_loc,
            to_status="AVAILABLE",
            reason_code=reason,
            ref_type="OUTBOUND",
            ref_no=order_no,
        )
        post(cur, mv, qty, d_allocated=-qty, serial_ids=serial_ids)
        total += qty
    cur.execute(
        "UPDATE outbound_line SET qty_allocated = 0, updated_at = now() "
        "WHERE outbound_order_id = %s",
        (order_id,),
    )
    cur.execute(
        "UPDATE outbound_order SET status = 'CANCELLED', updated_at = now() WHERE id = %s",
        (order_id,),
    )
    return total


# --------------------------------------------------------------------------- returns


def customer_return(
    cur: Cur,
    *,
    warehouse_id: int,
    sku_id: int,
    returns_location_id: int,
    order_no: str,
    operator: str,
    serial_nos: Sequence[str] = (),
    qty: int | None = None,
    lot_id: int | None = None,
) -> int:
    """Goods come back from a customer: an inbound RETURN order (received at once),
    +q RETURNED at a RETURNS location, serials RETURNED with receive_count + 1.
    Serial-tracked SKUs name the serials (shipped from this database); others give qty.
    Returns the balance row id."""
    cur.execute("SELECT owner_id, tracking FROM sku WHERE id = %s", (sku_id,))
    sku = cur.fetchone()
    _need(sku is not None, f"no sku {sku_id}")
    assert sku is not None
    owner_id, tracking = sku
    _location(cur, returns_location_id, warehouse_id, ("RETURNS",))
    serial_rows: list[tuple[int, int | None]] = []
    if tracking == "SERIAL":
        _need(bool(serial_nos), "serial-tracked returns name their serials")
        cur.execute(
            "SELECT id, lot_id FROM serial_number WHERE sku_id = %s AND serial_no = ANY(%s) "
            "AND status = 'SHIPPED' ORDER BY id FOR UPDATE",
            (sku_id, list(serial_nos)),
        )
        serial_rows = [(r[0], r[1]) for r in cur.fetchall()]
        _need(len(serial_rows) == len(serial_nos), "returned serials must have been shipped")
        lots = {lot for _sid, lot in serial_rows}
        _need(len(lots) == 1, "one lot per return")
        lot_id = lots.pop()
        qty = len(serial_rows)
    _need(qty is not None and qty > 0, "nothing returned")
    assert qty is not None
    lot_no = None
    if lot_id is not None:
        cur.execute("SELECT lot_no FROM lot WHERE id = %s", (lot_id,))
        lot_row = cur.fetchone()
        lot_no = lot_row[0] if lot_row else None
    order_id = create_inbound(
        cur,
        warehouse_id=warehouse_id,
        owner_id=owner_id,
        order_no=order_no,
        lines=[InboundLineSpec(sku_id=sku_id, qty_expected=qty, lot_no=lot_no)],
        order_type="RETURN",
        status="RECEIVED",
    )
    cur.execute(
        "UPDATE inbound_line SET qty_received = qty_expected WHERE inbound_order_id = %s "
        "RETURNING id",
        (order_id,),
    )
    line = cur.fetchone()
    assert line is not None
    serial_ids = [sid for sid, _lot in serial_rows]
    if serial_ids:
        cur.execute(
            "UPDATE serial_number SET status = 'RETURNED', warehouse_id = %s, location_id = %s, "
            "inbound_line_id = %s, outbound_line_id = NULL, received_at = now(), "
            "receive_count = receive_count + 1, updated_at = now() WHERE id = ANY(%s)",
            (warehouse_id, returns_location_id, line[0], serial_ids),
        )
    row_id = put(
        cur,
        warehouse_id=warehouse_id,
        location_id=returns_location_id,
        owner_id=owner_id,
        sku_id=sku_id,
        lot_id=lot_id,
        status="RETURNED",
        qty=qty,
    )
    mv = Movement(
        txn_type="RETURN",
        warehouse_id=warehouse_id,
        owner_id=owner_id,
        sku_id=sku_id,
        lot_id=lot_id,
        operator=operator,
        to_location_id=returns_location_id,
        to_status="RETURNED",
        ref_type="INBOUND",
        ref_no=order_no,
    )
    post(cur, mv, qty, d_on_hand=qty, serial_ids=serial_ids or None)
    return row_id


# --------------------------------------------------------------------------- master data


def create_sku(
    cur: Cur,
    *,
    owner_id: int,
    sku_code: str,
    name: str,
    tracking: str = "NONE",
    barcode: str | None = None,
    shelf_life_days: int | None = None,
    weight_kg: str | None = None,
    unit_cost: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> int:
    """A new SKU of an owner."""
    cur.execute(
        "INSERT INTO sku (owner_id, sku_code, barcode, name, tracking, shelf_life_days, "
        "weight_kg, unit_cost, attributes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (owner_id, sku_code) DO NOTHING RETURNING id",
        (
            owner_id,
            sku_code,
            barcode,
            name,
            tracking,
            shelf_life_days,
            weight_kg,
            unit_cost,
            Jsonb(attributes or {}),
        ),
    )
    row = cur.fetchone()
    _need(row is not None, f"sku {sku_code} exists")
    assert row is not None
    return int(row[0])


def update_sku(
    cur: Cur,
    *,
    sku_id: int,
    name: str | None = None,
    weight_kg: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> None:
    """Rename a SKU, change its weight, or merge attributes into its jsonb."""
    cur.execute(
        "UPDATE sku SET name = coalesce(%s, name), weight_kg = coalesce(%s::numeric, weight_kg), "
        "attributes = attributes || %s, updated_at = now() WHERE id = %s RETURNING id",
        (name, weight_kg, Jsonb(attributes or {}), sku_id),
    )
    _need(cur.fetchone() is not None, f"no sku {sku_id}")


def create_lot(
    cur: Cur,
    *,
    sku_id: int,
    lot_no: str,
    production_date: date | None,
    expiry_date: date | None,
    supplier_lot: str | None = None,
    origin_country: str | None = None,
) -> int:
    """A lot announced before its first receipt (first_received_at stays null)."""
    cur.execute(
        "INSERT INTO lot (sku_id, lot_no, supplier_lot, production_date, expiry_date, "
        "origin_country) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (sku_id, lot_no) DO NOTHING RETURNING id",
        (sku_id, lot_no, supplier_lot, production_date, expiry_date, origin_country),
    )
    row = cur.fetchone()
    _need(row is not None, f"lot {lot_no} exists")
    assert row is not None
    return int(row[0])


# --------------------------------------------------------------------------- transfers


@dataclass(frozen=True)
class ShippedLine:
    """One SKU/lot of a shipped transfer, in global terms (for the destination)."""

    owner_code: str
    sku_code: str
    lot_no: str | None
    production_date: date | None
    expiry_date: date | None
    qty: int
    serial_nos: tuple[str, ...]


def shipped_lines(cur: Cur, *, order_no: str, warehouse_code: str) -> list[ShippedLine]:
    """What a shipped order carried, per SKU and lot, with its serials (read at the
    source, to build the destination's inbound TRANSFER order and receipts)."""
    scope = (
        "FROM outbound_order o JOIN warehouse w ON w.id = o.warehouse_id "
        "JOIN owner ow ON ow.id = o.owner_id "
        "JOIN outbound_line ol ON ol.outbound_order_id = o.id "
    )
    where = "WHERE o.order_no = %s AND w.code = %s AND o.status = 'SHIPPED' "
    cur.execute(
        "SELECT sku.sku_code, l.lot_no, sn.serial_no "
        + scope
        + "JOIN serial_number sn ON sn.sku_id = ol.sku_id AND sn.outbound_line_id = ol.id "
        "AND sn.status = 'SHIPPED' "
        "JOIN sku ON sku.id = sn.sku_id LEFT JOIN lot l ON l.id = sn.lot_id "
        + where
        + "ORDER BY sn.serial_no",
        (order_no, warehouse_code),
    )
    serials: dict[tuple[str, str | None], list[str]] = {}
    for sku_code, lot_no, serial_no in cur.fetchall():
        serials.setdefault((sku_code, lot_no), []).append(serial_no)
    cur.execute(
        "SELECT ow.code, sku.sku_code, l.lot_no, l.production_date, l.expiry_date, sum(a.qty) "
        + scope
        + "JOIN allocation a ON a.outbound_line_id = ol.id AND a.status = 'SHIPPED' "
        "JOIN sku ON sku.id = a.sku_id LEFT JOIN lot l ON l.id = a.lot_id "
        + where
        + "GROUP BY ow.code, sku.sku_code, l.lot_no, l.production_date, l.expiry_date "
        "ORDER BY sku.sku_code, l.lot_no",
        (order_no, warehouse_code),
    )
    return [
        ShippedLine(r[0], r[1], r[2], r[3], r[4], int(r[5]), tuple(serials.get((r[1], r[2]), ())))
        for r in cur.fetchall()
    ]
