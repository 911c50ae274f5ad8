"""Typed reads for the query API, all with server-side bound parameters (`{name:Type}`),
never values formatted into SQL.

How a read stays transaction-consistent (decision 4) and fast:
- The visibility cut is read once per request (`visible_lsns`, one tiny aggregated
  table) and bound as a parameter into the queries that follow. Everything at or below
  a watermark was inserted before the watermark row was, so any query started after the
  cut was read sees all of it; rows of a half-written batch are above every cut.
- Each query reads the versioned tables directly, restricted by their sorting-key
  prefix (region, owner_id, sku_id / region, id), and takes per key the latest version by
  (_commit_lsn, _lsn) among those with `_commit_lsn <= cut`, deleted keys dropped: the
  `cur_*` rule, applied to a few granules instead of whole tables.
- Lookups (locations, lots, orders, codes) are by id sets of the rows just read
  (`id IN (subquery)` is used for primary-key analysis), never JOINs of full views.

`read_model.reference` keeps the first, slow, view-based implementation; tests compare
the two on randomized data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import orjson
from clickhouse_connect.driver.client import Client

from read_model.ddl import CODE_COLUMNS, POINT_COLUMNS, STOCK_FIGURES, point_key, served_stock_sql
from read_model.errors import classify


@dataclass(frozen=True, slots=True)
class SkuKey:
    """A global SKU key at one warehouse, resolved to the ids of the warehouse's region."""

    region: str
    owner_id: int
    warehouse_id: int
    sku_id: int


@dataclass(frozen=True, slots=True)
class StockRow:
    """Stock figures of one (owner, warehouse, sku), as wms/OPERATIONS.md defines them."""

    owner: str
    warehouse: str
    sku: str
    on_hand: int
    available: int
    allocated: int
    pending_putaway: int
    qc_hold: int
    frozen: int
    damaged: int
    returned: int
    expired: int
    inbound_expected: int
    earliest_expiry: date | None
    last_movement_at: datetime | None


@dataclass(frozen=True, slots=True)
class LotRow:
    """Figures of one lot of a SKU at a warehouse (FEFO order in lists)."""

    lot_no: str
    production_date: date | None
    expiry_date: date | None
    on_hand: int
    available: int
    allocated: int
    pending_putaway: int
    qc_hold: int
    frozen: int
    damaged: int
    returned: int
    expired: int


@dataclass(frozen=True, slots=True)
class SerialRow:
    """One serial's state in one region (a version of it, in histories)."""

    region: str
    serial_no: str
    status: str
    warehouse: str | None
    location: str | None
    lot_no: str | None
    received_at: datetime | None
    shipped_at: datetime | None
    updated_at: datetime
    order_no: str | None
    tracking_no: str | None


@dataclass(frozen=True, slots=True)
class MovementRow:
    """One ledger row with global codes."""

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


@dataclass(frozen=True, slots=True)
class WatermarkRow:
    """How far a region is applied (decision 5)."""

    region: str
    applied_commit_lsn: int
    source_commit_ts: datetime
    heartbeat_ts: datetime | None
    updated_at: datetime


T = TypeVar("T")


def _utc(v: Any) -> Any:
    # clickhouse-connect returns naive datetimes for UTC columns: make them aware.
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def _rows(client: Client, cls: type[T], sql: str, params: dict[str, Any]) -> list[T]:
    try:
        result = client.query(sql, parameters=params)
    except Exception as exc:  # driver errors have no common base; classify decides
        raise classify(exc, f"query for {cls.__name__}") from exc
    if not result.result_rows:
        return []
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    cols = list(result.column_names)
    idx = [cols.index(n) for n in names]
    return [cls(*(_utc(r[i]) for i in idx)) for r in result.result_rows]


def _query(client: Client, sql: str, params: dict[str, Any], what: str) -> list[tuple[Any, ...]]:
    try:
        return [tuple(r) for r in client.query(sql, parameters=params).result_rows]
    except Exception as exc:  # driver errors have no common base; classify decides
        raise classify(exc, what) from exc


# -- SQL building blocks (identifiers only: every value is a bound parameter) ----------

#: The cut of one region, or of the row's region, bound from `visible_lsns`.
_CUT = "{wm:UInt64}"
_CUTS = "mapFromArrays({wr:Array(String)}, {wl:Array(UInt64)})[region]"


def _cuts(cut: Mapping[str, int]) -> dict[str, list[Any]]:
    """Bound parameters of a multi-region cut (`_CUTS`); a region not in it sees nothing
    (the map's default, 0, is below every commit LSN)."""
    return {"wr": list(cut), "wl": list(cut.values())}


def latest_versions(
    table: str, cols: tuple[str, ...], keys: tuple[str, ...], where: str, cut: str = _CUT
) -> str:
    """A subquery: per key, `cols` of the latest version by (_commit_lsn, _lsn) among
    those at or below the cut, keys whose latest version is a delete dropped (the rule of
    the `cur_*` views). `where` must restrict by a sorting-key prefix of `table` so only
    a few granules are read; it may select more versions than needed (a superset of a
    key's versions is harmless), never fewer."""
    k = ", ".join(keys)
    packed = ", ".join((*cols, "_is_deleted"))
    unpacked = ", ".join(f"v.{i} AS {c}" for i, c in enumerate(cols, start=1))
    return (
        f"(SELECT {k}, {unpacked} FROM (SELECT {k}, argMax(tuple({packed}),"
        f" (_commit_lsn, _lsn)) AS v FROM {table} WHERE {where} AND _commit_lsn <= {cut}"
        f" GROUP BY {k}) WHERE v.{len(cols) + 1} = 0)"
    )


# Code resolution over every region (cut per row's region). Owners and warehouses are
# small tables; SKUs are found by code in the owner's range of `wms_sku_by_code`, then
# checked against their latest version by id (a code could change; the copy's key
# keeps every code a SKU ever had).
_WAREHOUSES = latest_versions("wms_warehouse", ("code",), ("region", "id"), "1 = 1", _CUTS)
_OWNER_IDS = (
    "SELECT region, id FROM "
    + latest_versions("wms_owner", ("code",), ("region", "id"), "1 = 1", _CUTS)
    + " WHERE code = {owner:String}"
)
_SKU_IDS = (
    "SELECT region, owner_id, id FROM "
    + latest_versions(
        "wms_sku",
        ("owner_id", "sku_code"),
        ("region", "id"),
        "(region, id) IN (SELECT region, id FROM wms_sku_by_code"
        f" WHERE (region, owner_id) IN ({_OWNER_IDS}) AND sku_code = {{sku:String}})",
        _CUTS,
    )
    + f" WHERE sku_code = {{sku:String}} AND (region, owner_id) IN ({_OWNER_IDS})"
)
_RESOLVE = (
    "SELECT w.region, o.id, w.id, s.id FROM"
    f" (SELECT region, id FROM {_WAREHOUSES} WHERE code = {{warehouse:String}}) AS w"
    f" INNER JOIN ({_OWNER_IDS}) AS o ON o.region = w.region"
    f" INNER JOIN ({_SKU_IDS}) AS s ON s.region = w.region AND s.owner_id = o.id"
    " ORDER BY w.region, w.id LIMIT 1"
)


