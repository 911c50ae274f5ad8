"""`RegionFigures` (read_model.figures) applied to random WMS work equals the figures of
wms/OPERATIONS.md computed from scratch over the rows after every batch: balance rows
created, changed and deleted with their before images, open and closed inbound orders,
the ledger, and SKUs, owners and warehouses renamed. (Changes it reloads from
ClickHouse, and the whole keeper, are tested against chDB in test_serving.py.)"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from read_model.figures import OPEN_INBOUND, STATUS_FIGURES, Figures, Name, RegionFigures
from schemas.events import Op, RowChange, Snapshot, Transaction
from schemas.wms_model import WMS_MODEL

R = "r1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ("AVAILABLE",) * 4 + STATUS_FIGURES
INBOUND_STATUSES = ("CREATED", "IN_TRANSIT", "ARRIVED", "RECEIVING", "RECEIVED", "CLOSED")


def _row(table: str, values: dict[str, Any]) -> tuple[object, ...]:
    return tuple(values.get(c.name) for c in WMS_MODEL[table].columns)


class World:
    """A region's rows, changed at random; each change also as the RowChange Debezium
    sends for it (before images on every table: the state must not need them elsewhere,
    only `inventory` has them in production)."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.rows: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in WMS_MODEL}
        self.lsn = 100
        self.next_id = 1000

    def change(self, table: str, op: Op, values: dict[str, Any]) -> RowChange:
        self.lsn += 1
        old = self.rows[table].get(values["id"])
        if op is Op.DELETE:
            del self.rows[table][values["id"]]
        else:
            self.rows[table][values["id"]] = {**(old or {}), **values}
        after = None if op is Op.DELETE else _row(table, self.rows[table][values["id"]])
        before = None if old is None else _row(table, old)
        return RowChange(
            R, table, op, (values["id"],), after, self.lsn, 1, 0, Snapshot.NO, before=before
        )

    def tx(self, changes: list[RowChange]) -> Transaction:
        self.lsn += 1
        return Transaction(R, 1, self.lsn, 0, tuple(changes))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def master(self) -> list[RowChange]:
        out = [self.change("warehouse", Op.CREATE, {"id": w, "code": f"WH{w}"}) for w in (1, 2)]
        for o in (1, 2):
            out.append(self.change("owner", Op.CREATE, {"id": o, "code": f"OW{o}"}))
        for s in range(1, 7):
            out.append(
                self.change("sku", Op.CREATE, {"id": s, "owner_id": 1 + s % 2, "sku_code": f"S{s}"})
            )
            for n in range(2):
                expiry = None if n else date(2027, 1, 1) + timedelta(days=self.rnd.randrange(90))
                out.append(
                    self.change(
                        "lot", Op.CREATE, {"id": s * 10 + n, "sku_id": s, "expiry_date": expiry}
                    )
                )
        for loc in range(1, 7):
            out.append(self.change("location", Op.CREATE, {"id": loc, "sellable": loc % 3 != 0}))
        return out

    def random_change(self) -> RowChange:
        rnd, rows = self.rnd, self.rows
        kind = rnd.random()
        if kind < 0.55:  # a balance row created, changed or deleted
            balances = rows["inventory"]
            if balances and rnd.random() < 0.6:
                i = rnd.choice(sorted(balances))
                if rnd.random() < 0.25:
                    return self.change("inventory", Op.DELETE, {"id": i})
                q = rnd.randrange(1, 50)
                status = rnd.choice(STATUSES)
                a = rnd.randrange(0, q + 1) if status == "AVAILABLE" else 0
                return self.change(
                    "inventory",
                    Op.UPDATE,
                    {"id": i, "status": status, "qty_on_hand": q, "qty_allocated": a,
                     "location_id": rnd.randrange(1, 7)},
                )  # fmt: skip
            sku = rnd.randrange(1, 7)
            q = rnd.randrange(1, 50)
            status = rnd.choice(STATUSES)
            return self.change(
                "inventory",
                Op.CREATE,
                {"id": self.new_id(), "warehouse_id": rnd.randrange(1, 3), "sku_id": sku,
                 "location_id": rnd.randrange(1, 7),
                 "lot_id": rnd.choice([None, sku * 10, sku * 10 + 1]), "status": status,
                 "qty_on_hand": q,
                 "qty_allocated": rnd.randrange(0, q + 1) if status == "AVAILABLE" else 0},
            )  # fmt: skip
        if kind < 0.7:  # the ledger
            return self.change(
                "inventory_txn",
                Op.CREATE,
                {"id": self.new_id(), "warehouse_id": rnd.randrange(1, 3),
                 "sku_id": rnd.randrange(1, 7),
                 "occurred_at": T0 + timedelta(seconds=rnd.randrange(100_000))},
            )  # fmt: skip
        if kind < 0.8:  # inbound orders and lines
            orders = rows["inbound_order"]
            if not orders or rnd.random() < 0.3:
                return self.change(
                    "inbound_order",
                    Op.CREATE,
                    {"id": self.new_id(), "warehouse_id": rnd.randrange(1, 3),
                     "status": rnd.choice(INBOUND_STATUSES)},
                )  # fmt: skip
            if rnd.random() < 0.4:
                o = rnd.choice(sorted(orders))
                return self.change(
                    "inbound_order", Op.UPDATE, {"id": o, "status": rnd.choice(INBOUND_STATUSES)}
                )
            lines = rows["inbound_line"]
            if lines and rnd.random() < 0.5:
                line = rnd.choice(sorted(lines))
                if rnd.random() < 0.2:
                    return self.change("inbound_line", Op.DELETE, {"id": line})
                return self.change(
                    "inbound_line", Op.UPDATE, {"id": line, "qty_received": rnd.randrange(0, 30)}
                )
            return self.change(
                "inbound_line",
                Op.CREATE,
                {"id": self.new_id(), "inbound_order_id": rnd.choice(sorted(orders)),
                 "sku_id": rnd.randrange(1, 7), "qty_expected": rnd.randrange(1, 30),
                 "qty_received": 0},
            )  # fmt: skip
        if kind < 0.9:  # a SKU gets a new code or owner (codes stay unique per owner)
            s = rnd.randrange(1, 7)
            return self.change(
                "sku",
                Op.UPDATE,
                {"id": s, "owner_id": rnd.randrange(1, 3), "sku_code": f"S{s}-{self.lsn}"},
            )
        if kind < 0.95:
            o = rnd.randrange(1, 3)
            return self.change("owner", Op.UPDATE, {"id": o, "code": f"OW{o}-{self.lsn}"})
        w = rnd.randrange(1, 3)
        return self.change("warehouse", Op.UPDATE, {"id": w, "code": f"WH{w}-{self.lsn}"})

    def figures(self) -> dict[Name, Figures]:
        """Every served key's figures, straight from the definitions."""
        rows = self.rows
        keys: dict[tuple[int, int], dict[str, Any]] = {}

        def key(w: int, s: int) -> dict[str, Any]:
            return keys.setdefault(
                (w, s), {"sums": [0] * 9, "rows": 0, "inbound": 0, "expiry": [], "moved": None}
            )

        for b in rows["inventory"].values():
            k = key(b["warehouse_id"], b["sku_id"])
            q, a = b["qty_on_hand"], b["qty_allocated"]
            k["rows"] += 1
            k["sums"][0] += q
            k["sums"][2] += a
            if b["status"] == "AVAILABLE" and rows["location"][b["location_id"]]["sellable"]:
                k["sums"][1] += q - a
                lot = rows["lot"].get(b["lot_id"]) if b["lot_id"] is not None else None
                if q > a and lot is not None and lot["expiry_date"] is not None:
                    k["expiry"].append(lot["expiry_date"])
            elif b["status"] != "AVAILABLE":
                k["sums"][3 + STATUS_FIGURES.index(b["status"])] += q
        for line in rows["inbound_line"].values():
            order = rows["inbound_order"].get(line["inbound_order_id"])
            if order is not None and order["status"] in OPEN_INBOUND:
                open_qty = max(line["qty_expected"] - line["qty_received"], 0)
                key(order["warehouse_id"], line["sku_id"])["inbound"] += open_qty
        for t in rows["inventory_txn"].values():
            k = key(t["warehouse_id"], t["sku_id"])
            k["moved"] = max(filter(None, (k["moved"], t["occurred_at"])))
        out: dict[Name, Figures] = {}
        for (w, s), k in keys.items():
            if not (k["rows"] or k["inbound"] > 0):
                continue
            sku = rows["sku"][s]
            name = (rows["owner"][sku["owner_id"]]["code"], rows["warehouse"][w]["code"],
                    sku["sku_code"])  # fmt: skip
            out[name] = (*k["sums"], k["inbound"], min(k["expiry"], default=None), k["moved"])
        return out


