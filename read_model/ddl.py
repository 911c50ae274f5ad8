"""Renders the generated ClickHouse DDL files from the WMS model, and the templates of
every DDL file for local (chDB, single server) or cluster deployment.

`schemas/clickhouse/*.sql` are the declarative source of truth that `migrate` applies;
the ones derived from the WMS model are written by `python -m read_model.ddl` and a test
checks they are up to date. Templates use `${ON_CLUSTER}` and `${REPLICATED}` only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from schemas.wms_model import WMS_MODEL, TableSpec

DDL_DIR = Path(str(files("schemas").joinpath("clickhouse")))

#: Columns every replicated table adds after the source columns.
META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_lsn", "UInt64"),  # change LSN (source.lsn)
    ("_commit_lsn", "UInt64"),  # commit LSN of its transaction (snapshot LSN for reads)
    ("_is_deleted", "UInt8"),
    ("_extra", "Map(String, String)"),  # columns unknown to the model, as JSON text
    ("_ingested_at", "DateTime64(6, 'UTC') DEFAULT now64(6)"),
)


@dataclass(frozen=True, slots=True)
class KeyedCopy:
    """A copy of a replicated table sorted for the read path (fed by a materialized
    view). Its key columns must never change for a source row, or versions of one row
    would split across two keys."""

    name: str
    source: str
    key: tuple[str, ...]


#: Read-path copies: reads go by owner/SKU while the source tables are keyed by id.
KEYED_COPIES: tuple[KeyedCopy, ...] = (
    KeyedCopy("inventory_by_sku", "inventory", ("owner_id", "sku_id", "id")),
    KeyedCopy("inventory_txn_by_sku", "inventory_txn", ("owner_id", "sku_id", "id")),
    KeyedCopy("serial_number_by_sku", "serial_number", ("sku_id", "serial_no", "id")),
    KeyedCopy("inbound_line_by_sku", "inbound_line", ("sku_id", "id")),
    KeyedCopy("sku_by_code", "sku", ("owner_id", "sku_code", "id")),
    KeyedCopy("lot_by_sku", "lot", ("sku_id", "id")),
)


def table_name(source_table: str) -> str:
    """ClickHouse table of a WMS table."""
    return f"wms_{source_table}"


def _columns(spec: TableSpec) -> list[tuple[str, str]]:
    return [("region", "LowCardinality(String)")] + [(c.name, c.ch_type) for c in spec.columns]


def render_wms_tables(model: Mapping[str, TableSpec] = WMS_MODEL) -> str:
    """002: one ReplacingMergeTree per WMS table.

    Sorting key (region, pk, _commit_lsn), version _lsn: a merge only collapses copies of
    one row within one transaction (replays, or several changes of the row in one
    transaction). Versions of different transactions are never merged away, so a merge
    can't drop the version a reader is entitled to see in favour of one above the
    watermark (invisible until the watermark passes it).
    """
    out = [_HEADER.format(what="one table per WMS table")]
    for spec in model.values():
        cols = ",\n".join(f"    `{n}` {t}" for n, t in _columns(spec) + list(META_COLUMNS))
        key = ", ".join(["region", *spec.primary_key, "_commit_lsn"])
        out.append(
            f"CREATE TABLE IF NOT EXISTS {table_name(spec.name)} ${{ON_CLUSTER}}\n(\n{cols}\n)\n"
            f"ENGINE = ${{REPLICATED}}ReplacingMergeTree(_lsn)\nORDER BY ({key});\n"
        )
    for copy in KEYED_COPIES:
        src = table_name(copy.source)
        key = ", ".join(["region", *copy.key, "_commit_lsn"])
        out.append(
            f"CREATE TABLE IF NOT EXISTS wms_{copy.name} ${{ON_CLUSTER}} AS {src}\n"
            f"ENGINE = ${{REPLICATED}}ReplacingMergeTree(_lsn)\nORDER BY ({key});\n\n"
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS wms_{copy.name}_mv ${{ON_CLUSTER}}\n"
            f"TO wms_{copy.name} AS SELECT * FROM {src};\n"
        )
    return "\n".join(out)


def _current_view(
    view: str,
    table: str,
    spec: TableSpec,
    group: tuple[str, ...],
    cut: str | None = None,
) -> str:
    """Per key of `group`, the latest version at or below `cut` (default: the region's
    watermark), deleted keys dropped."""
    rest = [n for n in (*spec.column_names, "_extra", "_lsn", "_commit_lsn") if n not in group]
    packed = ", ".join(f"`{n}`" for n in (*rest, "_is_deleted"))
    unpacked = ",\n    ".join(f"v.{i} AS `{n}`" for i, n in enumerate(rest, start=1))
    keys = ", ".join(("region", *group))
    return (
        f"CREATE VIEW IF NOT EXISTS {view} ${{ON_CLUSTER}} AS\n"
        f"SELECT {keys},\n    {unpacked}\n"
        f"FROM\n(\n"
        f"    SELECT {keys}, argMax(tuple({packed}), (_commit_lsn, _lsn)) AS v\n"
        f"    FROM {table}\n"
        f"    WHERE _commit_lsn <= {cut or _WATERMARK_OF_REGION}\n"
        f"    GROUP BY {keys}\n"
        f")\nWHERE v.{len(rest) + 1} = 0;\n"
    )


# The applied commit LSN of each row's region (0 when the region has none): a scalar
# subquery, evaluated once per query.
_WATERMARK_OF_REGION = (
    "(SELECT CAST((groupArray(region), groupArray(lsn)), 'Map(String, UInt64)')"
    " FROM _watermark_lsn)[region]"
)


def render_current_views(model: Mapping[str, TableSpec] = WMS_MODEL) -> str:
    """003: `cur_<table>`: per key, the latest version by (_commit_lsn, _lsn) among those
    at or below the region's watermark, deleted keys dropped (decision 2 and 4)."""
    out = [_HEADER.format(what="current visible state of every replicated table")]
    for spec in model.values():
        out.append(_current_view(f"cur_{spec.name}", table_name(spec.name), spec, spec.primary_key))
    for copy in KEYED_COPIES:
        out.append(
            _current_view(f"cur_{copy.name}", f"wms_{copy.name}", model[copy.source], copy.key)
        )
    return "\n".join(out)


