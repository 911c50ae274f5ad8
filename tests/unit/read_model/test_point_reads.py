"""Lots, serial and movement reads by key-value gets of master rows (migration 013) answer
as of the watermark: a batch written past it (a lot renamed, a location turning
unsellable, a SKU given a new code) is invisible until its watermark, then visible, and
a deleted lot drops out; the same answers as the `wms_*` reads (`point=False`). The
migration backfills the point tables from what was applied before it."""

from __future__ import annotations

import multiprocessing as mp
import random
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from read_model import queries
from read_model.ddl import DDL_DIR, point_key
from read_model.writer import ProjectionWriter
from schemas.events import Op, Transaction, Watermark
from tests.unit.read_model.test_fast_reads import T0, World


def _committed(writer: ProjectionWriter, region: str, tx: Transaction) -> None:
    writer.write(region, [tx], Watermark(region, tx.commit_lsn, tx.commit_ts_ms, None))


def _key_rows(w: World) -> Transaction:
    """One balance row, serial and ledger row of SKU-1 of owner 1 at warehouse 2 (lot
    1110, location 1: sellable)."""
    return w.tx([
        ("inventory", Op.CREATE, {"id": 900, "warehouse_id": 2, "location_id": 1,
                                  "owner_id": 11, "sku_id": 111, "lot_id": 1110,
                                  "status": "AVAILABLE", "qty_on_hand": 10}),
        ("serial_number", Op.CREATE, {"id": 5, "sku_id": 111, "owner_id": 11,
                                      "serial_no": "SN-1", "warehouse_id": 2, "location_id": 1,
                                      "lot_id": 1110, "status": "IN_STOCK", "updated_at": T0}),
        ("inventory_txn", Op.CREATE, {"id": 7, "occurred_at": T0, "txn_type": "RECEIVE",
                                      "warehouse_id": 2, "owner_id": 11, "sku_id": 111,
                                      "lot_id": 1110, "to_location_id": 1, "qty": 10,
                                      "d_on_hand": 10}),
    ])  # fmt: skip


def _recode(w: World) -> Transaction:
    """Lot 1110 renamed, location 1 renamed and unsellable, SKU 111 given code SKU-9."""
    return w.tx([
        ("lot", Op.UPDATE, {"id": 1110, "sku_id": 111, "lot_no": "LOT-X",
                            "expiry_date": date(2026, 1, 1), "production_date": date(2025, 1, 1),
                            "first_received_at": T0}),
        ("location", Op.UPDATE, {"id": 1, "warehouse_id": 2, "code": "L1-NEW",
                                 "sellable": False}),
        ("sku", Op.UPDATE, {"id": 111, "owner_id": 11, "sku_code": "SKU-9"}),
    ])  # fmt: skip


def _reads(ch: Client, owner: str, warehouse: str, sku: str, point: bool) -> tuple[Any, ...]:
    return (
        queries.lots(ch, owner, warehouse, sku, point=point),
        queries.serial(ch, owner, sku, "SN-1", point=point),
        queries.movements(ch, owner, sku=sku, point=point),
    )


def _point_doc(ch: Client, table: str, region: str, id_: int) -> tuple[int, dict[str, Any]]:
    rows = ch.query(
        f"SELECT _commit_lsn, doc FROM wms_{table}_point WHERE key = {{k:String}}",
        parameters={"k": point_key(region, id_)},
    ).result_rows
    assert len(rows) == 1
    return int(rows[0][0]), orjson.loads(rows[0][1])


