"""The reference read path: the first, obviously-correct implementation of the typed
reads over the generic watermark-cut views (`cur_*`, `stock_p`, `stock_lots_p`).

Slow (each read nests several full current-state subqueries) but a direct transcription
of wms/OPERATIONS.md and decision 4, so tests and `bench.read_latency` hold the fast
path in `read_model.queries` to the same answers. Not for the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from read_model.queries import (
    LotRow,
    MovementRow,
    SerialRow,
    SkuKey,
    StockRow,
    _rows,  # one read of the watermark table serves both paths
)
from read_model.queries import _query as _run


def _query(client: Client, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return _run(client, sql, params, "id resolution")


def resolve(client: Client, owner: str, warehouse: str, sku: str) -> SkuKey | None:
    """Global codes → the ids of the warehouse's region; None when any is unknown."""
    rows = _query(
        client,
        "SELECT w.region, o.id, w.id, s.id FROM cur_warehouse AS w"
        " INNER JOIN (SELECT region, id FROM cur_owner WHERE code = {owner:String}) AS o"
        " ON o.region = w.region"
        " INNER JOIN (SELECT region, owner_id, id FROM cur_sku_by_code"
        "  WHERE sku_code = {sku:String}) AS s ON s.region = w.region AND s.owner_id = o.id"
        " WHERE w.code = {warehouse:String} LIMIT 1",
        {"owner": owner, "warehouse": warehouse, "sku": sku},
    )
    return SkuKey(*rows[0]) if rows else None


def owner_ids(client: Client, owner: str) -> dict[str, int]:
    """The owner's id in every region where it exists."""
    rows = _query(
        client, "SELECT region, id FROM cur_owner WHERE code = {owner:String}", {"owner": owner}
    )
    return {str(r): int(i) for r, i in rows}


_STOCK = (
    "SELECT * FROM stock_p(region = {region:String}, owner_id = {owner_id:Int64},"
    " sku_id = {sku_id:Int64})"
)


def stock_one(client: Client, owner: str, warehouse: str, sku: str) -> StockRow | None:
    """Figures of one key; None when absent (no balance rows and nothing inbound)."""
    key = resolve(client, owner, warehouse, sku)
    if key is None:
        return None
    rows = _rows(
        client,
        StockRow,
        _STOCK + " WHERE warehouse_id = {warehouse_id:Int64}",
        {
            "region": key.region,
            "owner_id": key.owner_id,
            "sku_id": key.sku_id,
            "warehouse_id": key.warehouse_id,
        },
    )
    return rows[0] if rows else None


def stock_page(
    client: Client,
    owner: str,
    warehouse: str | None = None,
    limit: int = 100,
    after: tuple[str, str] | None = None,
) -> list[StockRow]:
    """An owner's keys ordered by (warehouse, sku), `limit` of them after the cursor
    `after` = (warehouse, sku) of the previous page's last row."""
    out: list[StockRow] = []
    aw, asku = after or ("", "")
    for region, oid in sorted(owner_ids(client, owner).items()):
        out += _rows(
            client,
            StockRow,
            _STOCK + " WHERE ({warehouse:String} = '' OR warehouse = {warehouse:String})"
            " AND (warehouse, sku) > ({aw:String}, {asku:String})"
            " ORDER BY warehouse, sku LIMIT {limit:UInt32}",
            {
                "region": region,
                "owner_id": oid,
                "sku_id": 0,
                "warehouse": warehouse or "",
                "aw": aw,
                "asku": asku,
                "limit": limit,
            },
        )
    out.sort(key=lambda r: (r.warehouse, r.sku))
    return out[:limit]


def lots(client: Client, owner: str, warehouse: str, sku: str) -> list[LotRow]:
    """Per-lot figures of one key in FEFO order (expiry, no-expiry last, first receipt)."""
    key = resolve(client, owner, warehouse, sku)
    if key is None:
        return []
    return _rows(
        client,
        LotRow,
        "SELECT * FROM stock_lots_p(region = {region:String}, owner_id = {owner_id:Int64},"
        " sku_id = {sku_id:Int64}) WHERE warehouse_id = {warehouse_id:Int64}",
        {
            "region": key.region,
            "owner_id": key.owner_id,
            "sku_id": key.sku_id,
            "warehouse_id": key.warehouse_id,
        },
    )


_SERIAL_COLUMNS = (
    "SELECT s.region AS region, s.serial_no AS serial_no, s.status AS status,"
    " w.code AS warehouse, l.code AS location, lt.lot_no AS lot_no,"
    " s.received_at AS received_at, s.shipped_at AS shipped_at, s.updated_at AS updated_at,"
    " oo.order_no AS order_no, oo.tracking_no AS tracking_no"
)
_SERIAL_JOINS = (
    " INNER JOIN (SELECT region, id FROM cur_owner WHERE code = {owner:String}) AS o"
    " ON o.region = s.region AND o.id = s.owner_id"
    " INNER JOIN (SELECT region, id FROM cur_sku_by_code WHERE sku_code = {sku:String}) AS k"
    " ON k.region = s.region AND k.id = s.sku_id"
    " LEFT JOIN cur_warehouse AS w ON w.region = s.region AND w.id = s.warehouse_id"
    " LEFT JOIN cur_location AS l ON l.region = s.region AND l.id = s.location_id"
    " LEFT JOIN cur_lot AS lt ON lt.region = s.region AND lt.id = s.lot_id"
    " LEFT JOIN cur_outbound_line AS ol ON ol.region = s.region AND ol.id = s.outbound_line_id"
    " LEFT JOIN cur_outbound_order AS oo"
    " ON oo.region = s.region AND oo.id = ol.outbound_order_id"
)