@pytest.mark.parametrize("seed", range(20))
def test_incremental_figures_equal_the_definitions(seed: int) -> None:
    rnd = random.Random(seed)
    world, state = World(rnd), RegionFigures(R)
    served: dict[Name, Figures] = {}
    state.apply([world.tx(world.master())])
    for _ in range(40):
        batch = [
            world.tx([world.random_change() for _ in range(rnd.randrange(1, 5))]) for _ in range(3)
        ]
        state.apply(batch)
        state.apply(batch)  # a replay (a retried write) changes nothing
        assert not state.reload_skus
        assert not state.reload_at_cut
        assert not state.reload_locations
        for name, figures in state.take_changes():
            if figures is None:
                assert name in served, name  # only what is served is deleted
                del served[name]
            else:
                served[name] = figures
        assert served == world.figures()


def test_a_replayed_batch_publishes_nothing() -> None:
    world, state = World(random.Random(7)), RegionFigures(R)
    batch = [world.tx(world.master()), world.tx([world.random_change() for _ in range(30)])]
    state.apply(batch)
    assert list(state.take_changes())
    state.apply(batch)
    assert list(state.take_changes()) == []


def test_changes_it_cannot_apply_mark_their_skus_for_a_reload() -> None:
    world, state = World(random.Random(3)), RegionFigures(R)
    state.apply([world.tx(world.master())])
    row = world.change(
        "inventory", Op.CREATE,
        {"id": 1, "warehouse_id": 1, "sku_id": 2, "location_id": 1, "lot_id": 20,
         "status": "AVAILABLE", "qty_on_hand": 5, "qty_allocated": 0},
    )  # fmt: skip
    state.apply([world.tx([row])])
    no_before = world.change("inventory", Op.UPDATE, {"id": 1, "qty_on_hand": 6})._replace(
        before=None
    )
    flip = world.change("location", Op.UPDATE, {"id": 2, "sellable": False})
    expiry = world.change("lot", Op.UPDATE, {"id": 30, "expiry_date": date(2030, 1, 1)})
    state.apply([world.tx([no_before, flip, expiry])])
    assert state.reload_skus == {3}  # at this commit
    assert state.reload_at_cut == {2}  # no before image: at the batch's last commit
    assert state.reload_locations == {2}


def test_rows_of_one_wal_record_split_across_chunks_all_count_once() -> None:
    """A multi-row insert is one WAL record: its rows share an LSN, and a spilled
    transaction's chunks may split them. Each counts once, replayed or not."""
    world, state = World(random.Random(5)), RegionFigures(R)
    state.apply([world.tx(world.master())])
    rows = [
        world.change(
            "inventory", Op.CREATE,
            {"id": i, "warehouse_id": 1, "sku_id": 1, "location_id": 1, "lot_id": None,
             "status": "AVAILABLE", "qty_on_hand": 1, "qty_allocated": 0},
        )._replace(lsn=5000)
        for i in (1, 2, 3)
    ]  # fmt: skip
    chunks = [Transaction(R, 9, 6000, 0, tuple(rows[:2])), Transaction(R, 9, 6000, 0, (rows[2],))]
    for _ in range(2):  # the second time: a replay
        for chunk in chunks:
            state.apply([chunk])
        assert state.keys[(1, 1)].sums[0] == 3
