"""Deterministic bulk seeding of a regional WMS database with COPY.

Master data (owners, the SKU catalogue) derives from the seed alone, so every region
knows the same sellers and SKUs under the same global codes; warehouses, locations,
lots, containers and stock derive from (seed, region). Owners and SKUs are inserted in
a region-dependent order so their ids differ between regions, as in production. Every
timestamp derives from ``as_of`` (a date, today by default): the same (seed, size,
as_of) gives a byte-identical database.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql

from simulator.errors import SeedError
from simulator.model import SELLABLE_BY_LOC_TYPE, ZONE_BY_LOC_TYPE
from stockcdc.settings import Region

#: Named sizes: approximate balance rows per region.
SIZE_PRESETS: Final[dict[str, int]] = {
    "tiny": 40,
    "small": 5_000,
    "medium": 200_000,
    "large": 3_400_000,  # ≥ 10M balance rows across three regions
}

#: Warehouses of the known regions: (code, name, country, timezone).
WAREHOUSES_BY_REGION: Final[dict[str, tuple[tuple[str, str, str, str], ...]]] = {
    "us-west": (
        ("US-LAX-1", "Los Angeles DC", "US", "America/Los_Angeles"),
        ("US-SEA-1", "Seattle DC", "US", "America/Los_Angeles"),
    ),
    "eu-central": (
        ("DE-FRA-1", "Frankfurt DC", "DE", "Europe/Berlin"),
        ("PL-WAW-1", "Warsaw DC", "PL", "Europe/Warsaw"),
    ),
    "ap-southeast": (
        ("SG-SIN-1", "Singapore DC", "SG", "Asia/Singapore"),
        ("MY-KUL-1", "Kuala Lumpur DC", "MY", "Asia/Kuala_Lumpur"),
    ),
}

#: Non-sellable location types and how many of each a warehouse has.
SUPPORT_LOCATIONS: Final[dict[str, int]] = {
    "RECEIVING": 2,
    "QC": 2,
    "DAMAGE": 2,
    "RETURNS": 2,
    "STAGING": 2,
}

#: Tracking of the j-th SKU of an owner (every owner gets all three from 3 SKUs up).
TRACKING_CYCLE: Final[tuple[str, ...]] = (
    "NONE",
    "LOT",
    "SERIAL",
    "NONE",
    "LOT",
    "NONE",
    "NONE",
    "SERIAL",
)

#: Product families: (category, name stem, weight range kg, cost range, shelf life days).
FAMILIES: Final[tuple[tuple[str, str, tuple[float, float], tuple[float, float], int], ...]] = (
    ("electronics", "Wireless Earbuds", (0.05, 0.4), (8.0, 60.0), 0),
    ("electronics", "USB-C Charger", (0.08, 0.3), (3.0, 25.0), 0),
    ("home", "Ceramic Mug", (0.3, 0.6), (1.5, 9.0), 0),
    ("beauty", "Face Serum", (0.05, 0.2), (2.0, 30.0), 540),
    ("food", "Green Tea", (0.1, 1.0), (1.0, 12.0), 365),
    ("food", "Protein Bar Box", (0.4, 1.2), (4.0, 20.0), 270),
    ("apparel", "Running Jacket", (0.3, 0.9), (12.0, 80.0), 0),
    ("toys", "Building Blocks Set", (0.5, 2.5), (6.0, 45.0), 0),
    ("health", "Vitamin C Tablets", (0.1, 0.4), (2.0, 15.0), 730),
)
COLORS: Final[tuple[str, ...]] = ("black", "white", "red", "blue", "green", "grey")
SIZES: Final[tuple[str, ...]] = ("XS", "S", "M", "L", "XL")
SELLER_WORDS: Final[tuple[str, ...]] = (
    "Shenzhen",
    "Yiwu",
    "Ningbo",
    "Hangzhou",
    "Guangzhou",
    "Xiamen",
    "Bright",
    "Star",
    "Ocean",
    "Dragon",
    "Lotus",
    "Jade",
)

OPERATOR: Final[str] = "seed"
NULL: Final[str] = "\\N"


@dataclass(frozen=True)
class SeedSize:
    """Shape of one region's data, derived from its target number of balance rows."""

    balance_rows: int

    @property
    def owners(self) -> int:
        return min(300, max(3, self.balance_rows // 10_000))

    @property
    def skus_per_owner(self) -> int:
        return max(3, math.ceil(max(9, self.balance_rows // 30) / self.owners))

    @property
    def storage_locations(self) -> int:
        return max(8, self.balance_rows // 150)

    @property
    def pick_locations(self) -> int:
        return max(2, self.storage_locations // 4)

    @property
    def lots_per_sku(self) -> int:
        return 3 if self.balance_rows < 1000 else 4


def parse_size(text: str) -> SeedSize:
    """A preset name ('tiny', 'small', 'medium', 'large') or a number of balance rows per
    region (underscores and a k/M suffix allowed: '250k', '3.4M')."""
    key = text.strip().lower().replace("_", "")
    if key in SIZE_PRESETS:
        return SeedSize(SIZE_PRESETS[key])
    multipliers = {"k": 1_000, "m": 1_000_000}
    try:
        if key and key[-1] in multipliers:
            rows = int(float(key[:-1]) * multipliers[key[-1]])
        else:
            rows = int(key)
    except ValueError as exc:
        raise SeedError(f"bad size {text!r}: a preset {sorted(SIZE_PRESETS)} or a number") from exc
    if rows < 1:
        raise SeedError(f"bad size {text!r}: must be positive")
    return SeedSize(rows)


@dataclass
class SeedReport:
    """What one region's seed wrote and how fast."""

    region: str
    rows_by_table: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows_by_table.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- text COPY


def _esc(value: str) -> str:
    """Escape a free-text value for COPY text format."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _cell(value: object) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return _esc(value)
    return str(value)


def _line(values: Iterable[object]) -> str:
    return "\t".join(_cell(v) for v in values) + "\n"


class _Copy:
    """COPY of one table fed with text lines, flushed in ~1 MB chunks."""

    def __init__(self, cur: psycopg.Cursor[Any], table: str, columns: Sequence[str]) -> None:
        self._cur = cur
        self._stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        self.rows = 0

    def write(self, lines: Iterable[str]) -> int:
        buf: list[str] = []
        size = 0
        with self._cur.copy(self._stmt) as copy:
            for line in lines:
                buf.append(line)
                size += len(line)
                self.rows += 1
                if size >= 1 << 20:
                    copy.write("".join(buf).encode())
                    buf.clear()
                    size = 0
            if buf:
                copy.write("".join(buf).encode())
        return self.rows


def _copy(
    cur: psycopg.Cursor[Any], table: str, columns: Sequence[str], lines: Iterable[str]
) -> int:
    return _Copy(cur, table, columns).write(lines)


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class OwnerSpec:
    code: str
    name: str


@dataclass(frozen=True)
class SkuSpec:
    owner_code: str
    sku_code: str
    barcode: str
    name: str
    tracking: str
    shelf_life_days: int | None
    weight_kg: str
    unit_cost: str
    attributes: str


def ean13(body12: str) -> str:
    """An EAN-13 barcode from 12 digits (adds the check digit)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body12))
    return body12 + str((10 - total % 10) % 10)


def catalogue(seed: int, size: SeedSize) -> tuple[list[OwnerSpec], list[SkuSpec]]:
    """Owners and SKUs, identical in every region (derived from the seed only)."""
    rng = random.Random(f"{seed}:catalogue")
    owners = [
        OwnerSpec(
            code=f"SELLER-{i + 1:04d}",
            name=f"{rng.choice(SELLER_WORDS)} {rng.choice(SELLER_WORDS)} Trading Co. #{i + 1}",
        )
        for i in range(size.owners)
    ]
    skus: list[SkuSpec] = []
    for oi, owner in enumerate(owners):
        for j in range(size.skus_per_owner):
            tracking = TRACKING_CYCLE[j % len(TRACKING_CYCLE)]
            fam = FAMILIES[rng.randrange(len(FAMILIES))]
            category, stem, (w_lo, w_hi), (c_lo, c_hi), shelf = fam
            if tracking == "LOT" and shelf == 0:
                shelf = rng.choice((180, 365, 730))
            color = rng.choice(COLORS)
            attrs: dict[str, object] = {
                "category": category,
                "color": color,
                "hs_code": f"{rng.randint(3900, 9600)}.{rng.randint(10, 99)}",
                "dims_cm": [rng.randint(2, 60), rng.randint(2, 40), rng.randint(1, 30)],
                "origin": rng.choice(("CN", "VN", "MY", "TH")),
            }
            if category == "apparel":
                attrs["size"] = rng.choice(SIZES)
            skus.append(
                SkuSpec(
                    owner_code=owner.code,
                    sku_code=f"{owner.code[-4:]}-{category[:3].upper()}-{j + 1:05d}",
                    barcode=ean13(f"69{oi:04d}{j:06d}"[:12]),
                    name=f"{stem} {color.title()} #{j + 1}",
                    tracking=tracking,
                    shelf_life_days=shelf if tracking == "LOT" else None,
                    weight_kg=f"{rng.uniform(w_lo, w_hi):.3f}",
                    unit_cost=f"{rng.uniform(c_lo, c_hi):.4f}",
                    attributes=json.dumps(attrs, sort_keys=True),
                )
            )
    return owners, skus


def region_warehouses(region: Region) -> tuple[tuple[str, str, str, str], ...]:
    """The region's warehouses; an unknown region gets two generic ones."""
    known = WAREHOUSES_BY_REGION.get(region.name)
    if known is not None:
        return known
    tag = region.slug.upper()[:6]
    return tuple((f"{tag}-WH-{i}", f"{region.name} DC {i}", "ZZ", "UTC") for i in (1, 2))


def _rotate(items: Sequence[Any], by: int) -> list[Any]:
    if not items:
        return []
    k = by % len(items)
    return list(items[k:]) + list(items[:k])


# --------------------------------------------------------------------------- the seed


@dataclass
class _Ctx:
    rng: random.Random
    region: Region
    size: SeedSize
    as_of: date
    ts: list[str]  # ts[i] = as_of midnight UTC minus i hours, formatted


def _timestamps(as_of: date, hours: int = 24 * 400) -> list[str]:
    base = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    return [(base - timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S+00") for h in range(hours)]


def _ids(cur: psycopg.Cursor[Any], query: str) -> dict[Any, int]:
    cur.execute(query)
    return {tuple(r[1:]) if len(r) > 2 else r[1]: r[0] for r in cur.fetchall()}


def seed_region(
    conn: psycopg.Connection[Any],
    region: Region,
    *,
    seed: int,
    size: SeedSize,
    as_of: date | None = None,
) -> SeedReport:
    """Seed one empty WMS database in one transaction; returns row counts and timing."""
    started = time.perf_counter()
    as_of = as_of or datetime.now(UTC).date()
    report = SeedReport(region=region.name)
    ctx = _Ctx(
        rng=random.Random(f"{seed}:{region.name}"),
        region=region,
        size=size,
        as_of=as_of,
        ts=_timestamps(as_of),
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        su = cur.fetchone()
        if su is not None and su[0]:
            # Bulk load as a superuser: skip per-row FK triggers (3-4x faster); the
            # references are checked once at the end by _verify_references.
            cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("SELECT count(*) FROM warehouse")
        row = cur.fetchone()
        if row is None or row[0] != 0:
            raise SeedError(f"{region.name}: database is not empty; seed a fresh one")
        _seed_all(cur, ctx, seed, report.rows_by_table)
        if su is not None and su[0]:
            cur.execute("SET LOCAL session_replication_role = origin")
            _verify_references(cur)
    # fresh statistics, or the first workload queries plan against empty tables
    # (a role that owns no table gets a warning per table, not an error)
    conn.execute("ANALYZE")
    report.seconds = time.perf_counter() - started
    return report


def _seed_all(cur: psycopg.Cursor[Any], ctx: _Ctx, seed: int, counts: dict[str, int]) -> None:
    rng, region, size, ts0 = ctx.rng, ctx.region, ctx.size, ctx.ts[0]
    owners, skus = catalogue(seed, size)

    # warehouses
    whs = region_warehouses(region)
    counts["warehouse"] = _copy(
        cur,
        "warehouse",
        ("code", "name", "country", "timezone", "created_at", "updated_at"),
        (_line((c, n, co, tz, ts0, ts0)) for c, n, co, tz in whs),
    )
    wh_ids: dict[str, int] = _ids(cur, "SELECT id, code FROM warehouse")

    # owners and SKUs, in a region-dependent order
    counts["owner"] = _copy(
        cur,
        "owner",
        ("code", "name", "status", "created_at", "updated_at"),
        (_line((o.code, o.name, "ACTIVE", ts0, ts0)) for o in _rotate(owners, region.index * 7)),
    )
    owner_ids: dict[str, int] = _ids(cur, "SELECT id, code FROM owner")
    sku_order = _rotate(skus, region.index * 11)
    counts["sku"] = _copy(
        cur,
        "sku",
        (
            "owner_id",
            "sku_code",
            "barcode",
            "name",
            "uom",
            "tracking",
            "shelf_life_days",
            "weight_kg",
            "unit_cost",
            "attributes",
            "created_at",
            "updated_at",
        ),
        (
            _line(
                (
                    owner_ids[s.owner_code],
                    s.sku_code,
                    s.barcode,
                    s.name,
                    "EA",
                    s.tracking,
                    s.shelf_life_days,
                    s.weight_kg,
                    s.unit_cost,
                    s.attributes,
                    ts0,
                    ts0,
                )
            )
            for s in sku_order
        ),
    )
    sku_ids: dict[tuple[int, str], int] = _ids(cur, "SELECT id, owner_id, sku_code FROM sku")
    sku_rows = [
        (sku_ids[(owner_ids[s.owner_code], s.sku_code)], owner_ids[s.owner_code], s) for s in skus
    ]

    # locations
    def loc_lines() -> Iterator[str]:
        for wh_code, *_ in whs:
            wid = wh_ids[wh_code]
            seq = 0
            for i in range(size.storage_locations):
                aisle, rest = divmod(i, 40)
                bay, level = divmod(rest, 4)
                seq += 1
                code = f"A{aisle + 1:02d}-{bay + 1:02d}-{level + 1}"
                yield _line((wid, code, "S", "STORAGE", True, seq, True))
            for i in range(size.pick_locations):
                seq += 1
                yield _line(
                    (wid, f"P{i // 50 + 1:02d}-{i % 50 + 1:03d}", "P", "PICK", True, seq, True)
                )
            for loc_type, n in SUPPORT_LOCATIONS.items():
                for i in range(n):
                    code = f"{ZONE_BY_LOC_TYPE[loc_type]}-{i + 1:02d}"
                    yield _line(
                        (
                            wid,
                            code,
                            ZONE_BY_LOC_TYPE[loc_type],
                            loc_type,
                            SELLABLE_BY_LOC_TYPE[loc_type],
                            0,
                            True,
                        )
                    )

    counts["location"] = _copy(
        cur,
        "location",
        ("warehouse_id", "code", "zone", "loc_type", "sellable", "pick_seq", "active"),
        loc_lines(),
    )
    cur.execute("SELECT id, warehouse_id, loc_type FROM location ORDER BY id")
    locs_by_wh_type: dict[tuple[int, str], list[int]] = {}
    for lid, wid, lt in cur.fetchall():
        locs_by_wh_type.setdefault((wid, lt), []).append(lid)

    # lots: per LOT SKU, lot 0 expired, lot 1 expiring within two weeks, the rest later
    lot_specs: list[tuple[int, str, str, str, str, str]] = []
    for sku_id, _oid, s in sku_rows:
        if s.tracking != "LOT":
            continue
        shelf = s.shelf_life_days or 365
        for k in range(size.lots_per_sku):
            remaining = {0: -rng.randint(1, 60), 1: rng.randint(1, 14)}.get(
                k, rng.randint(30, shelf)
            )
            expiry = ctx.as_of + timedelta(days=remaining)
            production = expiry - timedelta(days=shelf)
            received = ctx.ts[min(len(ctx.ts) - 1, max(0, (ctx.as_of - production).days) * 24)]
            lot_no = f"L{production:%y%m%d}-{k + 1}"
            lot_specs.append((sku_id, lot_no, str(production), str(expiry), received, ts0))
    counts["lot"] = _copy(
        cur,
        "lot",
        (
            "sku_id",
            "lot_no",
            "supplier_lot",
            "production_date",
            "expiry_date",
            "origin_country",
            "first_received_at",
            "created_at",
        ),
        (
            _line((sid, no, f"SUP-{no}", prod, exp, "CN", rec, created))
            for sid, no, prod, exp, rec, created in lot_specs
        ),
    )
    cur.execute("SELECT l.id, l.sku_id, l.expiry_date < %s FROM lot l ORDER BY l.id", (ctx.as_of,))
    lots_by_sku: dict[int, list[tuple[int, bool]]] = {}
    for lot_id, sku_id, expired in cur.fetchall():
        lots_by_sku.setdefault(sku_id, []).append((lot_id, bool(expired)))

    # containers: every 4th storage location holds a pallet with two cartons
    def container_lines(parent: bool) -> Iterator[str]:
        for wh_code, *_ in whs:
            wid = wh_ids[wh_code]
            for i, lid in enumerate(locs_by_wh_type[(wid, "STORAGE")][::4]):
                if parent:
                    yield _line(
                        (wid, f"{wh_code}-P{i + 1:07d}", "PALLET", None, lid, "ACTIVE", ts0, ts0)
                    )

    counts["container"] = _copy(
        cur,
        "container",
        (
            "warehouse_id",
            "lpn",
            "kind",
            "parent_id",
            "location_id",
            "status",
            "created_at",
            "updated_at",
        ),
        container_lines(True),
    )
    cur.execute("SELECT id, warehouse_id, location_id, lpn FROM container ORDER BY id")
    pallets = cur.fetchall()
    counts["container"] += _copy(
        cur,
        "container",
        (
            "warehouse_id",
            "lpn",
            "kind",
            "parent_id",
            "location_id",
            "status",
            "created_at",
            "updated_at",
        ),
        (
            _line((wid, f"{lpn.replace('-P', '-C')}-{c}", "CARTON", pid, lid, "ACTIVE", ts0, ts0))
            for pid, wid, lid, lpn in pallets
            for c in (1, 2)
        ),
    )
    cur.execute("SELECT id, location_id FROM container ORDER BY id")
    containers_by_loc: dict[int, list[int]] = {}
    for cid, lid in cur.fetchall():
        containers_by_loc.setdefault(lid, []).append(cid)

    _seed_stock(cur, ctx, wh_ids, sku_rows, locs_by_wh_type, lots_by_sku, containers_by_loc, counts)
    _seed_orders(cur, ctx, wh_ids, sku_rows, locs_by_wh_type, lots_by_sku, counts)


#: Foreign keys checked after a trigger-less bulk load: (table, column, referenced table).
REFERENCES: Final[tuple[tuple[str, str, str], ...]] = (
    ("sku", "owner_id", "owner"),
    ("location", "warehouse_id", "warehouse"),
    ("lot", "sku_id", "sku"),
    ("container", "location_id", "location"),
    ("container", "parent_id", "container"),
    ("inventory", "location_id", "location"),
    ("inventory", "sku_id", "sku"),
    ("inventory", "lot_id", "lot"),
    ("inventory", "container_id", "container"),
    ("serial_number", "sku_id", "sku"),
    ("serial_number", "location_id", "location"),
    ("inventory_txn", "sku_id", "sku"),
    ("inventory_txn", "lot_id", "lot"),
    ("inventory_txn", "serial_id", "serial_number"),
    ("inventory_txn", "to_location_id", "location"),
    ("inventory_hold", "location_id", "location"),
    ("inbound_line", "inbound_order_id", "inbound_order"),
    ("inbound_line", "sku_id", "sku"),
    ("outbound_line", "outbound_order_id", "outbound_order"),
    ("outbound_line", "lot_id", "lot"),
)


def _verify_references(cur: psycopg.Cursor[Any]) -> None:
    """Fail the seed if any reference written without FK triggers is dangling."""
    for table, column, target in REFERENCES:
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {t} x WHERE x.{c} IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM {r} y WHERE y.id = x.{c})"
            ).format(t=sql.Identifier(table), c=sql.Identifier(column), r=sql.Identifier(target))
        )
        row = cur.fetchone()
        if row is not None and row[0]:
            raise SeedError(f"seed bug: {row[0]} dangling {table}.{column} -> {target}")


#: Extra (non-AVAILABLE) balance rows: status, location type, hold type, period offset.
EXTRA_ROWS: Final[tuple[tuple[str, str, str | None, int], ...]] = (
    ("PENDING_PUTAWAY", "RECEIVING", None, 1),
    ("QC_HOLD", "QC", "QC", 3),
    ("FROZEN", "STORAGE", "RECALL", 5),
    ("DAMAGED", "DAMAGE", None, 7),
    ("RETURNED", "RETURNS", None, 9),
    ("EXPIRED", "STORAGE", None, 11),
)


def _seed_stock(
    cur: psycopg.Cursor[Any],
    ctx: _Ctx,
    wh_ids: dict[str, int],
    sku_rows: list[tuple[int, int, SkuSpec]],
    locs_by_wh_type: dict[tuple[int, str], list[int]],
    lots_by_sku: dict[int, list[tuple[int, bool]]],
    containers_by_loc: dict[int, list[int]],
    counts: dict[str, int],
) -> None:
    """Balance rows, their serials, holds and opening ledger rows."""
    rng, size, ts = ctx.rng, ctx.size, ctx.ts
    n_ts = len(ts)
    combos = len(wh_ids) * len(sku_rows)
    per_combo = size.balance_rows / max(1, combos)
    period = max(12, min(25, combos))
    rtag = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[ctx.region.index % 26]

    inv_lines: list[str] = []
    serial_lines: list[str] = []
    serial_meta: list[tuple[int, int, int, int | None, int, str, str]] = []
    ledger_lines: list[str] = []
    hold_lines: list[str] = []
    serial_no = 0
    combo = 0
    inv_count = 0

    def inv_copy() -> _Copy:
        return _Copy(
            cur,
            "inventory",
            (
                "warehouse_id",
                "location_id",
                "owner_id",
                "sku_id",
                "lot_id",
                "container_id",
                "status",
                "qty_on_hand",
                "qty_allocated",
                "in_date",
                "last_movement_at",
                "version",
            ),
        )

    inv = inv_copy()

    def flush_inv() -> None:
        nonlocal inv_count
        if inv_lines:
            inv_count += len(inv_lines)
            inv.write(inv_lines)
            inv_lines.clear()

    for wh_code in sorted(wh_ids, key=lambda c: wh_ids[c]):
        wid = wh_ids[wh_code]
        sellable = locs_by_wh_type[(wid, "STORAGE")] + locs_by_wh_type[(wid, "PICK")]
        for sku_id, owner_id, s in sku_rows:
            combo += 1
            k = int(per_combo) + (1 if rng.random() < per_combo - int(per_combo) else 0)
            k = max(1, min(k, len(sellable)))
            lots = lots_by_sku.get(sku_id, [])
            serial = s.tracking == "SERIAL"
            rows: list[tuple[int, int | None, int | None, str, int, str | None]] = []
            for lid in rng.sample(sellable, k):
                lot = lots[rng.randrange(len(lots))][0] if lots else None
                cont_choices = containers_by_loc.get(lid)
                cont = (
                    cont_choices[rng.randrange(len(cont_choices))]
                    if cont_choices and not serial and rng.random() < 0.5
                    else None
                )
                qty = rng.randint(1, 3) if serial else int(rng.paretovariate(1.2) * 8)
                rows.append((lid, lot, cont, "AVAILABLE", max(1, qty), None))
            for status, loc_type, hold_type, offset in EXTRA_ROWS:
                if combo % period != offset:
                    continue
                lot = None
                if lots:
                    lot = lots[0][0] if status == "EXPIRED" else lots[rng.randrange(len(lots))][0]
                elif status == "EXPIRED":
                    continue
                lid = rng.choice(locs_by_wh_type[(wid, loc_type)])
                if status == "FROZEN" and not any(r[0] == lid for r in rows):
                    lid = rows[0][0]
                qty = rng.randint(1, 3) if serial else rng.randint(1, 60)
                rows.append((lid, lot, None, status, qty, hold_type))
            for lid, lot, cont, status, qty, hold_type in rows:
                h = rng.randrange(24, n_ts)
                in_date = ts[h]
                inv_lines.append(
                    f"{wid}\t{lid}\t{owner_id}\t{sku_id}\t{NULL if lot is None else lot}\t"
                    f"{NULL if cont is None else cont}\t{status}\t{qty}\t0\t"
                    f"{in_date}\t{in_date}\t1\n"
                )
                if hold_type is not None:
                    hold_lines.append(
                        _line(
                            (
                                wid,
                                owner_id,
                                sku_id,
                                lot,
                                lid,
                                hold_type,
                                "ACTIVE",
                                qty,
                                "opening balance",
                                OPERATOR,
                                in_date,
                                None,
                            )
                        )
                    )
                if serial:
                    sstatus = {"DAMAGED": "DAMAGED", "RETURNED": "RETURNED"}.get(status, "IN_STOCK")
                    for _ in range(qty):
                        serial_no += 1
                        serial_lines.append(
                            f"{sku_id}\t{owner_id}\tSN{rtag}{serial_no:09d}\t{NULL}\t{wid}\t{lid}\t"
                            f"{sstatus}\t{in_date}\t{2 if status == 'RETURNED' else 1}\t"
                            f"{in_date}\n"
                        )
                        serial_meta.append((wid, owner_id, sku_id, lot, lid, status, in_date))
                else:
                    ledger_lines.append(
                        f"{in_date}\tRECEIVE\t{wid}\t{owner_id}\t{sku_id}\t"
                        f"{NULL if lot is None else lot}\t{NULL}\t{NULL}\t{lid}\t{NULL}\t{status}\t"
                        f"{qty}\t{qty}\t0\tOPENING\tOPENING\tOPENING-BALANCE\t{OPERATOR}\n"
                    )
            if len(inv_lines) >= 20_000:
                flush_inv()
    flush_inv()
    counts["inventory"] = inv_count
    counts["serial_number"] = _copy(
        cur,
        "serial_number",
        (
            "sku_id",
            "owner_id",
            "serial_no",
            "lot_id",
            "warehouse_id",
            "location_id",
            "status",
            "received_at",
            "receive_count",
            "updated_at",
        ),
        serial_lines,
    )
    del serial_lines
    cur.execute("SELECT id FROM serial_number ORDER BY id")
    serial_ids = [r[0] for r in cur.fetchall()]
    for sid, (wid, owner_id, sku_id, lot, lid, status, in_date) in zip(
        serial_ids, serial_meta, strict=True
    ):
        ledger_lines.append(
            f"{in_date}\tRECEIVE\t{wid}\t{owner_id}\t{sku_id}\t{NULL if lot is None else lot}\t"
            f"{sid}\t{NULL}\t{lid}\t{NULL}\t{status}\t1\t1\t0\tOPENING\tOPENING\tOPENING-BALANCE\t"
            f"{OPERATOR}\n"
        )
    counts["inventory_txn"] = _copy(
        cur,
        "inventory_txn",
        (
            "occurred_at",
            "txn_type",
            "warehouse_id",
            "owner_id",
            "sku_id",
            "lot_id",
            "serial_id",
            "from_location_id",
            "to_location_id",
            "from_status",
            "to_status",
            "qty",
            "d_on_hand",
            "d_allocated",
            "reason_code",
            "ref_type",
            "ref_no",
            "operator",
        ),
        ledger_lines,
    )
    counts["inventory_hold"] = _copy(
        cur,
        "inventory_hold",
        (
            "warehouse_id",
            "owner_id",
            "sku_id",
            "lot_id",
            "location_id",
            "hold_type",
            "status",
            "qty",
            "reason",
            "created_by",
            "created_at",
            "released_at",
        ),
        hold_lines,
    )


def _seed_orders(
    cur: psycopg.Cursor[Any],
    ctx: _Ctx,
    wh_ids: dict[str, int],
    sku_rows: list[tuple[int, int, SkuSpec]],
    locs_by_wh_type: dict[tuple[int, str], list[int]],
    lots_by_sku: dict[int, list[tuple[int, bool]]],
    counts: dict[str, int],
) -> None:
    """Open inbound orders (inbound_expected) and new outbound orders for the runner."""
    rng, size, ts = ctx.rng, ctx.size, ctx.ts
    n_in = max(2, size.balance_rows // 400)
    n_out = max(2, size.balance_rows // 800)
    statuses = ("CREATED", "IN_TRANSIT", "ARRIVED")
    in_orders: list[tuple[int, int, str, str, str, str, str, str]] = []
    out_orders: list[tuple[int, int, str, str, str, str, str, str]] = []
    for wh_code in sorted(wh_ids, key=lambda c: wh_ids[c]):
        wid = wh_ids[wh_code]
        for i in range(n_in):
            owner_id = sku_rows[rng.randrange(len(sku_rows))][1]
            created = ts[rng.randrange(24, 24 * 20)]
            eta = str(ctx.as_of + timedelta(days=rng.randint(0, 30)))
            in_orders.append(
                (
                    wid,
                    owner_id,
                    f"PO-{wh_code}-{i + 1:07d}",
                    "PURCHASE",
                    statuses[i % 3],
                    f"REF-{rng.randrange(10**8):08d}",
                    eta,
                    created,
                )
            )
        for i in range(n_out):
            owner_id = sku_rows[rng.randrange(len(sku_rows))][1]
            created = ts[rng.randrange(0, 24)]
            rule = ("FEFO", "FIFO", "FEFO", "SPECIFIED")[i % 4]
            out_orders.append(
                (
                    wid,
                    owner_id,
                    f"SO-{wh_code}-{i + 1:07d}",
                    ("B2C", "B2B")[i % 2],
                    "CREATED",
                    rule,
                    f"AMZ-{rng.randrange(10**10):010d}",
                    created,
                )
            )
    counts["inbound_order"] = _copy(
        cur,
        "inbound_order",
        (
            "warehouse_id",
            "owner_id",
            "order_no",
            "order_type",
            "status",
            "owner_ref",
            "eta",
            "created_at",
            "updated_at",
        ),
        (_line((*o, o[-1])) for o in in_orders),
    )
    counts["outbound_order"] = _copy(
        cur,
        "outbound_order",
        (
            "warehouse_id",
            "owner_id",
            "order_no",
            "order_type",
            "status",
            "lot_rule",
            "platform_order_no",
            "created_at",
            "updated_at",
        ),
        (_line((*o, o[-1])) for o in out_orders),
    )
    skus_by_owner: dict[int, list[tuple[int, SkuSpec]]] = {}
    for sku_id, owner_id, s in sku_rows:
        skus_by_owner.setdefault(owner_id, []).append((sku_id, s))

    cur.execute("SELECT id, owner_id, created_at FROM inbound_order ORDER BY id")
    in_lines: list[str] = []
    for oid, owner_id, created in cur.fetchall():
        for _ in range(rng.randint(1, 3)):
            sku_id, s = rng.choice(skus_by_owner[owner_id])
            lot_no = prod = exp = None
            if s.tracking == "LOT":
                p = ctx.as_of - timedelta(days=rng.randint(1, 20))
                lot_no = f"L{p:%y%m%d}-N{rng.randint(1, 9)}"
                prod, exp = str(p), str(p + timedelta(days=s.shelf_life_days or 365))
            qty = rng.randint(1, 10) if s.tracking == "SERIAL" else rng.randint(10, 500)
            in_lines.append(_line((oid, sku_id, lot_no, prod, exp, qty, 0, 0, created)))
    counts["inbound_line"] = _copy(
        cur,
        "inbound_line",
        (
            "inbound_order_id",
            "sku_id",
            "lot_no",
            "production_date",
            "expiry_date",
            "qty_expected",
            "qty_received",
            "qty_damaged",
            "updated_at",
        ),
        in_lines,
    )
    cur.execute("SELECT id, owner_id, lot_rule, created_at FROM outbound_order ORDER BY id")
    out_lines: list[str] = []
    for oid, owner_id, rule, created in cur.fetchall():
        candidates = skus_by_owner[owner_id]
        if rule == "SPECIFIED":
            lot_skus = [c for c in candidates if c[0] in lots_by_sku]
            sku_id, _s = rng.choice(lot_skus or candidates)
            lots = [lot for lot, expired in lots_by_sku.get(sku_id, []) if not expired]
            lot_id = rng.choice(lots) if lots else None
            out_lines.append(_line((oid, sku_id, lot_id, rng.randint(1, 5), 0, 0, created)))
            continue
        for sku_id, _s in rng.sample(candidates, min(len(candidates), rng.randint(1, 2))):
            out_lines.append(_line((oid, sku_id, None, rng.randint(1, 5), 0, 0, created)))
    counts["outbound_line"] = _copy(
        cur,
        "outbound_line",
        (
            "outbound_order_id",
            "sku_id",
            "lot_id",
            "qty_ordered",
            "qty_allocated",
            "qty_shipped",
            "updated_at",
        ),
        out_lines,
    )
