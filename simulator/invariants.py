"""The invariants of OPERATIONS.md (and of the simulator's own bookkeeping) as SQL checks.

Each check is a query returning one row per violation; :func:`check_invariants` runs
them all in one REPEATABLE READ snapshot and returns the violations (empty = healthy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg

#: name → query returning (detail text) rows, one per violation.
CHECKS: Final[dict[str, str]] = {
    "balance_row_not_positive": """
        SELECT format('inventory %s has qty_on_hand %s', id, qty_on_hand)
        FROM inventory WHERE qty_on_hand <= 0""",
    "allocation_over_on_hand_or_not_available": """
        SELECT format('inventory %s: %s allocated of %s, status %s', id, qty_allocated,
                      qty_on_hand, status)
        FROM inventory
        WHERE qty_allocated > qty_on_hand OR (status <> 'AVAILABLE' AND qty_allocated > 0)""",
    "row_keys_inconsistent": """
        SELECT format('inventory %s: warehouse/owner/lot does not match its location/sku', i.id)
        FROM inventory i JOIN location loc ON loc.id = i.location_id
        JOIN sku s ON s.id = i.sku_id LEFT JOIN lot l ON l.id = i.lot_id
        WHERE loc.warehouse_id <> i.warehouse_id OR s.owner_id <> i.owner_id
           OR (i.lot_id IS NOT NULL AND l.sku_id <> i.sku_id)
           OR (s.tracking = 'LOT' AND i.lot_id IS NULL)
           OR (s.tracking = 'NONE' AND i.lot_id IS NOT NULL)""",
    "ledger_matches_balances": """
        WITH bal AS (
            SELECT warehouse_id, owner_id, sku_id, sum(qty_on_hand) AS oh,
                   sum(qty_allocated) AS al
            FROM inventory GROUP BY 1, 2, 3),
        led AS (
            SELECT warehouse_id, owner_id, sku_id, sum(d_on_hand) AS oh,
                   sum(d_allocated) AS al
            FROM inventory_txn GROUP BY 1, 2, 3)
        SELECT format('wh %s owner %s sku %s: balances %s/%s, ledger %s/%s',
                      coalesce(b.warehouse_id, l.warehouse_id), coalesce(b.owner_id, l.owner_id),
                      coalesce(b.sku_id, l.sku_id), b.oh, b.al, l.oh, l.al)
        FROM bal b FULL JOIN led l USING (warehouse_id, owner_id, sku_id)
        WHERE coalesce(b.oh, 0) <> coalesce(l.oh, 0) OR coalesce(b.al, 0) <> coalesce(l.al, 0)""",
    "serials_match_balances": """
        WITH bal AS (
            SELECT i.location_id, i.sku_id, i.lot_id,
                   sum(i.qty_allocated) AS allocated,
                   sum(i.qty_on_hand - i.qty_allocated)
                       FILTER (WHERE i.status NOT IN ('DAMAGED', 'RETURNED')) AS in_stock,
                   sum(i.qty_on_hand) FILTER (WHERE i.status = 'DAMAGED') AS damaged,
                   sum(i.qty_on_hand) FILTER (WHERE i.status = 'RETURNED') AS returned
            FROM inventory i JOIN sku s ON s.id = i.sku_id AND s.tracking = 'SERIAL'
            GROUP BY 1, 2, 3),
        ser AS (
            SELECT location_id, sku_id, lot_id,
                   count(*) FILTER (WHERE status = 'ALLOCATED') AS allocated,
                   count(*) FILTER (WHERE status = 'IN_STOCK') AS in_stock,
                   count(*) FILTER (WHERE status = 'DAMAGED') AS damaged,
                   count(*) FILTER (WHERE status = 'RETURNED') AS returned
            FROM serial_number WHERE location_id IS NOT NULL GROUP BY 1, 2, 3)
        SELECT format('loc %s sku %s lot %s: balances alloc/in/dmg/ret %s/%s/%s/%s, '
                      'serials %s/%s/%s/%s',
                      coalesce(b.location_id, s.location_id), coalesce(b.sku_id, s.sku_id),
                      coalesce(b.lot_id, s.lot_id), b.allocated, b.in_stock, b.damaged,
                      b.returned, s.allocated, s.in_stock, s.damaged, s.returned)
        FROM bal b FULL JOIN ser s
          ON s.location_id = b.location_id AND s.sku_id = b.sku_id
         AND s.lot_id IS NOT DISTINCT FROM b.lot_id
        WHERE coalesce(b.allocated, 0) <> coalesce(s.allocated, 0)
           OR coalesce(b.in_stock, 0) <> coalesce(s.in_stock, 0)
           OR coalesce(b.damaged, 0) <> coalesce(s.damaged, 0)
           OR coalesce(b.returned, 0) <> coalesce(s.returned, 0)""",
    "serial_location_by_status": """
        SELECT format('serial %s (%s) location %s', sn.id, sn.status, sn.location_id)
        FROM serial_number sn LEFT JOIN location loc ON loc.id = sn.location_id
        JOIN sku s ON s.id = sn.sku_id
        WHERE (sn.status IN ('SHIPPED', 'SCRAPPED', 'LOST')) <> (sn.location_id IS NULL)
           OR (loc.id IS NOT NULL AND loc.warehouse_id <> sn.warehouse_id)
           OR s.owner_id <> sn.owner_id OR s.tracking <> 'SERIAL'""",
    "allocations_match_rows": """
        WITH a AS (
            SELECT inventory_id, sum(qty) AS qty FROM allocation
            WHERE status IN ('ALLOCATED', 'PICKED') GROUP BY 1)
        SELECT format('inventory %s: qty_allocated %s, live allocations %s',
                      coalesce(i.id, a.inventory_id), i.qty_allocated, a.qty)
        FROM (SELECT id, qty_allocated FROM inventory WHERE qty_allocated > 0) i
        FULL JOIN a ON a.inventory_id = i.id
        WHERE coalesce(i.qty_allocated, 0) <> coalesce(a.qty, 0)""",
    "allocated_serials_match_allocations": """
        WITH a AS (
            SELECT outbound_line_id, sum(qty) AS qty FROM allocation
            WHERE status IN ('ALLOCATED', 'PICKED') GROUP BY 1),
        s AS (
            SELECT outbound_line_id, count(*) AS qty FROM serial_number
            WHERE status = 'ALLOCATED' GROUP BY 1),
        serial_lines AS (
            SELECT l.id FROM outbound_line l JOIN sku ON sku.id = l.sku_id
            WHERE sku.tracking = 'SERIAL')
        SELECT format('outbound line %s: live allocations %s, allocated serials %s',
                      coalesce(a.outbound_line_id, s.outbound_line_id), a.qty, s.qty)
        FROM a JOIN serial_lines sl ON sl.id = a.outbound_line_id
        FULL JOIN s ON s.outbound_line_id = a.outbound_line_id
        WHERE coalesce(a.qty, 0) <> coalesce(s.qty, 0)""",
    "outbound_lines_match_allocations": """
        SELECT format('outbound line %s: qty_allocated %s / shipped %s vs allocations %s / %s',
                      l.id, l.qty_allocated, l.qty_shipped, coalesce(a.live, 0),
                      coalesce(a.shipped, 0))
        FROM outbound_line l LEFT JOIN (
            SELECT outbound_line_id,
                   sum(qty) FILTER (WHERE status <> 'RELEASED') AS live,
                   sum(qty) FILTER (WHERE status = 'SHIPPED') AS shipped
            FROM allocation GROUP BY 1) a ON a.outbound_line_id = l.id
        WHERE l.qty_allocated <> coalesce(a.live, 0) OR l.qty_shipped <> coalesce(a.shipped, 0)
           OR l.qty_allocated > l.qty_ordered""",
    "outbound_status_matches_allocations": """
        WITH x AS (
            SELECT o.id, o.order_no, o.status,
                   bool_and(l.qty_allocated = l.qty_ordered) AS is_full,
                   count(a.id) FILTER (WHERE a.status = 'ALLOCATED') AS allocated,
                   count(a.id) FILTER (WHERE a.status = 'PICKED') AS picked,
                   count(a.id) FILTER (WHERE a.status = 'SHIPPED') AS shipped
            FROM outbound_order o JOIN outbound_line l ON l.outbound_order_id = o.id
            LEFT JOIN allocation a ON a.outbound_line_id = l.id
            GROUP BY o.id, o.order_no, o.status)
        SELECT format('order %s is %s: full %s, allocations A/P/S %s/%s/%s',
                      order_no, status, is_full, allocated, picked, shipped)
        FROM x
        WHERE (status = 'CREATED' AND allocated + picked + shipped > 0)
           OR (status = 'ALLOCATED' AND (NOT is_full OR picked + shipped > 0))
           OR (status = 'BACKORDER' AND (is_full OR picked + shipped > 0))
           OR (status = 'PICKING' AND (allocated = 0 OR picked = 0 OR shipped > 0))
           OR (status = 'PACKED' AND (allocated > 0 OR picked = 0 OR shipped > 0))
           OR (status = 'SHIPPED' AND (allocated + picked > 0 OR shipped = 0))
           OR (status = 'CANCELLED' AND allocated + picked + shipped > 0)""",
    "staging_rows_fully_allocated": """
        SELECT format('inventory %s at STAGING: %s on hand, %s allocated, %s', i.id,
                      i.qty_on_hand, i.qty_allocated, i.status)
        FROM inventory i JOIN location loc ON loc.id = i.location_id
        WHERE loc.loc_type = 'STAGING'
          AND (i.status <> 'AVAILABLE' OR i.qty_allocated <> i.qty_on_hand)""",
    "allocated_stock_is_sellable": """
        SELECT format('allocation %s (ALLOCATED) at non-sellable location %s', a.id, a.location_id)
        FROM allocation a JOIN location loc ON loc.id = a.location_id
        WHERE a.status = 'ALLOCATED' AND NOT loc.sellable""",
    "holds_match_held_stock": """
        WITH held AS (
            SELECT location_id, sku_id, lot_id,
                   sum(qty_on_hand) FILTER (WHERE status = 'QC_HOLD') AS qc,
                   sum(qty_on_hand) FILTER (WHERE status = 'FROZEN') AS frozen
            FROM inventory WHERE status IN ('QC_HOLD', 'FROZEN') GROUP BY 1, 2, 3),
        h AS (
            SELECT location_id, sku_id, lot_id,
                   sum(qty) FILTER (WHERE hold_type = 'QC') AS qc,
                   sum(qty) FILTER (WHERE hold_type <> 'QC') AS frozen
            FROM inventory_hold WHERE status = 'ACTIVE' GROUP BY 1, 2, 3)
        SELECT format('loc %s sku %s lot %s: held stock qc/frozen %s/%s, active holds %s/%s',
                      coalesce(held.location_id, h.location_id), coalesce(held.sku_id, h.sku_id),
                      coalesce(held.lot_id, h.lot_id), held.qc, held.frozen, h.qc, h.frozen)
        FROM held FULL JOIN h ON h.location_id = held.location_id AND h.sku_id = held.sku_id
         AND h.lot_id IS NOT DISTINCT FROM held.lot_id
        WHERE coalesce(held.qc, 0) <> coalesce(h.qc, 0)
           OR coalesce(held.frozen, 0) <> coalesce(h.frozen, 0)""",
    "inbound_lines_consistent": """
        SELECT format('inbound %s (%s) line %s: expected %s received %s damaged %s',
                      o.order_no, o.status, l.id, l.qty_expected, l.qty_received, l.qty_damaged)
        FROM inbound_line l JOIN inbound_order o ON o.id = l.inbound_order_id
        WHERE l.qty_received > l.qty_expected OR l.qty_damaged > l.qty_received
           OR (o.status IN ('RECEIVED', 'CLOSED') AND l.qty_received < l.qty_expected)
           OR (o.status IN ('CREATED', 'IN_TRANSIT', 'ARRIVED') AND l.qty_received > 0)""",
    "stock_status_at_its_location_type": """
        SELECT format('inventory %s: %s at a %s location', i.id, i.status, loc.loc_type)
        FROM inventory i JOIN location loc ON loc.id = i.location_id
        WHERE (i.status = 'AVAILABLE' AND loc.loc_type NOT IN ('STORAGE', 'PICK', 'STAGING'))
           OR (i.status = 'PENDING_PUTAWAY' AND loc.loc_type NOT IN ('RECEIVING', 'QC'))
           OR (i.status = 'RETURNED' AND loc.loc_type <> 'RETURNS')""",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which check and what it found."""

    check: str
    detail: str


def check_invariants(
    conn: psycopg.Connection[Any], *, limit_per_check: int = 20
) -> list[Violation]:
    """Run every check in one consistent snapshot; returns the violations found."""
    found: list[Violation] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for name, query in CHECKS.items():
            cur.execute(query)
            found.extend(Violation(name, row[0]) for row in cur.fetchmany(limit_per_check))
    return found
