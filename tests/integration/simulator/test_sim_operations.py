"""Each WMS operation's exact effect on balance rows, allocations, serials and ledger,
on hand-built cases in a throwaway database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from simulator import ops, workload
from simulator.errors import Rejected
from simulator.oracle import StockKey, read_truth
from stockcdc.settings import Settings
from tests.integration.simulator.sim_case import OP, TODAY, FixedRandom, Wms, make_worker

pytestmark = pytest.mark.integration

MakeWms = Callable[..., Wms]


def test_receive_with_damage_lot_and_order_status(make_wms: MakeWms) -> None:
    w = make_wms()
    line = w.inbound("TEA", 10, "NEW", production=TODAY, expiry=TODAY + timedelta(days=90))
    w.tx(
        lambda c: ops.receive(
            c, line_id=line, qty=6, damaged=2, location_id=w.loc["RCV"], operator=OP
        )
    )
    assert w.rows("TEA") == [
        ("RCV", "NEW", "DAMAGED", 2, 0),
        ("RCV", "NEW", "PENDING_PUTAWAY", 4, 0),
    ]
    assert w.one("SELECT qty_received, qty_damaged FROM inbound_line WHERE id = %s", line) == (6, 2)
    order_status = (
        "SELECT o.status FROM inbound_order o "
        "JOIN inbound_line l ON l.inbound_order_id = o.id WHERE l.id = %s"
    )
    assert w.one(order_status, line) == "RECEIVING"
    lot = w.one(
        "SELECT production_date, expiry_date, first_received_at IS NOT NULL FROM lot "
        "WHERE sku_id = %s AND lot_no = 'NEW'",
        w.sku["TEA"],
    )
    assert lot == (TODAY, TODAY + timedelta(days=90), True)
    assert w.ledger("TEA") == [("RECEIVE", 4, 4, 0), ("RECEIVE", 2, 2, 0)]
    w.tx(lambda c: ops.receive(c, line_id=line, qty=4, location_id=w.loc["RCV"], operator=OP))
    assert w.one(order_status, line) == "RECEIVED"
    with pytest.raises(Rejected):
        w.tx(lambda c: ops.receive(c, line_id=line, qty=1, location_id=w.loc["RCV"], operator=OP))
    w.assert_invariants()


def test_receive_serials_and_putaway_keeps_in_date(make_wms: MakeWms) -> None:
    w = make_wms()
    line = w.inbound("PHONE", 3)
    w.tx(
        lambda c: ops.receive(
            c,
            line_id=line,
            qty=3,
            damaged=1,
            location_id=w.loc["RCV"],
            operator=OP,
            serial_nos=["A1", "A2", "A3"],
        )
    )
    assert w.serials("PHONE") == [
        ("A1", "IN_STOCK", "RCV"),
        ("A2", "IN_STOCK", "RCV"),
        ("A3", "DAMAGED", "RCV"),
    ]
    # one ledger row per serial
    assert w.ledger("PHONE") == [("RECEIVE", 1, 1, 0)] * 3
    assert w.one("SELECT count(*) FROM inventory_txn WHERE serial_id IS NOT NULL") == 3
    pending = w.inv_id("PHONE", "RCV", "PENDING_PUTAWAY")
    first_in = w.one("SELECT in_date FROM inventory WHERE id = %s", pending)
    w.tx(
        lambda c: ops.putaway(
            c, inventory_id=pending, qty=1, to_location_id=w.loc["S1"], operator=OP
        )
    )
    w.tx(
        lambda c: ops.putaway(
            c, inventory_id=pending, qty=1, to_location_id=w.loc["S1"], operator=OP
        )
    )
    # the source row is deleted at zero; the destination keeps the earlier in_date
    assert w.rows("PHONE") == [("RCV", None, "DAMAGED", 1, 0), ("S1", None, "AVAILABLE", 2, 0)]
    assert w.one("SELECT in_date FROM inventory WHERE id = %s", w.inv_id("PHONE", "S1")) == first_in
    assert w.ledger("PHONE")[-2:] == [("PUTAWAY", 1, 0, 0)] * 2
    assert [s[2] for s in w.serials("PHONE")] == ["S1", "S1", "RCV"]
    w.assert_invariants()


def test_move_only_unallocated_available_units(make_wms: MakeWms) -> None:
    w = make_wms()
    inv = w.stock("MUG", 5, "S1")
    order = w.order([("MUG", 3)])
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    with pytest.raises(Rejected):
        w.tx(
            lambda c: ops.move(c, inventory_id=inv, qty=3, to_location_id=w.loc["S2"], operator=OP)
        )
    w.tx(lambda c: ops.move(c, inventory_id=inv, qty=2, to_location_id=w.loc["S2"], operator=OP))
    assert w.rows("MUG") == [("S1", None, "AVAILABLE", 3, 3), ("S2", None, "AVAILABLE", 2, 0)]
    assert w.ledger("MUG")[-1] == ("MOVE", 2, 0, 0)
    w.assert_invariants()


def test_allocate_fefo_skips_expired_lots_and_backorders(make_wms: MakeWms) -> None:
    w = make_wms()
    w.stock("TEA", 5, "S1", "EXPIRED")
    w.stock("TEA", 4, "S2", "LATE")
    w.stock("TEA", 3, "P1", "SOON")
    order = w.order([("TEA", 9)], rule="FEFO")
    result = w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    assert result == ops.AllocateResult(status="BACKORDER", allocated=7, short=2)
    assert w.all(
        "SELECT l.lot_no, a.qty, a.status FROM allocation a "
        "JOIN lot l ON l.id = a.lot_id ORDER BY a.id"
    ) == [("SOON", 3, "ALLOCATED"), ("LATE", 4, "ALLOCATED")]
    assert w.one("SELECT status FROM outbound_order WHERE id = %s", order) == "BACKORDER"
    assert w.one("SELECT qty_allocated FROM outbound_line WHERE outbound_order_id = %s", order) == 7
    assert [r for r in w.ledger("TEA") if r[0] == "ALLOCATE"] == [
        ("ALLOCATE", 3, 0, 3),
        ("ALLOCATE", 4, 0, 4),
    ]
    w.assert_invariants()
    # more stock arrives: the backorder completes
    w.stock("TEA", 5, "S1", "LATE")
    assert w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP)).status == "ALLOCATED"
    w.assert_invariants()


def test_allocate_fifo_by_in_date_and_specified_lot(make_wms: MakeWms) -> None:
    w = make_wms()
    old = w.stock("TEA", 2, "S2", "LATE")
    new = w.stock("TEA", 2, "S1", "SOON")
    w.conn.execute(
        "UPDATE inventory SET in_date = now() - interval '30 days' WHERE id = %s", (old,)
    )
    fifo = w.order([("TEA", 1)], rule="FIFO")
    w.tx(lambda c: ops.allocate(c, order_id=fifo, operator=OP))
    assert w.one("SELECT inventory_id FROM allocation") == old  # FEFO would take SOON
    spec = w.order([("TEA", 2)], rule="SPECIFIED", lot="SOON")
    w.tx(lambda c: ops.allocate(c, order_id=spec, operator=OP))
    assert w.all("SELECT inventory_id, qty FROM allocation ORDER BY id")[1] == (new, 2)
    expired = w.order([("TEA", 1)], rule="SPECIFIED", lot="EXPIRED")
    assert w.tx(lambda c: ops.allocate(c, order_id=expired, operator=OP)).status == "BACKORDER"
    w.assert_invariants()


def test_pick_ship_serials_and_ledger(make_wms: MakeWms) -> None:
    w = make_wms()
    w.stock("PHONE", 3, "S1", serial_nos=["P1", "P2", "P3"])
    order = w.order([("PHONE", 2)])
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    assert [s[1] for s in w.serials("PHONE")] == ["ALLOCATED", "ALLOCATED", "IN_STOCK"]
    status = w.tx(
        lambda c: ops.pick(c, order_id=order, staging_location_id=w.loc["STG"], operator=OP)
    )
    assert status == "PACKED"
    assert w.rows("PHONE") == [("S1", None, "AVAILABLE", 1, 0), ("STG", None, "AVAILABLE", 2, 2)]
    assert w.one("SELECT status FROM allocation") == "PICKED"
    w.assert_invariants()
    shipped = w.tx(lambda c: ops.ship(c, order_id=order, tracking_no="1Z999", operator=OP))
    assert shipped == 2
    assert w.rows("PHONE") == [("S1", None, "AVAILABLE", 1, 0)]
    assert w.one("SELECT status, tracking_no, shipped_at IS NOT NULL FROM outbound_order") == (
        "SHIPPED",
        "1Z999",
        True,
    )
    assert w.one("SELECT qty_shipped FROM outbound_line") == 2
    assert w.all(
        "SELECT status, location_id IS NULL, shipped_at IS NOT NULL FROM serial_number "
        "ORDER BY serial_no"
    ) == [
        ("SHIPPED", True, True),
        ("SHIPPED", True, True),
        ("IN_STOCK", False, False),
    ]
    tail = w.ledger("PHONE")[-6:]
    assert tail == [("ALLOCATE", 1, 0, 1)] * 2 + [("PICK", 1, 0, 0)] * 2 + [("SHIP", 1, -1, -1)] * 2
    w.assert_invariants()


def test_partial_pick_then_cancel_after_pick_returns_stock(make_wms: MakeWms) -> None:
    w = make_wms()
    w.stock("MUG", 4, "S1")
    w.stock("MUG", 4, "S2")
    order = w.order([("MUG", 6)], rule="FIFO")
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    status = w.tx(
        lambda c: ops.pick(
            c, order_id=order, staging_location_id=w.loc["STG"], operator=OP, max_allocations=1
        )
    )
    assert status == "PICKING"
    w.assert_invariants()
    released = w.tx(lambda c: ops.cancel(c, order_id=order, operator=OP))
    assert released == 6
    assert w.rows("MUG") == [("S1", None, "AVAILABLE", 4, 0), ("S2", None, "AVAILABLE", 4, 0)]
    assert w.all("SELECT DISTINCT status FROM allocation") == [("RELEASED",)]
    assert w.one("SELECT status FROM outbound_order") == "CANCELLED"
    dealloc = [r for r in w.ledger("MUG") if r[0] == "DEALLOCATE"]
    assert sorted(dealloc) == [("DEALLOCATE", 2, 0, -2), ("DEALLOCATE", 4, 0, -4)]
    w.assert_invariants()


def test_deallocate_before_pick_frees_serials(make_wms: MakeWms) -> None:
    w = make_wms()
    w.stock("PHONE", 2, "S1", serial_nos=["D1", "D2"])
    order = w.order([("PHONE", 2)])
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    w.tx(lambda c: ops.cancel(c, order_id=order, operator=OP))
    assert w.rows("PHONE") == [("S1", None, "AVAILABLE", 2, 0)]
    assert [s[1] for s in w.serials("PHONE")] == ["IN_STOCK", "IN_STOCK"]
    assert w.ledger("PHONE")[-2:] == [("DEALLOCATE", 1, 0, -1)] * 2
    w.assert_invariants()


def test_adjust_and_count_lose_and_find_serials(make_wms: MakeWms) -> None:
    w = make_wms()
    inv = w.stock("PHONE", 3, "S1", serial_nos=["C1", "C2", "C3"])
    w.tx(lambda c: ops.adjust(c, inventory_id=inv, delta=-2, operator=OP))
    assert [s[1] for s in w.serials("PHONE")] == ["LOST", "LOST", "IN_STOCK"]
    assert w.ledger("PHONE")[-2:] == [("ADJUST", -1, -1, 0)] * 2
    diff = w.tx(
        lambda c: ops.count(c, inventory_id=inv, counted_qty=4, operator=OP, new_serial_nos=["C9"])
    )
    assert diff == 3
    # two lost serials turn up again, one unknown serial is created
    assert w.serials("PHONE") == [
        ("C1", "IN_STOCK", "S1"),
        ("C2", "IN_STOCK", "S1"),
        ("C3", "IN_STOCK", "S1"),
        ("C9", "IN_STOCK", "S1"),
    ]
    assert w.ledger("PHONE")[-3:] == [("COUNT", 1, 1, 0)] * 3
    mug = w.stock("MUG", 2, "S2")
    w.tx(lambda c: ops.adjust(c, inventory_id=mug, delta=-2, operator=OP))
    assert w.rows("MUG") == []  # deleted at zero
    assert w.ledger("MUG")[-1] == ("ADJUST", -2, -2, 0)
    w.assert_invariants()


def test_freeze_unfreeze_and_qc(make_wms: MakeWms) -> None:
    w = make_wms()
    inv = w.stock("MUG", 5, "S1")
    hold = w.tx(lambda c: ops.freeze(c, inventory_id=inv, qty=2, operator=OP, hold_type="RECALL"))
    assert w.rows("MUG") == [("S1", None, "AVAILABLE", 3, 0), ("S1", None, "FROZEN", 2, 0)]
    assert w.one("SELECT hold_type, status, qty FROM inventory_hold WHERE id = %s", hold) == (
        "RECALL",
        "ACTIVE",
        2,
    )
    w.assert_invariants()
    w.tx(lambda c: ops.unfreeze(c, hold_id=hold, operator=OP))
    assert w.rows("MUG") == [("S1", None, "AVAILABLE", 5, 0)]
    assert w.one("SELECT status, released_at IS NOT NULL FROM inventory_hold") == ("RELEASED", True)
    assert [r[0] for r in w.ledger("MUG")][-2:] == ["FREEZE", "UNFREEZE"]
    line = w.inbound("MUG", 6)
    w.tx(lambda c: ops.receive(c, line_id=line, qty=6, location_id=w.loc["RCV"], operator=OP))
    pending = w.inv_id("MUG", "RCV", "PENDING_PUTAWAY")
    h1 = w.tx(lambda c: ops.qc_hold(c, inventory_id=pending, qty=4, operator=OP))
    w.assert_invariants()
    w.tx(lambda c: ops.qc_fail(c, hold_id=h1, operator=OP))
    assert ("RCV", None, "DAMAGED", 4, 0) in w.rows("MUG")
    assert ("RCV", None, "PENDING_PUTAWAY", 2, 0) in w.rows("MUG")
    h2 = w.tx(lambda c: ops.qc_hold(c, inventory_id=pending, qty=2, operator=OP))
    w.tx(lambda c: ops.qc_pass(c, hold_id=h2, operator=OP))
    assert ("RCV", None, "PENDING_PUTAWAY", 2, 0) in w.rows("MUG")
    assert [r[0] for r in w.ledger("MUG")][-4:] == ["FREEZE", "QC_FAIL", "FREEZE", "QC_PASS"]
    w.assert_invariants()


def test_damage_scrap_expire(make_wms: MakeWms) -> None:
    w = make_wms()
    inv = w.stock("PHONE", 2, "S1", serial_nos=["X1", "X2"])
    w.tx(
        lambda c: ops.damage(
            c, inventory_id=inv, qty=1, damage_location_id=w.loc["DMG"], operator=OP
        )
    )
    assert w.serials("PHONE") == [("X1", "DAMAGED", "DMG"), ("X2", "IN_STOCK", "S1")]
    dmg = w.inv_id("PHONE", "DMG", "DAMAGED")
    w.tx(lambda c: ops.scrap(c, inventory_id=dmg, qty=1, operator=OP))
    assert w.serials("PHONE")[0] == ("X1", "SCRAPPED", None)
    assert w.ledger("PHONE")[-2:] == [("DAMAGE", 1, 0, 0), ("SCRAP", 1, -1, 0)]
    w.stock("TEA", 5, "S1", "EXPIRED")
    order = w.order([("TEA", 1)], rule="SPECIFIED", lot="SOON")
    w.stock("TEA", 2, "S2", "SOON")
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    with pytest.raises(Rejected):
        w.tx(lambda c: ops.expire(c, lot_id=w.lot["SOON"], warehouse_id=w.wh, operator=OP))
    assert (
        w.tx(lambda c: ops.expire(c, lot_id=w.lot["EXPIRED"], warehouse_id=w.wh, operator=OP)) == 5
    )
    assert ("S1", "EXPIRED", "EXPIRED", 5, 0) in w.rows("TEA")
    assert w.ledger("TEA")[-1] == ("EXPIRE", 5, 0, 0)
    w.assert_invariants()


def test_customer_return_of_a_serial(make_wms: MakeWms) -> None:
    w = make_wms()
    w.stock("PHONE", 1, "S1", serial_nos=["R1"])
    order = w.order([("PHONE", 1)])
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    w.tx(lambda c: ops.pick(c, order_id=order, staging_location_id=w.loc["STG"], operator=OP))
    w.tx(lambda c: ops.ship(c, order_id=order, tracking_no="T", operator=OP))
    row = w.tx(
        lambda c: ops.customer_return(
            c,
            warehouse_id=w.wh,
            sku_id=w.sku["PHONE"],
            returns_location_id=w.loc["RET"],
            order_no="RMA-1",
            serial_nos=["R1"],
            operator=OP,
        )
    )
    assert w.rows("PHONE") == [("RET", None, "RETURNED", 1, 0)]
    assert w.one("SELECT status, receive_count FROM serial_number") == ("RETURNED", 2)
    assert w.one("SELECT order_type, status FROM inbound_order WHERE order_no = 'RMA-1'") == (
        "RETURN",
        "RECEIVED",
    )
    assert w.ledger("PHONE")[-1] == ("RETURN", 1, 1, 0)
    w.assert_invariants()
    w.tx(lambda c: ops.putaway(c, inventory_id=row, qty=1, to_location_id=w.loc["S2"], operator=OP))
    assert w.serials("PHONE") == [("R1", "IN_STOCK", "S2")]
    assert w.rows("PHONE") == [("S2", None, "AVAILABLE", 1, 0)]
    w.assert_invariants()


def test_master_data_changes(make_wms: MakeWms) -> None:
    w = make_wms()
    w.tx(
        lambda c: ops.update_sku(
            c, sku_id=w.sku["MUG"], name="Mug XL", weight_kg="0.750", attributes={"color": "red"}
        )
    )
    assert w.one(
        "SELECT name, weight_kg::text, attributes->>'color' FROM sku WHERE id = %s", w.sku["MUG"]
    ) == (
        "Mug XL",
        "0.750",
        "red",
    )
    new = w.tx(
        lambda c: ops.create_sku(
            c, owner_id=w.owner, sku_code="NEW", name="New", tracking="LOT", shelf_life_days=30
        )
    )
    lot = w.tx(
        lambda c: ops.create_lot(
            c,
            sku_id=new,
            lot_no="N1",
            production_date=TODAY,
            expiry_date=TODAY + timedelta(days=30),
        )
    )
    assert w.one("SELECT sku_id, first_received_at FROM lot WHERE id = %s", lot) == (new, None)


def test_qc_hold_then_fail_damages_serials_and_pass_returns_to_putaway(
    settings: Settings, make_wms: MakeWms
) -> None:
    w = make_wms()
    line = w.inbound("PHONE", 4)
    w.tx(
        lambda c: ops.receive(
            c,
            line_id=line,
            qty=4,
            location_id=w.loc["RCV"],
            operator=OP,
            serial_nos=["Q1", "Q2", "Q3", "Q4"],
        )
    )
    pending = w.inv_id("PHONE", "RCV", "PENDING_PUTAWAY")
    hold = w.tx(lambda c: ops.qc_hold(c, inventory_id=pending, qty=3, operator=OP))
    # held in place: a QC_HOLD row beside what is still pending, an ACTIVE QC hold
    assert w.rows("PHONE") == [
        ("RCV", None, "PENDING_PUTAWAY", 1, 0),
        ("RCV", None, "QC_HOLD", 3, 0),
    ]
    assert w.one(
        "SELECT h.hold_type, h.status, h.qty, loc.code, h.sku_id, h.lot_id, h.released_at "
        "FROM inventory_hold h JOIN location loc ON loc.id = h.location_id WHERE h.id = %s",
        hold,
    ) == ("QC", "ACTIVE", 3, "RCV", w.sku["PHONE"], None, None)
    assert [s[1:] for s in w.serials("PHONE")] == [("IN_STOCK", "RCV")] * 4
    # the ledger has no QC hold type: the hold is a FREEZE row per serial, 0 / 0
    assert w.ledger("PHONE")[-3:] == [("FREEZE", 1, 0, 0)] * 3
    assert (
        w.moves("PHONE", "FREEZE")
        == [("RCV", "RCV", "PENDING_PUTAWAY", "QC_HOLD", "HOLD", str(hold))] * 3
    )
    assert w.all("SELECT DISTINCT reason_code FROM inventory_txn WHERE txn_type = 'FREEZE'") == [
        ("QC_HOLD",)
    ]
    phone = read_truth(settings, [w.region], dbname=w.dbname).stock[
        StockKey("SELLER-1", w.wh_code, "PHONE")
    ]
    assert (phone.on_hand, phone.pending_putaway, phone.qc_hold, phone.available) == (4, 1, 3, 0)
    w.assert_invariants()
    held = w.inv_id("PHONE", "RCV", "QC_HOLD")
    with pytest.raises(Rejected):  # held stock is not put away
        w.tx(
            lambda c: ops.putaway(
                c, inventory_id=held, qty=1, to_location_id=w.loc["S1"], operator=OP
            )
        )
    with pytest.raises(Rejected):  # only PENDING_PUTAWAY units are held, up to what is there
        w.tx(lambda c: ops.qc_hold(c, inventory_id=pending, qty=2, operator=OP))
    with pytest.raises(Rejected):  # a QC hold is not a freeze
        w.tx(lambda c: ops.unfreeze(c, hold_id=hold, operator=OP))

    w.tx(lambda c: ops.qc_fail(c, hold_id=hold, operator=OP))
    assert w.rows("PHONE") == [
        ("RCV", None, "DAMAGED", 3, 0),
        ("RCV", None, "PENDING_PUTAWAY", 1, 0),
    ]
    assert w.serials("PHONE") == [
        ("Q1", "DAMAGED", "RCV"),
        ("Q2", "DAMAGED", "RCV"),
        ("Q3", "DAMAGED", "RCV"),
        ("Q4", "IN_STOCK", "RCV"),
    ]
    assert w.one(
        "SELECT status, released_at IS NOT NULL FROM inventory_hold WHERE id = %s", hold
    ) == ("RELEASED", True)
    assert w.ledger("PHONE")[-3:] == [("QC_FAIL", 1, 0, 0)] * 3
    assert (
        w.moves("PHONE", "QC_FAIL") == [("RCV", "RCV", "QC_HOLD", "DAMAGED", "HOLD", str(hold))] * 3
    )
    with pytest.raises(Rejected):  # released already
        w.tx(lambda c: ops.qc_fail(c, hold_id=hold, operator=OP))
    w.assert_invariants()

    # a pass puts the units back on the pending row (it keeps the earlier in_date)
    first_in = w.one("SELECT in_date FROM inventory WHERE id = %s", pending)
    h2 = w.tx(lambda c: ops.qc_hold(c, inventory_id=pending, qty=1, operator=OP))
    assert w.rows("PHONE") == [("RCV", None, "DAMAGED", 3, 0), ("RCV", None, "QC_HOLD", 1, 0)]
    w.tx(lambda c: ops.qc_pass(c, hold_id=h2, operator=OP))
    assert w.rows("PHONE") == [
        ("RCV", None, "DAMAGED", 3, 0),
        ("RCV", None, "PENDING_PUTAWAY", 1, 0),
    ]
    again = w.inv_id("PHONE", "RCV", "PENDING_PUTAWAY")
    assert w.one("SELECT in_date FROM inventory WHERE id = %s", again) == first_in
    assert w.serials("PHONE")[3] == ("Q4", "IN_STOCK", "RCV")
    assert w.ledger("PHONE")[-2:] == [("FREEZE", 1, 0, 0), ("QC_PASS", 1, 0, 0)]
    assert w.moves("PHONE", "QC_PASS") == [
        ("RCV", "RCV", "QC_HOLD", "PENDING_PUTAWAY", "HOLD", str(h2))
    ]
    # the QC-failed units are scrapped like any damaged stock
    dmg = w.inv_id("PHONE", "RCV", "DAMAGED")
    w.tx(lambda c: ops.scrap(c, inventory_id=dmg, qty=3, operator=OP))
    assert [s[1:] for s in w.serials("PHONE")[:3]] == [("SCRAPPED", None)] * 3
    assert w.rows("PHONE") == [("RCV", None, "PENDING_PUTAWAY", 1, 0)]
    assert sum(r[2] for r in w.ledger("PHONE")) == 1
    w.assert_invariants()


def test_damage_takes_only_free_units_and_scrap_of_damaged_rows(make_wms: MakeWms) -> None:
    w = make_wms()
    inv = w.stock("MUG", 6, "S1")
    order = w.order([("MUG", 2)])
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    w.tx(
        lambda c: ops.damage(
            c, inventory_id=inv, qty=3, damage_location_id=w.loc["DMG"], operator=OP
        )
    )
    assert w.rows("MUG") == [("DMG", None, "DAMAGED", 3, 0), ("S1", None, "AVAILABLE", 3, 2)]
    assert w.ledger("MUG")[-1] == ("DAMAGE", 3, 0, 0)
    assert w.moves("MUG", "DAMAGE") == [("S1", "DMG", "AVAILABLE", "DAMAGED", None, None)]
    with pytest.raises(Rejected):  # 1 unit is free, 2 are allocated
        w.tx(
            lambda c: ops.damage(
                c, inventory_id=inv, qty=2, damage_location_id=w.loc["DMG"], operator=OP
            )
        )
    with pytest.raises(Rejected):  # damaged stock goes to a DAMAGE location
        w.tx(
            lambda c: ops.damage(
                c, inventory_id=inv, qty=1, damage_location_id=w.loc["S2"], operator=OP
            )
        )
    dmg = w.inv_id("MUG", "DMG", "DAMAGED")
    first_in = w.one("SELECT in_date FROM inventory WHERE id = %s", dmg)
    w.tx(
        lambda c: ops.damage(
            c, inventory_id=inv, qty=1, damage_location_id=w.loc["DMG"], operator=OP
        )
    )
    # lands on the existing DAMAGED row, which keeps its in_date
    assert w.rows("MUG") == [("DMG", None, "DAMAGED", 4, 0), ("S1", None, "AVAILABLE", 2, 2)]
    assert w.one("SELECT id, in_date FROM inventory WHERE id = %s", dmg) == (dmg, first_in)
    w.assert_invariants()
    with pytest.raises(Rejected):  # only DAMAGED or EXPIRED rows are scrapped
        w.tx(lambda c: ops.scrap(c, inventory_id=inv, qty=1, operator=OP))
    with pytest.raises(Rejected):
        w.tx(lambda c: ops.scrap(c, inventory_id=dmg, qty=5, operator=OP))
    w.tx(lambda c: ops.scrap(c, inventory_id=dmg, qty=1, operator=OP))
    assert w.rows("MUG") == [("DMG", None, "DAMAGED", 3, 0), ("S1", None, "AVAILABLE", 2, 2)]
    w.tx(lambda c: ops.scrap(c, inventory_id=dmg, qty=3, operator=OP))
    assert w.rows("MUG") == [("S1", None, "AVAILABLE", 2, 2)]  # deleted at zero
    assert w.ledger("MUG")[-2:] == [("SCRAP", 1, -1, 0), ("SCRAP", 3, -3, 0)]
    assert w.moves("MUG", "SCRAP") == [("DMG", None, "DAMAGED", None, None, None)] * 2
    w.assert_invariants()


def test_expire_leaves_allocated_units_and_expired_rows_are_scrapped(make_wms: MakeWms) -> None:
    w = make_wms()
    w.stock("TEA", 5, "S1", "SOON")
    w.stock("TEA", 2, "S2", "SOON")
    w.stock("TEA", 4, "P1", "LATE")
    order = w.order([("TEA", 3)], rule="FEFO")
    assert w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP)).status == "ALLOCATED"
    assert w.rows("TEA") == [
        ("P1", "LATE", "AVAILABLE", 4, 0),
        ("S1", "SOON", "AVAILABLE", 5, 3),
        ("S2", "SOON", "AVAILABLE", 2, 0),
    ]
    # time passes: the lot is past its expiry date, its units still count as available
    w.conn.execute("UPDATE lot SET expiry_date = current_date - 1 WHERE id = %s", (w.lot["SOON"],))
    expired = w.tx(lambda c: ops.expire(c, lot_id=w.lot["SOON"], warehouse_id=w.wh, operator=OP))
    assert expired == 4
    assert w.rows("TEA") == [
        ("P1", "LATE", "AVAILABLE", 4, 0),
        ("S1", "SOON", "AVAILABLE", 3, 3),  # the allocated units stay as they are
        ("S1", "SOON", "EXPIRED", 2, 0),
        ("S2", "SOON", "EXPIRED", 2, 0),
    ]
    assert w.ledger("TEA")[-2:] == [("EXPIRE", 2, 0, 0)] * 2
    assert w.moves("TEA", "EXPIRE") == [
        ("S1", "S1", "AVAILABLE", "EXPIRED", None, None),
        ("S2", "S2", "AVAILABLE", "EXPIRED", None, None),
    ]
    with pytest.raises(Rejected):  # only allocated units are left: nothing to expire
        w.tx(lambda c: ops.expire(c, lot_id=w.lot["SOON"], warehouse_id=w.wh, operator=OP))
    assert w.all("SELECT qty, status FROM allocation") == [(3, "ALLOCATED")]
    w.assert_invariants()
    s2 = w.inv_id("TEA", "S2", "EXPIRED", "SOON")
    w.tx(lambda c: ops.scrap(c, inventory_id=s2, qty=2, operator=OP))
    s1 = w.inv_id("TEA", "S1", "EXPIRED", "SOON")
    w.tx(lambda c: ops.scrap(c, inventory_id=s1, qty=1, operator=OP))
    assert w.ledger("TEA")[-2:] == [("SCRAP", 2, -2, 0), ("SCRAP", 1, -1, 0)]
    assert w.moves("TEA", "SCRAP") == [
        ("S2", None, "EXPIRED", None, None, None),
        ("S1", None, "EXPIRED", None, None, None),
    ]
    # the order allocated before expiry still ships
    w.tx(lambda c: ops.pick(c, order_id=order, staging_location_id=w.loc["STG"], operator=OP))
    w.tx(lambda c: ops.ship(c, order_id=order, tracking_no="1Z", operator=OP))
    assert w.rows("TEA") == [("P1", "LATE", "AVAILABLE", 4, 0), ("S1", "SOON", "EXPIRED", 1, 0)]
    w.assert_invariants()

    # serials of an expired row stay IN_STOCK where they are, and are scrapped with it
    w.stock("PHONE", 2, "S1", "OLD", serial_nos=["E1", "E2"])
    w.conn.execute(
        "UPDATE lot SET expiry_date = current_date - 1 WHERE sku_id = %s AND lot_no = 'OLD'",
        (w.sku["PHONE"],),
    )
    old = w.one("SELECT id FROM lot WHERE sku_id = %s AND lot_no = 'OLD'", w.sku["PHONE"])
    assert w.tx(lambda c: ops.expire(c, lot_id=old, warehouse_id=w.wh, operator=OP)) == 2
    assert w.rows("PHONE") == [("S1", "OLD", "EXPIRED", 2, 0)]
    assert w.serials("PHONE") == [("E1", "IN_STOCK", "S1"), ("E2", "IN_STOCK", "S1")]
    assert w.ledger("PHONE")[-2:] == [("EXPIRE", 1, 0, 0)] * 2
    w.assert_invariants()
    row = w.inv_id("PHONE", "S1", "EXPIRED", "OLD")
    w.tx(lambda c: ops.scrap(c, inventory_id=row, qty=2, operator=OP))
    assert w.rows("PHONE") == []
    assert w.serials("PHONE") == [("E1", "SCRAPPED", None), ("E2", "SCRAPPED", None)]
    assert w.ledger("PHONE")[-2:] == [("SCRAP", 1, -1, 0)] * 2
    w.assert_invariants()


def _customer_return(w: Wms, sku: str, order_no: str, **kw: Any) -> None:
    w.tx(
        lambda c: ops.customer_return(
            c,
            warehouse_id=w.wh,
            sku_id=w.sku[sku],
            returns_location_id=w.loc["RET"],
            order_no=order_no,
            operator=OP,
            **kw,
        )
    )


def test_customer_returns_disposed_to_damaged_or_back_to_stock(
    settings: Settings, make_wms: MakeWms
) -> None:
    w = make_wms()
    w.stock("PHONE", 1, "S1", serial_nos=["R1"])
    order = w.order([("PHONE", 1)])
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    w.tx(lambda c: ops.pick(c, order_id=order, staging_location_id=w.loc["STG"], operator=OP))
    w.tx(lambda c: ops.ship(c, order_id=order, tracking_no="T", operator=OP))
    _customer_return(w, "PHONE", "RMA-1", serial_nos=["R1"])
    _customer_return(w, "MUG", "RMA-2", qty=3)
    assert w.rows("PHONE") == [("RET", None, "RETURNED", 1, 0)]
    assert w.rows("MUG") == [("RET", None, "RETURNED", 3, 0)]
    assert w.one("SELECT status, receive_count FROM serial_number") == ("RETURNED", 2)

    # the workload's disposition: damaged (random() >= 0.8) → DAMAGED at a DAMAGE location
    worker = make_worker(settings, w, rng=FixedRandom(0.9))
    try:
        assert workload._return_disposition(worker)
        assert workload._return_disposition(worker)
        assert not workload._return_disposition(worker)  # no RETURNED rows left
    finally:
        worker.close()
    assert w.rows("PHONE") == [("DMG", None, "DAMAGED", 1, 0)]
    assert w.rows("MUG") == [("DMG", None, "DAMAGED", 3, 0)]
    assert w.all("SELECT serial_no, status, receive_count FROM serial_number") == [
        ("R1", "DAMAGED", 2)
    ]
    assert w.serials("PHONE") == [("R1", "DAMAGED", "DMG")]
    assert w.ledger("PHONE")[-2:] == [("RETURN", 1, 1, 0), ("DAMAGE", 1, 0, 0)]
    assert w.ledger("MUG") == [("RETURN", 3, 3, 0), ("DAMAGE", 3, 0, 0)]
    assert w.moves("MUG", "DAMAGE") == [("RET", "DMG", "RETURNED", "DAMAGED", None, None)]
    assert w.moves("MUG", "RETURN") == [(None, "RET", None, "RETURNED", "INBOUND", "RMA-2")]
    truth = read_truth(settings, [w.region], dbname=w.dbname)
    mug = truth.stock[StockKey("SELLER-1", w.wh_code, "MUG")]
    assert (mug.on_hand, mug.returned, mug.damaged, mug.available) == (3, 0, 3, 0)
    w.assert_invariants()
    dmg = w.inv_id("PHONE", "DMG", "DAMAGED")
    w.tx(lambda c: ops.scrap(c, inventory_id=dmg, qty=1, operator=OP))
    assert w.serials("PHONE") == [("R1", "SCRAPPED", None)]

    # ... or good (random() < 0.8): put away to AVAILABLE at a sellable location
    _customer_return(w, "MUG", "RMA-3", qty=2)
    worker = make_worker(settings, w, rng=FixedRandom(0.1))
    try:
        assert workload._return_disposition(worker)
    finally:
        worker.close()
    (put,) = [r for r in w.rows("MUG") if r[2] == "AVAILABLE"]
    assert put[0] in ("S1", "S2", "P1")
    assert put[1:] == (None, "AVAILABLE", 2, 0)
    assert ("RET", None, "RETURNED", 2, 0) not in w.rows("MUG")
    assert w.ledger("MUG")[-2:] == [("RETURN", 2, 2, 0), ("PUTAWAY", 2, 0, 0)]
    w.assert_invariants()
