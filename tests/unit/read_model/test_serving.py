"""`stock_current` (read_model.figures) follows every change the figures depend on, writes
nothing on a replay, and is rebuilt for a region it never had."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from read_model import ddl, figures, queries
from read_model.ddl import point_key
from read_model.writer import ProjectionWriter
from tests.unit.read_model.test_projection import T0, Tx, inv, master_data, stock

#: The figures computed from the balance rows at the watermark (`cur_*`), independently
#: of the writer's: what `bi_stock` computed before it read `stock_current` (migration 014).
_FROM_BALANCE_ROWS = (
    f"SELECT * FROM ({ddl.stock_figures_sql(lambda table: f'cur_{table}')})"
    " WHERE region = {region:String}"
)


def _versions(ch: Client, region: str) -> int:
    return int(
        ch.query(
            "SELECT count() FROM stock_current WHERE region = {r:String}", parameters={"r": region}
        ).result_rows[0][0]
    )


def test_a_replayed_batch_writes_no_new_version(ch: Client, region: str) -> None:
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    w.write(region, [md, receive], t.wm(receive))
    before = _versions(ch, region)
    assert before >= 1
    w.write(region, [md, receive], t.wm(receive))
    w.write(region, [receive], t.wm(receive))
    assert _versions(ch, region) == before


def test_a_key_whose_last_balance_row_is_deleted_is_absent(ch: Client, region: str) -> None:
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    gone = t.tx(("inventory", "d", {"id": 10}))
    w.write(region, [md, receive], t.wm(receive))
    assert stock(ch, code) is not None
    w.write(region, [gone], t.wm(gone))
    assert stock(ch, code) is None


def test_a_location_turning_unsellable_moves_available(ch: Client, region: str) -> None:
    """Only the location row changes: its balance rows' SKUs are found and recomputed."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    w.write(region, [md, receive], t.wm(receive))
    lock = t.tx(("location", "u", {"id": 2, "warehouse_id": 1, "code": "A-01", "sellable": False}))
    w.write(region, [lock], t.wm(lock))
    s = stock(ch, code)
    assert s is not None
    assert (s.on_hand, s.available, s.earliest_expiry) == (10, 0, None)


def test_an_inbound_order_closing_clears_inbound_expected(ch: Client, region: str) -> None:
    """Only the order's status changes: its lines' SKUs are found and recomputed."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    order = {"id": 7, "warehouse_id": 1, "owner_id": 1, "order_no": "IN-7", "status": "CREATED"}
    expect = t.tx(
        ("inbound_order", "c", order),
        ("inbound_line", "c", {"id": 70, "inbound_order_id": 7, "sku_id": 1,
                               "qty_expected": 12, "qty_received": 0}),
    )  # fmt: skip
    w.write(region, [md, expect], t.wm(expect))
    s = stock(ch, code)
    assert s is not None
    assert (s.on_hand, s.inbound_expected) == (0, 12)
    close = t.tx(("inbound_order", "u", {**order, "status": "CLOSED"}))
    w.write(region, [close], t.wm(close))
    assert stock(ch, code) is None  # no balance rows and nothing inbound: absent


def test_a_region_assigned_again_gets_its_served_figures_corrected(ch: Client, region: str) -> None:
    """What `stock_current` serves is compared with the state when a region is assigned:
    figures lost (or a projection from before the table existed) come back."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10, alloc=3)))
    w.write(region, [md, receive], t.wm(receive))
    expected = stock(ch, code)
    ch.command("DELETE FROM stock_current WHERE region = {r:String}", parameters={"r": region})
    key = point_key(f"{code}-OW", f"{code}-WH", "SKU-1")
    ch.command("DELETE FROM stock_point WHERE key = {k:String}", parameters={"k": key})
    assert stock(ch, code) is None
    ProjectionWriter(ch).load_watermarks([region])
    assert stock(ch, code) == expected
    assert expected is not None
    assert expected.available == 7


def _ledger(id: int, at: datetime) -> tuple[str, str, dict[str, Any]]:
    return ("inventory_txn", "c", {"id": id, "txn_type": "ADJUST", "warehouse_id": 1,
                                   "owner_id": 1, "sku_id": 1, "qty": 1, "d_on_hand": 1,
                                   "occurred_at": at})  # fmt: skip


