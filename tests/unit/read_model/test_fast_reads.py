"""The fast read path (`read_model.queries`) answers exactly as the reference views
(`read_model.reference`) on randomized WMS work: creates, updates and deletes of balance
rows, ledger rows, inbound orders, serials and master data (a location turning
unsellable, a lot deleted), in batches each followed by its watermark, a serial present
in two regions, and a half-written batch at the end that both must ignore. `bi_stock`
shows every key as the API serves it, and `_bi_stock_at` (daily snapshots) an earlier
cut as the reference computed it then."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from read_model import queries, reference
from read_model.queries import StockRow
from read_model.writer import ProjectionWriter
from schemas.events import Op, RowChange, Snapshot, Transaction, Watermark
from schemas.wms_model import FULL_BEFORE_TABLES, WMS_MODEL

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ("AVAILABLE",) * 4 + ("PENDING_PUTAWAY", "QC_HOLD", "FROZEN", "DAMAGED",
                                 "RETURNED", "EXPIRED")  # fmt: skip
SERIAL_STATUSES = ("IN_STOCK", "ALLOCATED", "SHIPPED", "DAMAGED", "RETURNED")
INBOUND_STATUSES = ("CREATED", "IN_TRANSIT", "ARRIVED", "RECEIVING", "RECEIVED", "CLOSED")


def _row(table: str, values: dict[str, Any]) -> tuple[object, ...]:
    defaults = {"bigint": 0, "integer": 0, "text": "", "char": "US", "jsonb": "{}",
                "boolean": True, "timestamptz": T0}  # fmt: skip
    out = []
    for c in WMS_MODEL[table].columns:
        if c.name in values:
            out.append(values[c.name])
        else:
            out.append(None if c.nullable else defaults.get(c.base_type))
    return tuple(out)


class World:
    """Random WMS work in one region, kept as Transactions with increasing LSNs."""

    def __init__(
        self, region: str, prefix: str, rnd: random.Random, before_images: bool = True
    ) -> None:
        self.region, self.prefix, self.rnd = region, prefix, rnd
        # Balance rows' updates and deletes carry the old row (REPLICA IDENTITY FULL),
        # or only their key (DEFAULT: the figures read the rows back instead).
        self.before_images = before_images
        self.lsn = 1000
        self.live: dict[str, dict[int, dict[str, Any]]] = {}  # table -> id -> row
        self.next_id = 1

    def tx(self, changes: list[tuple[str, Op, dict[str, Any]]]) -> Transaction:
        out = []
        for table, op, values in changes:
            self.lsn += 10
            old = self.live.get(table, {}).get(values["id"])
            full = self.before_images and table in FULL_BEFORE_TABLES and op is not Op.CREATE
            before = _row(table, old) if full and old is not None else None
            if op is Op.DELETE:
                self.live.get(table, {}).pop(values["id"], None)
            else:
                self.live.setdefault(table, {})[values["id"]] = values
            out.append(
                RowChange(
                    self.region, table, op, (values["id"],),
                    None if op is Op.DELETE else _row(table, values),
                    self.lsn, self.lsn, 1_767_225_600_000 + self.lsn, Snapshot.NO,
                    before=before,
                )
            )  # fmt: skip
        self.lsn += 10
        return Transaction(self.region, self.lsn, self.lsn, 1_767_225_600_000 + self.lsn, out)

    def id(self) -> int:
        self.next_id += 1
        return self.next_id

    def master(self) -> Transaction:
        p = self.prefix
        ch: list[tuple[str, Op, dict[str, Any]]] = []
        for w in (1, 2):
            ch.append(("warehouse", Op.CREATE, {"id": w, "code": f"{p}-{self.region}-WH{w}"}))
        for o in (1, 2):
            ch.append(("owner", Op.CREATE, {"id": 10 + o, "code": f"{p}-OW{o}"}))
            for s in (1, 2, 3):
                ch.append(("sku", Op.CREATE, {"id": 100 + 10 * o + s, "owner_id": 10 + o,
                                              "sku_code": f"SKU-{s}"}))  # fmt: skip
        for loc in range(1, 9):
            ch.append(("location", Op.CREATE, {"id": loc, "warehouse_id": 1 + loc % 2,
                                               "code": f"L{loc}",
                                               "sellable": loc % 4 != 0}))  # fmt: skip
        for sku in self.skus():
            for k in range(3):
                ch.append(("lot", Op.CREATE, {
                    "id": sku * 10 + k, "sku_id": sku, "lot_no": f"LOT-{k}",
                    "expiry_date": None if k == 2 else date(2026, 1 + k * 3 + sku % 3, 1),
                    "production_date": date(2025, 1, 1), "first_received_at": T0,
                }))  # fmt: skip
        return self.tx(ch)

    def skus(self) -> list[int]:
        return [100 + 10 * o + s for o in (1, 2) for s in (1, 2, 3)]

    def change(self) -> tuple[str, Op, dict[str, Any]]:
        """One random row change."""
        rnd = self.rnd
        kind = rnd.random()
        sku = rnd.choice(self.skus())
        owner = 10 + (sku - 100) // 10
        loc = rnd.randrange(1, 9)
        wh = 1 + loc % 2
        inv = self.live.get("inventory", {})
        if kind < 0.35 or not inv:
            q = rnd.randrange(1, 20)
            status = rnd.choice(STATUSES)
            return ("inventory", Op.CREATE, {
                "id": self.id(), "warehouse_id": wh, "location_id": loc, "owner_id": owner,
                "sku_id": sku, "lot_id": rnd.choice([None, sku * 10, sku * 10 + 1, sku * 10 + 2]),
                "status": status, "qty_on_hand": q,
                "qty_allocated": rnd.randrange(q + 1) if status == "AVAILABLE" else 0,
            })  # fmt: skip
        if kind < 0.5:
            row = dict(inv[rnd.choice(list(inv))])
            row["qty_on_hand"] = rnd.randrange(row["qty_allocated"], row["qty_allocated"] + 20)
            return ("inventory", Op.UPDATE, row)
        if kind < 0.6:
            return ("inventory", Op.DELETE, {"id": rnd.choice(list(inv))})
        if kind < 0.75:
            return ("inventory_txn", Op.CREATE, {
                "id": self.id(), "txn_type": "MOVE", "warehouse_id": wh, "owner_id": owner,
                "sku_id": sku, "lot_id": sku * 10, "from_location_id": loc,
                "to_location_id": rnd.choice([None, 1, 2]), "qty": 1,
                "occurred_at": T0 + timedelta(minutes=rnd.randrange(10_000)),
            })  # fmt: skip
        if kind < 0.85:
            oid = self.id()
            self.live.setdefault("_orders", {})[oid] = {"wh": wh, "owner": owner}
            status = rnd.choice(INBOUND_STATUSES)
            return ("inbound_order", Op.CREATE, {"id": oid, "warehouse_id": wh,
                                                 "owner_id": owner, "status": status})  # fmt: skip
        if kind < 0.9 and self.live.get("_orders"):
            oid = rnd.choice(list(self.live["_orders"]))
            own = self.live["_orders"][oid]["owner"]
            line_sku = 100 + 10 * (own - 10) + rnd.randrange(1, 4)
            return ("inbound_line", Op.CREATE, {"id": self.id(), "inbound_order_id": oid,
                                                "sku_id": line_sku,
                                                "qty_expected": rnd.randrange(30),
                                                "qty_received": rnd.randrange(20)})  # fmt: skip
        if kind < 0.97:
            status, n = rnd.choice(SERIAL_STATUSES), rnd.randrange(4)
            sid = sku * 100 + n  # serial_no is unique per SKU: a later change updates it
            op = Op.UPDATE if sid in self.live.get("serial_number", {}) else Op.CREATE
            return ("serial_number", op, {
                "id": sid, "sku_id": sku, "owner_id": owner,
                "serial_no": f"SN-{n}", "warehouse_id": wh,
                "location_id": None if status == "SHIPPED" else loc, "lot_id": sku * 10,
                "status": status, "updated_at": T0 + timedelta(minutes=rnd.randrange(1000)),
            })  # fmt: skip
        if kind < 0.985:  # a location turns (un)sellable
            return ("location", Op.UPDATE, {"id": loc, "warehouse_id": wh, "code": f"L{loc}",
                                            "sellable": rnd.random() < 0.5})  # fmt: skip
        return ("lot", Op.DELETE, {"id": sku * 10 + rnd.randrange(3)})


def _bi_stock(ch: Client, owner: str, cut: dict[str, int] | None = None) -> list[StockRow]:
    """An owner's keys in `bi_stock`, or in `_bi_stock_at` at `cut` (daily snapshots)."""
    at = "_bi_stock_at(wr = {wr:Array(String)}, wl = {wl:Array(UInt64)})"
    source = "bi_stock" if cut is None else at
    return queries._rows(
        ch,
        StockRow,
        f"SELECT * FROM {source} WHERE owner = {{o:String}} ORDER BY warehouse, sku",
        {"o": owner, **queries._cuts(cut or {})},
    )