def test_point_reads_stay_at_the_watermark(ch: Client, region: str) -> None:
    p = region.upper()
    owner, wh = f"{p}-OW1", f"{p}-{region}-WH2"
    w, writer = World(region, p, random.Random(3)), ProjectionWriter(ch)
    _committed(writer, region, w.master())
    _committed(writer, region, _key_rows(w))
    before = _reads(ch, owner, wh, "SKU-1", point=True)
    assert before == _reads(ch, owner, wh, "SKU-1", point=False)
    (lot,), (current, history), (move,) = before
    assert (lot.lot_no, lot.on_hand, lot.available) == ("LOT-0", 10, 10)
    assert (current.location, current.lot_no, len(history)) == ("L1", "LOT-0", 1)
    assert (move.to_location, move.lot_no, move.sku) == ("L1", "LOT-0", "SKU-1")

    # Written, its watermark not yet: the point tables hold versions past the cut ...
    recode = _recode(w)
    writer.write(region, [recode], None)
    lsn, doc = _point_doc(ch, "location", region, 1)
    assert (lsn, doc["code"], doc["sellable"]) == (recode.commit_lsn, "L1-NEW", False)
    # ... which no read may use: the same answers, the new SKU code unknown.
    assert _reads(ch, owner, wh, "SKU-1", point=True) == before
    assert _reads(ch, owner, wh, "SKU-9", point=True) == ([], None, [])

    writer.advance(Watermark(region, recode.commit_lsn, recode.commit_ts_ms, None))
    assert _reads(ch, owner, wh, "SKU-1", point=True) == ([], None, [])
    after = _reads(ch, owner, wh, "SKU-9", point=True)
    assert after == _reads(ch, owner, wh, "SKU-9", point=False)
    (lot,), (current, history), (move,) = after
    assert (lot.lot_no, lot.on_hand, lot.available) == ("LOT-X", 10, 0)  # unsellable now
    assert (current.location, current.lot_no, len(history)) == ("L1-NEW", "LOT-X", 1)
    assert (move.to_location, move.lot_no, move.sku) == ("L1-NEW", "LOT-X", "SKU-9")

    # A deleted lot: its balance rows still count, without lot attributes.
    _committed(writer, region, w.tx([("lot", Op.DELETE, {"id": 1110})]))
    gone = _reads(ch, owner, wh, "SKU-9", point=True)
    assert gone == _reads(ch, owner, wh, "SKU-9", point=False)
    (lot,), (current, _), (move,) = gone
    assert (lot.lot_no, lot.expiry_date, lot.on_hand) == (None, None, 10)
    assert current.lot_no is None
    assert move.lot_no is None


def _backfilled(path: str) -> dict[str, Any]:
    """Child process (chDB opens one path per process): a read model migrated up to 012,
    rows applied, then migrated to 013: what its point tables and reads hold."""
    from read_model.client import make_client
    from read_model.migrate import migrate
    from stockcdc.settings import Settings

    before_013 = Path(path) / "ddl-012"
    before_013.mkdir()
    for f in DDL_DIR.glob("*.sql"):
        if int(f.name[:3]) < 13:
            shutil.copy(f, before_013)
    ch = make_client(Settings(), f"chdb://{Path(path) / 'chdb'}")
    migrate(ch, directory=before_013)
    region, writer = "bf", ProjectionWriter(ch)
    w = World(region, "BF", random.Random(1))
    _committed(writer, region, w.master())
    _committed(writer, region, _key_rows(w))
    recode = _recode(w)
    writer.write(region, [recode], None)  # past the watermark when 013 is applied
    migrate(ch)
    out = {
        "location": _point_doc(ch, "location", region, 1),
        "lot": _point_doc(ch, "lot", region, 1110),
        "recode_lsn": recode.commit_lsn,
        "point": _reads(ch, "BF-OW1", "BF-bf-WH2", "SKU-1", point=True),
        "tables": _reads(ch, "BF-OW1", "BF-bf-WH2", "SKU-1", point=False),
    }
    ch.close()
    return out


def test_migration_backfills_the_point_tables(tmp_path: Path) -> None:
    with mp.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_backfilled, (str(tmp_path),))
    lsn = got["recode_lsn"]
    # the newest version of each row, even past the watermark ...
    assert got["location"] == (lsn, {"_is_deleted": 0, "code": "L1-NEW", "sellable": False})
    assert got["lot"][0] == lsn
    assert got["lot"][1]["lot_no"] == "LOT-X"
    # ... and the reads at the watermark as before the batch
    assert got["point"] == got["tables"]
    (lot,), (current, _), (move,) = got["point"]
    assert (lot.lot_no, lot.available, current.location, move.to_location) == (
        "LOT-0",
        10,
        "L1",
        "L1",
    )


def test_point_tables_have_one_key_column(ch: Client) -> None:
    """A join on a multi-column EmbeddedRocksDB key reads the whole table: a view joining
    a point table on such a key (011's `stock_point`) read every key on every insert.
    Every point table is keyed by one column, which the views' joins look up directly."""
    tables = ch.query(
        "SELECT name, primary_key FROM system.tables"
        " WHERE database = currentDatabase() AND engine = 'EmbeddedRocksDB'"
    ).result_rows
    assert {n for n, _ in tables} >= {"stock_point", "wms_lot_point", "wms_sku_code_point"}
    assert [(n, k) for n, k in tables if k != "key"] == []
    plan = ch.query(
        "EXPLAIN SELECT n.key FROM (SELECT {k:String} AS key) AS n"
        " LEFT JOIN stock_point AS o ON o.key = n.key",
        parameters={"k": point_key("OW", "WH", "SKU")},
    ).result_rows
    assert "FullScan" not in "\n".join(r[0] for r in plan)
