"""A flush of several regions is one write (issue 15): one insert per table for all of
them, the stock figures, then the watermarks; a failure anywhere shows none of it, and
the retry is exact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from read_model.client import ColumnInserter
from read_model.errors import ReadModelTransientError
from read_model.writer import ProjectionWriter
from schemas.events import RegionWrite
from tests.unit.read_model.test_projection import Tx, inv, master_data, stock


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
    w = ProjectionWriter(ch, lambda marks: inserter.tables.append("_watermark_max"))
    w._inserter = w.figures._inserter = inserter = RecordingInserter(ch, fail_on)
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
