"""BI relations on the real chain equal the simulator's oracle, through `POST /v1/sql`:
seeded regions, a workload, the projector into embedded chDB; then a snapshot cut taken
after the oracle's read, more work, and the snapshot of that cut still equals the truth
read before the changes (the current relations equal the new truth)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from infra.pipeline import IsolatedPipeline
from query_api.app import create_app
from query_api.auth import DEMO_KEYS
from query_api.service import ReadModel
from read_model import bi
from simulator.oracle import Truth, read_truth
from simulator.workload import run as run_workload
from tests.integration.chain import LiveApi, live_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QTY = ("on_hand", "available", "allocated", "pending_putaway", "qc_hold", "frozen",
       "damaged", "returned", "expired")  # fmt: skip


@pytest.fixture(scope="module")
def live(pipeline: IsolatedPipeline) -> Iterator[LiveApi]:
    with live_chain(pipeline, seed=33, size="150") as chain:
        s = chain.settings
        run_workload(s, pipeline.regions, workers=3, count=120, seed=11)
        api_settings = s.model_copy(
            update={"api_watermark_cache_ms": 0, "bi_snapshot_interval_s": 0.0}
        )
        app = create_app(api_settings, ReadModel([chain.client]))
        with TestClient(app, headers={"Authorization": f"Bearer {DEMO_KEYS['bi']}"}) as api:
            chain.wait_caught_up()
            yield LiveApi(chain, api)


def rows(api: TestClient, sql: str) -> list[dict[str, Any]]:
    r = api.post("/v1/sql", json={"sql": sql})
    assert r.status_code == 200, r.text
    body = r.json()
    names = [c["name"] for c in body["columns"]]
    return [dict(zip(names, row, strict=True)) for row in body["rows"]]


def stock_figures(items: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, int]]:
    return {
        (i["owner"], i["warehouse"], i["sku"]): {f: i[f] for f in (*QTY, "inbound_expected")}
        for i in items
    }


def truth_figures(truth: Truth) -> dict[tuple[str, str, str], dict[str, int]]:
    return {
        tuple(k): {f: getattr(v, f) for f in (*QTY, "inbound_expected")}  # type: ignore[misc]
        for k, v in truth.stock.items()
    }


def test_bi_relations_equal_the_oracle(live: LiveApi) -> None:
    truth = read_truth(live.pipeline.settings, live.pipeline.regions)
    assert len(truth.stock) > 30
    got = rows(live.api, "SELECT * FROM bi_stock")
    assert stock_figures(got) == truth_figures(truth)
    expiry = {(i["owner"], i["warehouse"], i["sku"]): i["earliest_expiry"] for i in got}
    for k, v in truth.stock.items():
        assert expiry[(k.owner, k.warehouse, k.sku)] == (
            v.earliest_expiry.isoformat() if v.earliest_expiry else None
        )

    lots = rows(live.api, "SELECT * FROM bi_stock_lots ORDER BY owner, warehouse, sku, fefo_rank")
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for lot in lots:
        by_key.setdefault((lot["owner"], lot["warehouse"], lot["sku"]), []).append(lot)
    assert set(by_key) == {tuple(k) for k in truth.lots}
    for key, want in truth.lots.items():
        have = by_key[tuple(key)]  # type: ignore[index]
        assert [x["lot_no"] for x in have] == [w.lot_no for w in want], key
        for x, w in zip(have, want, strict=True):
            assert {f: x[f] for f in QTY} == {f: getattr(w, f) for f in QTY}, key
            assert x["fefo_rank"] == w.fefo_rank

    serials = {
        (s["owner"], s["sku"], s["serial_no"]): s
        for s in rows(live.api, "SELECT * FROM bi_serials")
    }
    assert set(serials) == {tuple(k) for k in truth.serials}
    for skey, st in truth.serials.items():
        s = serials[(skey.owner, skey.sku, skey.serial_no)]
        assert (s["status"], s["region"], s["warehouse"], s["location"], s["lot_no"]) == (
            st.status, st.region, st.warehouse, st.location, st.lot_no,
        ), skey  # fmt: skip
        assert tuple(s["regions"]) == st.regions, skey

    ledger = rows(
        live.api,
        "SELECT owner, warehouse, sku, sum(d_on_hand) AS d_on_hand,"
        " sum(d_allocated) AS d_allocated, count() AS n FROM bi_movements"
        " GROUP BY owner, warehouse, sku",
    )
    assert {(r["owner"], r["warehouse"], r["sku"]): (r["d_on_hand"], r["d_allocated"], r["n"])
            for r in ledger} == {
        tuple(k): (v.d_on_hand, v.d_allocated, v.rows) for k, v in truth.ledger.items()
    }  # fmt: skip

    age = rows(live.api, "SELECT owner, warehouse, sku, on_hand, qty_0_30 + qty_31_60"
               " + qty_61_90 + qty_91_180 + qty_over_180 AS bucketed"
               " FROM bi_inventory_age")  # fmt: skip
    on_hand = {k: v["on_hand"] for k, v in truth_figures(truth).items() if v["on_hand"]}
    assert {(a["owner"], a["warehouse"], a["sku"]): a["on_hand"] for a in age} == on_hand
    assert all(a["bucketed"] == a["on_hand"] for a in age)


def test_a_past_cuts_snapshot_stays_the_truth_of_that_moment(live: LiveApi) -> None:
    s = live.pipeline.settings
    before = read_truth(s, live.pipeline.regions)
    cut = datetime.now(UTC)
    time.sleep(0.05)
    run_workload(s, live.pipeline.regions, workers=3, count=90, seed=12)
    live.wait_caught_up()
    deadline = time.monotonic() + 60
    while True:  # every region's watermark (commit or heartbeat) passes the cut
        try:
            snap = live.api.app.state.service.db.call(bi.snapshot_stock, cut.date(), cut)  # type: ignore[attr-defined]
            break
        except bi.NotCaughtUp:
            assert time.monotonic() < deadline, "watermarks never passed the cut"
            time.sleep(0.5)
    after = read_truth(s, live.pipeline.regions)
    assert truth_figures(after) != truth_figures(before), "the workload changed nothing"

    hist = rows(
        live.api, f"SELECT * FROM bi_stock_history WHERE day = toDate('{snap.day.isoformat()}')"
    )
    assert stock_figures(hist) == truth_figures(before)
    assert stock_figures(rows(live.api, "SELECT * FROM bi_stock")) == truth_figures(after)
