"""Reads the API needs beyond read_model.queries (which it uses for every figure):
warehouse → region, owner listing for all-owner pages, a SKU-filtered stock page and the
all-owner ledger page. Bound parameters only, like read_model.queries.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from read_model.errors import classify
from read_model.queries import MovementRow

T = TypeVar("T")


def _utc(v: Any) -> Any:
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def _select(client: Client, sql: str, params: dict[str, Any], what: str) -> Any:
    try:
        return client.query(sql, parameters=params)
    except Exception as exc:  # driver errors have no common base; classify decides
        raise classify(exc, what) from exc


def _rows(client: Client, cls: type[T], sql: str, params: dict[str, Any]) -> list[T]:
    result = _select(client, sql, params, f"query for {cls.__name__}")
    if not result.result_rows:
        return []
    cols = list(result.column_names)
    idx = [cols.index(f.name) for f in fields(cls)]  # type: ignore[arg-type]
    return [cls(*(_utc(r[i]) for i in idx)) for r in result.result_rows]


def warehouse_regions(client: Client) -> dict[str, str]:
    """Every visible warehouse code → the region whose WMS runs it."""
    result = _select(client, "SELECT code, region FROM cur_warehouse", {}, "warehouse regions")
    return {str(code): str(region) for code, region in result.result_rows}


def owner_codes(client: Client, after: str, limit: int) -> list[str]:
    """Owner codes (distinct across regions) >= `after`, ascending."""
    result = _select(
        client,
        "SELECT DISTINCT code FROM cur_owner WHERE code >= {after:String}"
        " ORDER BY code LIMIT {limit:UInt32}",
        {"after": after, "limit": limit},
        "owner codes",
    )
    return [str(r[0]) for r in result.result_rows]


@dataclass(frozen=True, slots=True)
class OwnedMovement:
    """A ledger row with its owner code (all-owner ledger pages)."""

    owner: str
    region: str
    id: int
    occurred_at: datetime
    txn_type: str
    warehouse: str
    sku: str
    lot_no: str | None
    from_location: str | None
    to_location: str | None
    from_status: str | None
    to_status: str | None
    qty: int
    d_on_hand: int
    d_allocated: int
    ref_type: str | None
    ref_no: str | None


def movements_all_owners(
    client: Client,
    warehouse: str | None,
    sku: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after: tuple[datetime, str, int] | None,
) -> list[OwnedMovement]:
    """Ledger rows of every owner in [since, until), ordered by (occurred_at, region, id)
    after the keyset position `after` (the same order as queries.movements)."""
    lo = since or datetime(1970, 1, 1, tzinfo=UTC)
    hi = until or datetime(2299, 12, 31, tzinfo=UTC)
    at, ar, aid = after or (lo, "", 0)
    return _rows(
        client,
        OwnedMovement,
        "SELECT o.code AS owner, t.region AS region, t.id AS id, t.occurred_at AS occurred_at,"
        " t.txn_type AS txn_type, w.code AS warehouse, k.sku_code AS sku, lt.lot_no AS lot_no,"
        " fl.code AS from_location, tl.code AS to_location, t.from_status AS from_status,"
        " t.to_status AS to_status, t.qty AS qty, t.d_on_hand AS d_on_hand,"
        " t.d_allocated AS d_allocated, t.ref_type AS ref_type, t.ref_no AS ref_no"
        " FROM cur_inventory_txn_by_sku AS t"
        " INNER JOIN (SELECT region, id, code FROM cur_owner) AS o"
        " ON o.region = t.region AND o.id = t.owner_id"
        " INNER JOIN (SELECT region, id, sku_code FROM cur_sku_by_code"
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


def with_owner(owner: str, rows: list[MovementRow]) -> list[OwnedMovement]:
    """queries.movements rows of one owner in the all-owner shape."""
    return [OwnedMovement(owner, *(getattr(r, f.name) for f in fields(r))) for r in rows]
