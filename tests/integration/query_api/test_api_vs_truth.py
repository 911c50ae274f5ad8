"""The Query API on the real chain: seeded regional WMS databases, a short concurrent
workload, the projector into embedded chDB, then every endpoint compared with the
simulator's oracle (truth read from the WMS databases); and `max_staleness_ms`
answering 503 while a region's connector is stopped (restarted afterwards)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from infra.connect import ConnectClient
from infra.pipeline import IsolatedPipeline
from query_api.app import create_app
from query_api.auth import DEMO_KEYS
from query_api.service import ReadModel
from simulator import ops
from simulator.db import run_txn
from simulator.oracle import Truth, read_truth
from simulator.workload import run as run_workload
from tests.integration.chain import LiveApi, live_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_QTY = ("on_hand", "available", "allocated", "pending_putaway", "qc_hold", "frozen",
        "damaged", "returned", "expired")  # fmt: skip


@pytest.fixture(scope="module")
def live(pipeline: IsolatedPipeline) -> Iterator[LiveApi]:
    with live_chain(pipeline, seed=21, size="150") as chain:
        s = chain.settings
        run_workload(s, pipeline.regions, workers=3, count=150, seed=7)
        api_settings = s.model_copy(update={"api_watermark_cache_ms": 0, "api_live_lag_ms": 2000})
        app = create_app(api_settings, ReadModel([chain.client]))
        with TestClient(app, headers={"Authorization": f"Bearer {DEMO_KEYS['oms']}"}) as api:
            chain.wait_caught_up()
            yield LiveApi(chain, api)


def pages(api: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
        r = api.get(path, params=q)
        assert r.status_code == 200, r.text
        out += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return out


def states_until(
    api: TestClient, done: Callable[[dict[str, str]], bool], timeout_s: float = 30
) -> dict[str, str]:
    """Poll `/v1/freshness` until the regions' states satisfy `done` (states follow the
    projector's batches and the clock, so one look can come a moment early)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = {r["region"]: r["state"] for r in api.get("/v1/freshness").json()["regions"]}
        if done(states):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def answers(api: TestClient, url: str, status: int, timeout_s: float = 30, **params: Any) -> Any:
    """Poll `url` until it answers `status`; every other answer must be 200 or 503."""
    deadline = time.monotonic() + timeout_s
    while (r := api.get(url, params=params)).status_code != status:
        assert r.status_code in (200, 503), r.text
        assert time.monotonic() < deadline, f"{url} never answered {status}: {r.text}"
        time.sleep(0.2)
    return r


def iso(v: Any) -> Any:
    return None if v is None else v.isoformat().replace("+00:00", "Z")