_ONE_SKU = "region = {region:String} AND owner_id = {owner_id:Int64} AND sku_id = {sku_id:Int64}"


def _served(where: str, tail: str) -> str:
    """Keys of `stock_current` (read_model.figures) matching `where`, latest version per
    key at or below its region's cut, deleted keys dropped."""
    return served_stock_sql(where, _CUTS, tail)


_SERVED_ONE = _served(
    "owner = {owner:String} AND sku = {sku:String} AND warehouse = {warehouse:String}", ""
)
#: `stock_point` (migrations 011, 013): the newest version of one key, by its RocksDB key.
_POINT_ONE = "SELECT _commit_lsn, doc FROM stock_point WHERE key = {key:String}"
_SERVED_PAGE = _served(
    "owner = {owner:String} AND ({warehouse:String} = '' OR warehouse = {warehouse:String})",
    " AND (warehouse, sku) > ({aw:String}, {asku:String}) ORDER BY warehouse, sku"
    " LIMIT {limit:UInt32}",
)
#: One SKU of an owner across warehouses (`stock_current` is sorted by owner, sku).
_SERVED_SKU = _served(
    "owner = {owner:String} AND sku = {sku:String}"
    " AND ({warehouse:String} = '' OR warehouse = {warehouse:String})",
    " AND warehouse > {aw:String} ORDER BY warehouse LIMIT {limit:UInt32}",
)

_LOTS = (
    "SELECT b.lot_id AS lot_id, any(t.lot_no) AS lot_no,"
    " any(t.production_date) AS production_date, any(t.expiry_date) AS expiry_date,"
    " any(t.first_received_at) AS first_received_at,"
    " sum(toInt64(b.qty_on_hand)) AS on_hand,"
    " sum(if(b.status = 'AVAILABLE' AND coalesce(l.sellable, false),"
    " toInt64(b.qty_on_hand) - b.qty_allocated, 0)) AS available,"
    " sum(toInt64(b.qty_allocated)) AS allocated, "
    + ", ".join(
        f"sum(if(b.status = '{s}', toInt64(b.qty_on_hand), 0)) AS {s.lower()}"
        for s in ("PENDING_PUTAWAY", "QC_HOLD", "FROZEN", "DAMAGED", "RETURNED", "EXPIRED")
    )
    + " FROM "
    + latest_versions(
        "wms_inventory_by_sku",
        ("warehouse_id", "location_id", "lot_id", "status", "qty_on_hand", "qty_allocated"),
        ("id",),
        _ONE_SKU,
    )
    + " AS b LEFT JOIN "
    + latest_versions(
        "wms_location",
        ("sellable",),
        ("id",),
        "region = {region:String} AND id IN"
        f" (SELECT location_id FROM wms_inventory_by_sku WHERE {_ONE_SKU})",
    )
    + " AS l ON l.id = b.location_id LEFT JOIN "
    + latest_versions(
        "wms_lot",
        ("lot_no", "production_date", "expiry_date", "first_received_at"),
        ("id",),
        f"region = {{region:String}} AND id IN (SELECT lot_id FROM wms_inventory_by_sku"
        f" WHERE {_ONE_SKU})",
    )
    + " AS t ON t.id = b.lot_id"
    " WHERE b.warehouse_id = {warehouse_id:Int64} AND b.lot_id IS NOT NULL"
    " GROUP BY b.lot_id"
    " ORDER BY expiry_date ASC NULLS LAST, first_received_at ASC NULLS LAST, lot_no"
    " SETTINGS join_use_nulls = 1"
)


def _serial_sql(versions: str, scope: str, where: str, tail: str) -> str:
    """Serial rows (`versions`: a subquery over `wms_serial_number_by_sku` restricted by
    `scope`) with the global codes of their warehouse, location, lot and order; cut per
    row's region."""

    def ids(col: str) -> str:
        return f"SELECT region, {col} FROM wms_serial_number_by_sku WHERE {scope}"

    ol_ids = ids("outbound_line_id")
    return (
        "SELECT s.region AS region, s.serial_no AS serial_no, s.status AS status,"
        " w.code AS warehouse, l.code AS location, lt.lot_no AS lot_no,"
        " s.received_at AS received_at, s.shipped_at AS shipped_at,"
        " s.updated_at AS updated_at, oo.order_no AS order_no, oo.tracking_no AS tracking_no"
        f" FROM {versions} AS s"
        f" LEFT JOIN {_WAREHOUSES} AS w ON w.region = s.region AND w.id = s.warehouse_id"
        " LEFT JOIN "
        + latest_versions(
            "wms_location",
            ("code",),
            ("region", "id"),
            f"(region, id) IN ({ids('location_id')})",
            _CUTS,
        )
        + " AS l ON l.region = s.region AND l.id = s.location_id LEFT JOIN "
        + latest_versions(
            "wms_lot",
            ("lot_no",),
            ("region", "id"),
            f"(region, id) IN ({ids('lot_id')})",
            _CUTS,
        )
        + " AS lt ON lt.region = s.region AND lt.id = s.lot_id LEFT JOIN "
        + latest_versions(
            "wms_outbound_line",
            ("outbound_order_id",),
            ("region", "id"),
            f"(region, id) IN ({ol_ids})",
            _CUTS,
        )
        + " AS ol ON ol.region = s.region AND ol.id = s.outbound_line_id LEFT JOIN "
        + latest_versions(
            "wms_outbound_order",
            ("order_no", "tracking_no"),
            ("region", "id"),
            "(region, id) IN (SELECT region, outbound_order_id FROM wms_outbound_line"
            f" WHERE (region, id) IN ({ol_ids}))",
            _CUTS,
        )
        + " AS oo ON oo.region = s.region AND oo.id = ol.outbound_order_id"
        f" WHERE {where}{tail} SETTINGS join_use_nulls = 1"
    )


_SERIAL_FIELDS = (
    "serial_no", "owner_id", "lot_id", "warehouse_id", "location_id", "status",
    "outbound_line_id", "received_at", "shipped_at", "updated_at",
)  # fmt: skip

