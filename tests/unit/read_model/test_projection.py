"""Writer + serving views on chDB with hand-built change sets: visibility by watermark,
idempotent replays, deletes, TOAST placeholders, ADD COLUMN, and the stock figures of
wms/OPERATIONS.md on a hand-computed case."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from read_model import queries
from read_model.writer import ProjectionWriter
from schemas.events import Op, RowChange, Snapshot, Transaction, Truncate, Watermark
from schemas.wms_model import WMS_MODEL

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_DEFAULTS: dict[str, object] = {
    "bigint": 0, "integer": 0, "text": "", "char": "US", "jsonb": "{}", "boolean": True,
    "date": None, "timestamptz": T0,
}  # fmt: skip


def row(table: str, **values: object) -> tuple[object, ...]:
    """A full typed row: given values, NULL for nullable columns, else a plain default."""
    spec = WMS_MODEL[table]
    out = []
    for c in spec.columns:
        if c.name in values:
            out.append(values[c.name])
        else:
            out.append(None if c.nullable else _DEFAULTS.get(c.base_type))
    return tuple(out)


class Tx:
    """Builds transactions with increasing LSNs for one region."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.lsn = 1000
        self.txid = 500

    def tx(self, *changes: tuple[str, str, dict[str, Any]]) -> Transaction:
        """changes: (table, op, values); op 'd' takes values {'id': …}; `_before` in
        values: the old row's values (a before image, REPLICA IDENTITY FULL)."""
        self.txid += 1
        out = []
        for table, op, values in changes:
            self.lsn += 10
            is_del = op == "d"
            unavailable = frozenset(values.pop("_unavailable", ()))
            extra = values.pop("_extra", {})
            old = values.pop("_before", None)
            out.append(
                RowChange(
                    self.region, table, Op(op), (values["id"],),
                    None if is_del else row(table, **values),
                    self.lsn, self.txid, 1_767_225_600_000 + self.lsn, Snapshot.NO,
                    unavailable, extra, None if old is None else row(table, **old),
                )
            )  # fmt: skip
        self.lsn += 10
        return Transaction(self.region, self.txid, self.lsn, 1_767_225_600_000 + self.lsn, out)

    def wm(self, tx: Transaction) -> Watermark:
        return Watermark(self.region, tx.commit_lsn, tx.commit_ts_ms, None)


def master_data(t: Tx, code: str) -> Transaction:
    """Warehouse 1, owner 1, sku 1 (lot tracked), lots 1-3, locations of every kind."""
    return t.tx(
        ("warehouse", "c", {"id": 1, "code": f"{code}-WH"}),
        ("owner", "c", {"id": 1, "code": f"{code}-OW"}),
        ("sku", "c", {"id": 1, "owner_id": 1, "sku_code": "SKU-1", "name": "Widget"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "RCV", "sellable": False}),
        ("location", "c", {"id": 2, "warehouse_id": 1, "code": "A-01", "sellable": True}),
        ("location", "c", {"id": 3, "warehouse_id": 1, "code": "STG", "sellable": False}),
        ("location", "c", {"id": 4, "warehouse_id": 1, "code": "A-02", "sellable": True}),
        ("lot", "c", {"id": 1, "sku_id": 1, "lot_no": "L-LATE", "expiry_date": date(2027, 6, 1),
                      "first_received_at": T0}),
        ("lot", "c", {"id": 2, "sku_id": 1, "lot_no": "L-EARLY", "expiry_date": date(2026, 3, 1),
                      "first_received_at": T0}),
        ("lot", "c", {"id": 3, "sku_id": 1, "lot_no": "L-NOEXP", "first_received_at": T0}),
    )  # fmt: skip


def inv(
    id: int, loc: int, lot: int | None, status: str, qty: int, alloc: int = 0
) -> dict[str, Any]:
    """A balance row of owner 1, sku 1 at warehouse 1."""
    return {
        "id": id, "warehouse_id": 1, "location_id": loc, "owner_id": 1, "sku_id": 1,
        "lot_id": lot, "status": status, "qty_on_hand": qty, "qty_allocated": alloc,
    }  # fmt: skip