def serials(
    client: Client, owner: str, warehouse: str, sku: str, status: str | None = None
) -> list[SerialRow]:
    """Serials of one key currently at the warehouse (optionally of one status)."""
    return _rows(
        client,
        SerialRow,
        _SERIAL_COLUMNS
        + " FROM cur_serial_number_by_sku AS s"
        + _SERIAL_JOINS
        + " WHERE w.code = {warehouse:String}"
        " AND ({status:String} = '' OR s.status = {status:String})"
        " ORDER BY s.serial_no SETTINGS join_use_nulls = 1",
        {"owner": owner, "sku": sku, "warehouse": warehouse, "status": status or ""},
    )


def serial_current(client: Client, owner: str, sku: str, serial_no: str) -> SerialRow | None:
    """Current state across regions: the row that is not SHIPPED, else the latest by
    updated_at (a serial moved between regions exists in both, OPERATIONS.md)."""
    rows = _rows(
        client,
        SerialRow,
        _SERIAL_COLUMNS
        + " FROM cur_serial_number_by_sku AS s"
        + _SERIAL_JOINS
        + " WHERE s.serial_no = {serial:String}"
        " ORDER BY s.status != 'SHIPPED' DESC, s.updated_at DESC LIMIT 1"
        " SETTINGS join_use_nulls = 1",
        {"owner": owner, "sku": sku, "serial": serial_no},
    )
    return rows[0] if rows else None


def serial_history(client: Client, owner: str, sku: str, serial_no: str) -> list[SerialRow]:
    """Every committed version of the serial in every region, oldest first."""
    return _rows(
        client,
        SerialRow,
        _SERIAL_COLUMNS + " FROM (SELECT * FROM wms_serial_number_by_sku FINAL"
        " WHERE serial_no = {serial:String} AND _is_deleted = 0"
        " AND _commit_lsn <= (SELECT CAST((groupArray(region), groupArray(lsn)),"
        " 'Map(String, UInt64)') FROM _watermark_lsn)[region]) AS s"
        + _SERIAL_JOINS
        + " ORDER BY s.updated_at, s.region SETTINGS join_use_nulls = 1",
        {"owner": owner, "sku": sku, "serial": serial_no},
    )


def movements(
    client: Client,
    owner: str,
    warehouse: str | None = None,
    sku: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    after: tuple[datetime, str, int] | None = None,
) -> list[MovementRow]:
    """Ledger rows of an owner (optionally one warehouse / SKU) in [since, until),
    ordered by (occurred_at, region, id); `after` is the previous page's last triple."""
    lo = since or datetime(1970, 1, 1, tzinfo=UTC)
    hi = until or datetime(2299, 12, 31, tzinfo=UTC)
    at, ar, aid = after or (lo, "", 0)
    return _rows(
        client,
        MovementRow,
        "SELECT t.region AS region, t.id AS id, t.occurred_at AS occurred_at,"
        " t.txn_type AS txn_type, w.code AS warehouse, k.sku_code AS sku, lt.lot_no AS lot_no,"
        " fl.code AS from_location, tl.code AS to_location, t.from_status AS from_status,"
        " t.to_status AS to_status, t.qty AS qty, t.d_on_hand AS d_on_hand,"
        " t.d_allocated AS d_allocated, t.ref_type AS ref_type, t.ref_no AS ref_no"
        " FROM cur_inventory_txn_by_sku AS t"
        " INNER JOIN (SELECT region, id FROM cur_owner WHERE code = {owner:String}) AS o"
        " ON o.region = t.region AND o.id = t.owner_id"
        " INNER JOIN (SELECT region, owner_id, id, sku_code FROM cur_sku_by_code"
        "  WHERE {sku:String} = '' OR sku_code = {sku:String}) AS k"
        " ON k.region = t.region AND k.id = t.sku_id"
        " INNER JOIN cur_warehouse AS w ON w.region = t.region AND w.id = t.warehouse_id"
        " LEFT JOIN cur_lot AS lt ON lt.region = t.region AND lt.id = t.lot_id"
        " LEFT JOIN cur_location AS fl ON fl.region = t.region AND fl.id = t.from_location_id"
        " LEFT JOIN cur_location AS tl ON tl.region = t.region AND tl.id = t.to_location_id"
        " WHERE ({warehouse:String} = '' OR w.code = {warehouse:String})"
        " AND t.occurred_at >= {lo:DateTime64(6, 'UTC')}"
        " AND t.occurred_at < {hi:DateTime64(6, 'UTC')}"
        " AND (t.occurred_at, t.region, t.id)"
        " > ({at:DateTime64(6, 'UTC')}, {ar:String}, {aid:Int64})"
        " ORDER BY t.occurred_at, t.region, t.id LIMIT {limit:UInt32}"
        " SETTINGS join_use_nulls = 1",
        {
            "owner": owner,
            "sku": sku or "",
            "warehouse": warehouse or "",
            "lo": lo,
            "hi": hi,
            "at": at,
            "ar": ar,
            "aid": aid,
            "limit": limit,
        },
    )