# -- BI relations (issue 7) ----------------------------------------------------------

#: Status figures of wms/OPERATIONS.md (Σ qty_on_hand with that status).
_STATUS_FIGURES = ("PENDING_PUTAWAY", "QC_HOLD", "FROZEN", "DAMAGED", "RETURNED", "EXPIRED")
#: Tables the stock figures read; `_at_<table>` gives their state at a cut.
_AT_TABLES = (
    "warehouse", "owner", "sku", "location", "lot", "inventory", "inbound_order",
    "inbound_line", "inventory_txn",
)  # fmt: skip
#: A cut bound as two arrays (regions, commit LSNs); a region not in it sees nothing.
_CUT_PARAMS = "wr = {wr:Array(String)}, wl = {wl:Array(UInt64)}"
_CUT_OF_REGION = "mapFromArrays({wr:Array(String)}, {wl:Array(UInt64)})[region]"


def _cur(table: str) -> str:
    return f"cur_{table}"


def _at(table: str) -> str:
    return f"_at_{table}({_CUT_PARAMS})"


def stock_figures_sql(src: Callable[[str], str]) -> str:
    """Stock figures (wms/OPERATIONS.md) of every (owner, warehouse, sku) with global
    codes, over the rows `src(table)` gives: the current state (`cur_*`) or the state at
    a cut (`_at_*`). The owner is the SKU's, as in the oracle; a key exists when it has
    balance rows or open inbound quantity. Kept for the text of applied migration 007
    (014 replaced the views it made by reads of `stock_current`, `served_stock_sql`) and
    as the tests' computation from the balance rows, independent of the writer's."""
    q = "toInt64(i.qty_on_hand)"
    avail = "i.status = 'AVAILABLE' AND coalesce(l.sellable, false)"
    names = [s.lower() for s in _STATUS_FIGURES]
    per_status = ",\n            ".join(
        f"if(i.status = '{s}', {q}, 0) AS {n}" for s, n in zip(_STATUS_FIGURES, names, strict=True)
    )
    zeros = ", ".join("0" for _ in names)
    sums = ", ".join(f"sum({n}) AS {n}" for n in names)
    outer = ", ".join(f"f.{n} AS {n}" for n in names)
    return f"""SELECT f.region AS region, ow.code AS owner, wh.code AS warehouse,
    sk.sku_code AS sku, f.on_hand AS on_hand, f.available AS available,
    f.allocated AS allocated, {outer},
    f.inbound_expected AS inbound_expected, f.earliest_expiry AS earliest_expiry,
    f.last_movement_at AS last_movement_at
FROM
(
    SELECT region, sku_id, warehouse_id, sum(on_hand) AS on_hand,
        sum(available) AS available, sum(allocated) AS allocated, {sums},
        sum(inbound) AS inbound_expected, min(expiry) AS earliest_expiry,
        max(moved_at) AS last_movement_at, max(has_balance) AS any_balance
    FROM
    (
        SELECT i.region AS region, i.sku_id AS sku_id, i.warehouse_id AS warehouse_id,
            {q} AS on_hand, if({avail}, {q} - i.qty_allocated, 0) AS available,
            toInt64(i.qty_allocated) AS allocated,
            {per_status},
            toInt64(0) AS inbound,
            if({avail} AND i.qty_on_hand > i.qty_allocated, lt.expiry_date, NULL) AS expiry,
            CAST(NULL, 'Nullable(DateTime64(6, \\'UTC\\'))') AS moved_at, 1 AS has_balance
        FROM {src("inventory")} AS i
        LEFT JOIN {src("location")} AS l ON l.region = i.region AND l.id = i.location_id
        LEFT JOIN {src("lot")} AS lt ON lt.region = i.region AND lt.id = i.lot_id
        UNION ALL
        SELECT o.region, il.sku_id, o.warehouse_id, 0, 0, 0, {zeros},
            greatest(toInt64(il.qty_expected) - il.qty_received, 0), NULL, NULL, 0
        FROM {src("inbound_line")} AS il
        INNER JOIN {src("inbound_order")} AS o
            ON o.region = il.region AND o.id = il.inbound_order_id
        WHERE o.status IN ('CREATED', 'IN_TRANSIT', 'ARRIVED', 'RECEIVING')
        UNION ALL
        SELECT region, sku_id, warehouse_id, 0, 0, 0, {zeros}, 0, NULL, occurred_at, 0
        FROM {src("inventory_txn")}
    )
    GROUP BY region, sku_id, warehouse_id
    HAVING any_balance = 1 OR inbound_expected > 0
) AS f
INNER JOIN {src("sku")} AS sk ON sk.region = f.region AND sk.id = f.sku_id
INNER JOIN {src("owner")} AS ow ON ow.region = f.region AND ow.id = sk.owner_id
INNER JOIN {src("warehouse")} AS wh ON wh.region = f.region AND wh.id = f.warehouse_id
SETTINGS join_use_nulls = 1"""


