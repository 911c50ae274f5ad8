"""The oracle's figures equal hand-computed values on a hand-built two-region case:
stock keys, lots in FEFO order, serials (one moved across regions) and ledger totals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from simulator import ops
from simulator.oracle import SerialKey, StockKey, read_truth
from stockcdc.settings import Settings
from tests.integration.simulator.sim_case import OP, TODAY, Wms

pytestmark = pytest.mark.integration


def _ship(w: Wms, order: int) -> None:
    w.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    w.tx(lambda c: ops.pick(c, order_id=order, staging_location_id=w.loc["STG"], operator=OP))
    w.tx(lambda c: ops.ship(c, order_id=order, tracking_no="1Z1", operator=OP))


def test_oracle_figures_on_a_hand_built_case(
    settings: Settings, make_wms: Callable[..., Wms]
) -> None:
    us, eu = make_wms(0, "US-T-1"), make_wms(1, "EU-T-1")
    regions = [us.region, eu.region]

    # MUG in US: 10 stored, 2 frozen, 3 picked for an order, 5 received (1 damaged) of 20
    inv = us.stock("MUG", 10, "S1")
    us.tx(lambda c: ops.freeze(c, inventory_id=inv, qty=2, operator=OP))
    order = us.order([("MUG", 3)])
    us.tx(lambda c: ops.allocate(c, order_id=order, operator=OP))
    us.tx(lambda c: ops.pick(c, order_id=order, staging_location_id=us.loc["STG"], operator=OP))
    line = us.inbound("MUG", 20)
    us.tx(
        lambda c: ops.receive(
            c, line_id=line, qty=5, damaged=1, location_id=us.loc["RCV"], operator=OP
        )
    )
    # TEA in US: three lots, the first past expiry (still available until expired)
    us.stock("TEA", 4, "S1", "EXPIRED")
    us.stock("TEA", 3, "S2", "SOON")
    us.stock("TEA", 2, "P1", "LATE")
    # PHONE: two serials in US, one transferred to EU
    us.stock("PHONE", 2, "S1", serial_nos=["X1", "X2"])
    transfer = us.order([("PHONE", 1)], order_type="TRANSFER")
    _ship(us, transfer)
    order_no = us.one("SELECT order_no FROM outbound_order WHERE id = %s", transfer)
    shipped = ops.shipped_lines(us.conn.cursor(), order_no=order_no, warehouse_code="US-T-1")
    assert [(s.sku_code, s.qty, s.serial_nos) for s in shipped] == [("PHONE", 1, ("X1",))]
    t_line = eu.inbound("PHONE", 1, order_type="TRANSFER")
    eu.tx(
        lambda c: ops.receive(
            c,
            line_id=t_line,
            qty=1,
            location_id=eu.loc["RCV"],
            operator=OP,
            serial_nos=list(shipped[0].serial_nos),
        )
    )
    # EU: TEA only expected; MUG came and went (no balance rows, no inbound: absent)
    eu.inbound("TEA", 7, "NEW")
    mug = eu.stock("MUG", 1, "S1")
    eu.tx(lambda c: ops.adjust(c, inventory_id=mug, delta=-1, operator=OP))

    dbnames = {us.region.name: us.dbname, eu.region.name: eu.dbname}
    truth = read_truth(settings, regions, dbname=dbnames)

    mug_us = truth.stock[StockKey("SELLER-1", "US-T-1", "MUG")]
    assert (
        mug_us.on_hand,
        mug_us.available,
        mug_us.allocated,
        mug_us.pending_putaway,
        mug_us.qc_hold,
        mug_us.frozen,
        mug_us.damaged,
        mug_us.returned,
        mug_us.expired,
        mug_us.inbound_expected,
        mug_us.earliest_expiry,
    ) == (15, 5, 3, 4, 0, 2, 1, 0, 0, 15, None)
    last = us.one("SELECT max(occurred_at) FROM inventory_txn WHERE sku_id = %s", us.sku["MUG"])
    assert mug_us.last_movement_at == last

    tea_us = truth.stock[StockKey("SELLER-1", "US-T-1", "TEA")]
    assert (tea_us.on_hand, tea_us.available, tea_us.expired) == (9, 9, 0)
    assert tea_us.earliest_expiry == TODAY - timedelta(days=5)  # past expiry still counts
    lots = truth.lots[StockKey("SELLER-1", "US-T-1", "TEA")]
    assert [(lot.lot_no, lot.fefo_rank, lot.on_hand, lot.available) for lot in lots] == [
        ("EXPIRED", 1, 4, 4),
        ("SOON", 2, 3, 3),
        ("LATE", 3, 2, 2),
    ]
    assert lots[1].expiry_date == TODAY + timedelta(days=10)
    assert lots[1].production_date == TODAY - timedelta(days=300)

    us.tx(lambda c: ops.expire(c, lot_id=us.lot["EXPIRED"], warehouse_id=us.wh, operator=OP))
    truth = read_truth(settings, regions, dbname=dbnames)
    tea_us = truth.stock[StockKey("SELLER-1", "US-T-1", "TEA")]
    assert (tea_us.on_hand, tea_us.available, tea_us.expired) == (9, 5, 4)
    assert tea_us.earliest_expiry == TODAY + timedelta(days=10)
    expired_lot = truth.lots[StockKey("SELLER-1", "US-T-1", "TEA")][0]
    assert (expired_lot.lot_no, expired_lot.available, expired_lot.expired) == ("EXPIRED", 0, 4)

    phone_us = truth.stock[StockKey("SELLER-1", "US-T-1", "PHONE")]
    assert (phone_us.on_hand, phone_us.available, phone_us.allocated) == (1, 1, 0)
    phone_eu = truth.stock[StockKey("SELLER-1", "EU-T-1", "PHONE")]
    assert (phone_eu.on_hand, phone_eu.pending_putaway, phone_eu.available) == (1, 1, 0)

    tea_eu = truth.stock[StockKey("SELLER-1", "EU-T-1", "TEA")]
    assert (tea_eu.on_hand, tea_eu.inbound_expected, tea_eu.last_movement_at) == (0, 7, None)
    assert StockKey("SELLER-1", "EU-T-1", "MUG") not in truth.stock
    assert set(truth.stock) == {
        StockKey("SELLER-1", "US-T-1", s) for s in ("MUG", "TEA", "PHONE")
    } | {StockKey("SELLER-1", "EU-T-1", s) for s in ("TEA", "PHONE")}

    x1 = truth.serials[SerialKey("SELLER-1", "PHONE", "X1")]
    assert (x1.status, x1.region, x1.warehouse, x1.location, x1.receive_count) == (
        "IN_STOCK",
        eu.region.name,
        "EU-T-1",
        "RCV",
        1,
    )
    assert x1.regions == tuple(sorted((us.region.name, eu.region.name)))
    x2 = truth.serials[SerialKey("SELLER-1", "PHONE", "X2")]
    assert (x2.status, x2.region, x2.location, x2.shipped_at) == (
        "IN_STOCK",
        us.region.name,
        "S1",
        None,
    )

    led = truth.ledger
    assert led[StockKey("SELLER-1", "EU-T-1", "MUG")].d_on_hand == 0
    assert led[StockKey("SELLER-1", "EU-T-1", "MUG")].rows == 3  # receive, putaway, adjust
    assert led[StockKey("SELLER-1", "US-T-1", "PHONE")].d_on_hand == 1
    mug_led = led[StockKey("SELLER-1", "US-T-1", "MUG")]
    assert (mug_led.d_on_hand, mug_led.d_allocated) == (15, 3)
    assert truth.as_json()["stock"][0]["owner"] == "SELLER-1"
