"""Reconciliation on the real chain: no false alarm while a workload runs (changes in
flight), an idle region still reaches a consistent point, and a corrupted projection is
reported down to the row and the stock figure, as a report file and as metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from infra.pipeline import IsolatedPipeline
from read_model.reconcile import last_report, reconcile, reconcile_region
from simulator.workload import run as run_workload
from tests.integration.chain import LiveChain, live_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def live(pipeline: IsolatedPipeline) -> Iterator[LiveChain]:
    with live_chain(pipeline, seed=31, size="150") as chain:
        run_workload(chain.settings, pipeline.regions, workers=2, count=100, seed=3)
        chain.wait_caught_up()
        yield chain


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_no_difference_while_a_workload_runs(live: LiveChain) -> None:
    stop = threading.Event()
    worker = threading.Thread(
        target=run_workload,
        args=(live.settings, live.pipeline.regions),
        kwargs={"workers": 2, "rate": 40.0, "seed": 9, "stop": stop},
        daemon=True,
    )
    worker.start()
    try:
        report = reconcile(live.settings, live.client, live.pipeline.regions, timeout_s=60)
    finally:
        stop.set()
        worker.join(timeout=60)
    problems = [
        f"{r.region}: {r.detail or r.differences}"
        for r in report.regions
        if r.differences or not r.comparable
    ]
    assert report.ok, problems
    assert all(r.stock_keys > 0 for r in report.regions)
    assert all(t.source_rows == t.projected_rows for r in report.regions for t in r.tables)
    saved = last_report(live.settings)
    assert saved is not None
    assert saved["ok"] is True
    assert saved["differences"] == 0
    region = live.pipeline.regions[0].name
    assert _gauge("stockcdc_reconcile_differences", region=region, check="inventory") == 0
    assert _gauge("stockcdc_reconcile_comparable", region=region) == 1


def test_an_idle_region_reaches_a_consistent_point(live: LiveChain) -> None:
    """No commit follows the snapshot: the slot's confirmed LSN and a later heartbeat
    prove the projection holds everything below it."""
    live.wait_caught_up()
    report = reconcile_region(live.settings, live.client, live.pipeline.regions[1], timeout_s=60)
    assert report.comparable, report.detail
    assert report.differences == 0


def test_a_corrupted_row_is_reported_down_to_the_row_and_the_figure(live: LiveChain) -> None:
    region = live.pipeline.regions[2]
    client = live.client
    params = {"r": region.name}
    row_id = client.query(
        "SELECT id FROM cur_inventory WHERE region = {r:String} AND qty_on_hand > 0"
        " ORDER BY id LIMIT 1",
        parameters=params,
    ).result_rows[0][0]
    params["id"] = row_id
    # The latest version of the row (a subquery: an alias in REPLACE must not shadow
    # the id in its WHERE).
    latest = (
        "FROM (SELECT * FROM wms_inventory WHERE region = {r:String} AND id = {id:Int64}"
        " ORDER BY _commit_lsn DESC, _lsn DESC LIMIT 1)"
    )
    # A version that never happened in the WMS, and a row that never existed there.
    client.command(
        "INSERT INTO wms_inventory SELECT * REPLACE (qty_on_hand + 7 AS qty_on_hand,"
        f" _lsn + 1 AS _lsn) {latest}",
        parameters=params,
    )
    client.command(
        "INSERT INTO wms_inventory SELECT * REPLACE (id + 1000000000 AS id,"
        " qty_on_hand * 0 + 3 AS qty_on_hand) " + latest,
        parameters=params,
    )
    # The figure served for the row's key, as the two rows would make it: the projector
    # keeps the figures itself (read_model.figures), so corrupted rows alone leave it.
    key = client.query(
        "SELECT o.code, w.code, s.sku_code FROM cur_inventory AS i"
        " INNER JOIN cur_sku AS s ON s.region = i.region AND s.id = i.sku_id"
        " INNER JOIN cur_owner AS o ON o.region = i.region AND o.id = s.owner_id"
        " INNER JOIN cur_warehouse AS w ON w.region = i.region AND w.id = i.warehouse_id"
        " WHERE i.region = {r:String} AND i.id = {id:Int64}",
        parameters=params,
    ).result_rows[0]
    served = {**params, "o": key[0], "w": key[1], "s": key[2]}
    served_latest = (
        "FROM (SELECT * FROM stock_current WHERE owner = {o:String} AND warehouse = {w:String}"
        " AND sku = {s:String} ORDER BY _commit_lsn DESC, _seq DESC LIMIT 1)"
    )
    client.command(
        "INSERT INTO stock_current SELECT * REPLACE (on_hand + 10 AS on_hand,"
        f" _seq + 1 AS _seq) {served_latest}",
        parameters=served,
    )
    try:
        report = reconcile_region(live.settings, live.client, region, timeout_s=60)
        assert report.comparable, report.detail
        inventory = next(t for t in report.tables if t.table == "inventory")
        assert [k for k, _w, _p in inventory.different] == [(row_id,)]
        assert inventory.unexpected == [(row_id + 1_000_000_000,)]
        assert inventory.missing == []
        assert inventory.source_checksum != inventory.projected_checksum
        assert all(t.ok for t in report.tables if t.table != "inventory")
        assert len(report.figures) == 1
        fig = report.figures[0]
        assert fig.wms is not None
        assert fig.projection is not None
        assert fig.projection["on_hand"] - fig.wms["on_hand"] == 7 + 3
    finally:
        # Put the projection back as it was: the true version again, above the fake one;
        # the extra row deleted.
        client.command(
            "INSERT INTO wms_inventory SELECT * REPLACE (qty_on_hand - 7 AS qty_on_hand,"
            f" _lsn + 1 AS _lsn) {latest}",
            parameters=params,
        )
        client.command(
            "INSERT INTO wms_inventory SELECT * REPLACE (_lsn + 1 AS _lsn, 1 AS _is_deleted) "
            + latest,
            parameters={**params, "id": row_id + 1_000_000_000},
        )
        client.command(
            "INSERT INTO stock_current SELECT * REPLACE (on_hand - 10 AS on_hand,"
            f" _seq + 1 AS _seq) {served_latest}",
            parameters=served,
        )
    again = reconcile_region(live.settings, live.client, region, timeout_s=60)
    assert again.comparable
    assert again.differences == 0