def _lot_figures() -> str:
    """Per-lot figures of every (owner, warehouse, sku, lot), FEFO rank within the key."""
    q = "toInt64(i.qty_on_hand)"
    avail = "i.status = 'AVAILABLE' AND coalesce(l.sellable, false)"
    names = [s.lower() for s in _STATUS_FIGURES]
    per_status = ",\n            ".join(
        f"sum(if(i.status = '{s}', {q}, 0)) AS {n}"
        for s, n in zip(_STATUS_FIGURES, names, strict=True)
    )
    outer = ", ".join(f"b.{n} AS {n}" for n in names)
    return f"""SELECT b.region AS region, ow.code AS owner, wh.code AS warehouse,
    sk.sku_code AS sku, lt.lot_no AS lot_no, lt.production_date AS production_date,
    lt.expiry_date AS expiry_date, lt.first_received_at AS first_received_at,
    b.on_hand AS on_hand, b.available AS available, b.allocated AS allocated, {outer},
    row_number() OVER (PARTITION BY b.region, b.warehouse_id, b.sku_id
        ORDER BY lt.expiry_date ASC NULLS LAST, lt.first_received_at ASC NULLS LAST,
        lt.lot_no ASC) AS fefo_rank
FROM
(
    SELECT i.region AS region, i.warehouse_id AS warehouse_id, i.sku_id AS sku_id,
        i.lot_id AS lot_id, sum({q}) AS on_hand,
        sum(if({avail}, {q} - i.qty_allocated, 0)) AS available,
        sum(toInt64(i.qty_allocated)) AS allocated,
            {per_status}
    FROM cur_inventory AS i
    LEFT JOIN cur_location AS l ON l.region = i.region AND l.id = i.location_id
    WHERE i.lot_id IS NOT NULL
    GROUP BY region, warehouse_id, sku_id, lot_id
) AS b
INNER JOIN cur_lot AS lt ON lt.region = b.region AND lt.id = b.lot_id
INNER JOIN cur_sku AS sk ON sk.region = b.region AND sk.id = b.sku_id
INNER JOIN cur_owner AS ow ON ow.region = b.region AND ow.id = sk.owner_id
INNER JOIN cur_warehouse AS wh ON wh.region = b.region AND wh.id = b.warehouse_id
SETTINGS join_use_nulls = 1"""


_BI_SERIALS = """SELECT owner, sku, serial_no, v.1 AS status, v.2 AS region, v.3 AS warehouse,
    v.4 AS location, v.5 AS lot_no, v.6 AS received_at, v.7 AS shipped_at,
    v.8 AS receive_count, v.9 AS updated_at, regions
FROM
(
    SELECT ow.code AS owner, sk.sku_code AS sku, s.serial_no AS serial_no,
        argMax(tuple(s.status, s.region, wh.code,
            if(s.location_id IS NULL, NULL, l.code), if(s.lot_id IS NULL, NULL, lt.lot_no),
            s.received_at,
            s.shipped_at, s.receive_count, s.updated_at),
            (s.status != 'SHIPPED', s.updated_at)) AS v,
        arraySort(groupUniqArray(s.region)) AS regions
    FROM cur_serial_number AS s
    INNER JOIN cur_sku AS sk ON sk.region = s.region AND sk.id = s.sku_id
    INNER JOIN cur_owner AS ow ON ow.region = s.region AND ow.id = sk.owner_id
    INNER JOIN cur_warehouse AS wh ON wh.region = s.region AND wh.id = s.warehouse_id
    LEFT JOIN cur_location AS l ON l.region = s.region AND l.id = s.location_id
    LEFT JOIN cur_lot AS lt ON lt.region = s.region AND lt.id = s.lot_id
    GROUP BY owner, sku, serial_no
)
SETTINGS join_use_nulls = 1"""