def test_many_versions_later_the_figures_equal_the_versioned_tables(
    ch: Client, region: str
) -> None:
    """Streamed batches read the history-free inputs (migration 009); after a balance row
    changed many times and the ledger grew, they agree with the figures computed from
    every version of the balance rows at the cut."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    w.write(region, [md], t.wm(md))
    for i in range(1, 13):
        tx = t.tx(
            ("inventory", "u" if i > 1 else "c", inv(10, 2, 1 + i % 2, "AVAILABLE", 10 + i)),
            _ledger(i, T0 + timedelta(minutes=i)),
        )
        w.write(region, [tx], t.wm(tx))
    s = stock(ch, code)
    truth = ch.query(
        f"SELECT on_hand, available, earliest_expiry, last_movement_at FROM ({_FROM_BALANCE_ROWS})",
        parameters={"region": region},
    ).result_rows
    assert s is not None
    ((on_hand, available, expiry, moved),) = truth  # the driver's datetimes are naive UTC
    assert (s.on_hand, s.available, s.earliest_expiry, s.last_movement_at) == (
        on_hand, available, expiry, moved.replace(tzinfo=UTC)
    )  # fmt: skip
    assert (s.on_hand, s.last_movement_at) == (22, T0 + timedelta(minutes=12))


def test_a_deleted_ledger_row_no_longer_counts_as_the_last_movement(
    ch: Client, region: str
) -> None:
    """The latest movement is a max, which cannot forget: a deleted ledger row reloads
    its SKU's state."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)), _ledger(1, T0))
    w.write(region, [md, receive], t.wm(receive))
    later = t.tx(_ledger(2, T0 + timedelta(hours=1)))
    w.write(region, [later], t.wm(later))
    s = stock(ch, code)
    assert s is not None
    assert s.last_movement_at == T0 + timedelta(hours=1)
    purge = t.tx(("inventory_txn", "d", {"id": 2}))
    w.write(region, [purge], t.wm(purge))
    s = stock(ch, code)
    assert s is not None
    assert s.last_movement_at == T0
    after = t.tx(_ledger(3, T0 + timedelta(minutes=5)))
    w.write(region, [after], t.wm(after))  # in memory again, from the reloaded state
    s = stock(ch, code)
    assert s is not None
    assert s.last_movement_at == T0 + timedelta(minutes=5)


def test_a_replay_behind_newer_rows_writes_the_figures_of_its_own_cut(
    ch: Client, region: str
) -> None:
    """After a crash the projector replays batches whose later rows are already in:
    figures at a replayed batch's cut must not come from the newer state."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    first = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)), _ledger(1, T0))
    second = t.tx(
        ("inventory", "u", inv(10, 2, 1, "AVAILABLE", 25)), _ledger(2, T0 + timedelta(hours=1))
    )
    w.write(region, [md, first], t.wm(first))
    w.write(region, [second], t.wm(second))
    before = _versions(ch, region)
    w.write(region, [first], t.wm(first))  # replayed alone, as a smaller batch
    assert _versions(ch, region) == before
    at_first = ch.query(
        "SELECT on_hand, last_movement_at FROM stock_current WHERE region = {r:String}"
        " AND _commit_lsn <= {c:UInt64} ORDER BY _commit_lsn DESC, _seq DESC LIMIT 1",
        parameters={"r": region, "c": first.commit_lsn},
    ).result_rows
    assert at_first == [(10, T0.replace(tzinfo=None))]  # naive UTC from the driver


def test_single_key_reads_never_go_back_in_time(ch: Client, region: str) -> None:
    """`stock_point` (migrations 010, 011) keeps each key's newest version: figures of an older
    cut written late (a replay whose first write was lost) do not replace it, and a
    reader whose cut is older than it reads `stock_current` at its cut instead."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    first = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    second = t.tx(("inventory", "u", inv(10, 2, 1, "AVAILABLE", 25)))
    w.write(region, [md, first], t.wm(first))
    w.write(region, [second], t.wm(second))
    ch.command(
        "INSERT INTO stock_current SELECT * REPLACE (7 AS on_hand, {c:UInt64} AS _commit_lsn,"
        " _seq + 1000 AS _seq) FROM stock_current WHERE region = {r:String}"
        " ORDER BY _commit_lsn DESC LIMIT 1",
        parameters={"r": region, "c": first.commit_lsn},
    )
    now = stock(ch, code)
    assert now is not None
    assert now.on_hand == 25
    key = (f"{code}-OW", f"{code}-WH", "SKU-1")
    for cut, on_hand in ((first.commit_lsn, 7), (second.commit_lsn, 25)):
        point = queries.stock_one(ch, *key, {region: cut})
        assert point == queries.stock_one(ch, *key, {region: cut}, point=False)
        assert point is not None
        assert point.on_hand == on_hand


