"""What the dashboard needs from the API, against the conftest data set: the stock-history
series (hand-computed from its ledger rows), `/v1/whoami`, and the dashboard's own
routes (static files, CSP, no path escape). The browser-driven tests are in
tests/integration/query_api/test_dashboard.py."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from query_api.dashboard import STATIC

EAST, WEST = "qa-east", "qa-west"
HISTORY = "/v1/stock-history/SELLER-A/SKU-1"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def pts(series: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(p["at"], p["on_hand"], p["allocated"]) for p in series["points"]]


def test_history_buckets_are_running_sums_of_the_ledger(api: TestClient) -> None:
    # SELLER-A SKU-1 ledger: WH-E1 RECEIVE +26 (Feb 1 08:00), ALLOCATE +5 alloc (Feb 2
    # 09:00); WH-E2 RECEIVE +4 (Feb 2 09:00); WH-W1 (qa-west) RECEIVE +6 (Feb 2 09:00).
    r = api.get(
        HISTORY,
        params={"since": "2026-02-01T00:00:00Z", "until": "2026-02-03T00:00:00Z", "points": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["owner"], body["sku"], body["step_ms"]) == ("SELLER-A", "SKU-1", 86_400_000)
    assert (body["since"], body["until"]) == ("2026-02-01T00:00:00Z", "2026-02-03T00:00:00Z")
    by_wh = {s["warehouse"]: s for s in body["series"]}
    assert list(by_wh) == ["WH-E1", "WH-E2", "WH-W1"]
    assert {w: s["region"] for w, s in by_wh.items()} == {
        "WH-E1": EAST, "WH-E2": EAST, "WH-W1": WEST,
    }  # fmt: skip
    assert pts(by_wh["WH-E1"]) == [
        ("2026-02-01T00:00:00Z", 0, 0),
        ("2026-02-02T00:00:00Z", 26, 0),
        ("2026-02-03T00:00:00Z", 26, 5),
    ]
    assert pts(by_wh["WH-E2"]) == [("2026-02-01T00:00:00Z", 0, 0), ("2026-02-03T00:00:00Z", 4, 0)]
    assert pts(by_wh["WH-W1"]) == [("2026-02-01T00:00:00Z", 0, 0), ("2026-02-03T00:00:00Z", 6, 0)]
    assert set(body["freshness"]) == {EAST, WEST}


def test_history_opening_figures_carry_rows_before_since(api: TestClient) -> None:
    body = api.get(
        HISTORY,
        params={"since": "2026-02-02T00:00:00Z", "until": "2026-02-02T12:00:00Z", "points": 4},
    ).json()
    e1 = next(s for s in body["series"] if s["warehouse"] == "WH-E1")
    assert body["step_ms"] == 3 * 3_600_000
    assert pts(e1) == [
        ("2026-02-02T00:00:00Z", 26, 0),  # opening: the Feb 1 receipt
        ("2026-02-02T12:00:00Z", 26, 5),  # 09:00 falls in the bucket 09:00-12:00
    ]


def test_history_closing_point_equals_the_current_figures(api: TestClient) -> None:
    """Without since/until: from the first ledger row to now; the last point of every
    warehouse is its stock figure (the ledger invariant of OPERATIONS.md). The data set
    keeps the invariant for on-hand of both SKUs, for allocated of SKU-1 only (SKU-2's
    allocated serial has no ALLOCATE row)."""
    for sku, fields in (("SKU-1", ("on_hand", "allocated")), ("SKU-2", ("on_hand",))):
        body = api.get(f"/v1/stock-history/SELLER-A/{sku}").json()
        stock = {
            i["warehouse"]: tuple(i[f] for f in fields)
            for i in api.get("/v1/stock", params={"owner": "SELLER-A", "sku": sku}).json()["items"]
        }
        closing = {
            s["warehouse"]: tuple(s["points"][-1][f] for f in fields) for s in body["series"]
        }
        assert closing == stock, sku
    body = api.get("/v1/stock-history/SELLER-A/SKU-2").json()
    assert body["since"] == "2026-02-03T00:00:00Z"  # its first ledger row
    assert [p[1] for p in pts(body["series"][0])][:2] == [0, 5]


def test_history_warehouse_filter(api: TestClient) -> None:
    body = api.get(HISTORY, params={"warehouse": "WH-W1"}).json()
    assert [s["warehouse"] for s in body["series"]] == ["WH-W1"]
    assert set(body["freshness"]) == {WEST}
    assert pts(body["series"][0])[-1][1:] == (6, 0)


def test_history_tenant_isolation_and_errors(api: TestClient, keys: dict[str, str]) -> None:
    assert api.get(HISTORY, headers=auth(keys["SELLER-A"])).status_code == 200
    other = api.get(HISTORY, headers=auth(keys["SELLER-B"]))
    absent = api.get("/v1/stock-history/SELLER-A/NOPE")
    assert other.status_code == absent.status_code == 404
    assert other.json() == absent.json() == {"error": "not_found", "detail": "no such sku"}
    for params in (
        {"since": "2026-02-03T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
        {"points": 0},
        {"points": 1001},
        {"since": "yesterday"},
        {"bogus": 1},
    ):
        r = api.get(HISTORY, params=params)
        assert r.status_code == 400, params
        assert set(r.json()) == {"error", "detail"}
    assert api.get(HISTORY, headers=auth("nope")).status_code == 401


def test_whoami(api: TestClient, keys: dict[str, str]) -> None:
    assert api.get("/v1/whoami", headers=auth(keys["SELLER-A"])).json() == {
        "scope": "seller", "owner": "SELLER-A",
    }  # fmt: skip
    assert api.get("/v1/whoami").json() == {"scope": "oms", "owner": None}
    r = api.get("/v1/whoami", headers=auth("not-a-key"))
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    assert api.get("/v1/whoami", headers=auth(keys["bi"])).status_code == 403


def test_dashboard_is_served_with_a_same_origin_policy(api: TestClient) -> None:
    r = api.get("/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (307, "/dashboard/")
    page = api.get("/dashboard/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "http" not in page.text.replace("http-equiv", "")  # no absolute (CDN) URL
    for name in ("app.js", "api.js", "dom.js", "chart.js", "app.css"):
        r = api.get(f"/dashboard/static/{name}")
        assert r.status_code == 200, name
        assert "https://" not in r.text, name
    assert (STATIC / "vendor" / "uPlot.esm.js").is_file(), (
        "the vendored front-end packages are missing: run `make vendor` (npm ci)"
    )
    assert api.get("/dashboard/static/vendor/uPlot.esm.js").status_code == 200


@pytest.mark.parametrize(
    "path", ["../dashboard.py", "%2e%2e/app.py", "vendor/../../auth.py", "nope.js", ""]
)
def test_dashboard_files_cannot_escape_static(api: TestClient, path: str) -> None:
    r = api.get(f"/dashboard/static/{path}")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    assert "def " not in r.text


def test_dashboard_routes_stay_out_of_the_openapi(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert "/v1/stock-history/{owner}/{sku}" in paths
    assert "/v1/whoami" in paths
    assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]