_BI_MOVEMENTS = """SELECT t.region AS region, t.id AS id, t.occurred_at AS occurred_at,
    t.txn_type AS txn_type, ow.code AS owner, wh.code AS warehouse, sk.sku_code AS sku,
    lt.lot_no AS lot_no, sn.serial_no AS serial_no, fl.code AS from_location,
    tl.code AS to_location, t.from_status AS from_status, t.to_status AS to_status,
    t.qty AS qty, t.d_on_hand AS d_on_hand, t.d_allocated AS d_allocated,
    t.reason_code AS reason_code, t.ref_type AS ref_type, t.ref_no AS ref_no,
    t.operator AS operator
FROM cur_inventory_txn AS t
INNER JOIN cur_sku AS sk ON sk.region = t.region AND sk.id = t.sku_id
INNER JOIN cur_owner AS ow ON ow.region = t.region AND ow.id = sk.owner_id
INNER JOIN cur_warehouse AS wh ON wh.region = t.region AND wh.id = t.warehouse_id
LEFT JOIN cur_lot AS lt ON lt.region = t.region AND lt.id = t.lot_id
LEFT JOIN cur_serial_number AS sn ON sn.region = t.region AND sn.id = t.serial_id
LEFT JOIN cur_location AS fl ON fl.region = t.region AND fl.id = t.from_location_id
LEFT JOIN cur_location AS tl ON tl.region = t.region AND tl.id = t.to_location_id
SETTINGS join_use_nulls = 1"""

#: Age buckets by in_date (days, UTC): (column, lowest age, highest age or None).
AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("qty_0_30", 0, 30),
    ("qty_31_60", 31, 60),
    ("qty_61_90", 61, 90),
    ("qty_91_180", 91, 180),
    ("qty_over_180", 181, None),
)


def _inventory_age() -> str:
    def bucket(lo: int, hi: int | None) -> str:
        cond = f"age >= {lo}" + (f" AND age <= {hi}" if hi is not None else "")
        return f"sumIf(qty, {cond})"

    cols = ",\n        ".join(f"{bucket(lo, hi)} AS {name}" for name, lo, hi in AGE_BUCKETS)
    return f"""SELECT b.region AS region, ow.code AS owner, wh.code AS warehouse,
    sk.sku_code AS sku, b.as_of_date AS as_of_date, b.on_hand AS on_hand,
    {", ".join(f"b.{name} AS {name}" for name, _, _ in AGE_BUCKETS)},
    b.oldest_in_date AS oldest_in_date
FROM
(
    SELECT region, warehouse_id, sku_id, any(today_utc) AS as_of_date, sum(qty) AS on_hand,
        {cols},
        min(in_date) AS oldest_in_date
    FROM
    (
        SELECT region, warehouse_id, sku_id, toInt64(qty_on_hand) AS qty, in_date,
            toDate(now('UTC'), 'UTC') AS today_utc,
            dateDiff('day', toDate(in_date, 'UTC'), today_utc) AS age
        FROM cur_inventory
    )
    GROUP BY region, warehouse_id, sku_id
) AS b
INNER JOIN cur_sku AS sk ON sk.region = b.region AND sk.id = b.sku_id
INNER JOIN cur_owner AS ow ON ow.region = b.region AND ow.id = sk.owner_id
INNER JOIN cur_warehouse AS wh ON wh.region = b.region AND wh.id = b.warehouse_id"""


#: The documented BI relations (README "BI access"), in the order they are created.
BI_RELATIONS: tuple[str, ...] = (
    "bi_stock", "bi_stock_lots", "bi_serials", "bi_movements", "bi_inventory_age",
    "bi_stock_history",
)  # fmt: skip

#: The figure columns of a stock row and their types, in the order of `stock_figures_sql`
#: and `stock_current` (after region, owner, warehouse, sku).
_FIGURE_TYPES: tuple[tuple[str, str], ...] = (
    *((n, "Int64") for n in ("on_hand", "available", "allocated",
                             *(s.lower() for s in _STATUS_FIGURES), "inbound_expected")),
    ("earliest_expiry", "Nullable(Date32)"),
    ("last_movement_at", "Nullable(DateTime64(6, 'UTC'))"),
)  # fmt: skip
STOCK_FIGURES: tuple[str, ...] = tuple(n for n, _ in _FIGURE_TYPES)


def served_stock_sql(where: str, cut: str, tail: str = "", *, region: bool = False) -> str:
    """The figures `stock_current` serves (written by read_model.figures): per (owner,
    warehouse, sku) matching `where` (every key when empty), the latest version by
    (_commit_lsn, _seq) at or below `cut` (an expression of the version's `region`),
    deleted keys dropped. The one way those figures are read: by the API,
    reconciliation, the writer's load and the BI relations. `region` puts the key's
    region first, as the BI relations have it."""
    cols = ("region", *STOCK_FIGURES) if region else STOCK_FIGURES
    packed = ", ".join((*cols, "_is_deleted"))
    v = {c: f"v.{i} AS {c}" for i, c in enumerate(cols, start=1)}
    # stock_current's region type, which a tuple element loses
    lead = "toLowCardinality(v.1) AS region, " if region else ""
    return (
        f"SELECT {lead}owner, warehouse, sku,\n    {', '.join(v[f] for f in STOCK_FIGURES)}\n"
        "FROM\n(\n    SELECT owner, warehouse, sku,\n"
        f"        argMax(tuple({packed}), (_commit_lsn, _seq)) AS v\n"
        f"    FROM stock_current\n    WHERE {where}{' AND ' if where else ''}_commit_lsn <= {cut}\n"
        f"    GROUP BY owner, warehouse, sku\n)\nWHERE v.{len(cols) + 1} = 0{tail}"
    )


