"""`stock_current` (read_model.serving) follows every change the figures depend on, writes
nothing on a replay, and is rebuilt for a region it never had."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from read_model.writer import ProjectionWriter
from tests.unit.read_model.test_projection import Tx, inv, master_data, stock


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


def test_a_region_never_built_is_built_when_a_writer_resumes(ch: Client, region: str) -> None:
    """A projection from before `stock_current` existed: the figures appear at restart."""
    t, w, code = Tx(region), ProjectionWriter(ch), region.upper()
    md = master_data(t, code)
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 10, alloc=3)))
    w.write(region, [md, receive], t.wm(receive))
    expected = stock(ch, code)
    for table in ("stock_current", "_stock_current_built"):
        ch.command(f"DELETE FROM {table} WHERE region = {{r:String}}", parameters={"r": region})
    assert stock(ch, code) is None
    ProjectionWriter(ch).load_watermarks()
    assert stock(ch, code) == expected
    assert expected is not None
    assert expected.available == 7