# One key's serials: the SKU's range of the by-SKU copy in the warehouse's region.
_SERIALS_SCOPE = "region = {region:String} AND sku_id = {sku_id:Int64}"
_SERIALS = _serial_sql(
    latest_versions(
        "wms_serial_number_by_sku", _SERIAL_FIELDS, ("region", "id"), _SERIALS_SCOPE, _CUTS
    ),
    _SERIALS_SCOPE,
    "s.owner_id = {owner_id:Int64} AND s.warehouse_id = {warehouse_id:Int64}"
    " AND ({status:String} = '' OR s.status = {status:String})",
    " ORDER BY s.serial_no",
)

# One serial in every region: (region, sku_id, serial_no) is the copy's key prefix.
# The SKU's ids per region are resolved first and bound (`_sku_keys`): a bound set is
# planned once, where a resolving subquery would be re-run by every IN that needs it.
_SERIAL_SCOPE = (
    "(region, sku_id) IN {skus:Array(Tuple(String, Int64))} AND serial_no = {serial:String}"
)
_SERIAL_OWNER = "(s.region, s.owner_id) IN {owners:Array(Tuple(String, Int64))}"
_SERIAL_CURRENT = _serial_sql(
    latest_versions(
        "wms_serial_number_by_sku", _SERIAL_FIELDS, ("region", "id"), _SERIAL_SCOPE, _CUTS
    ),
    _SERIAL_SCOPE,
    _SERIAL_OWNER,
    " ORDER BY s.status != 'SHIPPED' DESC, s.updated_at DESC LIMIT 1",
)
# Every committed version (one per transaction that changed the row: the copy's sorting
# key ends with _commit_lsn, so this is what FINAL would keep), deletes left out.
_SERIAL_VERSIONS = (
    "(SELECT region, id, "
    + ", ".join(f"v.{i} AS {c}" for i, c in enumerate(_SERIAL_FIELDS, start=1))
    + " FROM (SELECT region, id, _commit_lsn, argMax(tuple("
    + ", ".join((*_SERIAL_FIELDS, "_is_deleted"))
    + f"), _lsn) AS v FROM wms_serial_number_by_sku WHERE {_SERIAL_SCOPE}"
    f" AND _commit_lsn <= {_CUTS} GROUP BY region, id, _commit_lsn)"
    f" WHERE v.{len(_SERIAL_FIELDS) + 1} = 0)"
)
_SERIAL_HISTORY = _serial_sql(
    _SERIAL_VERSIONS, _SERIAL_SCOPE, _SERIAL_OWNER, " ORDER BY s.updated_at, s.region"
)

# Ledger rows: first the page's (region, id)s from the few columns that order and filter
# (latest version of each, in the owner's or owner/SKU's range), then their full rows.
_TXN_FIELDS = (
    "occurred_at", "txn_type", "warehouse_id", "sku_id", "lot_id", "from_location_id",
    "to_location_id", "from_status", "to_status", "qty", "d_on_hand", "d_allocated",
    "ref_type", "ref_no",
)  # fmt: skip


def _movements_sql(scope: str) -> str:
    page = (
        "SELECT region, id FROM "
        + latest_versions(
            "wms_inventory_txn_by_sku",
            ("occurred_at", "warehouse_id", "sku_id"),
            ("region", "id"),
            scope,
            _CUTS,
        )
        + " WHERE occurred_at >= {lo:DateTime64(6, 'UTC')}"
        " AND occurred_at < {hi:DateTime64(6, 'UTC')}"
        " AND (occurred_at, region, id) > ({at:DateTime64(6, 'UTC')}, {ar:String}, {aid:Int64})"
        # the rows the reference's INNER JOINs keep: warehouse and SKU known as of the cut
        f" AND (region, warehouse_id) IN (SELECT region, id FROM {_WAREHOUSES}"
        " WHERE {warehouse:String} = '' OR code = {warehouse:String})"
        " AND (region, sku_id) IN (SELECT region, id FROM "
        + latest_versions(
            "wms_sku",
            ("owner_id", "sku_code"),
            ("region", "id"),
            f"(region, id) IN (SELECT region, sku_id FROM wms_inventory_txn_by_sku WHERE {scope})",
            _CUTS,
        )
        + " WHERE {sku:String} = '' OR sku_code = {sku:String})"
        " ORDER BY occurred_at, region, id LIMIT {limit:UInt32}"
    )
    rows = latest_versions(
        "wms_inventory_txn_by_sku",
        _TXN_FIELDS,
        ("region", "id"),
        f"{scope} AND (region, id) IN ({page})",
        _CUTS,
    )
    locs = (
        "(region, id) IN (SELECT region, from_location_id FROM wms_inventory_txn_by_sku"
        f" WHERE {scope}) OR (region, id) IN (SELECT region, to_location_id"
        f" FROM wms_inventory_txn_by_sku WHERE {scope})"
    )
    return (
        "SELECT t.region AS region, t.id AS id, t.occurred_at AS occurred_at,"
        " t.txn_type AS txn_type, w.code AS warehouse, k.sku_code AS sku, lt.lot_no AS lot_no,"
        " fl.code AS from_location, tl.code AS to_location, t.from_status AS from_status,"
        " t.to_status AS to_status, t.qty AS qty, t.d_on_hand AS d_on_hand,"
        " t.d_allocated AS d_allocated, t.ref_type AS ref_type, t.ref_no AS ref_no"
        f" FROM {rows} AS t"
        f" INNER JOIN {_WAREHOUSES} AS w ON w.region = t.region AND w.id = t.warehouse_id"
        " INNER JOIN "
        + latest_versions(
            "wms_sku",
            ("sku_code",),
            ("region", "id"),
            f"(region, id) IN (SELECT region, sku_id FROM wms_inventory_txn_by_sku WHERE {scope})",
            _CUTS,
        )
        + " AS k ON k.region = t.region AND k.id = t.sku_id LEFT JOIN "
        + latest_versions(
            "wms_lot",
            ("lot_no",),
            ("region", "id"),
            f"(region, id) IN (SELECT region, lot_id FROM wms_inventory_txn_by_sku WHERE {scope})",
            _CUTS,
        )
        + " AS lt ON lt.region = t.region AND lt.id = t.lot_id LEFT JOIN "
        + latest_versions("wms_location", ("code",), ("region", "id"), f"({locs})", _CUTS)
        + " AS fl ON fl.region = t.region AND fl.id = t.from_location_id LEFT JOIN "
        + latest_versions("wms_location", ("code",), ("region", "id"), f"({locs})", _CUTS)
        + " AS tl ON tl.region = t.region AND tl.id = t.to_location_id"
        " ORDER BY t.occurred_at, t.region, t.id SETTINGS join_use_nulls = 1"
    )