def _compare(ch: Client, prefix: str, regions: list[str]) -> None:
    for o in (1, 2):
        owner = f"{prefix}-OW{o}"
        served = queries.stock_page(ch, owner, limit=1000)
        assert served == reference.stock_page(ch, owner, limit=1000)
        assert _bi_stock(ch, owner) == served  # BI sees every key as the API serves it
        page = queries.stock_page(ch, owner, limit=3)
        assert page == reference.stock_page(ch, owner, limit=3)
        if page:
            cursor = (page[-1].warehouse, page[-1].sku)
            assert queries.stock_page(ch, owner, limit=3, after=cursor) == (
                reference.stock_page(ch, owner, limit=3, after=cursor)
            )
        assert queries.movements(ch, owner, limit=7) == reference.movements(ch, owner, limit=7)
        whole = reference.stock_page(ch, owner, limit=1000)
        for s in (1, 2, 3):
            sku = f"SKU-{s}"
            assert queries.stock_page_sku(ch, owner, sku) == [r for r in whole if r.sku == sku]
            assert queries.movements(ch, owner, sku=sku) == reference.movements(ch, owner, sku=sku)
            for n in range(4):
                serial = f"SN-{n}"
                assert queries.serial_current(ch, owner, sku, serial) == (
                    reference.serial_current(ch, owner, sku, serial)
                )
                assert queries.serial_history(ch, owner, sku, serial) == (
                    reference.serial_history(ch, owner, sku, serial)
                )
            for region in regions:
                for w in (1, 2):
                    wh = f"{prefix}-{region}-WH{w}"
                    args = (ch, owner, wh, sku)
                    assert queries.stock_one(*args) == reference.stock_one(*args)
                    assert queries.lots(*args) == reference.lots(*args)
                    assert queries.serials(*args) == reference.serials(*args)
                    assert queries.serials(*args, status="IN_STOCK") == (
                        reference.serials(*args, status="IN_STOCK")
                    )


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "before_images"), [(1, True), (2, False)])
def test_fast_reads_equal_reference(
    ch: Client, region: str, seed: int, before_images: bool
) -> None:
    rnd = random.Random(seed)
    prefix = region.upper()
    regions = [region, region + "-b"]
    writer = ProjectionWriter(ch)
    worlds = [World(r, prefix, rnd, before_images) for r in regions]
    for w in worlds:
        md = w.master()
        writer.write(w.region, [md], Watermark(w.region, md.commit_lsn, md.commit_ts_ms, None))
    cut: dict[str, int] = {}  # the watermarks after the first step, and the figures there
    then: dict[int, list[StockRow]] = {}
    for step in range(2):
        for w in worlds:
            txs = [w.tx([w.change() for _ in range(rnd.randrange(1, 6))]) for _ in range(25)]
            last = txs[-1]
            writer.write(w.region, txs, Watermark(w.region, last.commit_lsn, last.commit_ts_ms,
                                                  None))  # fmt: skip
        if step == 0:
            _compare(ch, prefix, regions)
            cut = {r: lsn for r, lsn in queries.visible_lsns(ch).items() if r in regions}
            then = {o: reference.stock_page(ch, f"{prefix}-OW{o}", limit=1000) for o in (1, 2)}
            assert len(cut) == 2
            assert all(then.values())
    # A batch whose rows are in but whose watermark is not: invisible to both.
    w = worlds[0]
    half = [w.tx([w.change() for _ in range(5)]) for _ in range(5)]
    writer.write(w.region, half, None)
    _compare(ch, prefix, regions)
    # A daily snapshot of an earlier cut, after later versions and merges of every part:
    # merges keep a version per (key, commit), so the older cut reads as it was served.
    ch.command("OPTIMIZE TABLE stock_current FINAL")
    for o in (1, 2):
        assert _bi_stock(ch, f"{prefix}-OW{o}", cut) == then[o]