_STOCK_COLUMNS = (
    "    `region` LowCardinality(String),\n    `owner` String,\n    `warehouse` String,\n"
    "    `sku` String,\n" + ",\n".join(f"    `{n}` {t}" for n, t in _FIGURE_TYPES)
)  # fmt: skip


def render_bi_relations(model: Mapping[str, TableSpec] = WMS_MODEL) -> str:
    """007: the BI relations over the watermark-cut current state, the state at a cut
    (`_at_*`, `_bi_stock_at`) and the daily stock history it fills. Applied: its text
    must not change; 014 (`render_bi_from_stock_current`) replaces `bi_stock` and
    `_bi_stock_at`."""
    out = [_HEADER.format(what="BI relations (README, BI access)")]
    for t in _AT_TABLES:
        out.append(
            _current_view(f"_at_{t}", table_name(t), model[t], model[t].primary_key,
                          _CUT_OF_REGION)
        )  # fmt: skip
    views = (
        ("bi_stock", stock_figures_sql(_cur)),
        ("_bi_stock_at", stock_figures_sql(_at)),
        ("bi_stock_lots", _lot_figures()),
        ("bi_serials", _BI_SERIALS),
        ("bi_movements", _BI_MOVEMENTS),
        ("bi_inventory_age", _inventory_age()),
    )
    for name, body in views:
        # Public relations run with their definer's rights: a BI role needs SELECT on
        # them only, never on the tables below (read_model.bi.render_access_ddl).
        security = "" if name.startswith("_") else " DEFINER = CURRENT_USER SQL SECURITY DEFINER"
        out.append(f"CREATE VIEW IF NOT EXISTS {name} ${{ON_CLUSTER}}{security} AS\n{body};\n")
    out.append(
        "CREATE TABLE IF NOT EXISTS bi_stock_daily ${ON_CLUSTER}\n(\n    `day` Date,\n"
        f"{_STOCK_COLUMNS},\n"
        "    `cut_ts` DateTime64(3, 'UTC'),\n    `cut_lsn` UInt64,\n"
        "    `taken_at` DateTime64(6, 'UTC')\n)\n"
        "ENGINE = ${REPLICATED}ReplacingMergeTree(taken_at)\n"
        "ORDER BY (day, region, owner, warehouse, sku);\n"
    )
    out.append(
        "CREATE VIEW IF NOT EXISTS bi_stock_history ${ON_CLUSTER}"
        " DEFINER = CURRENT_USER SQL SECURITY DEFINER AS\n"
        "SELECT d.day AS day, d.region AS region, d.owner AS owner, d.warehouse AS warehouse,\n"
        "    d.sku AS sku, d.on_hand AS on_hand, d.available AS available,\n"
        "    d.allocated AS allocated, "
        + ", ".join(f"d.{s.lower()} AS {s.lower()}" for s in _STATUS_FIGURES)
        + ",\n    d.inbound_expected AS inbound_expected, d.earliest_expiry AS earliest_expiry,\n"
        "    d.last_movement_at AS last_movement_at, d.cut_ts AS cut_ts\n"
        "FROM bi_stock_daily AS d\n"
        "WHERE (d.day, d.region, d.taken_at) IN\n"
        "    (SELECT day, region, max(taken_at) FROM bi_stock_daily GROUP BY day, region);\n"
    )
    return "\n".join(out)


def render_serving_tables() -> str:
    """008: `stock_current`, the figures of every (owner, warehouse, sku) kept by the
    projection writer (read_model.serving) so a stock read is one small range read.

    A version per batch that changed a key's figures, at the batch's commit LSN, written
    before the watermark: readers take per key the latest version at or below their
    region's cut, exactly as for the `wms_*` tables. `_seq` orders recomputations of one
    key at one LSN (a snapshot's batches share its LSN)."""
    return (
        _HEADER.format(what="serving table of the stock figures")
        + "CREATE TABLE IF NOT EXISTS stock_current ${ON_CLUSTER}\n(\n"
        + f"{_STOCK_COLUMNS},\n"
        "    `_commit_lsn` UInt64,\n    `_seq` UInt64,\n    `_is_deleted` UInt8\n)\n"
        "ENGINE = ${REPLICATED}ReplacingMergeTree(_seq)\n"
        "ORDER BY (owner, sku, warehouse, _commit_lsn)\n"
        # small granules: reads are point and short range reads by key
        "SETTINGS index_granularity = 256;\n\n"
        # which regions have been built whole (a full rebuild records its cut)
        "CREATE TABLE IF NOT EXISTS _stock_current_built ${ON_CLUSTER}\n(\n"
        "    `region` LowCardinality(String),\n    `built_lsn` UInt64,\n"
        "    `built_at` DateTime64(6, 'UTC')\n)\n"
        "ENGINE = ${REPLICATED}ReplacingMergeTree(built_at)\nORDER BY region;\n"
    )


