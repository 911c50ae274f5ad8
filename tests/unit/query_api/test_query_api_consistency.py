"""Consistency controls (max_staleness_ms, min_as_of) with watermark rows the test
writes itself, cursor pages stable while rows change, and a read model that is down."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from query_api.app import create_app
from query_api.service import ReadModel
from read_model.writer import ProjectionWriter
from stockcdc.settings import Settings
from tests.unit.query_api.conftest import Tx, at, inv, serial, txn

STALE_KEY = "/v1/stock/SELLER-C/WH-N1/SKU-9"  # qa-north: watermark from 2026-01-01


def test_max_staleness_answers_503_with_retry_after_when_the_region_is_old(
    api: TestClient,
) -> None:
    assert api.get(STALE_KEY).status_code == 200  # without the control: served
    r = api.get(STALE_KEY, params={"max_staleness_ms": 60_000})
    assert r.status_code == 503
    assert r.json()["error"] == "stale"
    assert "qa-north" in r.json()["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # the same control on every stock read of that region
    for url in (STALE_KEY + "/lots", STALE_KEY + "/serials"):
        assert api.get(url, params={"max_staleness_ms": 60_000}).status_code == 503
    lst = api.get("/v1/stock", params={"owner": "SELLER-C", "max_staleness_ms": 60_000})
    assert lst.status_code == 503
    # a fresh region passes (its heartbeat was written at setup)
    ok = api.get("/v1/stock/SELLER-A/WH-E1/SKU-1", params={"max_staleness_ms": 3_600_000})
    assert ok.status_code == 200
    # a list touching the fresh regions only is not held back by qa-north
    east = api.get("/v1/stock", params={"warehouse": "WH-E1", "max_staleness_ms": 3_600_000})
    assert east.status_code == 200


def test_min_as_of_returns_as_soon_as_the_watermark_passes(api: TestClient, rm: Any) -> None:
    target = datetime.now(UTC) + timedelta(milliseconds=300)

    def heartbeat_later() -> None:
        time.sleep(0.4)
        rm.tx["qa-east"].heartbeat(target + timedelta(milliseconds=1))

    writer = threading.Thread(target=heartbeat_later)
    started = time.monotonic()
    writer.start()
    r = api.get("/v1/stock/SELLER-A/WH-E1/SKU-1", params={"min_as_of": target.isoformat()})
    elapsed = time.monotonic() - started
    writer.join()
    assert r.status_code == 200, r.text
    assert elapsed >= 0.35  # it waited for the heartbeat (a timeout would be a 504)
    as_of = datetime.fromisoformat(r.json()["freshness"]["qa-east"]["as_of"])
    assert as_of >= target
    # already passed: no wait
    started = time.monotonic()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert api.get("/v1/stock/SELLER-A/WH-E1/SKU-1", params={"min_as_of": past}).status_code == 200


def test_min_as_of_answers_504_when_the_watermark_does_not_get_there(api: TestClient) -> None:
    started = time.monotonic()
    r = api.get(
        STALE_KEY, params={"min_as_of": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    )
    elapsed = time.monotonic() - started
    assert (r.status_code, r.json()["error"]) == (504, "not_caught_up")
    assert 1.4 <= elapsed < 5  # the server's bound (1.5 s in these tests)
    # a time further ahead than the timeout can never be reached: answered at once
    started = time.monotonic()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = api.get("/v1/stock/SELLER-A/WH-E1/SKU-1", params={"min_as_of": future})
    assert r.status_code == 504
    assert time.monotonic() - started < 1.0


def test_pages_are_stable_while_rows_change_between_them(api: TestClient, page_region: Any) -> None:
    """Keys inserted or deleted between pages: no key twice, none of the keys that exist
    throughout skipped, order kept."""
    t = page_region
    t.change(add=tuple(f"P-{i:02d}" for i in range(1, 10)))
    seen: list[str] = []
    params: dict[str, Any] = {"owner": "SELLER-P", "limit": 3}
    r = api.get("/v1/stock", params=params).json()
    seen += [i["sku"] for i in r["items"]]  # P-01..P-03
    t.change(add=("P-00", "P-05a", "P-99"), remove=("P-02", "P-07"))
    r = api.get("/v1/stock", params={**params, "cursor": r["next_cursor"]}).json()
    seen += [i["sku"] for i in r["items"]]  # P-04, P-05, P-05a
    t.change(add=("P-04a",), remove=("P-08",))
    while r["next_cursor"]:
        r = api.get("/v1/stock", params={**params, "cursor": r["next_cursor"]}).json()
        seen += [i["sku"] for i in r["items"]]
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    throughout = {"P-01", "P-03", "P-04", "P-05", "P-06", "P-09"}
    assert throughout <= set(seen)
    assert {"P-07", "P-08"}.isdisjoint(seen)  # deleted before their page was read
    assert "P-99" in seen  # inserted ahead of the cursor: picked up
    assert "P-00" not in seen
    assert "P-04a" not in seen


class _DownClient:
    """A ClickHouse client whose server is gone."""

    def query(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    def close(self) -> None:
        pass


def test_read_model_down_is_503_never_500(api_settings: Settings, keys: dict[str, str]) -> None:
    app = create_app(api_settings, ReadModel([_DownClient()]))  # type: ignore[list-item]
    with TestClient(app, headers={"Authorization": f"Bearer {keys['oms']}"}) as c:
        for url in (
            "/v1/stock", "/v1/stock/SELLER-A/WH-E1/SKU-1", "/v1/stock/SELLER-A/WH-E1/SKU-1/lots",
            "/v1/serials/SELLER-A/SKU-2/S-1", "/v1/movements", "/v1/freshness",
        ):  # fmt: skip
            r = c.get(url)
            assert r.status_code == 503, url
            assert r.json() == {
                "error": "read_model_unavailable",
                "detail": "the read model (ClickHouse) did not answer; retry later",
            }
            assert r.headers["retry-after"] == "1"
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_key_reads_are_as_of_the_watermarks_they_report(
    api: TestClient, rm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lots, a serial and movements read their data at the watermarks their freshness
    reports, not at newer ones committed meanwhile (here: the API's watermarks held at
    the first commit while a second one lands)."""
    t = Tx("qa-cut", ProjectionWriter(rm.client))
    first = t.commit(
        ("warehouse", "c", {"id": 1, "code": "WH-K1"}),
        ("owner", "c", {"id": 1, "code": "SELLER-K"}),
        ("sku", "c", {"id": 1, "owner_id": 1, "sku_code": "SKU-K", "tracking": "SERIAL"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "K-01", "sellable": True}),
        ("lot", "c", {"id": 1, "sku_id": 1, "lot_no": "LOT-K"}),
        inv(1, 1, 1, 1, 1, 1, "AVAILABLE", 5),
        serial(1, 1, 1, "SN-K", "IN_STOCK", 1, 1, at(1)),
        txn(1, 1, 1, 1, "RECEIVE", at(1), lot_id=1, to_location_id=1, qty=5, d_on_hand=5),
    )
    service = api.app.state.service  # type: ignore[attr-defined]
    held = api.portal.call(service.marks, True)  # type: ignore[union-attr]
    assert held["qa-cut"].lsn == first.commit_lsn

    async def marks(fresh: bool = False, figures: bool = False) -> Any:
        return held

    monkeypatch.setattr(service, "marks", marks)
    t.commit(
        inv(1, 1, 1, 1, 1, 1, "AVAILABLE", 9),
        serial(1, 1, 1, "SN-K", "ALLOCATED", 1, 1, at(2)),
        txn(2, 1, 1, 1, "RECEIVE", at(2), lot_id=1, to_location_id=1, qty=4, d_on_hand=4),
    )
    lots = api.get("/v1/stock/SELLER-K/WH-K1/SKU-K/lots").json()
    assert [i["on_hand"] for i in lots["items"]] == [5]
    assert lots["freshness"]["qa-cut"]["lsn"] == first.commit_lsn
    found = api.get("/v1/serials/SELLER-K/SKU-K/SN-K").json()
    assert (found["current"]["status"], len(found["history"])) == ("IN_STOCK", 1)
    moves = api.get("/v1/movements", params={"owner": "SELLER-K", "sku": "SKU-K"}).json()
    assert [m["id"] for m in moves["items"]] == [1]
    # leave no stock key or ledger row behind for the tests listing every owner's
    t.commit(("inventory", "d", {"id": 1}), ("inventory_txn", "d", {"id": 1}),
             ("inventory_txn", "d", {"id": 2}))  # fmt: skip