def test_single_key_reads_come_from_the_point_document(ch: Client, region: str) -> None:
    """`stock_point` (migration 011) stores a key's figures as one JSON document: every
    figure, dates and timestamps included, comes back as `stock_current` gives it, and
    the read does not touch `stock_current` when the document is at or below the cut."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(
        ("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10, alloc=3)),
        ("inventory", "c", inv(11, 2, 2, "QC_HOLD", 4)),
        ("inventory_txn", "c", _ledger(1, T0 + timedelta(microseconds=123456))[2]),
    )
    w.write(region, [md, receive], t.wm(receive))
    key, cut = (f"{code}-OW", f"{code}-WH", "SKU-1"), {region: receive.commit_lsn}
    served = queries.stock_one(ch, *key, cut, point=False)
    assert served is not None
    assert served.earliest_expiry is not None
    assert served.last_movement_at == T0 + timedelta(microseconds=123456)
    assert queries.stock_one(ch, *key, cut) == served

    ch.command("DELETE FROM stock_current WHERE region = {r:String}", parameters={"r": region})
    assert queries.stock_one(ch, *key, cut, point=False) is None
    assert queries.stock_one(ch, *key, cut) == served  # the document alone answers


def _agrees_with_bi_and_a_rebuild(ch: Client, w: ProjectionWriter, region: str, cut: int) -> None:
    """The keys served at `cut` are those computed from the balance rows (`cur_*` at the
    watermark), and a rebuild at the same cut finds nothing to change: incremental
    maintenance and a rebuild give the same `stock_current`."""
    params = {"region": region, "wm": cut, **queries._cuts({region: cut})}
    served = sorted((region, *r) for r in ch.query(figures._SERVED, parameters=params).result_rows)
    truth = ch.query(_FROM_BALANCE_ROWS, parameters=params)
    assert served == sorted(tuple(r) for r in truth.result_rows)
    assert w.figures.rebuild(region, cut) == 0


def _on_hand(ch: Client, owner: str, warehouse: str, sku: str) -> int | None:
    """On-hand of one key by both read paths (the point document and `stock_current`)."""
    point = queries.stock_one(ch, owner, warehouse, sku)
    assert point == queries.stock_one(ch, owner, warehouse, sku, point=False)
    return None if point is None else point.on_hand


def test_a_sku_code_change_moves_its_key(ch: Client, region: str) -> None:
    """The key is (owner code, warehouse code, SKU code): after a new code the old key
    gets a delete version and is no longer served, the new key has the figures."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    ow, wh = f"{code}-OW", f"{code}-WH"
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    w.write(region, [md, receive], t.wm(receive))
    assert _on_hand(ch, ow, wh, "SKU-1") == 10
    rename = t.tx(("sku", "u", {"id": 1, "owner_id": 1, "sku_code": "SKU-1B", "name": "W"}))
    w.write(region, [rename], t.wm(rename))
    assert _on_hand(ch, ow, wh, "SKU-1") is None
    assert _on_hand(ch, ow, wh, "SKU-1B") == 10
    _agrees_with_bi_and_a_rebuild(ch, w, region, rename.commit_lsn)
    more = t.tx(("inventory", "u", inv(10, 2, 1, "AVAILABLE", 12)))
    w.write(region, [more], t.wm(more))
    assert (_on_hand(ch, ow, wh, "SKU-1"), _on_hand(ch, ow, wh, "SKU-1B")) == (None, 12)
    _agrees_with_bi_and_a_rebuild(ch, w, region, more.commit_lsn)