_MOVEMENTS_OWNER = _movements_sql("(region, owner_id) IN {owners:Array(Tuple(String, Int64))}")
_MOVEMENTS_SKU = _movements_sql(
    "(region, owner_id, sku_id) IN {keys:Array(Tuple(String, Int64, Int64))}"
)

# A SKU's ledger summed per (warehouse, time bucket): the stock-over-time series. By the
# ledger invariant (OPERATIONS.md) the running sum of d_on_hand / d_allocated per
# warehouse is its on-hand / allocated, so the series needs no balance history. Rows
# before `lo` fall into bucket -1 (the opening figures); buckets are `step` wide from lo.
_HISTORY_SCOPE = "(region, owner_id, sku_id) IN {keys:Array(Tuple(String, Int64, Int64))}"
_HISTORY_ROWS = latest_versions(
    "wms_inventory_txn_by_sku",
    ("occurred_at", "warehouse_id", "d_on_hand", "d_allocated"),
    ("region", "id"),
    _HISTORY_SCOPE,
    _CUTS,
)
_HISTORY = (
    "SELECT w.code AS warehouse, t.region AS region,"
    " if(t.occurred_at < {lo:DateTime64(6, 'UTC')}, -1,"
    " intDiv(toUnixTimestamp64Micro(t.occurred_at) - {lo_us:Int64}, {step_us:Int64}))"
    " AS bucket, sum(t.d_on_hand) AS d_on_hand, sum(t.d_allocated) AS d_allocated,"
    " count() AS n_rows"
    f" FROM {_HISTORY_ROWS} AS t"
    f" INNER JOIN {_WAREHOUSES} AS w ON w.region = t.region AND w.id = t.warehouse_id"
    " WHERE t.occurred_at < {hi:DateTime64(6, 'UTC')}"
    " AND ({warehouse:String} = '' OR w.code = {warehouse:String})"
    " GROUP BY warehouse, region, bucket ORDER BY warehouse, bucket"
)
_HISTORY_START = f"SELECT min(occurred_at), count() FROM {_HISTORY_ROWS} AS t"


# -- key-value gets of master rows (migration 013) ---------------------------------------
#
# A MergeTree read costs 5-10 ms in embedded chDB whatever it reads, a get from an
# EmbeddedRocksDB table 1-3 ms. The point tables hold the newest version of each master
# row (and, per code, the id of the newest version carrying it), which may be past a
# region's cut: a version is used only when its commit LSN is at or below the cut, and
# anything else (a version past the cut, a code whose id no longer has it) is read from
# the `wms_*` tables at the cut instead, so answers are the same either way.

#: (region, id) of a master row.
RowId = tuple[str, int]


def _gets(client: Client, wanted: Mapping[str, Collection[str]]) -> dict[str, dict[str, Any]]:
    """Rows of several point tables by key, in one query: table → key → (commit LSN,
    value); keys not found are absent."""
    wanted = {t: sorted(set(k)) for t, k in wanted.items() if k}
    if not wanted:
        return {}
    parts, params = [], {}
    for i, (table, keys) in enumerate(wanted.items()):
        value = "toString(id)" if table.endswith("_code_point") else "doc"
        parts.append(
            f"SELECT {i} AS t, key, _commit_lsn, {value} FROM {table}"
            f" WHERE key IN {{k{i}:Array(String)}}"
        )
        params[f"k{i}"] = keys
    tables = list(wanted)
    out: dict[str, dict[str, Any]] = {t: {} for t in tables}
    for t, key, lsn, value in _query(client, " UNION ALL ".join(parts), params, "point read"):
        out[tables[t]][key] = (int(lsn), value)
    return out


def _visible(found: tuple[int, Any] | None, region: str, cut: Mapping[str, int]) -> bool:
    return found is not None and found[0] <= cut.get(region, 0)


def _master_rows(
    client: Client, wanted: Mapping[str, Collection[RowId]], cut: Mapping[str, int]
) -> dict[str, dict[RowId, dict[str, Any] | None]]:
    """Master rows by (region, id) as of `cut`: table (`location`, …) → id → its columns
    of `POINT_COLUMNS`, None when it does not exist at the cut. Gets first; ids whose
    newest version is past the cut (or that no get found) from the `wms_*` table."""
    keys = {t: {point_key(r, i): (r, i) for r, i in ids} for t, ids in wanted.items()}
    got = _gets(client, {f"wms_{t}_point": list(k) for t, k in keys.items()})
    out: dict[str, dict[RowId, dict[str, Any] | None]] = {}
    for table, by_key in keys.items():
        rows = out[table] = {}
        found = got.get(f"wms_{table}_point", {})
        missing = []
        for key, (region, id_) in by_key.items():
            hit = found.get(key)
            if hit is not None and _visible(hit, region, cut):
                doc = orjson.loads(hit[1])
                rows[(region, id_)] = None if doc.pop("_is_deleted") else doc
            else:
                missing.append((region, id_))
        if missing:
            rows.update(_master_rows_at(client, table, missing, cut))
    return out


def _master_rows_at(
    client: Client, table: str, ids: list[RowId], cut: Mapping[str, int]
) -> dict[RowId, dict[str, Any] | None]:
    """`_master_rows` of one table from its `wms_*` table at the cut (the slow path)."""
    cols = POINT_COLUMNS[table]
    sql = "SELECT region, id, " + ", ".join(cols) + " FROM " + latest_versions(
        f"wms_{table}", cols, ("region", "id"),
        "(region, id) IN {ids:Array(Tuple(String, Int64))}", _CUTS,
    )  # fmt: skip
    rows: dict[RowId, dict[str, Any] | None] = dict.fromkeys(ids)
    for region, id_, *values in _query(client, sql, {"ids": ids, **_cuts(cut)}, "master rows"):
        rows[(str(region), int(id_))] = {
            c: v.isoformat(sep=" ") if isinstance(v, datetime) else _json_value(v)
            for c, v in zip(cols, values, strict=True)
        }
    return rows


def _json_value(v: Any) -> Any:
    # the slow path's values as the point tables' JSON documents hold them
    return v.isoformat() if isinstance(v, date) else v


def _date(v: str | None) -> date | None:
    return None if v is None else date.fromisoformat(v)


def _time(v: str | None) -> datetime | None:
    return None if v is None else _utc(datetime.fromisoformat(v))


class _Unsure(Exception):
    """A code's gets do not settle it at the cut (a version past it, an id whose code
    changed): resolve it from the `wms_*` tables."""


#: `_code_ids` answers by (table, codes, cut). What a code names at a cut never changes
#: (every row at or below a watermark is final), so an answer is reused as long as the cut
#: is the same: the regions of an owner an answer involves, then its SKU's ids, resolve
#: the owner once per request. Bounded; emptied when full.
_CODE_IDS: dict[tuple[Any, ...], dict[str, int]] = {}
_CODE_IDS_MAX = 4096