def test_stock_answers_at_the_figures_and_drill_downs_at_the_rows(api: TestClient, rm: Any) -> None:
    """Figures are written before their rows (`rows_max_ms`): a stock answer shows a
    commit whose lots are not in yet, each answer exact at the cut it reports."""
    writer = ProjectionWriter(rm.client)
    t = Tx("qa-ahead", writer)
    first = t.commit(
        ("warehouse", "c", {"id": 1, "code": "WH-F1"}),
        ("owner", "c", {"id": 1, "code": "SELLER-F"}),
        ("sku", "c", {"id": 1, "owner_id": 1, "sku_code": "SKU-F"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "F-01", "sellable": True}),
        ("lot", "c", {"id": 1, "sku_id": 1, "lot_no": "LOT-F"}),
        inv(1, 1, 1, 1, 1, 1, "AVAILABLE", 5),
    )
    then = t.commit(("inventory", "u", inv(1, 1, 1, 1, 1, 1, "AVAILABLE", 9)[2]), rows_later=True)
    key = "/v1/stock/SELLER-F/WH-F1/SKU-F"
    one = api.get(key).json()
    assert (one["on_hand"], one["freshness"]["qa-ahead"]["lsn"]) == (9, then.commit_lsn)
    listed = api.get("/v1/stock", params={"owner": "SELLER-F"}).json()
    assert [i["on_hand"] for i in listed["items"]] == [9]
    assert listed["freshness"]["qa-ahead"]["lsn"] == then.commit_lsn
    lots = api.get(f"{key}/lots").json()
    assert ([i["on_hand"] for i in lots["items"]], lots["freshness"]["qa-ahead"]["lsn"]) == (
        [5], first.commit_lsn
    )  # fmt: skip
    (status,) = [r for r in api.get("/v1/freshness").json()["regions"] if r["region"] == "qa-ahead"]
    assert (status["applied_lsn"], status["figures_lsn"]) == (first.commit_lsn, then.commit_lsn)
    writer.write_rows()
    lots = api.get(f"{key}/lots").json()
    assert ([i["on_hand"] for i in lots["items"]], lots["freshness"]["qa-ahead"]["lsn"]) == (
        [9], then.commit_lsn
    )  # fmt: skip
    # leave no stock key behind for the tests listing every owner's
    t.commit(("inventory", "d", {"id": 1}))