def test_a_sku_owner_change_moves_its_key_with_every_balance_row(ch: Client, region: str) -> None:
    """The key's owner is the SKU's (wms/OPERATIONS.md, as the oracle joins it): when a
    SKU moves to another seller, the old seller's key is deleted, and the new one counts
    the balance rows still carrying the old owner id as well as new ones."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    ow, ow2, wh = f"{code}-OW", f"{code}-OW2", f"{code}-WH"
    md = master_data(t, code)
    second = t.tx(("owner", "c", {"id": 2, "code": ow2}))
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    w.write(region, [md, second, receive], t.wm(receive))
    moved = t.tx(("sku", "u", {"id": 1, "owner_id": 2, "sku_code": "SKU-1", "name": "W"}))
    w.write(region, [moved], t.wm(moved))
    assert _on_hand(ch, ow, wh, "SKU-1") is None
    assert _on_hand(ch, ow2, wh, "SKU-1") == 10
    _agrees_with_bi_and_a_rebuild(ch, w, region, moved.commit_lsn)
    more = t.tx(
        ("inventory", "u", inv(10, 2, 1, "AVAILABLE", 12)),  # still under owner id 1
        ("inventory", "c", {**inv(11, 4, 2, "AVAILABLE", 3), "owner_id": 2}),
    )
    w.write(region, [more], t.wm(more))
    assert (_on_hand(ch, ow, wh, "SKU-1"), _on_hand(ch, ow2, wh, "SKU-1")) == (None, 15)
    _agrees_with_bi_and_a_rebuild(ch, w, region, more.commit_lsn)
    # The WMS may also move the balance row: its versions then sit under two owner ids
    # in the by-SKU copies, and only the latest counts.
    along = t.tx(("inventory", "u", {**inv(10, 2, 1, "AVAILABLE", 12), "owner_id": 2}))
    w.write(region, [along], t.wm(along))
    assert (_on_hand(ch, ow, wh, "SKU-1"), _on_hand(ch, ow2, wh, "SKU-1")) == (None, 15)
    _agrees_with_bi_and_a_rebuild(ch, w, region, along.commit_lsn)


def test_a_code_taken_by_another_sku_keeps_that_skus_key(ch: Client, region: str) -> None:
    """SKU 1 gives up SKU-1 and SKU 2 takes it: a later change of SKU 1 compares the key
    of its lost name, which is now SKU 2's and must stay."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    ow, wh = f"{code}-OW", f"{code}-WH"
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    w.write(region, [md, receive], t.wm(receive))
    rename = t.tx(("sku", "u", {"id": 1, "owner_id": 1, "sku_code": "SKU-1B", "name": "W"}))
    taken = t.tx(
        ("sku", "c", {"id": 2, "owner_id": 1, "sku_code": "SKU-1", "name": "New"}),
        ("inventory", "c", {**inv(20, 4, None, "AVAILABLE", 4), "sku_id": 2}),
    )
    w.write(region, [rename], t.wm(rename))
    w.write(region, [taken], t.wm(taken))
    later = t.tx(("inventory", "u", inv(10, 2, 1, "AVAILABLE", 11)))
    w.write(region, [later], t.wm(later))
    assert (_on_hand(ch, ow, wh, "SKU-1"), _on_hand(ch, ow, wh, "SKU-1B")) == (4, 11)
    _agrees_with_bi_and_a_rebuild(ch, w, region, later.commit_lsn)