def _code_ids(
    client: Client, table: str, codes: Mapping[str, tuple[object, ...]], cut: Mapping[str, int]
) -> dict[str, int]:
    """region → id of the row that has the code `codes[region]` at the cut (regions where
    none has it left out). Raises _Unsure when the gets do not settle it."""
    key = (table, tuple(sorted(codes.items())), tuple(sorted(cut.items())))
    found = _CODE_IDS.get(key)
    if found is None:
        found = _code_ids_read(client, table, codes, cut)
        if len(_CODE_IDS) >= _CODE_IDS_MAX:
            _CODE_IDS.clear()
        _CODE_IDS[key] = found
    return dict(found)


def _code_ids_read(
    client: Client, table: str, codes: Mapping[str, tuple[object, ...]], cut: Mapping[str, int]
) -> dict[str, int]:
    keys = {point_key(r, *c): r for r, c in codes.items()}
    got = _gets(client, {f"wms_{table}_code_point": list(keys)})
    found = got.get(f"wms_{table}_code_point", {})
    ids: dict[str, int] = {}
    for key, region in keys.items():
        hit = found.get(key)
        if hit is None:
            continue  # never carried by any version: no row has it at any cut
        if not _visible(hit, region, cut):
            raise _Unsure
        ids[region] = int(hit[1])
    # The newest version carrying a code is at or below the cut: the code is that row's
    # at the cut if the row's newest version still carries it (codes are unique at every
    # committed state, so no other row can have it then).
    rows = _master_rows(client, {table: [(r, i) for r, i in ids.items()]}, cut)[table]
    cols = CODE_COLUMNS[table]
    for region, id_ in list(ids.items()):
        row = rows[(region, id_)]
        if row is None or tuple(row[c] for c in cols) != codes[region]:
            raise _Unsure
    return ids


def _point_sku_keys(
    client: Client, owner: str, sku: str, cut: Mapping[str, int]
) -> list[tuple[str, int, int]]:
    """`_sku_keys` by gets. Raises _Unsure."""
    owners = _code_ids(client, "owner", {r: (owner,) for r in cut}, cut)
    skus = _code_ids(client, "sku", {r: (o, sku) for r, o in owners.items()}, cut)
    return sorted((r, owners[r], i) for r, i in skus.items())


def _point_resolve(
    client: Client, owner: str, warehouse: str, sku: str, cut: Mapping[str, int]
) -> SkuKey | None:
    """`resolve` by gets. Raises _Unsure (also when a warehouse code is in two regions)."""
    warehouses = _code_ids(client, "warehouse", {r: (warehouse,) for r in cut}, cut)
    if len(warehouses) != 1:
        if warehouses:
            raise _Unsure
        return None
    ((region, warehouse_id),) = warehouses.items()
    owners = _code_ids(client, "owner", {region: (owner,)}, cut)
    if not owners:
        return None
    skus = _code_ids(client, "sku", {region: (owners[region], sku)}, cut)
    if not skus:
        return None
    return SkuKey(region, owners[region], warehouse_id, skus[region])


# Balance rows of one key at the cut, for per-lot figures summed here (the lot and
# location columns come from gets).
_KEY_BALANCES = (
    "SELECT location_id, lot_id, status, qty_on_hand, qty_allocated FROM "
    + latest_versions(
        "wms_inventory_by_sku",
        ("warehouse_id", "location_id", "lot_id", "status", "qty_on_hand", "qty_allocated"),
        ("id",),
        _ONE_SKU,
    )
    + " WHERE warehouse_id = {warehouse_id:Int64} AND lot_id IS NOT NULL"
)
_LOT_STATUSES = ("PENDING_PUTAWAY", "QC_HOLD", "FROZEN", "DAMAGED", "RETURNED", "EXPIRED")


def _point_lots(client: Client, key: SkuKey, cut: Mapping[str, int]) -> list[LotRow]:
    """`key_lots` from the key's balance rows (one MergeTree read) and gets of their
    lots and locations, summed as `_LOTS` does."""
    params = {
        "region": key.region,
        "owner_id": key.owner_id,
        "sku_id": key.sku_id,
        "warehouse_id": key.warehouse_id,
        "wm": cut.get(key.region, 0),
    }
    balances = _query(client, _KEY_BALANCES, params, "lot balances")
    if not balances:
        return []
    r = key.region
    masters = _master_rows(
        client,
        {"location": {(r, int(b[0])) for b in balances}, "lot": {(r, int(b[1])) for b in balances}},
        cut,
    )
    sums: dict[int, list[int]] = {}
    for location_id, lot_id, status, on_hand, allocated in balances:
        location = masters["location"][(r, int(location_id))]
        f = sums.setdefault(int(lot_id), [0] * (3 + len(_LOT_STATUSES)))
        f[0] += on_hand
        if status == "AVAILABLE" and location is not None and location["sellable"]:
            f[1] += on_hand - allocated
        f[2] += allocated
        if status in _LOT_STATUSES:
            f[3 + _LOT_STATUSES.index(status)] += on_hand
    out = []
    for lot_id, figures in sums.items():
        lot: dict[str, Any] = masters["lot"][(r, lot_id)] or dict.fromkeys(POINT_COLUMNS["lot"])
        row = LotRow(lot["lot_no"], _date(lot["production_date"]), _date(lot["expiry_date"]),
                     *figures)  # fmt: skip
        out.append((row, _time(lot["first_received_at"])))
    # FEFO: expiry, then first receipt, then lot number; NULLs last in each
    out.sort(key=lambda x: (
        x[0].expiry_date is None, x[0].expiry_date or date.min,
        x[1] is None, x[1] or _EPOCH, x[0].lot_no is None, x[0].lot_no or "",
    ))  # fmt: skip
    return [row for row, _ in out]


# Every version of one serial at or below the cut, for its current row and history
# picked here (codes by gets).
_SERIAL_ALL_VERSIONS = (
    "SELECT region, id, _commit_lsn, _lsn, _is_deleted, "
    + ", ".join(_SERIAL_FIELDS)
    + f" FROM wms_serial_number_by_sku WHERE {_SERIAL_SCOPE} AND _commit_lsn <= {_CUTS}"
)


