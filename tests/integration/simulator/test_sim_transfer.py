"""Transfers between warehouses, within a region and across regions, on hand-built
cases: the source ships (TRANSFER_OUT), the workload creates the destination's inbound
TRANSFER order, the destination receives it (TRANSFER_IN) and closes it; serials follow
the goods."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from simulator import ops, workload
from simulator.oracle import SerialKey, StockKey, read_truth
from stockcdc.settings import Settings
from tests.integration.simulator.sim_case import OP, TODAY, Wms, add_warehouse, make_worker

pytestmark = pytest.mark.integration

MakeWms = Callable[..., Wms]

ORDER_STATUS = "SELECT status FROM outbound_order WHERE id = %s"


def _ready_to_ship(w: Wms, order: int) -> list[str]:
    """Allocate and pick a transfer order; returns the statuses it went through."""
    seen = [w.one(ORDER_STATUS, order)]
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    seen.append(w.one(ORDER_STATUS, order))
    w.tx(lambda c: ops.pick(c, order_id=order, staging_location_id=w.loc["STG"], operator=OP))
    seen.append(w.one(ORDER_STATUS, order))
    return seen


def _inbound_of(w: Wms, order_no: str) -> tuple[int, tuple[object, ...]]:
    """The destination's inbound TRANSFER order of a shipped transfer: (id, (type,
    status, owner_ref, eta set))."""
    row = w.one(
        "SELECT id, order_type, status, owner_ref, eta IS NOT NULL FROM inbound_order "
        "WHERE warehouse_id = %s AND order_no = %s",
        w.wh,
        f"TI-{order_no}",
    )
    assert row is not None, f"no inbound TI-{order_no} at {w.wh_code}"
    return int(row[0]), tuple(row[1:])


def _inbound_lines(w: Wms, inbound: int) -> list[tuple[object, ...]]:
    return w.all(
        "SELECT s.sku_code, l.lot_no, l.production_date, l.expiry_date, l.qty_expected, "
        "l.qty_received, l.qty_damaged FROM inbound_line l JOIN sku s ON s.id = l.sku_id "
        "WHERE l.inbound_order_id = %s ORDER BY s.sku_code",
        inbound,
    )


def test_transfer_between_warehouses_of_one_region(settings: Settings, make_wms: MakeWms) -> None:
    a = make_wms(0, "WH-A")
    b = add_warehouse(a, "WH-B")
    a.stock("TEA", 5, "S1", "SOON")
    a.stock("PHONE", 3, "S1", serial_nos=["T1", "T2", "T3"])
    dest = f"{a.region.name}/WH-B"
    order = a.order([("TEA", 3), ("PHONE", 2)], order_type="TRANSFER", platform_order_no=dest)
    order_no = a.one("SELECT order_no FROM outbound_order WHERE id = %s", order)
    assert _ready_to_ship(a, order) == ["CREATED", "ALLOCATED", "PACKED"]
    assert a.rows("TEA") == [("S1", "SOON", "AVAILABLE", 2, 0), ("STG", "SOON", "AVAILABLE", 3, 3)]

    # the workload ships it and opens the inbound TRANSFER order at the destination
    worker = make_worker(settings, a)
    try:
        assert list(worker.state.pool("to_ship")) == [(order, a.wh)]
        assert workload._ship(worker)
        assert a.one(
            "SELECT status, order_type, tracking_no IS NOT NULL, shipped_at IS NOT NULL "
            "FROM outbound_order WHERE id = %s",
            order,
        ) == ("SHIPPED", "TRANSFER", True, True)
        assert a.all(
            "SELECT s.sku_code, a.qty, a.status FROM allocation a JOIN sku s ON s.id = a.sku_id "
            "ORDER BY s.sku_code, a.id"
        ) == [("PHONE", 2, "SHIPPED"), ("TEA", 3, "SHIPPED")]
        assert a.all(
            "SELECT qty_ordered, qty_allocated, qty_shipped FROM outbound_line "
            "WHERE outbound_order_id = %s ORDER BY id",
            order,
        ) == [(3, 3, 3), (2, 2, 2)]
        # source: the staging rows are gone, TRANSFER_OUT is -q on hand and -q allocated
        assert a.rows("TEA") == [("S1", "SOON", "AVAILABLE", 2, 0)]
        assert a.rows("PHONE") == [("S1", None, "AVAILABLE", 1, 0)]
        assert a.ledger("TEA") == [
            ("RECEIVE", 5, 5, 0),
            ("PUTAWAY", 5, 0, 0),
            ("ALLOCATE", 3, 0, 3),
            ("PICK", 3, 0, 0),
            ("TRANSFER_OUT", 3, -3, -3),
        ]
        assert a.moves("TEA", "TRANSFER_OUT") == [
            ("STG", None, "AVAILABLE", None, "OUTBOUND", order_no)
        ]
        assert a.ledger("PHONE")[-2:] == [("TRANSFER_OUT", 1, -1, -1)] * 2
        assert a.one("SELECT count(*) FROM inventory_txn WHERE txn_type = 'SHIP'") == 0
        assert a.all(
            "SELECT serial_no, status, location_id IS NULL, shipped_at IS NOT NULL "
            "FROM serial_number ORDER BY serial_no"
        ) == [
            ("T1", "SHIPPED", True, True),
            ("T2", "SHIPPED", True, True),
            ("T3", "IN_STOCK", False, False),
        ]

        # destination: IN_TRANSIT, one line per SKU and lot, nothing on hand yet
        inbound, head = _inbound_of(b, order_no)
        assert head == ("TRANSFER", "IN_TRANSIT", f"{a.region.name}/WH-A/{order_no}", True)
        assert _inbound_lines(b, inbound) == [
            ("PHONE", None, None, None, 2, 0, 0),
            ("TEA", "SOON", TODAY - timedelta(days=300), TODAY + timedelta(days=10), 3, 0, 0),
        ]
        assert b.rows("TEA") == []
        assert b.ledger("TEA") == []
        truth = read_truth(settings, [a.region], dbname=a.dbname)
        tea_b = truth.stock[StockKey("SELLER-1", "WH-B", "TEA")]
        assert (tea_b.on_hand, tea_b.inbound_expected, tea_b.last_movement_at) == (0, 3, None)
        assert truth.stock[StockKey("SELLER-1", "WH-B", "PHONE")].inbound_expected == 2
        tea_a = truth.stock[StockKey("SELLER-1", "WH-A", "TEA")]
        assert (tea_a.on_hand, tea_a.available, tea_a.allocated) == (2, 2, 0)
        a.assert_invariants()

        b.tx(lambda c: ops.advance_inbound(c, order_id=inbound))
        assert _inbound_of(b, order_no)[1][1] == "ARRIVED"
        # the workload receives both lines in full (serials read from the shipment)
        assert list(worker.state.pool("to_receive")) == [
            (line, b.wh)
            for line in sorted(
                r[0]
                for r in b.all("SELECT id FROM inbound_line WHERE inbound_order_id = %s", inbound)
            )
        ]
        assert workload._receive(worker)
        assert _inbound_of(b, order_no)[1][1] == "RECEIVING"
        assert workload._receive(worker)
    finally:
        worker.close()
    assert _inbound_of(b, order_no)[1][1] == "RECEIVED"
    assert [ln[4:] for ln in _inbound_lines(b, inbound)] == [(2, 2, 0), (3, 3, 0)]
    assert b.rows("TEA") == [("RCV", "SOON", "PENDING_PUTAWAY", 3, 0)]
    assert b.rows("PHONE") == [("RCV", None, "PENDING_PUTAWAY", 2, 0)]
    assert b.ledger("TEA") == [("TRANSFER_IN", 3, 3, 0)]
    assert b.moves("TEA", "TRANSFER_IN") == [
        (None, "RCV", None, "PENDING_PUTAWAY", "INBOUND", f"TI-{order_no}")
    ]
    assert b.ledger("PHONE") == [("TRANSFER_IN", 1, 1, 0)] * 2
    # the lot is the region's one lot of the SKU; the serials' one row each moved along
    assert a.one("SELECT count(*) FROM lot WHERE sku_id = %s", a.sku["TEA"]) == 3
    assert a.all(
        "SELECT sn.serial_no, sn.status, w.code, loc.code, sn.receive_count, "
        "sn.outbound_line_id IS NULL FROM serial_number sn "
        "JOIN warehouse w ON w.id = sn.warehouse_id "
        "LEFT JOIN location loc ON loc.id = sn.location_id ORDER BY sn.serial_no"
    ) == [
        ("T1", "IN_STOCK", "WH-B", "RCV", 2, True),
        ("T2", "IN_STOCK", "WH-B", "RCV", 2, True),
        ("T3", "IN_STOCK", "WH-A", "S1", 1, True),
    ]
    assert (
        a.one(
            "SELECT count(*) FROM inventory_txn t JOIN serial_number sn ON sn.id = t.serial_id "
            "WHERE sn.serial_no = 'T1' AND t.txn_type IN ('TRANSFER_OUT', 'TRANSFER_IN')"
        )
        == 2
    )
    b.tx(lambda c: ops.close_inbound(c, order_id=inbound))
    assert _inbound_of(b, order_no)[1][1] == "CLOSED"
    truth = read_truth(settings, [a.region], dbname=a.dbname)
    tea_b = truth.stock[StockKey("SELLER-1", "WH-B", "TEA")]
    assert (tea_b.on_hand, tea_b.pending_putaway, tea_b.available, tea_b.inbound_expected) == (
        3,
        3,
        0,
        0,
    )
    led = truth.ledger[StockKey("SELLER-1", "WH-B", "TEA")]
    assert (led.d_on_hand, led.d_allocated, led.rows) == (3, 0, 1)
    led_a = truth.ledger[StockKey("SELLER-1", "WH-A", "TEA")]
    assert (led_a.d_on_hand, led_a.d_allocated) == (2, 0)
    a.assert_invariants()


def test_transfer_across_regions_serials_follow_the_goods(
    settings: Settings, make_wms: MakeWms
) -> None:
    us, eu = make_wms(0, "US-T-1"), make_wms(1, "EU-T-1")
    assert us.owner != eu.owner  # ids are local to a region
    made, expires = TODAY - timedelta(days=20), TODAY + timedelta(days=160)
    line = us.inbound("TEA", 6, "NEW", production=made, expiry=expires)
    us.tx(lambda c: ops.receive(c, line_id=line, qty=6, location_id=us.loc["RCV"], operator=OP))
    pending = us.inv_id("TEA", "RCV", "PENDING_PUTAWAY", "NEW")
    us.tx(
        lambda c: ops.putaway(
            c, inventory_id=pending, qty=6, to_location_id=us.loc["P1"], operator=OP
        )
    )
    us.stock("PHONE", 2, "S1", serial_nos=["X1", "X2"])
    assert eu.one("SELECT count(*) FROM lot WHERE lot_no = 'NEW'") == 0
    order = us.order(
        [("TEA", 4), ("PHONE", 2)],
        order_type="TRANSFER",
        platform_order_no=f"{eu.region.name}/EU-T-1",
    )
    order_no = us.one("SELECT order_no FROM outbound_order WHERE id = %s", order)
    assert _ready_to_ship(us, order) == ["CREATED", "ALLOCATED", "PACKED"]

    states: dict[str, workload.RegionState] = {}
    at_us = make_worker(settings, us, [eu], states=states)
    at_eu = make_worker(settings, eu, [us], states=states)
    try:
        assert workload._ship(at_us)
        assert us.one(ORDER_STATUS, order) == "SHIPPED"
        assert us.rows("TEA") == [("P1", "NEW", "AVAILABLE", 2, 0)]
        assert us.rows("PHONE") == []
        assert us.ledger("TEA")[-1] == ("TRANSFER_OUT", 4, -4, -4)
        assert us.ledger("PHONE")[-2:] == [("TRANSFER_OUT", 1, -1, -1)] * 2
        assert us.serials("PHONE") == [("X1", "SHIPPED", None), ("X2", "SHIPPED", None)]

        inbound, head = _inbound_of(eu, order_no)
        assert head == ("TRANSFER", "IN_TRANSIT", f"{us.region.name}/US-T-1/{order_no}", True)
        assert _inbound_lines(eu, inbound) == [
            ("PHONE", None, None, None, 2, 0, 0),
            ("TEA", "NEW", made, expires, 4, 0, 0),
        ]
        assert eu.one("SELECT owner_id FROM inbound_order WHERE id = %s", inbound) == eu.owner
        assert eu.rows("TEA") == []
        assert eu.serials("PHONE") == []
        regions = [us.region, eu.region]
        dbnames = {us.region.name: us.dbname, eu.region.name: eu.dbname}
        truth = read_truth(settings, regions, dbname=dbnames)
        tea_eu = truth.stock[StockKey("SELLER-1", "EU-T-1", "TEA")]
        assert (tea_eu.on_hand, tea_eu.inbound_expected, tea_eu.region) == (
            0,
            4,
            eu.region.name,
        )
        x1 = truth.serials[SerialKey("SELLER-1", "PHONE", "X1")]
        assert (x1.status, x1.region, x1.regions) == ("SHIPPED", us.region.name, (us.region.name,))

        eu.tx(lambda c: ops.advance_inbound(c, order_id=inbound))
        assert _inbound_of(eu, order_no)[1][1] == "ARRIVED"
        # EU's worker receives it; the serials are read from the US shipment
        assert workload._receive(at_eu)
        assert workload._receive(at_eu)
        assert not workload._receive(at_eu)  # nothing left to receive
    finally:
        at_us.close()
        at_eu.close()
    assert _inbound_of(eu, order_no)[1][1] == "RECEIVED"
    assert [ln[4:] for ln in _inbound_lines(eu, inbound)] == [(2, 2, 0), (4, 4, 0)]
    assert eu.rows("TEA") == [("RCV", "NEW", "PENDING_PUTAWAY", 4, 0)]
    assert eu.rows("PHONE") == [("RCV", None, "PENDING_PUTAWAY", 2, 0)]
    assert eu.ledger("TEA") == [("TRANSFER_IN", 4, 4, 0)]
    assert eu.ledger("PHONE") == [("TRANSFER_IN", 1, 1, 0)] * 2
    assert (
        eu.moves("PHONE", "TRANSFER_IN")
        == [(None, "RCV", None, "PENDING_PUTAWAY", "INBOUND", f"TI-{order_no}")] * 2
    )
    # the lot is created in EU on first receipt, with the line's dates
    assert eu.one(
        "SELECT production_date, expiry_date, first_received_at IS NOT NULL FROM lot "
        "WHERE sku_id = %s AND lot_no = 'NEW'",
        eu.sku["TEA"],
    ) == (made, expires, True)
    # the serials exist in both databases: SHIPPED in US, received again in EU
    assert us.serials("PHONE") == [("X1", "SHIPPED", None), ("X2", "SHIPPED", None)]
    assert eu.all(
        "SELECT serial_no, status, loc.code, receive_count, owner_id, inbound_line_id IS NOT NULL "
        "FROM serial_number sn JOIN location loc ON loc.id = sn.location_id ORDER BY serial_no"
    ) == [
        ("X1", "IN_STOCK", "RCV", 1, eu.owner, True),
        ("X2", "IN_STOCK", "RCV", 1, eu.owner, True),
    ]
    eu.tx(lambda c: ops.close_inbound(c, order_id=inbound))
    assert _inbound_of(eu, order_no)[1][1] == "CLOSED"
    pending = eu.inv_id("PHONE", "RCV", "PENDING_PUTAWAY")
    eu.tx(
        lambda c: ops.putaway(
            c, inventory_id=pending, qty=2, to_location_id=eu.loc["S2"], operator=OP
        )
    )
    truth = read_truth(settings, regions, dbname=dbnames)
    for serial_no in ("X1", "X2"):
        state = truth.serials[SerialKey("SELLER-1", "PHONE", serial_no)]
        assert (state.status, state.region, state.warehouse, state.location) == (
            "IN_STOCK",
            eu.region.name,
            "EU-T-1",
            "S2",
        )
        assert state.regions == tuple(sorted((us.region.name, eu.region.name)))
    tea_eu = truth.stock[StockKey("SELLER-1", "EU-T-1", "TEA")]
    assert (tea_eu.on_hand, tea_eu.pending_putaway, tea_eu.inbound_expected) == (4, 4, 0)
    tea_us = truth.stock[StockKey("SELLER-1", "US-T-1", "TEA")]
    assert (tea_us.on_hand, tea_us.available, tea_us.allocated) == (2, 2, 0)
    phone_eu = truth.stock[StockKey("SELLER-1", "EU-T-1", "PHONE")]
    assert (phone_eu.on_hand, phone_eu.available) == (2, 2)
    assert StockKey("SELLER-1", "US-T-1", "PHONE") not in truth.stock
    assert truth.ledger[StockKey("SELLER-1", "US-T-1", "PHONE")].d_on_hand == 0
    us.assert_invariants()
    eu.assert_invariants()


def test_transfer_of_a_sku_the_destination_region_does_not_know(
    settings: Settings, make_wms: MakeWms
) -> None:
    """A SKU created in one region (master data) and transferred to another: the goods
    arrive under the same (owner.code, sku_code), the destination's SKU created with the
    source's master data, rather than shipped into nowhere."""
    us, eu = make_wms(0, "US-T-1"), make_wms(1, "EU-T-1")
    new = us.tx(
        lambda c: ops.create_sku(
            c,
            owner_id=us.owner,
            sku_code="LAMP",
            name="Desk lamp",
            barcode="0123456789012",
            weight_kg="1.250",
            unit_cost="12.5000",
            attributes={"color": "navy"},
        )
    )
    us.sku["LAMP"] = new
    us.stock("LAMP", 3, "S1")
    order = us.order(
        [("LAMP", 2)], order_type="TRANSFER", platform_order_no=f"{eu.region.name}/EU-T-1"
    )
    order_no = us.one("SELECT order_no FROM outbound_order WHERE id = %s", order)
    _ready_to_ship(us, order)
    states: dict[str, workload.RegionState] = {}
    at_us = make_worker(settings, us, [eu], states=states)
    at_eu = make_worker(settings, eu, [us], states=states)
    try:
        assert workload._ship(at_us)
        assert us.one(ORDER_STATUS, order) == "SHIPPED"
        assert us.ledger("LAMP")[-1] == ("TRANSFER_OUT", 2, -2, -2)
        sku = eu.one(
            "SELECT s.id, s.name, s.barcode, s.tracking, s.weight_kg::text, s.unit_cost::text, "
            "s.attributes->>'color' FROM sku s WHERE s.owner_id = %s AND s.sku_code = 'LAMP'",
            eu.owner,
        )
        assert sku is not None, "the destination has no LAMP: the transfer went nowhere"
        assert sku[1:] == ("Desk lamp", "0123456789012", "NONE", "1.250", "12.5000", "navy")
        eu.sku["LAMP"] = sku[0]
        # the workers of the destination know the new SKU too
        assert states[eu.region.name].skus[sku[0]] == (eu.owner, "LAMP", "NONE", None)
        assert sku[0] in states[eu.region.name].skus_by_owner[eu.owner]
        inbound, head = _inbound_of(eu, order_no)
        assert head[:2] == ("TRANSFER", "IN_TRANSIT")
        assert _inbound_lines(eu, inbound) == [("LAMP", None, None, None, 2, 0, 0)]
        assert workload._receive(at_eu)
    finally:
        at_us.close()
        at_eu.close()
    assert eu.rows("LAMP") == [("RCV", None, "PENDING_PUTAWAY", 2, 0)]
    assert eu.ledger("LAMP") == [("TRANSFER_IN", 2, 2, 0)]
    us.assert_invariants()
    eu.assert_invariants()