#: What a `stock_point` document holds besides the figures: the version's region (for the
#: reader's cut) and whether the key is deleted.
_POINT_DOC_META: tuple[tuple[str, str], ...] = (("region", "String"), ("_is_deleted", "UInt8"))


def _point_doc(prefix: str) -> str:
    """The JSON object of a `stock_current` row's figures, as `stock_point` stores it."""
    fields = (*_POINT_DOC_META, *_FIGURE_TYPES)
    values = ", ".join(f"{prefix}{n}" for n, _ in fields)
    names = ", ".join(f"{n} {t}" for n, t in fields).replace("'", "\\'")
    return f"toJSONString(CAST(({values}), 'Tuple({names})'))"


def render_stock_point() -> str:
    """011: `stock_point`, single-key stock reads as key-value gets, rebuilt from 010's.

    A read of one key from `stock_current` (a MergeTree) costs 10-15 ms in embedded chDB
    whatever it reads; a RocksDB get costs 1-3 ms, most of it decoding the value column by
    column, so the figures are one JSON document (010 kept 16 columns: 5 ms a get)."""
    newest = (
        "    SELECT * FROM stock_current\n"
        "    ORDER BY _commit_lsn DESC, _seq DESC\n"
        "    LIMIT 1 BY owner, warehouse, sku\n"
    )
    return (
        _HEADER.format(what="single-key stock reads (replaces 010's `stock_point`)")
        + "-- The newest version of each key, filled by a materialized view inside the same\n"
        "-- INSERT as `stock_current`:\n"
        "-- * a block may hold several versions of a key (a rebuild and a batch): the newest\n"
        "--   wins;\n"
        "-- * a replay writes figures at an older cut into `stock_current`: the join keeps the\n"
        "--   newer version already here, so the point table never goes back in time.\n"
        "-- The newest version may be past its region's watermark (a batch written, its\n"
        "-- watermark not yet): readers take it only when its commit LSN is at or below their\n"
        "-- cut and otherwise read `stock_current` at the cut (read_model.queries).\n"
        "-- EmbeddedRocksDB is node-local: on a replicated cluster the view fills only the node\n"
        "-- an insert reached, so readers use it only without a cluster.\n\n"
        "DROP VIEW IF EXISTS stock_point_mv ${ON_CLUSTER};\n\n"
        "DROP TABLE IF EXISTS stock_point ${ON_CLUSTER};\n\n"
        "CREATE TABLE IF NOT EXISTS stock_point ${ON_CLUSTER}\n(\n"
        "    `owner` String,\n    `warehouse` String,\n    `sku` String,\n"
        "    `_commit_lsn` UInt64,\n    `_seq` UInt64,\n    `doc` String\n)\n"
        "ENGINE = EmbeddedRocksDB\nPRIMARY KEY (owner, warehouse, sku);\n\n"
        "CREATE MATERIALIZED VIEW IF NOT EXISTS stock_point_mv ${ON_CLUSTER} TO stock_point AS\n"
        "SELECT n.owner AS owner, n.warehouse AS warehouse, n.sku AS sku,\n"
        f"    n._commit_lsn AS _commit_lsn, n._seq AS _seq,\n    {_point_doc('n.')} AS doc\n"
        f"FROM\n(\n{newest}) AS n\n"
        "LEFT JOIN stock_point AS o\n"
        "    ON o.owner = n.owner AND o.warehouse = n.warehouse AND o.sku = n.sku\n"
        "WHERE (n._commit_lsn, n._seq) >= (o._commit_lsn, o._seq);\n\n"
        "-- What was served before this migration (migrate runs before the projector starts).\n"
        "INSERT INTO stock_point\n"
        f"SELECT owner, warehouse, sku, _commit_lsn, _seq,\n    {_point_doc('')} AS doc\n"
        f"FROM\n(\n{newest});\n"
    )


def render_point_settings() -> str:
    """015: the RocksDB point tables take small inserts into their memtable.

    By default EmbeddedRocksDB builds an SST file for every insert and ingests it (made
    for bulk loads): 2.4 ms CPU for a one-row insert here, and one more file for RocksDB
    to compact. Each flush of the projector inserts a few rows into `stock_point` and the
    point tables of the master rows it touched; with `optimize_for_bulk_insert = 0` a row
    goes to the memtable and the write-ahead log (0.6 ms)."""
    tables = (
        "stock_point",
        *(f"{table_name(n)}_point" for n in POINT_COLUMNS),
        *(f"{table_name(n)}_code_point" for n in CODE_COLUMNS),
    )
    return _HEADER.format(
        what="RocksDB point tables written row by row, not by SST files"
    ) + "".join(
        f"ALTER TABLE {t} ${{ON_CLUSTER}} MODIFY SETTING optimize_for_bulk_insert = 0;\n"
        for t in tables
    )


