"""A synthetic read model for benchmarks and tests: master data, balance rows, lots,
serials, ledger, inbound and outbound orders of several regions.

The bulk is generated inside ClickHouse (`INSERT … SELECT … FROM numbers()` with the
same columns the projection writer writes, through the same `wms_*` tables, so the
materialized views feed the read-path copies exactly as in production): writing 10M
rows through `ProjectionWriter` would take many minutes of Python, and the read path
does not care who inserted a row. On top of the bulk, `live_transactions` writes real
WMS transactions (moves, deletes, a half-written batch) through `ProjectionWriter`.

Every generated row is a function of (region index, row number), so a benchmark can pick
keys that exist without asking the database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from read_model.writer import ProjectionWriter
from schemas.events import Op, RowChange, Snapshot, Transaction, Watermark
from schemas.wms_model import WMS_MODEL

REGIONS = ("us-west", "eu-central", "ap-southeast")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
ROWS_PER_SKU = 33
WAREHOUSES = 3


@dataclass(frozen=True, slots=True)
class Shape:
    """Sizes of one region's data (every region has the same shape)."""

    rows: int  # base balance rows of the region
    skus_per_owner: int
    locations: int  # per warehouse

    @property
    def skus(self) -> int:
        # a multiple of 10 (serial-tracked SKUs are every tenth) and of skus_per_owner
        per = self.skus_per_owner
        return max(per, (self.rows // ROWS_PER_SKU) // per * per)

    @property
    def owners(self) -> int:
        return self.skus // self.skus_per_owner

    @property
    def lsn_updates(self) -> int:
        return 1000 + self.rows

    @property
    def lsn_deletes(self) -> int:
        return 1000 + 2 * self.rows

    @property
    def watermark(self) -> int:
        return 1000 + 3 * self.rows + 10


def shape_for(total_rows: int) -> Shape:
    """Per-region shape for `total_rows` base balance rows over all regions."""
    per_region = total_rows // len(REGIONS)
    per_owner = 500 if per_region >= 1_000_000 else 100
    locations = 20_000 if per_region >= 1_000_000 else 500
    return Shape(per_region, per_owner, locations)


def owner_code(o: int) -> str:
    return f"OW{o:04d}"


def sku_code(s: int) -> str:
    return f"SKU-{s:05d}"


def warehouse_code(ri: int, w: int) -> str:
    return f"{REGIONS[ri].upper()}-WH{w}"


# Sku of balance row `number` (1-based id within the region; sku index = id - 1).
_SKU = "toInt64(number % {nsku:UInt64} + 1)"
_OWNER_OF_SKU = "toInt64(intDiv({sku} - 1, {{per:UInt64}}) + 1 + {{ri:UInt32}})"

_MASTER = [
    """INSERT INTO wms_warehouse (region, id, code, name, country, timezone, created_at,
        updated_at, _lsn, _commit_lsn, _is_deleted, _extra)
    SELECT {region:String}, toInt64(number + 1),
        concat(upper({region:String}), '-WH', toString(number + 1)), 'Warehouse', 'US', 'UTC',
        {t0:DateTime64(6, 'UTC')}, {t0:DateTime64(6, 'UTC')}, 99, 100, 0, map()
    FROM numbers(3)""",
    """INSERT INTO wms_owner (region, id, code, name, status, created_at, updated_at, _lsn,
        _commit_lsn, _is_deleted, _extra)
    SELECT {region:String}, toInt64(number + 1 + {ri:UInt32}),
        concat('OW', leftPad(toString(number), 4, '0')), 'Seller', 'ACTIVE',
        {t0:DateTime64(6, 'UTC')}, {t0:DateTime64(6, 'UTC')}, 99, 100, 0, map()
    FROM numbers({owners:UInt64})""",
    """INSERT INTO wms_sku (region, id, owner_id, sku_code, barcode, name, uom, tracking,
        shelf_life_days, weight_kg, unit_cost, attributes, created_at, updated_at, _lsn,
        _commit_lsn, _is_deleted, _extra)
    SELECT {region:String}, toInt64(number + 1),
        toInt64(intDiv(number, {per:UInt64}) + 1 + {ri:UInt32}),
        concat('SKU-', leftPad(toString(number % {per:UInt64}), 5, '0')), NULL, 'Item', 'EA',
        if(number % 10 = 0, 'SERIAL', 'LOT'), NULL, NULL, NULL, '{}',
        {t0:DateTime64(6, 'UTC')}, {t0:DateTime64(6, 'UTC')}, 99, 100, 0, map()
    FROM numbers({nsku:UInt64})""",
    """INSERT INTO wms_location (region, id, warehouse_id, code, zone, loc_type, sellable,
        pick_seq, active, _lsn, _commit_lsn, _is_deleted, _extra)
    SELECT {region:String}, toInt64(number + 1), toInt64(intDiv(number, {locs:UInt64}) + 1),
        concat('L-', toString(number % {locs:UInt64})), 'Z',
        if(number % 10 < 4, ['RECEIVING', 'STAGING', 'DAMAGE', 'RETURNS'][number % 10 + 1],
            'STORAGE'),
        number % 10 >= 4, 0, true, 99, 100, 0, map()
    FROM numbers({nlocs:UInt64})""",
    """INSERT INTO wms_lot (region, id, sku_id, lot_no, supplier_lot, production_date,
        expiry_date, origin_country, first_received_at, created_at, _lsn, _commit_lsn,
        _is_deleted, _extra)
    SELECT {region:String}, toInt64(intDiv(number, 3) + 1) * 3 + number % 3,
        toInt64(intDiv(number, 3) + 1), concat('LOT-', toString(number % 3)), NULL,
        toDate32('2025-06-01') + number % 90,
        if(number % 3 = 2, NULL, toDate32('2026-03-01') + (number * 7) % 400), NULL,
        {t0:DateTime64(6, 'UTC')} + toIntervalSecond(number % 1000),
        {t0:DateTime64(6, 'UTC')}, 99, 100, 0, map()
    FROM numbers({nsku:UInt64} * 3)""",
    """INSERT INTO wms_inbound_order (region, id, warehouse_id, owner_id, order_no,
        order_type, status, owner_ref, eta, created_at, updated_at, _lsn, _commit_lsn,
        _is_deleted, _extra)
    SELECT {region:String}, toInt64(number + 1), toInt64(number % 3 + 1),
        toInt64(intDiv(number, 3) + 1 + {ri:UInt32}), concat('IN-', toString(number)),
        'PURCHASE', ['CREATED', 'IN_TRANSIT', 'RECEIVING', 'CLOSED'][intDiv(number, 3) % 4 + 1],
        NULL, NULL, {t0:DateTime64(6, 'UTC')}, {t0:DateTime64(6, 'UTC')}, 99, 100, 0, map()
    FROM numbers({owners:UInt64} * 3)""",
    # every fourth SKU has one inbound line, on an order of its owner at warehouse sku % 3
    """INSERT INTO wms_inbound_line (region, id, inbound_order_id, sku_id, lot_no,
        production_date, expiry_date, qty_expected, qty_received, qty_damaged, updated_at,
        _lsn, _commit_lsn, _is_deleted, _extra)
    SELECT {region:String}, toInt64(number + 1),
        toInt64(intDiv(number, {per:UInt64}) * 3 + number % 3 + 1), toInt64(number + 1), NULL,
        NULL, NULL, 50, toInt32(number % 70), 0, {t0:DateTime64(6, 'UTC')}, 99, 100, 0, map()
    FROM numbers({nsku:UInt64}) WHERE number % 4 = 0""",
]

# Balance rows: mod 1 = the base version of every row; mod 5 = a second version (an
# update, qty + 1) of every fifth row; mod 31 = a delete of every 31st row.
_INVENTORY = f"""INSERT INTO wms_inventory (region, id, warehouse_id, location_id, owner_id,
    sku_id, lot_id, container_id, status, qty_on_hand, qty_allocated, in_date,
    last_movement_at, version, _lsn, _commit_lsn, _is_deleted, _extra)
SELECT {{region:String}}, toInt64(number + 1), w,
    toInt64((w - 1) * {{locs:UInt64}} + cityHash64(number, 7) % {{locs:UInt64}} + 1),
    {_OWNER_OF_SKU.format(sku="sku")}, sku, if(number % 10 = 9, NULL, sku * 3 + number % 3),
    NULL, st, q, if(st = 'AVAILABLE', toInt32(intDiv(q * (cityHash64(number, 5) % 3), 4)), 0),
    {{t0:DateTime64(6, 'UTC')}} + toIntervalSecond(number),
    {{t0:DateTime64(6, 'UTC')}} + toIntervalSecond(number), 1,
    {{lsn:UInt64}} + number, {{lsn:UInt64}} + number + 1, {{del:UInt8}}, map()
FROM
(
    SELECT number, {_SKU} AS sku, toInt64(cityHash64(number, 1) % 3 + 1) AS w,
        ['PENDING_PUTAWAY', 'QC_HOLD', 'FROZEN', 'DAMAGED', 'RETURNED', 'EXPIRED']
            [cityHash64(number, 3) % 20 + 1] AS st0,
        if(st0 = '', 'AVAILABLE', st0) AS st,
        toInt32(cityHash64(number, 4) % 100 + 1 + {{dq:Int32}}) AS q
    FROM numbers({{n:UInt64}}) WHERE number % {{mod:UInt64}} = 0
)"""

# Ledger: one RECEIVE row per base balance row, in the same transaction, and one MOVE
# row per update.
_LEDGER = f"""INSERT INTO wms_inventory_txn (region, id, occurred_at, txn_type,
    warehouse_id, owner_id, sku_id, lot_id, serial_id, from_location_id, to_location_id,
    from_status, to_status, qty, d_on_hand, d_allocated, reason_code, ref_type, ref_no,
    operator, _lsn, _commit_lsn, _is_deleted, _extra)
SELECT {{region:String}}, toInt64(number + 1 + {{idoff:UInt64}}),
    {{t0:DateTime64(6, 'UTC')}} + toIntervalSecond(number + {{idoff:UInt64}}), {{kind:String}},
    toInt64(cityHash64(number, 1) % 3 + 1), {_OWNER_OF_SKU.format(sku="sku")}, sku,
    if(number % 10 = 9, NULL, sku * 3 + number % 3), NULL,
    NULL, toInt64(cityHash64(number, 1) % 3 * {{locs:UInt64}} + cityHash64(number, 7)
        % {{locs:UInt64}} + 1), NULL, 'AVAILABLE',
    toInt32(cityHash64(number, 4) % 100 + 1), toInt32(cityHash64(number, 4) % 100 + 1), 0,
    NULL, 'INBOUND', concat('IN-', toString(number % 97)), 'bench',
    {{lsn:UInt64}} + number, {{lsn:UInt64}} + number + 1, 0, map()
FROM (SELECT number, {_SKU} AS sku FROM numbers({{n:UInt64}})
    WHERE number % {{mod:UInt64}} = 0)"""

# Serials: one per balance row of the serial-tracked SKUs (sku index % 10 = 0). Every
# 500th is a serial that moved here from region 0: SHIPPED (with its outbound order) in
# region 0's database and IN_STOCK here, under a serial_no shared across regions.
_SERIALS = f"""INSERT INTO wms_serial_number (region, id, sku_id, owner_id, serial_no, lot_id,
    warehouse_id, location_id, status, inbound_line_id, outbound_line_id, received_at,
    shipped_at, receive_count, updated_at, _lsn, _commit_lsn, _is_deleted, _extra)
SELECT {{region:String}}, toInt64(number + 1), sku, {_OWNER_OF_SKU.format(sku="sku")},
    if(shared, concat('SN-X-', toString(number)),
        concat('SN-', toString({{ri:UInt32}}), '-', toString(number))),
    if(number % 10 = 9, NULL, sku * 3 + number % 3), w,
    if(shipped, NULL, toInt64((w - 1) * {{locs:UInt64}} + cityHash64(number, 7) % {{locs:UInt64}}
        + 1)),
    if(shipped, 'SHIPPED', if(number % 3 = 0, 'ALLOCATED', 'IN_STOCK')), NULL,
    if(shipped, toInt64(number + 1), NULL), {{t0:DateTime64(6, 'UTC')}},
    if(shipped, {{t0:DateTime64(6, 'UTC')}} + toIntervalDay(1), NULL), 1,
    {{t0:DateTime64(6, 'UTC')}} + toIntervalDay(if(shipped, 1, 2)),
    {{lsn:UInt64}} + number, {{lsn:UInt64}} + number + 1, 0, map()
FROM
(
    SELECT number, {_SKU} AS sku, toInt64(cityHash64(number, 1) % 3 + 1) AS w,
        number % 500 = 0 AS shared, shared AND {{ri:UInt32}} = 0 AS shipped
    FROM numbers({{n:UInt64}}) WHERE (number % {{nsku:UInt64}}) % 10 = 0
)"""

_OUTBOUND = [
    """INSERT INTO wms_outbound_order (region, id, warehouse_id, owner_id, order_no,
        order_type, status, lot_rule, platform_order_no, carrier, tracking_no, created_at,
        updated_at, shipped_at, _lsn, _commit_lsn, _is_deleted, _extra)
    SELECT {region:String}, toInt64(number + 1), toInt64(cityHash64(number, 1) % 3 + 1), 1,
        concat('SO-', toString(number)), 'TRANSFER', 'SHIPPED', 'FEFO', NULL, 'UPS',
        concat('TRK', toString(number)), {t0:DateTime64(6, 'UTC')}, {t0:DateTime64(6, 'UTC')},
        {t0:DateTime64(6, 'UTC')}, 99, 100, 0, map()
    FROM numbers({n:UInt64}) WHERE number % 500 = 0 AND (number % {nsku:UInt64}) % 10 = 0""",
    """INSERT INTO wms_outbound_line (region, id, outbound_order_id, sku_id, lot_id,
        qty_ordered, qty_allocated, qty_shipped, updated_at, _lsn, _commit_lsn, _is_deleted,
        _extra)
    SELECT {region:String}, toInt64(number + 1), toInt64(number + 1),
        toInt64(number % {nsku:UInt64} + 1), NULL, 1, 0, 1, {t0:DateTime64(6, 'UTC')}, 99, 100,
        0, map()
    FROM numbers({n:UInt64}) WHERE number % 500 = 0 AND (number % {nsku:UInt64}) % 10 = 0""",
]


def bulk_load(client: Client, shape: Shape) -> None:
    """Every region's bulk rows, then its watermark (written last, as the writer does)."""
    writer = ProjectionWriter(client)
    for ri, region in enumerate(REGIONS):
        base: dict[str, Any] = {
            "region": region,
            "ri": ri,
            "t0": T0,
            "owners": shape.owners,
            "nsku": shape.skus,
            "per": shape.skus_per_owner,
            "locs": shape.locations,
            "nlocs": shape.locations * WAREHOUSES,
            "n": shape.rows,
        }
        for sql in _MASTER + _OUTBOUND:
            client.command(sql, parameters=base)
        for mod, dq, lsn, deleted in (
            (1, 0, 1000, 0),
            (5, 1, shape.lsn_updates, 0),
            (31, 0, shape.lsn_deletes, 1),
        ):
            client.command(_INVENTORY, parameters={**base, "mod": mod, "dq": dq, "lsn": lsn,
                                                   "del": deleted})  # fmt: skip
        client.command(_LEDGER, parameters={**base, "mod": 1, "idoff": 0, "lsn": 1000,
                                            "kind": "RECEIVE"})  # fmt: skip
        client.command(_LEDGER, parameters={**base, "mod": 5, "idoff": shape.rows,
                                            "lsn": shape.lsn_updates, "kind": "MOVE"})  # fmt: skip
        client.command(_SERIALS, parameters={**base, "lsn": 1000})
        writer.advance(Watermark(region, shape.watermark, T0_MS, None))


def _row(table: str, values: dict[str, Any]) -> tuple[object, ...]:
    spec = WMS_MODEL[table]
    return tuple(values.get(c.name) for c in spec.columns)


def live_transactions(
    client: Client, shape: Shape, per_region: int, seed: int = 7
) -> dict[str, list[int]]:
    """Real WMS transactions through ProjectionWriter on top of the bulk: receipts (a new
    balance row and its ledger row), every third one also deleting a bulk balance row,
    in batches of 50 each followed by its watermark; then one half-written transaction
    per region (rows in, no watermark: invisible). Returns the SKU indexes touched."""
    rnd = random.Random(seed)
    writer = ProjectionWriter(client)
    touched: dict[str, list[int]] = {}
    for ri, region in enumerate(REGIONS):
        lsn = shape.watermark + 100
        next_id = 10 * shape.rows + 1
        txs: list[Transaction] = []
        touched[region] = []
        for k in range(per_region + 1):
            number = rnd.randrange(shape.rows)
            sku = number % shape.skus + 1
            touched[region].append(sku - 1)
            owner = (sku - 1) // shape.skus_per_owner + 1 + ri
            w = (number * 2654435761) % WAREHOUSES + 1  # any warehouse of the region
            loc = (w - 1) * shape.locations + rnd.randrange(shape.locations) + 1
            ts = T0 + timedelta(days=30, seconds=k)
            inv = {
                "id": next_id, "warehouse_id": w, "location_id": loc, "owner_id": owner,
                "sku_id": sku, "lot_id": sku * 3, "container_id": None, "status": "AVAILABLE",
                "qty_on_hand": 5, "qty_allocated": 0, "in_date": ts, "last_movement_at": ts,
                "version": 1,
            }  # fmt: skip
            led = {
                "id": 10 * shape.rows + next_id, "occurred_at": ts, "txn_type": "MOVE",
                "warehouse_id": w, "owner_id": owner, "sku_id": sku, "lot_id": sku * 3,
                "serial_id": None, "from_location_id": None, "to_location_id": loc,
                "from_status": None, "to_status": "AVAILABLE", "qty": 5, "d_on_hand": 5,
                "d_allocated": 0, "reason_code": None, "ref_type": None, "ref_no": None,
                "operator": "bench",
            }  # fmt: skip
            changes: list[tuple[str, Op, dict[str, Any]]] = [
                ("inventory", Op.CREATE, inv),
                ("inventory_txn", Op.CREATE, led),
            ]
            if k % 3 == 0:  # and delete a bulk row of the same SKU
                changes.append(("inventory", Op.DELETE, {"id": number + 1}))
            next_id += 1
            rcs = []
            for table, op, values in changes:
                lsn += 10
                rcs.append(
                    RowChange(
                        region, table, op, (values["id"],),
                        None if op is Op.DELETE else _row(table, values),
                        lsn, lsn, T0_MS + lsn, Snapshot.NO,
                    )
                )  # fmt: skip
            lsn += 10
            txs.append(Transaction(region, lsn, lsn, T0_MS + lsn, rcs))
        done, half = txs[:-1], txs[-1]
        for i in range(0, len(done), 50):
            batch = done[i : i + 50]
            last = batch[-1]
            writer.write(region, batch, Watermark(region, last.commit_lsn, last.commit_ts_ms, None))
        writer.write(region, [half], None)  # a crash before the watermark: stays invisible
    return touched