def _point_serial(
    client: Client, keys: list[tuple[str, int, int]], serial_no: str, cut: Mapping[str, int]
) -> tuple[SerialRow | None, list[SerialRow]]:
    """`serial_current` and `serial_history` of the SKU `keys` from the serial's versions
    (one MergeTree read) and gets of their warehouses, locations, lots and orders."""
    params = {"skus": [(r, i) for r, _, i in keys], "serial": serial_no, **_cuts(cut)}
    owners = {(r, o) for r, o, _ in keys}
    committed: dict[tuple[str, int, int], tuple[int, tuple[Any, ...]]] = {}
    for region, id_, commit_lsn, lsn, deleted, *values in _query(
        client, _SERIAL_ALL_VERSIONS, params, "serial versions"
    ):
        # one version per transaction that changed the row: its last change (what the
        # copy's ReplacingMergeTree keeps), deletes included until the end
        k = (str(region), int(id_), int(commit_lsn))
        if k not in committed or committed[k][0] < lsn:
            committed[k] = (int(lsn), (deleted, *values))
    latest: dict[RowId, tuple[Any, ...]] = {}
    history: list[tuple[str, dict[str, Any]]] = []
    for (region, id_, _), (_, version) in sorted(committed.items()):
        latest[(region, id_)] = version
        if not version[0]:
            history.append((region, dict(zip(_SERIAL_FIELDS, version[1:], strict=True))))
    current = [
        (region, dict(zip(_SERIAL_FIELDS, v[1:], strict=True)))
        for (region, _), v in latest.items()
        if not v[0]
    ]
    # the owner's rows only (the SKU ids are per region, the owner is checked per row)
    history = [(r, v) for r, v in history if (r, v["owner_id"]) in owners]
    current = [(r, v) for r, v in current if (r, v["owner_id"]) in owners]
    rows = history + current

    def ids(col: str) -> set[RowId]:
        return {(r, v[col]) for r, v in rows if v[col] is not None}

    masters = _master_rows(
        client,
        {
            "warehouse": ids("warehouse_id"),
            "location": ids("location_id"),
            "lot": ids("lot_id"),
            "outbound_line": ids("outbound_line_id"),
        },
        cut,
    )
    lines = masters["outbound_line"]
    orders = _master_rows(
        client,
        {"outbound_order": {(r, ln["outbound_order_id"]) for (r, _), ln in lines.items() if ln}},
        cut,
    ).get("outbound_order", {})

    def code(table: str, region: str, id_: int | None, col: str) -> Any:
        row = None if id_ is None else masters[table].get((region, id_))
        return None if row is None else row[col]

    def serial_row(region: str, v: dict[str, Any]) -> SerialRow:
        line = lines.get((region, v["outbound_line_id"]))
        order = None if line is None else orders.get((region, line["outbound_order_id"]))
        return SerialRow(
            region, serial_no, v["status"],
            code("warehouse", region, v["warehouse_id"], "code"),
            code("location", region, v["location_id"], "code"),
            code("lot", region, v["lot_id"], "lot_no"),
            _utc(v["received_at"]), _utc(v["shipped_at"]), _utc(v["updated_at"]),
            None if order is None else order["order_no"],
            None if order is None else order["tracking_no"],
        )  # fmt: skip

    past = sorted((serial_row(r, v) for r, v in history), key=lambda x: (x.updated_at, x.region))
    now = sorted(
        (serial_row(r, v) for r, v in current),
        key=lambda x: (x.status != "SHIPPED", x.updated_at),
        reverse=True,
    )
    return (now[0] if now else None), past


# A page of one SKU's ledger rows at the cut (codes by gets).
_KEY_MOVEMENTS = (
    "SELECT region, id, "
    + ", ".join(_TXN_FIELDS)
    + " FROM "
    + latest_versions(
        "wms_inventory_txn_by_sku",
        _TXN_FIELDS,
        ("region", "id"),
        "(region, owner_id, sku_id) IN {keys:Array(Tuple(String, Int64, Int64))}",
        _CUTS,
    )
    + " WHERE occurred_at >= {lo:DateTime64(6, 'UTC')} AND occurred_at < {hi:DateTime64(6, 'UTC')}"
    " AND (occurred_at, region, id) > ({at:DateTime64(6, 'UTC')}, {ar:String}, {aid:Int64})"
    " ORDER BY occurred_at, region, id LIMIT {limit:UInt32}"
)


def _point_movements(
    client: Client, sku: str, params: dict[str, Any], cut: Mapping[str, int]
) -> list[MovementRow] | None:
    """`movements` of one SKU (its `keys` in `params`, any warehouse) from its ledger rows
    (one MergeTree read) and gets of their warehouses, lots and locations; None when a
    row's warehouse is unknown at the cut (`_MOVEMENTS_SKU` leaves such rows out and
    reads further)."""
    found = _query(client, _KEY_MOVEMENTS, params, "movements")
    rows = [dict(zip(("region", "id", *_TXN_FIELDS), r, strict=True)) for r in found]

    def ids(col: str) -> set[RowId]:
        return {(r["region"], r[col]) for r in rows if r[col] is not None}

    masters = _master_rows(
        client,
        {
            "warehouse": ids("warehouse_id"),
            "lot": ids("lot_id"),
            "location": ids("from_location_id") | ids("to_location_id"),
        },
        cut,
    )

    def code(table: str, region: str, id_: int | None, col: str) -> Any:
        row = None if id_ is None else masters[table].get((region, id_))
        return None if row is None else row[col]

    out = []
    for r in rows:
        region = r["region"]
        warehouse = code("warehouse", region, r["warehouse_id"], "code")
        if warehouse is None:
            return None
        out.append(
            MovementRow(
                region,
                r["id"],
                _utc(r["occurred_at"]),
                r["txn_type"],
                warehouse,
                sku,
                code("lot", region, r["lot_id"], "lot_no"),
                code("location", region, r["from_location_id"], "code"),
                code("location", region, r["to_location_id"], "code"),
                r["from_status"],
                r["to_status"],
                r["qty"],
                r["d_on_hand"],
                r["d_allocated"],
                r["ref_type"],
                r["ref_no"],
            )
        )
    return out


# -- public reads ----------------------------------------------------------------------


def visible_lsns(client: Client) -> dict[str, int]:
    """The visibility cut of every region: the highest applied commit LSN (max wins, so a
    replayed older watermark never lowers it). Read once per request, before any data,
    and pass it to the queries of that request."""
    rows = _query(
        client,
        "SELECT region, max(applied_commit_lsn) FROM _watermark_max GROUP BY region",
        {},
        "watermark",
    )
    return {str(r): int(lsn) for r, lsn in rows}


def figure_lsns(client: Client) -> dict[str, int]:
    """`visible_lsns` of the stock figures (`stock_current`), which are written before
    the rows and may be ahead of them (migration 017)."""
    rows = _query(
        client,
        "SELECT region, max(applied_commit_lsn) FROM (SELECT region, applied_commit_lsn"
        " FROM _watermark_max UNION ALL SELECT region, applied_commit_lsn"
        " FROM _figure_watermark_max) GROUP BY region",
        {},
        "watermark",
    )
    return {str(r): int(lsn) for r, lsn in rows}