def test_every_endpoint_equals_the_oracle(live: LiveApi) -> None:
    truth: Truth = read_truth(live.pipeline.settings, live.pipeline.regions)
    assert len(truth.stock) > 30
    api = live.api

    got = {(i["owner"], i["warehouse"], i["sku"]): i for i in pages(api, "/v1/stock")}
    assert set(got) == {tuple(k) for k in truth.stock}
    for key, fig in truth.stock.items():
        item = got[(key.owner, key.warehouse, key.sku)]
        for f in (*_QTY, "inbound_expected"):
            assert item[f] == getattr(fig, f), (key, f)
        assert item["earliest_expiry"] == (
            fig.earliest_expiry.isoformat() if fig.earliest_expiry else None
        ), key
        assert (item["last_movement_at"] is None) == (fig.last_movement_at is None), key

    sample = list(truth.stock.items())[:: max(1, len(truth.stock) // 25)]
    for key, fig in sample:
        one = api.get(f"/v1/stock/{key.owner}/{key.warehouse}/{key.sku}").json()
        assert {f: one[f] for f in _QTY} == {f: getattr(fig, f) for f in _QTY}, key
        assert set(one["freshness"]) == {fig.region}

    for key, lots in list(truth.lots.items())[:: max(1, len(truth.lots) // 25)]:
        r = api.get(f"/v1/stock/{key.owner}/{key.warehouse}/{key.sku}/lots").json()["items"]
        assert [x["lot_no"] for x in r] == [lot.lot_no for lot in lots], key
        for x, lot in zip(r, lots, strict=True):
            assert {f: x[f] for f in _QTY} == {f: getattr(lot, f) for f in _QTY}, key

    for skey, state in list(truth.serials.items())[:: max(1, len(truth.serials) // 30)]:
        body = api.get(f"/v1/serials/{skey.owner}/{skey.sku}/{skey.serial_no}").json()
        cur = body["current"]
        assert (cur["status"], cur["region"], cur["warehouse"], cur["location"]) == (
            state.status, state.region, state.warehouse, state.location,
        ), skey  # fmt: skip
        assert {h["region"] for h in body["history"]} == set(state.regions), skey
        if state.location is not None and state.status != "SHIPPED":
            at_wh = api.get(
                f"/v1/stock/{skey.owner}/{state.warehouse}/{skey.sku}/serials",
                params={"status": state.status},
            ).json()["items"]
            assert skey.serial_no in {s["serial_no"] for s in at_wh}, skey

    owners = sorted({k.owner for k in truth.ledger})[:5]
    for owner in owners:
        sums: dict[tuple[str, str, str], list[int]] = {}
        for m in pages(api, "/v1/movements", owner=owner):
            s = sums.setdefault((owner, m["warehouse"], m["sku"]), [0, 0, 0])
            s[0] += m["d_on_hand"]
            s[1] += m["d_allocated"]
            s[2] += 1
        want = {tuple(k): [v.d_on_hand, v.d_allocated, v.rows]
                for k, v in truth.ledger.items() if k.owner == owner}  # fmt: skip
        assert sums == want, owner

    # Idle now: every region's WAL marks bring it within the live bound.
    names = [r.name for r in live.pipeline.regions]
    states_until(api, lambda states: all(states[r] == "live" for r in names))


def test_min_as_of_answers_with_a_fresh_commit_as_soon_as_it_is_visible(
    live: LiveApi,
) -> None:
    """Read-your-writes on the real chain: a stock read with `min_as_of` = a time just
    after a WMS commit answers once that commit is projected, and always with it. The
    region is otherwise idle, so only the WAL marks (not Debezium's own heartbeats,
    which can run ahead of an unsent commit) may move its freshness past the commit."""
    s = live.pipeline.settings
    region = live.pipeline.regions[1]
    live.wait_caught_up()
    with psycopg.connect(s.pg_dsn(region, "app"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT i.id, o.code, w.code, k.sku_code FROM inventory i"
            " JOIN owner o ON o.id = i.owner_id JOIN warehouse w ON w.id = i.warehouse_id"
            " JOIN sku k ON k.id = i.sku_id JOIN location l ON l.id = i.location_id"
            " WHERE i.status = 'AVAILABLE' AND l.loc_type IN ('STORAGE', 'PICK')"
            " AND k.tracking <> 'SERIAL' ORDER BY i.id LIMIT 1"
        ).fetchone()
        assert row is not None
        inventory_id, owner, warehouse, sku = row
        url = f"/v1/stock/{owner}/{warehouse}/{sku}"
        on_hand = live.api.get(url).json()["on_hand"]
        waits = []
        for i in range(8):
            delta = 1 if i % 2 == 0 else -1
            run_txn(conn, partial(ops.adjust, inventory_id=inventory_id, delta=delta,
                                  operator="min-as-of-test"))  # fmt: skip
            on_hand += delta
            committed = conn.execute("SELECT clock_timestamp()").fetchone()
            assert committed is not None
            asked = committed[0].astimezone(UTC)
            started = time.monotonic()
            r = live.api.get(url, params={"min_as_of": iso(asked)})
            waits.append(time.monotonic() - started)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["on_hand"] == on_hand, f"answered before commit {i} was projected"
            assert datetime.fromisoformat(body["freshness"][region.name]["as_of"]) >= asked
    # Each answer came within the server's bound, not at its timeout.
    assert max(waits) < s.api_min_as_of_timeout_ms / 1000, waits


def test_max_staleness_is_503_while_a_region_is_stopped(live: LiveApi) -> None:
    truth = read_truth(live.pipeline.settings, live.pipeline.regions)
    stopped = live.pipeline.regions[0]
    key = next(k for k, v in truth.stock.items() if v.region == stopped.name)
    other = next(k for k, v in truth.stock.items() if v.region != stopped.name)
    url = f"/v1/stock/{key.owner}/{key.warehouse}/{key.sku}"
    other_url = f"/v1/stock/{other.owner}/{other.warehouse}/{other.sku}"
    params = {"max_staleness_ms": 3000}
    answers(live.api, url, 200, **params)
    with ConnectClient(live.pipeline.settings) as connect:
        connect.stop_connector(stopped.connector_name)
        try:
            r = answers(live.api, url, 503, timeout_s=60, **params)
            assert r.json()["error"] == "stale"
            assert int(r.headers["retry-after"]) >= 1
            answers(live.api, other_url, 200, **params)  # the other regions stay fresh
            # No watermark moves any more: the region turns from catching up to stale.
            states_until(live.api, lambda states: states[stopped.name] == "stale")
        finally:
            connect.resume(stopped.connector_name)
    answers(live.api, url, 200, timeout_s=120, **params)