def render_bi_from_stock_current() -> str:
    """014: `bi_stock` and `_bi_stock_at` read the figures the projection writer serves
    (`served_stock_sql`) instead of computing them a second time from the balance rows
    (007's `stock_figures_sql`); the `_at_*` views only `_bi_stock_at` read are dropped."""
    public = " DEFINER = CURRENT_USER SQL SECURITY DEFINER"
    views = (
        ("bi_stock", public, served_stock_sql("", _WATERMARK_OF_REGION, region=True)),
        ("_bi_stock_at", "", served_stock_sql("", _CUT_OF_REGION, region=True)),
    )
    return (
        _HEADER.format(what="BI stock figures as the API serves them (replaces 007's)")
        + "-- One definition of the stock figures: the projection writer's (read_model.figures),\n"
        "-- kept in `stock_current`. The BI relations read it as the API and reconciliation do\n"
        "-- (read_model.ddl.served_stock_sql), with 007's columns in 007's order:\n"
        "-- * `bi_stock`: per key the latest version at or below its region's watermark;\n"
        "-- * `_bi_stock_at(wr, wl)`: the same at a cut (daily snapshots, read_model.bi).\n"
        "-- A past cut (a backfilled day) reads what was served at it, exact wherever the\n"
        "-- writer wrote a version at each commit that changed a key (read_model.figures; a\n"
        "-- delete version when the key stops existing): stock_current (ReplacingMergeTree(_seq)\n"
        "-- ORDER BY (owner, sku, warehouse, _commit_lsn)) merges only versions of one key at\n"
        "-- one commit LSN, where the highest `_seq` wins as it does for readers, so no merge\n"
        "-- removes the version a cut is entitled to.\n\n"
        + "".join(
            f"CREATE OR REPLACE VIEW {name} ${{ON_CLUSTER}}{security} AS\n{body};\n\n"
            for name, security, body in views
        )
        + "-- Read by 007's `_bi_stock_at` only.\n"
        + "".join(f"DROP VIEW IF EXISTS _at_{t} ${{ON_CLUSTER}};\n" for t in _AT_TABLES)
    )


#: Master rows the API looks up by id (013): the columns its reads need from each.
POINT_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "warehouse": ("code",),
    "owner": ("code",),
    "sku": ("owner_id", "sku_code"),
    "location": ("code", "sellable"),
    "lot": ("lot_no", "production_date", "expiry_date", "first_received_at"),
    "outbound_line": ("outbound_order_id",),
    "outbound_order": ("order_no", "tracking_no"),
}
#: Master rows the API resolves by code (013): the columns of the code, after the region.
CODE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "warehouse": ("code",),
    "owner": ("code",),
    "sku": ("owner_id", "sku_code"),
}


def point_key_sql(prefix: str, cols: tuple[str, ...]) -> str:
    """The one-column key of a point table: the values of `cols`, each but the last with
    its length in front (so any text stays unambiguous). One column, because a join on a
    multi-column EmbeddedRocksDB key reads the whole table (a materialized view joining it
    would read it on every insert), where a one-column key is a direct lookup per row."""
    parts: list[str] = []
    for c in cols[:-1]:
        value = f"toString({prefix}{c})"
        parts += [f"toString(length({value}))", "':'", value]
    parts.append(f"toString({prefix}{cols[-1]})")
    return f"concat({', '.join(parts)})"


def point_key(*values: object) -> str:
    """`point_key_sql`'s key of a row, in Python."""
    *head, last = (str(v) for v in values)
    return "".join(f"{len(v.encode())}:{v}" for v in head) + last


def _newest_into(table: str, select: str, source: str, where: str = "", seq: str = "_lsn") -> str:
    """A materialized view keeping in `table` the newest version (commit LSN, then `seq`)
    of each key, and the INSERT that backfills it from `source`."""
    newest = (
        f"    SELECT {select}\n    FROM {source}{where}\n"
        f"    ORDER BY _commit_lsn DESC, {seq} DESC\n    LIMIT 1 BY key\n"
    )
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {table}_mv ${{ON_CLUSTER}} TO {table} AS\n"
        "SELECT n.* FROM\n(\n"
        f"{newest}) AS n\n"
        f"LEFT JOIN {table} AS o ON o.key = n.key\n"
        f"WHERE (n._commit_lsn, n.{seq}) >= (o._commit_lsn, o.{seq});\n\n"
        f"INSERT INTO {table}\nSELECT * FROM\n(\n{newest});\n"
    )