def test_half_written_batch_is_invisible(ch: Client, region: str) -> None:
    rnd = random.Random(9)
    w, writer = World(region, region.upper(), rnd), ProjectionWriter(ch)
    md = w.master()
    writer.write(region, [md], Watermark(region, md.commit_lsn, md.commit_ts_ms, None))
    owner, wh, sku = f"{region.upper()}-OW1", f"{region.upper()}-{region}-WH2", "SKU-1"
    inv = {"id": 900, "warehouse_id": 2, "location_id": 1, "owner_id": 11, "sku_id": 111,
           "status": "AVAILABLE", "qty_on_hand": 10}  # fmt: skip
    receive = w.tx([("inventory", Op.CREATE, inv)])
    writer.write(region, [receive], Watermark(region, receive.commit_lsn, receive.commit_ts_ms,
                                              None))  # fmt: skip
    before = queries.stock_one(ch, owner, wh, sku)
    assert before is not None
    assert before.on_hand == 10
    # A move (-4 here, +4 on a new row) of which only the first INSERT landed.
    move = w.tx([("inventory", Op.UPDATE, {**inv, "qty_on_hand": 6}),
                 ("inventory", Op.CREATE, {**inv, "id": 901, "location_id": 3,
                                           "qty_on_hand": 4})])  # fmt: skip
    first = Transaction(region, move.tx_id, move.commit_lsn, move.commit_ts_ms, move.changes[:1])
    writer.write(region, [first], None)
    assert queries.stock_one(ch, owner, wh, sku) == before
    writer.write(region, [move], Watermark(region, move.commit_lsn, move.commit_ts_ms, None))
    after = queries.stock_one(ch, owner, wh, sku)
    assert after is not None
    assert (after.on_hand, after.available) == (10, 10)  # both locations sellable
    # A replayed older watermark never lowers the cut (max wins).
    writer.advance(Watermark(region, receive.commit_lsn, receive.commit_ts_ms, None))
    assert queries.stock_one(ch, owner, wh, sku) == after
    assert queries.visible_lsns(ch)[region] == move.commit_lsn