def resolve(
    client: Client,
    owner: str,
    warehouse: str,
    sku: str,
    cut: Mapping[str, int] | None = None,
    *,
    point: bool = True,
) -> SkuKey | None:
    """Global codes → the ids of the warehouse's region as of `cut` (default: read now);
    None when any is unknown. With `point` (not on a replicated cluster) by gets when
    they settle it (migration 013)."""
    wm = visible_lsns(client) if cut is None else cut
    if point:
        try:
            return _point_resolve(client, owner, warehouse, sku, wm)
        except _Unsure:
            pass
    rows = _query(
        client, _RESOLVE, {"owner": owner, "warehouse": warehouse, "sku": sku, **_cuts(wm)},
        "id resolution",
    )  # fmt: skip
    return SkuKey(*rows[0]) if rows else None


def owner_ids(
    client: Client, owner: str, cut: Mapping[str, int] | None = None, *, point: bool = True
) -> dict[str, int]:
    """The owner's id in every region where it exists (as of `cut`, default: now)."""
    wm = visible_lsns(client) if cut is None else cut
    if point:
        try:
            return _code_ids(client, "owner", {r: (owner,) for r in wm}, wm)
        except _Unsure:
            pass
    rows = _query(client, _OWNER_IDS, {"owner": owner, **_cuts(wm)}, "id resolution")
    return {str(r): int(i) for r, i in rows}


def _sku_keys(
    client: Client, owner: str, sku: str, cut: Mapping[str, int], point: bool = True
) -> list[tuple[str, int, int]]:
    """(region, owner_id, sku_id) of a global SKU key in every region, as of `cut`."""
    if point:
        try:
            return _point_sku_keys(client, owner, sku, cut)
        except _Unsure:
            pass
    rows = _query(client, _SKU_IDS, {"owner": owner, "sku": sku, **_cuts(cut)}, "id resolution")
    return sorted((str(r), int(o), int(i)) for r, o, i in rows)


def stock_one(
    client: Client,
    owner: str,
    warehouse: str,
    sku: str,
    cut: Mapping[str, int] | None = None,
    *,
    point: bool = True,
) -> StockRow | None:
    """Figures of one key; None when absent (no balance rows and nothing inbound). As of
    `cut`, watermarks read earlier (the API's, so an answer is as of its freshness), by
    default the figure watermarks read now.

    With `point` (not on a replicated cluster, where `stock_point` is node-local), a
    key-value get of the newest version answers when that version is at or below the
    cut; a version past it (its batch written, its watermark not yet) sends the read to
    `stock_current` at the cut, as does a key the point table has never seen."""
    cut = figure_lsns(client) if cut is None else cut
    params = {"owner": owner, "warehouse": warehouse, "sku": sku}
    if point:
        key = {"key": point_key(owner, warehouse, sku)}
        found = _query(client, _POINT_ONE, key, "stock point read")
        if found:
            commit_lsn, doc = found[0]
            version = orjson.loads(doc)
            if commit_lsn <= cut.get(version["region"], 0):
                if version["_is_deleted"]:
                    return None
                return _point_row(owner, warehouse, sku, version)
    rows = _rows(client, StockRow, _SERVED_ONE, {**params, **_cuts(cut)})
    return rows[0] if rows else None


def _point_row(owner: str, warehouse: str, sku: str, doc: dict[str, Any]) -> StockRow:
    """A `stock_point` document as the row `stock_current` gives (JSON has no dates)."""
    figures = {f: doc[f] for f in STOCK_FIGURES}
    if (expiry := figures["earliest_expiry"]) is not None:
        figures["earliest_expiry"] = date.fromisoformat(expiry)
    if (moved := figures["last_movement_at"]) is not None:
        figures["last_movement_at"] = _utc(datetime.fromisoformat(moved))
    return StockRow(owner, warehouse, sku, **figures)


def stock_page_sku(
    client: Client,
    owner: str,
    sku: str,
    warehouse: str | None = None,
    limit: int = 100,
    after_warehouse: str = "",
) -> list[StockRow]:
    """One SKU of an owner across warehouses, ordered by warehouse, after a warehouse:
    the figures the projection writer serves, at the figure watermarks now."""
    params = {
        "owner": owner,
        "sku": sku,
        "warehouse": warehouse or "",
        "aw": after_warehouse,
        "limit": limit,
        **_cuts(figure_lsns(client)),
    }
    return _rows(client, StockRow, _SERVED_SKU, params)


def stock_page(
    client: Client,
    owner: str,
    warehouse: str | None = None,
    limit: int = 100,
    after: tuple[str, str] | None = None,
    cut: Mapping[str, int] | None = None,
) -> list[StockRow]:
    """An owner's keys ordered by (warehouse, sku), `limit` of them after the cursor
    `after` = (warehouse, sku) of the previous page's last row; as of `cut` (default:
    the figure watermarks now; reconciliation passes an older LSN, regions left out see
    nothing)."""
    aw, asku = after or ("", "")
    params = {"owner": owner, "warehouse": warehouse or "", "aw": aw, "asku": asku}
    # The figures the projection writer serves (a version at every commit, so exact at
    # any cut the watermarks passed), as the API reads them.
    cuts = _cuts(figure_lsns(client) if cut is None else cut)
    return _rows(client, StockRow, _SERVED_PAGE, {**params, "limit": limit, **cuts})


def lots(
    client: Client,
    owner: str,
    warehouse: str,
    sku: str,
    cut: Mapping[str, int] | None = None,
    *,
    point: bool = True,
) -> list[LotRow]:
    """Per-lot figures of one key in FEFO order (expiry, no-expiry last, first receipt),
    as of `cut` (default: the watermarks now)."""
    cut = visible_lsns(client) if cut is None else cut
    key = resolve(client, owner, warehouse, sku, cut, point=point)
    return [] if key is None else key_lots(client, key, cut, point=point)


def key_lots(
    client: Client, key: SkuKey, cut: Mapping[str, int], *, point: bool = True
) -> list[LotRow]:
    """`lots` of a key already resolved at the same `cut`; with `point` (not on a
    replicated cluster) its lots and locations by gets (migration 013)."""
    if point:
        return _point_lots(client, key, cut)
    return _rows(
        client,
        LotRow,
        _LOTS,
        {
            "region": key.region,
            "owner_id": key.owner_id,
            "sku_id": key.sku_id,
            "warehouse_id": key.warehouse_id,
            "wm": cut.get(key.region, 0),
        },
    )