def render_point_tables(model: Mapping[str, TableSpec] = WMS_MODEL) -> str:
    """013: master rows as key-value gets for the API's lots, serial and movement reads,
    and the codes they are resolved by (each a 1-3 ms get, where a MergeTree read costs
    5-10 ms in embedded chDB whatever it reads); `stock_point` keyed by one column."""
    out = [
        _HEADER.format(what="master rows and codes as key-value gets, `stock_point` rekeyed"),
        "-- `wms_<t>_point`: the newest version of each row, by key (region, id), its columns\n"
        "-- the API reads as one JSON document (`_is_deleted` first). `wms_<t>_code_point`:\n"
        "-- per code, the id of the newest version that carried it (deletes carry no code).\n"
        "-- Filled by materialized views inside the same INSERT as `wms_<t>`; a replay of\n"
        "-- older versions never replaces a newer one. Like `stock_point` (011) they hold the\n"
        "-- newest state, which may be past a region's watermark: readers use a version only\n"
        "-- when its commit LSN is at or below their cut, a code only when the id it names\n"
        "-- still has it there, and otherwise read the `wms_*` tables at the cut\n"
        "-- (read_model.queries). EmbeddedRocksDB is node-local: readers use them only\n"
        "-- without a cluster. The INSERTs backfill what was applied before this migration.\n",
    ]
    for name, cols in POINT_COLUMNS.items():
        spec, table = model[name], f"{table_name(name)}_point"
        types = {c.name: c.ch_type for c in spec.columns}
        fields = (("_is_deleted", "UInt8"), *((c, types[c]) for c in cols))
        names = ", ".join(f"{n} {t}" for n, t in fields).replace("'", "\\'")
        doc = f"toJSONString(CAST(({', '.join(n for n, _ in fields)}), 'Tuple({names})'))"
        out.append(
            f"CREATE TABLE IF NOT EXISTS {table} ${{ON_CLUSTER}}\n(\n    `key` String,\n"
            "    `_commit_lsn` UInt64,\n    `_lsn` UInt64,\n    `doc` String\n)\n"
            "ENGINE = EmbeddedRocksDB\nPRIMARY KEY key;\n\n"
            + _newest_into(
                table,
                f"{point_key_sql('', ('region', 'id'))} AS key, _commit_lsn, _lsn, {doc} AS doc",
                table_name(name),
            )
        )
    for name, cols in CODE_COLUMNS.items():
        table = f"{table_name(name)}_code_point"
        out.append(
            f"CREATE TABLE IF NOT EXISTS {table} ${{ON_CLUSTER}}\n(\n    `key` String,\n"
            "    `_commit_lsn` UInt64,\n    `_lsn` UInt64,\n    `id` Int64\n)\n"
            "ENGINE = EmbeddedRocksDB\nPRIMARY KEY key;\n\n"
            + _newest_into(
                table,
                f"{point_key_sql('', ('region', *cols))} AS key, _commit_lsn, _lsn, id",
                table_name(name),
                "\n    WHERE _is_deleted = 0",
            )
        )
    out.append(
        "-- `stock_point` (011) again, keyed by one column: its view joined the table on\n"
        "-- (owner, warehouse, sku), which reads the whole table on every insert into\n"
        "-- `stock_current` (seconds per batch at a million keys); the same rows otherwise.\n"
        "DROP VIEW IF EXISTS stock_point_mv ${ON_CLUSTER};\n\n"
        "DROP TABLE IF EXISTS stock_point ${ON_CLUSTER};\n\n"
        "CREATE TABLE IF NOT EXISTS stock_point ${ON_CLUSTER}\n(\n    `key` String,\n"
        "    `_commit_lsn` UInt64,\n    `_seq` UInt64,\n    `doc` String\n)\n"
        "ENGINE = EmbeddedRocksDB\nPRIMARY KEY key;\n\n"
        + _newest_into(
            "stock_point",
            f"{point_key_sql('', ('owner', 'warehouse', 'sku'))} AS key, _commit_lsn, _seq,"
            f" {_point_doc('')} AS doc",
            "stock_current",
            seq="_seq",
        )
    )
    return "\n".join(out)


_HEADER = "-- GENERATED by `python -m read_model.ddl` from the WMS model: {what}.\n"

GENERATED: Mapping[str, Callable[[], str]] = {
    "002_wms_tables.sql": render_wms_tables,
    "003_current_views.sql": render_current_views,
    "007_bi_relations.sql": render_bi_relations,
    "008_stock_current.sql": render_serving_tables,
    "011_stock_point_doc.sql": render_stock_point,
    "013_master_points.sql": render_point_tables,
    "014_bi_from_stock_current.sql": render_bi_from_stock_current,
    "015_point_settings.sql": render_point_settings,
}


def render(template: str, cluster: str | None) -> str:
    """A DDL file for a single server/chDB (cluster None) or ON CLUSTER with Replicated
    engines (default replica path and name from the servers' config)."""
    return Template(template).substitute(
        ON_CLUSTER=f"ON CLUSTER `{cluster}`" if cluster else "",
        REPLICATED="Replicated" if cluster else "",
    )


def write_generated(directory: Path = DDL_DIR) -> list[Path]:
    """Rewrite the generated DDL files; returns their paths."""
    written = []
    for name, fn in GENERATED.items():
        path = directory / name
        path.write_text(fn())
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_generated():
        sys.stdout.write(f"wrote {p}\n")