def stock(ch: Client, code: str) -> queries.StockRow | None:
    return queries.stock_one(ch, f"{code}-OW", f"{code}-WH", "SKU-1")


def test_receive_then_move_is_visible_whole(ch: Client, region: str) -> None:
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(
        ("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)),
        ("inventory_txn", "c", {"id": 1, "txn_type": "RECEIVE", "warehouse_id": 1,
                                "owner_id": 1, "sku_id": 1, "qty": 10, "d_on_hand": 10,
                                "occurred_at": T0}),
    )  # fmt: skip
    w.write(region, [md, receive], t.wm(receive))
    s = stock(ch, code)
    assert s is not None
    assert (s.on_hand, s.available) == (10, 10)

    # A move (-4 at A-01, +4 at STG) arrives and is written by two INSERTs; the reader
    # queries between them and after, and only sees the new totals after the watermark.
    move = t.tx(
        ("inventory", "u", inv(10, 2, 1, "AVAILABLE", 6)),
        ("inventory", "c", inv(11, 3, 1, "AVAILABLE", 4)),
    )
    first, _second = move.changes
    w_part = Transaction(region, move.tx_id, move.commit_lsn, move.commit_ts_ms, [first])
    # Insert half the transaction without moving the watermark (a crash mid-batch) ...
    _insert_rows(w, region, w_part)
    mid = stock(ch, code)
    assert mid is not None
    assert (mid.on_hand, mid.available) == (10, 10)  # old totals, not 6 of 10
    # ... the retry writes the whole batch again and then the watermark.
    w.write(region, [move], t.wm(move))
    after = stock(ch, code)
    assert after is not None
    assert (after.on_hand, after.available) == (10, 6)  # 4 now at non-sellable STG

    # Replays and duplicates change nothing.
    w.write(region, [md, receive, move], t.wm(move))
    w.write(region, [move], t.wm(move))
    assert stock(ch, code) == after


def _insert_rows(w: ProjectionWriter, region: str, tx: Transaction) -> None:
    """Insert the rows of `tx` alone: no figures, no watermark."""
    state: dict[Any, Any] = {}
    for ch_ in tx.changes:
        assert isinstance(ch_, RowChange)
        w._buffer(region, ch_, tx.commit_lsn, state, w._waiting.buffers, _stats())
    w._write_waiting_rows()


def _stats() -> Any:
    from read_model.writer import WriteStats

    return WriteStats()


def test_deletes_disappear_and_placeholder_keeps_previous(ch: Client, region: str) -> None:
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    put = t.tx(("inventory", "c", inv(20, 2, 1, "AVAILABLE", 5)))
    w.write(region, [md, put], t.wm(put))
    # Separate batches: the delete's previous values and the placeholder come from
    # ClickHouse, not from the batch.
    gone = t.tx(("inventory", "d", {"id": 20}))
    w.write(region, [gone], t.wm(gone))
    assert stock(ch, code) is None  # no balance rows, nothing inbound: absent
    deleted = ch.query(
        "SELECT owner_id, sku_id, _is_deleted FROM wms_inventory_by_sku"
        " WHERE region = {r:String} ORDER BY _lsn DESC LIMIT 1",
        parameters={"r": region},
    ).result_rows
    assert deleted == [(1, 1, 1)]  # the delete landed under the read-path key

    rename = t.tx(("sku", "u", {"id": 1, "owner_id": 1, "sku_code": "SKU-1", "name": "?",
                               "uom": "BOX", "_unavailable": {"name", "attributes"}}))  # fmt: skip
    stats = w.write(region, [rename], t.wm(rename))
    assert stats.looked_up == 1
    assert stats.unresolved_placeholders == 0
    cur = ch.query(
        "SELECT name, uom, attributes FROM cur_sku WHERE region = {r:String}",
        parameters={"r": region},
    ).result_rows
    assert cur == [("Widget", "BOX", "{}")]
    placeholders = ch.query(
        "SELECT count() FROM wms_sku WHERE name = '__debezium_unavailable_value'"
    ).result_rows
    assert placeholders == [(0,)]


def test_a_truncate_deletes_every_row_of_its_table_and_the_figures_follow(
    ch: Client, region: str
) -> None:
    """A WMS TRUNCATE (a ledger purge, say) arrives as one event inside its transaction:
    the table's rows are gone as of it, rows after it count, and every figure built
    from the table follows (last movement from the ledger, stock from balance rows)."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(
        ("inventory", "c", inv(30, 2, 1, "AVAILABLE", 8)),
        ("inventory_txn", "c", {"id": 5, "txn_type": "RECEIVE", "warehouse_id": 1,
                                "owner_id": 1, "sku_id": 1, "qty": 8, "d_on_hand": 8,
                                "occurred_at": T0}),
    )  # fmt: skip
    w.write(region, [md, receive], t.wm(receive))
    before = stock(ch, code)
    assert before is not None
    assert before.last_movement_at == T0

    def truncate(table: str) -> Transaction:
        t.txid += 1
        t.lsn += 10
        cut = Truncate(region, table, t.lsn, t.txid, 1_767_225_600_000 + t.lsn)
        t.lsn += 10
        return Transaction(region, t.txid, t.lsn, 1_767_225_600_000 + t.lsn, [cut])

    purge = truncate("inventory_txn")
    w.write(region, [purge], t.wm(purge))
    after = stock(ch, code)
    assert after is not None
    assert (after.on_hand, after.last_movement_at) == (8, None)
    assert queries.movements(ch, f"{code}-OW", sku="SKU-1") == []

    wiped = truncate("inventory")
    later = t.tx(("inventory", "c", inv(31, 4, 2, "AVAILABLE", 3)))
    w.write(region, [wiped, later], t.wm(later))
    s = stock(ch, code)
    assert s is not None
    assert (s.on_hand, s.available) == (3, 3)  # row 30 is gone, row 31 came after
    current = ch.query(
        "SELECT id FROM cur_inventory WHERE region = {r:String}", parameters={"r": region}
    ).result_rows
    assert current == [(31,)]
    # A replay of the whole history gives the same answer.
    w.write(region, [md, receive, purge, wiped, later], t.wm(later))
    assert stock(ch, code) == s


def test_a_truncate_deletes_the_rows_its_own_transaction_wrote_before_it(
    ch: Client, region: str
) -> None:
    """INSERT a, INSERT b, TRUNCATE, INSERT c in one transaction: all four share the
    commit LSN, so only the change LSN orders them; a and b are gone, c stays, and the
    figures count c alone (also on a replay of the transaction)."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    w.write(region, [md], t.wm(md))
    before = t.tx(
        ("inventory", "c", inv(40, 2, 1, "AVAILABLE", 5)),
        ("inventory", "c", inv(41, 4, 2, "AVAILABLE", 6)),
    )
    after = t.tx(("inventory", "c", inv(42, 2, 3, "AVAILABLE", 7)))
    cut = Truncate(
        region, "inventory", before.changes[-1].lsn + 5, before.tx_id, after.commit_ts_ms
    )
    one = Transaction(
        region, before.tx_id, after.commit_lsn, after.commit_ts_ms,
        [*before.changes, cut, *after.changes],
    )  # fmt: skip
    for _ in range(2):  # the replay of a transaction with a truncate changes nothing
        w.write(region, [one], t.wm(one))
        current = ch.query(
            "SELECT id FROM cur_inventory WHERE region = {r:String}", parameters={"r": region}
        ).result_rows
        assert current == [(42,)]
        s = stock(ch, code)
        assert s is not None
        assert (s.on_hand, s.available) == (7, 7)


def test_added_columns_land_in_extra(ch: Client, region: str) -> None:
    t, w = Tx(region), ProjectionWriter(ch)
    tx = t.tx(("owner", "c", {"id": 7, "code": "X", "_extra": {"tier": '"GOLD"'}}))
    w.write(region, [tx], t.wm(tx))
    got = ch.query(
        "SELECT _extra FROM cur_owner WHERE region = {r:String}", parameters={"r": region}
    ).result_rows
    assert got == [({"tier": '"GOLD"'},)]


def test_figures_match_operations_md(ch: Client, region: str) -> None:
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    work = t.tx(
        ("inventory", "c", inv(1, 2, 1, "AVAILABLE", 10, alloc=3)),  # sellable, late lot
        ("inventory", "c", inv(2, 4, 2, "AVAILABLE", 5)),  # sellable, early lot
        ("inventory", "c", inv(3, 3, 2, "AVAILABLE", 2, alloc=2)),  # picked, at STG
        ("inventory", "c", inv(4, 4, 3, "AVAILABLE", 4, alloc=4)),  # fully allocated
        ("inventory", "c", inv(5, 1, None, "PENDING_PUTAWAY", 7)),
        ("inventory", "c", inv(6, 2, 1, "QC_HOLD", 1)),
        ("inventory", "c", inv(7, 2, 1, "FROZEN", 2)),
        ("inventory", "c", inv(8, 2, 1, "DAMAGED", 3)),
        ("inventory", "c", inv(9, 2, 3, "RETURNED", 1)),
        ("inventory", "c", inv(10, 2, 2, "EXPIRED", 6)),
        ("inbound_order", "c", {"id": 1, "warehouse_id": 1, "owner_id": 1, "status": "RECEIVING"}),
        ("inbound_order", "c", {"id": 2, "warehouse_id": 1, "owner_id": 1, "status": "CLOSED"}),
        ("inbound_line", "c", {"id": 1, "inbound_order_id": 1, "sku_id": 1,
                               "qty_expected": 20, "qty_received": 7}),
        ("inbound_line", "c", {"id": 2, "inbound_order_id": 1, "sku_id": 1,
                               "qty_expected": 5, "qty_received": 9}),  # over-received: 0
        ("inbound_line", "c", {"id": 3, "inbound_order_id": 2, "sku_id": 1,
                               "qty_expected": 50, "qty_received": 0}),  # closed order
        ("inventory_txn", "c", {"id": 1, "txn_type": "RECEIVE", "warehouse_id": 1, "owner_id": 1,
                                "sku_id": 1, "qty": 1, "occurred_at": T0}),
        ("inventory_txn", "c", {"id": 2, "txn_type": "MOVE", "warehouse_id": 1, "owner_id": 1,
                                "sku_id": 1, "qty": 1,
                                "occurred_at": datetime(2026, 2, 3, 4, 5, 6, 123456, UTC)}),
    )  # fmt: skip
    w.write(region, [md, work], t.wm(work))
    s = stock(ch, code)
    assert s is not None
    assert s.on_hand == 10 + 5 + 2 + 4 + 7 + 1 + 2 + 3 + 1 + 6
    assert s.allocated == 3 + 2 + 4
    assert s.available == (10 - 3) + 5  # STG not sellable; row 4 fully allocated
    assert (s.pending_putaway, s.qc_hold, s.frozen, s.damaged, s.returned, s.expired) == (
        7, 1, 2, 3, 1, 6,
    )  # fmt: skip
    assert s.inbound_expected == 13
    # Units counted in available: lots L-LATE and L-EARLY; row 4 (no expiry) has none free.
    assert s.earliest_expiry == date(2026, 3, 1)
    assert s.last_movement_at == datetime(2026, 2, 3, 4, 5, 6, 123456, UTC)

    lots = queries.lots(ch, f"{code}-OW", f"{code}-WH", "SKU-1")
    assert [lot.lot_no for lot in lots] == ["L-EARLY", "L-LATE", "L-NOEXP"]  # FEFO
    early = lots[0]
    assert (early.on_hand, early.available, early.allocated, early.expired) == (13, 5, 2, 6)

    page = queries.stock_page(ch, f"{code}-OW")
    assert page == [s]


def test_inbound_only_key_is_present(ch: Client, region: str) -> None:
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    io = t.tx(
        ("inbound_order", "c", {"id": 1, "warehouse_id": 1, "owner_id": 1, "status": "CREATED"}),
        ("inbound_line", "c", {"id": 1, "inbound_order_id": 1, "sku_id": 1, "qty_expected": 8}),
    )  # fmt: skip
    w.write(region, [md, io], t.wm(io))
    s = stock(ch, code)
    assert s is not None
    assert (s.on_hand, s.inbound_expected, s.earliest_expiry) == (0, 8, None)


def test_cross_region_serial(ch: Client, region: str) -> None:
    other = region + "-b"
    code = region.upper()
    for r, status, updated in ((region, "SHIPPED", 2), (other, "IN_STOCK", 1)):
        t, w = Tx(r), ProjectionWriter(ch)
        md = master_data(t, code)
        sn = t.tx(("serial_number", "c", {
            "id": 1, "sku_id": 1, "owner_id": 1, "serial_no": "SN-1", "warehouse_id": 1,
            "status": status, "location_id": None if status == "SHIPPED" else 2,
            "updated_at": datetime(2026, 1, updated, tzinfo=UTC)}))  # fmt: skip
        w.write(r, [md, sn], t.wm(sn))
    cur = queries.serial_current(ch, f"{code}-OW", "SKU-1", "SN-1")
    assert cur is not None
    assert (cur.region, cur.status, cur.location) == (other, "IN_STOCK", "A-01")
    hist = queries.serial_history(ch, f"{code}-OW", "SKU-1", "SN-1")
    assert [(h.region, h.status) for h in hist] == [(other, "IN_STOCK"), (region, "SHIPPED")]


def test_watermarks(ch: Client, region: str) -> None:
    t, w = Tx(region), ProjectionWriter(ch)
    tx = t.tx(("owner", "c", {"id": 1, "code": "W"}))
    w.write(region, [tx], Watermark(region, tx.commit_lsn, tx.commit_ts_ms, 1_767_225_700_000))
    w.advance(Watermark(region, tx.commit_lsn - 5, tx.commit_ts_ms, None))  # a replay's
    wm = {r.region: r for r in queries.watermarks(ch)}[region]
    assert wm.applied_commit_lsn == tx.commit_lsn
    assert wm.heartbeat_ts is not None


def test_a_complete_resnapshot_deletes_rows_it_did_not_read(ch: Client, region: str) -> None:
    """A region re-snapshotted after its slot was lost: a row deleted during the gap is
    not in the new snapshot; completing the snapshot deletes it from the projection,
    rows read again stay, and writing the same snapshot again changes nothing."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    put = t.tx(("inventory", "c", inv(20, 2, 1, "AVAILABLE", 5)),
               ("inventory", "c", inv(21, 4, 2, "AVAILABLE", 3)))  # fmt: skip
    w.write(region, [md, put], t.wm(put))
    stock_before = stock(ch, code)
    assert stock_before is not None
    assert stock_before.on_hand == 8

    snap_lsn = t.lsn + 1000
    kept = row("inventory", **inv(20, 2, 1, "AVAILABLE", 5))
    ts = 1_767_225_600_000 + snap_lsn
    reads = [
        RowChange(region, c.table, Op.READ, c.key, c.row, snap_lsn, None, ts, Snapshot.YES)
        for c in md.changes
        if isinstance(c, RowChange)
    ] + [RowChange(region, "inventory", Op.READ, (20,), kept, snap_lsn, None, ts, Snapshot.LAST)]
    snapshot = replace(Transaction.from_snapshot(reads), completes_snapshot=True)
    wm = Watermark(region, snap_lsn, snapshot.commit_ts_ms, None)
    for _ in range(2):  # a replay of the same snapshot is harmless
        w.write(region, [snapshot], wm)
        after = stock(ch, code)
        assert after is not None
        assert after.on_hand == 5
        ids = ch.query(
            "SELECT id FROM cur_inventory WHERE region = {r:String} ORDER BY id",
            parameters={"r": region},
        ).result_rows
        assert ids == [(20,)]
        assert ch.query(
            "SELECT count() FROM cur_location WHERE region = {r:String}", parameters={"r": region}
        ).result_rows == [(4,)]