def serials(
    client: Client,
    owner: str,
    warehouse: str,
    sku: str,
    status: str | None = None,
    cut: Mapping[str, int] | None = None,
) -> list[SerialRow]:
    """Serials of one key currently at the warehouse (optionally of one status), as of
    `cut` (default: the watermarks now)."""
    cut = visible_lsns(client) if cut is None else cut
    key = resolve(client, owner, warehouse, sku, cut)
    return [] if key is None else key_serials(client, key, status, cut)


def key_serials(
    client: Client, key: SkuKey, status: str | None, cut: Mapping[str, int]
) -> list[SerialRow]:
    """`serials` of a key already resolved at the same `cut`."""
    return _rows(
        client,
        SerialRow,
        _SERIALS,
        {
            "region": key.region,
            "owner_id": key.owner_id,
            "sku_id": key.sku_id,
            "warehouse_id": key.warehouse_id,
            "status": status or "",
            **_cuts(cut),
        },
    )


def serial_current(
    client: Client, owner: str, sku: str, serial_no: str, *, point: bool = True
) -> SerialRow | None:
    """Current state across regions: the row that is not SHIPPED, else the latest by
    updated_at (a serial moved between regions exists in both, OPERATIONS.md)."""
    found = serial(client, owner, sku, serial_no, point=point)
    return None if found is None else found[0]


def serial_history(
    client: Client, owner: str, sku: str, serial_no: str, *, point: bool = True
) -> list[SerialRow]:
    """Every committed version of the serial in every region, oldest first."""
    cut = visible_lsns(client)
    keys = _sku_keys(client, owner, sku, cut, point)
    if point and keys:
        return _point_serial(client, keys, serial_no, cut)[1]
    return _serial_rows(client, _SERIAL_HISTORY, keys, serial_no, cut)


def serial(
    client: Client,
    owner: str,
    sku: str,
    serial_no: str,
    cut: Mapping[str, int] | None = None,
    *,
    point: bool = True,
) -> tuple[SerialRow, list[SerialRow]] | None:
    """`serial_current` and `serial_history` of one serial at one cut (default: the
    watermarks now), the SKU resolved once; None when the serial has no current row.
    With `point` (not on a replicated cluster) its codes by gets (migration 013)."""
    cut = visible_lsns(client) if cut is None else cut
    keys = _sku_keys(client, owner, sku, cut, point)
    if not keys:
        return None
    if point:
        now, past = _point_serial(client, keys, serial_no, cut)
        return None if now is None else (now, past)
    current = _serial_rows(client, _SERIAL_CURRENT, keys, serial_no, cut)
    if not current:
        return None
    return current[0], _serial_rows(client, _SERIAL_HISTORY, keys, serial_no, cut)


def _serial_rows(
    client: Client,
    sql: str,
    keys: list[tuple[str, int, int]],
    serial: str,
    cut: Mapping[str, int],
) -> list[SerialRow]:
    if not keys:
        return []
    return _rows(
        client,
        SerialRow,
        sql,
        {
            "skus": [(r, i) for r, _, i in keys],
            "owners": [(r, o) for r, o, _ in keys],
            "serial": serial,
            **_cuts(cut),
        },
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
    cut: Mapping[str, int] | None = None,
    *,
    point: bool = True,
) -> list[MovementRow]:
    """Ledger rows of an owner (optionally one warehouse / SKU) in [since, until),
    ordered by (occurred_at, region, id); `after` is the previous page's last triple. As
    of `cut` (default: the watermarks now); with `point` (not on a replicated cluster)
    codes by gets (migration 013)."""
    lo = since or datetime(1970, 1, 1, tzinfo=UTC)
    hi = until or datetime(2299, 12, 31, tzinfo=UTC)
    at, ar, aid = after or (lo, "", 0)
    cut = visible_lsns(client) if cut is None else cut
    scope: dict[str, Any]
    if sku:
        scope = {"keys": _sku_keys(client, owner, sku, cut, point)}
    else:
        scope = {"owners": sorted(owner_ids(client, owner, cut, point=point).items())}
    if not next(iter(scope.values())):
        return []  # owner or SKU unknown as of the cut
    params = {
        **scope,
        "sku": sku or "",
        "warehouse": warehouse or "",
        "lo": lo,
        "hi": hi,
        "at": at,
        "ar": ar,
        "aid": aid,
        "limit": limit,
        **_cuts(cut),
    }
    if point and sku and not warehouse:
        rows = _point_movements(client, sku, params, cut)
        if rows is not None:
            return rows
    return _rows(client, MovementRow, _MOVEMENTS_SKU if sku else _MOVEMENTS_OWNER, params)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    """A SKU's ledger at one warehouse summed over one time bucket (-1: before `since`)."""

    warehouse: str
    region: str
    bucket: int
    d_on_hand: int
    d_allocated: int
    n_rows: int


def sku_history(
    client: Client,
    owner: str,
    sku: str,
    warehouse: str | None,
    since: datetime | None,
    until: datetime | None,
    points: int,
    now: datetime,
) -> tuple[datetime, int, list[HistoryBucket]] | None:
    """A SKU's ledger per warehouse in `points` equal time buckets over [since, until):
    (since, bucket width in microseconds, buckets ordered by warehouse and bucket), or
    None when the owner has no such SKU as of the cut. `since` defaults to the SKU's
    first ledger row. Without `until` the buckets span up to `now` and every row counts
    (a WMS clock slightly ahead must not drop a row from the closing figures). One
    visibility cut for both reads, so the series is of one committed state."""
    cut = visible_lsns(client)
    keys = _sku_keys(client, owner, sku, cut)
    if not keys:
        return None
    params: dict[str, Any] = {"keys": keys, **_cuts(cut)}
    start = since
    if start is None:
        first, n = _query(client, _HISTORY_START, params, "history start")[0]
        start = min(_utc(first), now) if n else (until or now)
    span_us = max(0, ((until or now) - start) // _MICROSECOND)
    step_us = max(1_000_000, -(-span_us // max(1, points)))  # ceil, at least a second
    lo_us = (start - _EPOCH) // _MICROSECOND
    rows = _rows(
        client,
        HistoryBucket,
        _HISTORY,
        {
            **params,
            "lo": start,
            "lo_us": lo_us,
            "step_us": step_us,
            "hi": until or datetime(2299, 12, 31, tzinfo=UTC),
            "warehouse": warehouse or "",
        },
    )
    return start, step_us, rows


def watermarks(client: Client) -> list[WatermarkRow]:
    """Every region's watermark (decision 5)."""
    return _rows(client, WatermarkRow, "SELECT * FROM watermarks ORDER BY region", {})


def figure_watermarks(client: Client) -> list[WatermarkRow]:
    """Every region's watermark of the stock figures, never behind `watermarks` (017)."""
    return _rows(client, WatermarkRow, "SELECT * FROM figure_watermarks ORDER BY region", {})