def test_a_skus_page_across_warehouses_reads_what_the_writer_serves(
    ch: Client, region: str
) -> None:
    """`GET /v1/stock?sku=` answers from `stock_current` like every other stock read (one
    definition of the figures: the writer's), not from a second computation."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    w.write(region, [md, receive], t.wm(receive))
    owner = f"{code}-OW"
    (row,) = queries.stock_page_sku(ch, owner, "SKU-1")
    assert (row.warehouse, row.on_hand) == (f"{code}-WH", 10)
    ch.command(
        "INSERT INTO stock_current SELECT * REPLACE (7 AS on_hand, _seq + 1 AS _seq)"
        " FROM stock_current WHERE region = {r:String} ORDER BY _seq DESC LIMIT 1",
        parameters={"r": region},
    )
    (row,) = queries.stock_page_sku(ch, owner, "SKU-1")
    assert row.on_hand == 7
    assert queries.stock_page_sku(ch, owner, "SKU-1", after_warehouse=f"{code}-WH") == []


def test_the_served_figures_are_exact_at_every_commit_of_a_batch(ch: Client, region: str) -> None:
    """A key changed by several transactions of one batch gets a version at each commit,
    so reconciliation (and any reader at an older cut) finds the figures of exactly the
    commits below its cut, whichever batch carried them."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    first = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    more = {**inv(10, 2, 1, "AVAILABLE", 25), "_before": inv(10, 2, 1, "AVAILABLE", 10)}
    second = t.tx(("inventory", "u", more))
    third = t.tx(("inventory", "c", inv(11, 2, 2, "AVAILABLE", 5)))
    w.write(region, [md, first, second, third], t.wm(third))
    owner = f"{code}-OW"
    for tx, on_hand in ((md, None), (first, 10), (second, 25), (third, 30)):
        page = queries.stock_page(ch, owner, cut={region: tx.commit_lsn})
        assert [r.on_hand for r in page] == ([] if on_hand is None else [on_hand])


def test_a_location_flip_inside_a_batch_is_exact_at_its_own_commit(ch: Client, region: str) -> None:
    """A reload (here: a location turning unsellable) reads its SKUs at the commit that
    needs it, not at the batch's last: a cut between the two (a daily snapshot,
    reconciliation) sees the flip."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10)))
    lock = t.tx(("location", "u", {"id": 2, "warehouse_id": 1, "code": "A-01", "sellable": False}))
    later = t.tx(("inventory", "c", inv(11, 4, 2, "AVAILABLE", 5)))
    w.write(region, [md, receive, lock, later], t.wm(later))
    owner = f"{code}-OW"
    for tx, available in ((receive, 10), (lock, 0), (later, 5)):
        page = queries.stock_page(ch, owner, cut={region: tx.commit_lsn})
        assert [r.available for r in page] == [available], tx.commit_lsn


def test_the_point_tables_take_each_keys_newest_version_row_by_row(ch: Client, region: str) -> None:
    """Issue 15 (migration 015): the RocksDB point tables take small inserts into their
    memtable (optimize_for_bulk_insert = 0; by default every insert builds and ingests an
    SST file), and a block still leaves each key at its newest version: a key whose point
    row is newer than the inserted one keeps it, the others take theirs."""
    cols = ["region", "owner", "warehouse", "sku", "on_hand", "_commit_lsn", "_seq", "_is_deleted"]

    def put(*rows: tuple[str, int, int]) -> None:
        data = [(region, region, "W", sku, qty, lsn, lsn, 0) for sku, qty, lsn in rows]
        ch.insert("stock_current", data, column_names=cols)

    put(("A", 1, 10), ("B", 1, 50))
    put(("A", 2, 20), ("B", 2, 30), ("C", 3, 30))  # B's 30 is older than its 50
    keys = [point_key(region, "W", sku) for sku in "ABC"]
    got = ch.query(
        "SELECT key, _commit_lsn, JSONExtractInt(doc, 'on_hand') FROM stock_point"
        " WHERE key IN {keys:Array(String)}",
        parameters={"keys": keys},
    ).result_rows
    assert sorted(tuple(r) for r in got) == sorted(zip(keys, (20, 50, 30), (2, 1, 3), strict=True))
    points = ch.query(
        "SELECT name, engine_full FROM system.tables"
        " WHERE engine = 'EmbeddedRocksDB' AND database = currentDatabase()"
    ).result_rows
    assert len(points) > 1
    assert [n for n, engine in points if "optimize_for_bulk_insert = 0" not in engine] == []
