"""A flush of several regions is one write (issue 15): one insert per table for all of
them, the stock figures, then the watermarks; a failure anywhere shows none of it, and
the retry is exact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from read_model import queries, reference
from read_model.client import ColumnInserter
from read_model.errors import ReadModelTransientError
from read_model.writer import ProjectionWriter
from schemas.events import RegionWrite, Watermark
from tests.unit.read_model.test_projection import T0, Tx, inv, master_data, stock


class RecordingInserter(ColumnInserter):
    """Records the table of every insert; refuses the first insert into `fail_on`."""

    def __init__(self, client: Client, fail_on: str | None = None) -> None:
        super().__init__(client)
        self.tables: list[str] = []
        self.fail_on = fail_on

    def __call__(self, table: str, columns: Sequence[Sequence[Any]], names: Sequence[str]) -> None:
        if table == self.fail_on:
            self.fail_on = None
            raise ReadModelTransientError(f"injected: insert into {table} refused")
        self.tables.append(table)
        super().__call__(table, columns, names)


def recording(ch: Client, fail_on: str | None = None) -> tuple[ProjectionWriter, RecordingInserter]:
    """A writer whose inserts, and its watermark statement, are recorded in order."""
    inserter = RecordingInserter(ch, fail_on)

    def advanced(marks: Sequence[Watermark], rows: bool) -> None:
        inserter.tables.append("_watermark_max" if rows else "_figure_watermark_max")

    w = ProjectionWriter(ch, advanced)
    w._inserter = w.figures._inserter = inserter
    return w, inserter


def flush(regions: list[str], qty: int) -> tuple[list[RegionWrite], list[Tx]]:
    """Master data and a receipt of `qty` in each region, as one flush."""
    writes, txs = [], []
    for region in regions:
        t = Tx(region)
        md = master_data(t, region.upper())
        receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", qty)))
        writes.append(RegionWrite(region, [md, receive], t.wm(receive)))
        txs.append(t)
    return writes, txs


def on_hand(ch: Client, region: str) -> int | None:
    s = stock(ch, region.upper())
    return None if s is None else s.on_hand


def test_a_flush_of_three_regions_is_one_insert_per_table_then_the_watermarks(
    ch: Client, region: str
) -> None:
    regions = [f"{region}-{i}" for i in range(3)]
    w, inserter = recording(ch)
    w.load_watermarks(regions)  # the regions' (empty) figures are loaded first
    inserter.tables.clear()
    writes, _ = flush(regions, 7)
    w.write_all(writes)
    tables = inserter.tables
    assert len(tables) == len(set(tables)), tables  # each table once for the three
    assert tables[0] == "_commit_log"
    assert tables[-2:] == ["stock_current", "_watermark_max"]
    assert [on_hand(ch, r) for r in regions] == [7, 7, 7]


def test_a_refused_figures_insert_shows_no_region_and_the_retry_is_exact(
    ch: Client, region: str
) -> None:
    regions = [f"{region}-{i}" for i in range(3)]
    w, _ = recording(ch, fail_on="stock_current")
    writes, _ = flush(regions, 5)
    with pytest.raises(ReadModelTransientError):
        w.write_all(writes)
    assert [on_hand(ch, r) for r in regions] == [None, None, None]  # no watermark moved
    w.write_all(writes)  # the projector's retry: the same call
    assert [on_hand(ch, r) for r in regions] == [5, 5, 5]


def test_a_flush_refuses_two_batches_of_one_region(ch: Client, region: str) -> None:
    (write,), _ = flush([region], 1)
    with pytest.raises(ValueError, match="two batches of one region"):
        ProjectionWriter(ch).write_all([write, write])


def test_every_insert_counts_its_time_by_table(ch: Client, region: str) -> None:
    """`stockcdc_insert_seconds_total{table}` tells an operator which table's inserts a
    slow flush spent its time on (the watermark statement included)."""

    def spent(table: str) -> float:
        return REGISTRY.get_sample_value("stockcdc_insert_seconds_total", {"table": table}) or 0.0

    tables = ("wms_inventory", "stock_current", "_watermark_max")
    before = [spent(t) for t in tables]
    writes, _ = flush([region], 3)
    ProjectionWriter(ch).write_all(writes)
    assert all(spent(t) > b for t, b in zip(tables, before, strict=True))


# -- figures first, rows later (017, `Settings.rows_max_ms`) ------------------------------


def lot_on_hand(ch: Client, code: str) -> list[int]:
    return [lot.on_hand for lot in queries.lots(ch, f"{code}-OW", f"{code}-WH", "SKU-1")]


def served_equals_reference(ch: Client, code: str) -> bool:
    return stock(ch, code) == reference.stock_one(ch, f"{code}-OW", f"{code}-WH", "SKU-1")


def test_figures_are_visible_first_and_the_rows_follow_in_one_insert_per_table(
    ch: Client, region: str
) -> None:
    w, inserter = recording(ch)
    t = Tx(region)
    code = region.upper()
    md = master_data(t, code)
    w.write(region, [md], t.wm(md))
    first = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 5)))
    then = t.tx(("inventory", "c", inv(11, 4, 2, "AVAILABLE", 3)))
    inserter.tables.clear()
    w.write_all([RegionWrite(region, [first], t.wm(first))], rows_later=True)
    w.write_all([RegionWrite(region, [then], t.wm(then))], rows_later=True)
    # Two flushes: their figures and figure watermarks, nothing else.
    assert inserter.tables == ["stock_current", "_figure_watermark_max"] * 2
    served = stock(ch, code)
    assert served is not None
    assert served.on_hand == 8
    assert queries.figure_lsns(ch)[region] == then.commit_lsn
    assert queries.visible_lsns(ch)[region] == md.commit_lsn  # the rows' cut: unmoved
    assert lot_on_hand(ch, code) == []
    assert w.rows_waiting_since is not None
    inserter.tables.clear()
    w.write_rows()
    # The rows of both flushes: one insert per table, then the watermark of everything.
    assert inserter.tables == ["_commit_log", "wms_inventory", "_watermark_max"]
    assert w.rows_waiting_since is None
    assert queries.visible_lsns(ch)[region] == then.commit_lsn
    assert lot_on_hand(ch, code) == [3, 5]  # FEFO: lot 2 expires first
    assert served_equals_reference(ch, code)


def test_figure_watermarks_live_in_memory_and_when_lost_the_rows_cut_serves(
    ch: Client, region: str
) -> None:
    """Migration 018: a flush's figure watermark writes no part (it was a MergeTree part
    and its merges on every flush). Lost (a restart, another replica of a cluster), stock
    is read at the rows' watermark, which `stock_current`'s versions per commit answer
    exactly: older, never half a transaction; the next flush is ahead again."""
    w = ProjectionWriter(ch)
    t = Tx(region)
    code = region.upper()
    md = master_data(t, code)
    received = inv(10, 2, 1, "AVAILABLE", 5)
    receive = t.tx(("inventory", "c", received))
    w.write_all([RegionWrite(region, [md, receive], t.wm(receive))])  # rows and figures
    ship = t.tx(("inventory", "u", {**inv(10, 2, 1, "AVAILABLE", 2), "_before": received}))
    w.write_all([RegionWrite(region, [ship], t.wm(ship))], rows_later=True)
    assert queries.figure_lsns(ch)[region] == ship.commit_lsn
    assert (served := stock(ch, code)) is not None
    assert served.on_hand == 2
    parts = ch.query(
        "SELECT count() FROM system.parts WHERE database = currentDatabase()"
        " AND table = '_figure_watermark_max'"
    ).result_rows
    assert parts == [(0,)]
    ch.command("TRUNCATE TABLE _figure_watermark_max")  # what a restart leaves of it
    assert queries.figure_lsns(ch)[region] == receive.commit_lsn
    assert (served := stock(ch, code)) is not None
    assert served.on_hand == 5
    assert served_equals_reference(ch, code)  # at the same cut
    w.write_rows()
    assert queries.figure_lsns(ch)[region] == ship.commit_lsn
    assert (served := stock(ch, code)) is not None
    assert served.on_hand == 2


def test_figure_watermarks_keep_the_newest_within_their_bound(ch: Client, region: str) -> None:
    """The in-memory figure watermarks drop their oldest rows beyond the table's bound;
    the highest LSN, the newest, is the one read."""
    w = ProjectionWriter(ch)
    t = Tx(region)
    md = master_data(t, region.upper())
    w.write(region, [md], t.wm(md))
    bound = int(
        ch.query(
            "SELECT extract(engine_full, 'max_rows_to_keep = (\\d+)') FROM system.tables"
            " WHERE database = currentDatabase() AND name = '_figure_watermark_max'"
        ).result_rows[0][0]
    )
    # 3/2 of the bound in three inserts (a flush's is a row per region), ascending
    step = bound // 2
    for i in range(3):
        ch.command(
            "INSERT INTO _figure_watermark_max SELECT {r:String}, l, argMaxState("
            "toDateTime64(0, 3, 'UTC'), l), NULL, now64(6)"
            " FROM (SELECT {first:UInt64} + number AS l FROM numbers({n:UInt64})) GROUP BY l",
            {"r": region, "first": md.commit_lsn + 1 + i * step, "n": step},
        )
    last = md.commit_lsn + 3 * step
    kept = ch.query("SELECT count() FROM _figure_watermark_max").result_rows[0][0]
    assert kept <= bound
    assert queries.figure_lsns(ch)[region] == last


def test_a_location_flip_reads_the_rows_still_waiting(ch: Client, region: str) -> None:
    """A location turning unsellable reloads its SKUs from the rows at its commit: the
    receipt before it, still waiting to be written, is written first, or it would be
    missing from the reload."""
    w = ProjectionWriter(ch)
    t = Tx(region)
    code = region.upper()
    md = master_data(t, code)
    w.write(region, [md], t.wm(md))
    receive = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 6)))
    w.write_all([RegionWrite(region, [receive], t.wm(receive))], rows_later=True)
    flip = t.tx(("location", "u", {"id": 2, "warehouse_id": 1, "code": "A-01", "sellable": False}))
    w.write_all([RegionWrite(region, [flip], t.wm(flip))], rows_later=True)
    served = stock(ch, code)
    assert served is not None
    assert (served.on_hand, served.available) == (6, 0)
    w.write_rows()
    assert served_equals_reference(ch, code)


def test_a_failed_figures_write_reloads_where_they_were_published(ch: Client, region: str) -> None:
    """A refused `stock_current` insert drops the region's state; the retry loads it at
    the last figures published (not at the rows' watermark, behind them), with the rows
    still waiting written first, so it is exact."""
    w, inserter = recording(ch)
    t = Tx(region)
    code = region.upper()
    md = master_data(t, code)
    w.write(region, [md], t.wm(md))
    first_row = inv(10, 2, 1, "AVAILABLE", 5)
    first = t.tx(("inventory", "c", first_row))
    w.write_all([RegionWrite(region, [first], t.wm(first))], rows_later=True)
    then = t.tx(("inventory", "u", {**inv(10, 2, 1, "AVAILABLE", 4), "_before": first_row}))
    inserter.fail_on = "stock_current"
    with pytest.raises(ReadModelTransientError):
        w.write_all([RegionWrite(region, [then], t.wm(then))], rows_later=True)
    w.write_all([RegionWrite(region, [then], t.wm(then))], rows_later=True)  # the retry
    served = stock(ch, code)
    assert served is not None
    assert served.on_hand == 4
    w.write_rows()
    assert served_equals_reference(ch, code)


def test_rows_lost_with_the_process_are_replayed_exactly(ch: Client, region: str) -> None:
    """A crash after the figures and before the rows: the next writer resumes at the
    rows' watermark (offsets are committed only after the rows), replays, and ends exact;
    the figures served meanwhile were already true."""
    t = Tx(region)
    code = region.upper()
    md = master_data(t, code)
    received = inv(10, 2, 1, "AVAILABLE", 7)
    receive = t.tx(("inventory", "c", received))
    ship = t.tx(("inventory", "u", {**inv(10, 2, 1, "AVAILABLE", 2), "_before": received}))
    crashed = ProjectionWriter(ch)
    crashed.write(region, [md], t.wm(md))
    crashed.write_all([RegionWrite(region, [receive, ship], t.wm(ship))], rows_later=True)
    served = stock(ch, code)
    assert served is not None
    assert served.on_hand == 2
    del crashed  # its waiting rows are lost
    resumed = ProjectionWriter(ch)
    marks = resumed.load_watermarks([region])
    assert marks[region].commit_lsn == md.commit_lsn
    resumed.write_all([RegionWrite(region, [receive], t.wm(receive))], rows_later=True)
    resumed.write_all([RegionWrite(region, [ship], t.wm(ship))], rows_later=True)
    resumed.write_rows()
    assert queries.visible_lsns(ch)[region] == ship.commit_lsn
    assert served_equals_reference(ch, code)
    served = stock(ch, code)
    assert served is not None
    assert served.on_hand == 2


def test_the_rows_stop_between_two_inserts_to_give_way_and_go_on_after(
    ch: Client, region: str
) -> None:
    """`write_rows` gives way to figures waiting, one insert at a time, and goes on
    with the same rows; those buffered meanwhile wait for the next write (their tables
    would be written twice), and each write ends with the watermark of its rows."""
    w, inserter = recording(ch)
    t = Tx(region)
    code = region.upper()
    md = master_data(t, code)
    w.write(region, [md], t.wm(md))
    first = t.tx(
        ("inventory", "c", inv(10, 2, 1, "AVAILABLE", 5)),
        ("inventory_txn", "c", {"id": 1, "txn_type": "RECEIVE", "warehouse_id": 1,
                                "owner_id": 1, "sku_id": 1, "qty": 5, "d_on_hand": 5,
                                "occurred_at": T0}),
    )  # fmt: skip
    w.write_all([RegionWrite(region, [first], t.wm(first))], rows_later=True)
    inserter.tables.clear()
    assert not w.write_rows(give_way=lambda: True)
    assert inserter.tables == ["_commit_log"]
    then = t.tx(("inventory", "c", inv(11, 4, 2, "AVAILABLE", 3)))
    w.write_all([RegionWrite(region, [then], t.wm(then))], rows_later=True)  # in between
    assert not w.write_rows(give_way=lambda: True)
    assert queries.visible_lsns(ch)[region] == md.commit_lsn
    assert w.write_rows()
    assert inserter.tables == [
        "_commit_log", "stock_current", "_figure_watermark_max",  # `then`'s figures between
        "wms_inventory", "wms_inventory_txn", "_watermark_max",  # then `first`'s rows only
    ]  # fmt: skip
    assert queries.visible_lsns(ch)[region] == first.commit_lsn
    assert w.rows_waiting_since is not None  # `then`'s rows
    assert w.write_rows()
    assert queries.visible_lsns(ch)[region] == then.commit_lsn
    assert lot_on_hand(ch, code) == [3, 5]
    assert served_equals_reference(ch, code)
