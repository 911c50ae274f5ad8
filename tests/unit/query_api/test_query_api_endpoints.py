"""Every endpoint against figures computed by hand from the conftest data set
(wms/OPERATIONS.md definitions), tenant isolation, 401/403 and every 4xx path."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

EAST, WEST = "qa-east", "qa-west"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ZERO = {
    "pending_putaway": 0, "qc_hold": 0, "frozen": 0, "damaged": 0, "returned": 0, "expired": 0,
    "inbound_expected": 0,
}  # fmt: skip

# A SKU-1 at WH-E1: rows 10 AVAILABLE (3 alloc, L-LATE), 5 AVAILABLE (L-EARLY),
# 2 AVAILABLE at STG (2 alloc, not sellable), 7 PENDING_PUTAWAY, 2 FROZEN; inbound 20.
A_E1_SKU1 = {
    "owner": "SELLER-A", "warehouse": "WH-E1", "sku": "SKU-1",
    "on_hand": 26, "available": 7 + 5, "allocated": 5, **ZERO, "pending_putaway": 7,
    "frozen": 2, "inbound_expected": 20, "earliest_expiry": "2026-03-01",
    "last_movement_at": "2026-02-02T09:00:00Z",
}  # fmt: skip
A_E1_SKU2 = {
    "owner": "SELLER-A", "warehouse": "WH-E1", "sku": "SKU-2", "on_hand": 3, "available": 2,
    "allocated": 1, **ZERO, "earliest_expiry": None, "last_movement_at": "2026-02-05T00:00:00Z",
}  # fmt: skip
A_E2_SKU1 = {
    "owner": "SELLER-A", "warehouse": "WH-E2", "sku": "SKU-1", "on_hand": 4, "available": 4,
    "allocated": 0, **ZERO, "earliest_expiry": "2027-06-01",
    "last_movement_at": "2026-02-02T09:00:00Z",
}  # fmt: skip
A_W1_SKU1 = {
    "owner": "SELLER-A", "warehouse": "WH-W1", "sku": "SKU-1", "on_hand": 6, "available": 6,
    "allocated": 0, **ZERO, "earliest_expiry": None, "last_movement_at": "2026-02-02T09:00:00Z",
}  # fmt: skip
A_W1_SKU2 = {
    "owner": "SELLER-A", "warehouse": "WH-W1", "sku": "SKU-2", "on_hand": 1, "available": 1,
    "allocated": 0, **ZERO, "earliest_expiry": None, "last_movement_at": "2026-02-06T00:00:00Z",
}  # fmt: skip
B_E1_SKU1 = {
    "owner": "SELLER-B", "warehouse": "WH-E1", "sku": "SKU-1", "on_hand": 9, "available": 9,
    "allocated": 0, **ZERO, "earliest_expiry": None, "last_movement_at": "2026-02-03T00:00:00Z",
}  # fmt: skip
C_N1_SKU9 = {
    "owner": "SELLER-C", "warehouse": "WH-N1", "sku": "SKU-9", "on_hand": 3, "available": 3,
    "allocated": 0, **ZERO, "earliest_expiry": None, "last_movement_at": None,
}  # fmt: skip
A_ALL = [A_E1_SKU1, A_E1_SKU2, A_E2_SKU1, A_W1_SKU1, A_W1_SKU2]
NOT_FOUND_KEY = {"error": "not_found", "detail": "no such stock key"}


def items(r: Any) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["items"]
    return out


def strip(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "freshness"}


# -- stock -------------------------------------------------------------------------------


def test_stock_one_matches_hand_computed_figures(api: TestClient) -> None:
    r = api.get("/v1/stock/SELLER-A/WH-E1/SKU-1")
    assert r.status_code == 200
    body = r.json()
    assert strip(body) == A_E1_SKU1
    assert set(body["freshness"]) == {EAST}
    f = body["freshness"][EAST]
    assert f["lsn"] > 0
    assert f["lag_ms"] >= 0
    assert f["as_of"].endswith("Z")
    assert strip(api.get("/v1/stock/SELLER-A/WH-W1/SKU-1").json()) == A_W1_SKU1


def ours(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the fixed data set (SELLER-P belongs to the pagination test)."""
    return [r for r in rows if r["owner"] != "SELLER-P"]


def test_stock_list_all_owners_in_key_order(api: TestClient) -> None:
    r = api.get("/v1/stock")
    assert ours(items(r)) == [*A_ALL, B_E1_SKU1, C_N1_SKU9]
    assert r.json()["next_cursor"] is None
    assert set(r.json()["freshness"]) >= {EAST, WEST}


def test_stock_list_filters(api: TestClient) -> None:
    assert items(api.get("/v1/stock", params={"owner": "SELLER-A"})) == A_ALL
    assert items(api.get("/v1/stock", params={"owner": "SELLER-A", "warehouse": "WH-E1"})) == [
        A_E1_SKU1, A_E1_SKU2,
    ]  # fmt: skip
    by_sku = items(api.get("/v1/stock", params={"owner": "SELLER-A", "sku": "SKU-1"}))
    assert by_sku == [A_E1_SKU1, A_E2_SKU1, A_W1_SKU1]
    assert items(api.get("/v1/stock", params={"sku": "SKU-1", "warehouse": "WH-E1"})) == [
        A_E1_SKU1, B_E1_SKU1,
    ]  # fmt: skip
    assert items(api.get("/v1/stock", params={"owner": "NOBODY"})) == []
    assert items(api.get("/v1/stock", params={"warehouse": "WH-NOPE"})) == []
    only_west = api.get("/v1/stock", params={"owner": "SELLER-A", "warehouse": "WH-W1"})
    assert set(only_west.json()["freshness"]) == {WEST}


def test_stock_pages_follow_cursors(api: TestClient) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 2, "sku": "SKU-1"}
        if cursor:
            params["cursor"] = cursor
        r = api.get("/v1/stock", params=params)
        seen += items(r)
        pages += 1
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [A_E1_SKU1, A_E2_SKU1, A_W1_SKU1, B_E1_SKU1]
    assert pages == 2  # 2 + 2, and no empty trailing page


def test_lots_in_fefo_order(api: TestClient) -> None:
    r = api.get("/v1/stock/SELLER-A/WH-E1/SKU-1/lots")
    assert items(r) == [
        {"lot_no": "L-EARLY", "production_date": "2025-09-01", "expiry_date": "2026-03-01",
         "on_hand": 7, "available": 5, "allocated": 2, "pending_putaway": 0, "qc_hold": 0,
         "frozen": 0, "damaged": 0, "returned": 0, "expired": 0},
        {"lot_no": "L-LATE", "production_date": None, "expiry_date": "2027-06-01",
         "on_hand": 12, "available": 7, "allocated": 3, "pending_putaway": 0, "qc_hold": 0,
         "frozen": 2, "damaged": 0, "returned": 0, "expired": 0},
    ]  # fmt: skip
    assert set(r.json()["freshness"]) == {EAST}
    # Known key without lots: an empty list; unknown SKU: 404.
    assert items(api.get("/v1/stock/SELLER-A/WH-W1/SKU-1/lots")) == []
    assert api.get("/v1/stock/SELLER-A/WH-E1/NOPE/lots").json() == NOT_FOUND_KEY


def test_serials_and_status_filter(api: TestClient) -> None:
    rows = items(api.get("/v1/stock/SELLER-A/WH-E1/SKU-2/serials"))
    assert [(s["serial_no"], s["status"], s["location"]) for s in rows] == [
        ("S-1", "IN_STOCK", "A-01"), ("S-2", "ALLOCATED", "A-01"), ("S-3", "IN_STOCK", "A-01"),
        ("S-4", "SHIPPED", None), ("S-5", "SHIPPED", None),
    ]  # fmt: skip
    assert rows[0]["lot_no"] == "L-S1"
    assert rows[0]["received_at"] == "2026-01-01T00:00:00Z"
    in_stock = items(api.get("/v1/stock/SELLER-A/WH-E1/SKU-2/serials?status=IN_STOCK"))
    assert [s["serial_no"] for s in in_stock] == ["S-1", "S-3"]
    assert items(api.get("/v1/stock/SELLER-A/WH-E1/SKU-2/serials?status=LOST")) == []


def test_serial_current_and_history(api: TestClient) -> None:
    body = api.get("/v1/serials/SELLER-A/SKU-2/S-4").json()
    assert body["current"]["status"] == "SHIPPED"
    assert (body["current"]["order_no"], body["current"]["tracking_no"]) == ("SO-1", "TRK-1")
    assert [h["status"] for h in body["history"]] == ["IN_STOCK", "ALLOCATED", "SHIPPED"]
    # Moved to qa-west: the current state is the row that is not SHIPPED.
    moved = api.get("/v1/serials/SELLER-A/SKU-2/S-5").json()
    assert (moved["current"]["region"], moved["current"]["status"]) == (WEST, "IN_STOCK")
    assert moved["current"]["location"] == "C-01"
    assert [(h["region"], h["status"]) for h in moved["history"]] == [
        (EAST, "IN_STOCK"), (EAST, "SHIPPED"), (WEST, "IN_STOCK"),
    ]  # fmt: skip
    assert set(moved["freshness"]) == {EAST, WEST}
    assert api.get("/v1/serials/SELLER-A/SKU-2/NOPE").json() == {
        "error": "not_found", "detail": "no such serial",
    }  # fmt: skip


def test_movements_filters_and_pages(api: TestClient) -> None:
    rows = items(api.get("/v1/movements", params={"owner": "SELLER-A"}))
    assert [(m["region"], m["id"]) for m in rows] == [
        (EAST, 1), (EAST, 2), (EAST, 3), (WEST, 1), (EAST, 4), (EAST, 6), (EAST, 7), (WEST, 2),
    ]  # fmt: skip
    assert rows[0] == {
        "owner": "SELLER-A", "region": EAST, "id": 1, "occurred_at": "2026-02-01T08:00:00Z",
        "txn_type": "RECEIVE", "warehouse": "WH-E1", "sku": "SKU-1", "lot_no": None,
        "from_location": None, "to_location": None, "from_status": None, "to_status": None,
        "qty": 26, "d_on_hand": 26, "d_allocated": 0, "ref_type": "INBOUND", "ref_no": "PO-1",
    }  # fmt: skip
    window = items(
        api.get(
            "/v1/movements",
            params={"since": "2026-02-02T09:00:00Z", "until": "2026-02-05T00:00:00+00:00"},
        )
    )
    assert [(m["owner"], m["region"], m["id"]) for m in window] == [
        ("SELLER-A", EAST, 2), ("SELLER-A", EAST, 3), ("SELLER-A", WEST, 1),
        ("SELLER-A", EAST, 4), ("SELLER-B", EAST, 5),
    ]  # fmt: skip
    sku2 = items(api.get("/v1/movements", params={"owner": "SELLER-A", "sku": "SKU-2"}))
    assert [m["txn_type"] for m in sku2] == ["RECEIVE", "SHIP", "TRANSFER_OUT", "TRANSFER_IN"]
    wh = items(api.get("/v1/movements", params={"warehouse": "WH-W1"}))
    assert {m["warehouse"] for m in wh} == {"WH-W1"}
    assert len(wh) == 2
    paged, cursor = [], None
    while True:
        params: dict[str, Any] = {"owner": "SELLER-A", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = api.get("/v1/movements", params=params)
        paged += items(r)
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert paged == rows


def test_freshness_report(api: TestClient) -> None:
    body = api.get("/v1/freshness").json()
    regions = {r["region"]: r for r in body["regions"]}
    assert regions[EAST]["state"] == "live"
    assert regions[EAST]["heartbeat_ts"] is not None
    assert regions[EAST]["as_of"] == regions[EAST]["heartbeat_ts"]
    assert regions[EAST]["source_commit_ts"].startswith("2026-01-01T00:00:01")
    assert regions["qa-north"]["heartbeat_ts"] is None
    assert regions["qa-north"]["lag_ms"] > 3_600_000  # older than the live bound
    warehouses = {w["warehouse"]: w for w in body["warehouses"]}
    assert {w: warehouses[w]["region"] for w in ("WH-E1", "WH-E2", "WH-W1", "WH-N1")} == {
        "WH-E1": EAST, "WH-E2": EAST, "WH-W1": WEST, "WH-N1": "qa-north",
    }  # fmt: skip
    assert set(body["freshness"]) >= {EAST, WEST, "qa-north"}


def test_health_and_ready(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_metrics(api: TestClient) -> None:
    api.get("/v1/stock/SELLER-A/WH-E1/SKU-1")
    text = api.get("/metrics").text
    assert (
        'stockcdc_api_request_seconds_count{method="GET",'
        'route="/v1/stock/{owner}/{warehouse}/{sku}",status="200"}' in text
    )
    assert f'stockcdc_projection_lag_ms{{region="{EAST}"}}' in text
    # the stock figures' lag too, never behind everything's (their watermark is ahead)
    lag = {
        m[1]: float(m[2])
        for m in re.finditer(
            rf'^stockcdc_(figures|projection)_lag_ms{{region="{EAST}"}} (\S+)$', text, re.M
        )
    }
    assert lag.keys() == {"figures", "projection"}
    assert lag["figures"] <= lag["projection"]
    assert "# TYPE stockcdc_deadletters_total counter" in text
    assert "# TYPE stockcdc_events_total counter" in text  # the consumer's own counters


def test_openapi_is_complete(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/v1/stock", "/v1/stock/{owner}/{warehouse}/{sku}",
        "/v1/stock/{owner}/{warehouse}/{sku}/lots", "/v1/stock/{owner}/{warehouse}/{sku}/serials",
        "/v1/serials/{owner}/{sku}/{serial_no}", "/v1/movements", "/v1/freshness",
        "/v1/stock-history/{owner}/{sku}", "/v1/whoami", "/v1/reconciliation", "/healthz",
        "/readyz", "/metrics",
    ):  # fmt: skip
        assert p in paths, p
    one = paths["/v1/stock/{owner}/{warehouse}/{sku}"]["get"]
    assert {"200", "400", "401", "404", "503", "504"} <= set(one["responses"])
    assert "422" not in one["responses"]
    err = one["responses"]["404"]["content"]["application/json"]
    assert err["schema"]["$ref"].endswith("/ErrorBody")
    assert "example" in err
    params = {p["name"] for p in paths["/v1/stock"]["get"]["parameters"]}
    assert params == {"owner", "warehouse", "sku", "limit", "cursor", "max_staleness_ms",
                      "min_as_of"}  # fmt: skip
    assert (
        "bearerAuth" in str(spec["components"]["securitySchemes"])
        or spec["components"]["securitySchemes"]
    )


# -- tenant isolation ----------------------------------------------------------------------


def test_seller_sees_only_its_owner(api: TestClient, keys: dict[str, str]) -> None:
    a = auth(keys["SELLER-A"])
    assert items(api.get("/v1/stock", headers=a)) == A_ALL
    assert items(api.get("/v1/stock", params={"owner": "SELLER-A"}, headers=a)) == A_ALL
    other = api.get("/v1/stock", params={"owner": "SELLER-B"}, headers=a).json()
    absent = api.get("/v1/stock", params={"owner": "NOBODY"}).json()
    assert other == absent == {"items": [], "next_cursor": None, "freshness": {}}
    assert items(api.get("/v1/stock", params={"sku": "SKU-1"}, headers=a)) == [
        A_E1_SKU1, A_E2_SKU1, A_W1_SKU1,
    ]  # fmt: skip
    b = auth(keys["SELLER-B"])
    assert items(api.get("/v1/stock", headers=b)) == [B_E1_SKU1]
    moves = items(api.get("/v1/movements", headers=b))
    assert [(m["owner"], m["id"]) for m in moves] == [("SELLER-B", 5)]
    assert items(api.get("/v1/movements", params={"owner": "SELLER-A"}, headers=b)) == []


@pytest.mark.parametrize(
    ("existing", "absent"),
    [
        ("/v1/stock/SELLER-A/WH-E1/SKU-1", "/v1/stock/SELLER-A/WH-E1/SKU-404"),
        ("/v1/stock/SELLER-A/WH-E1/SKU-1/lots", "/v1/stock/SELLER-A/WH-E9/SKU-1/lots"),
        ("/v1/stock/SELLER-A/WH-E1/SKU-2/serials", "/v1/stock/SELLER-Z/WH-E1/SKU-2/serials"),
        ("/v1/serials/SELLER-A/SKU-2/S-1", "/v1/serials/SELLER-A/SKU-2/S-404"),
    ],
)
def test_other_owners_data_is_404_exactly_like_absent(
    api: TestClient, keys: dict[str, str], existing: str, absent: str
) -> None:
    assert api.get(existing).status_code == 200  # it exists (OMS key)
    b = auth(keys["SELLER-B"])
    theirs = api.get(existing, headers=b)
    missing = api.get(absent, headers=b)
    mine_missing = api.get(absent)
    assert theirs.status_code == missing.status_code == mine_missing.status_code == 404
    assert theirs.json() == missing.json() == mine_missing.json()
    assert theirs.headers.get("content-length") == missing.headers.get("content-length")
    # with consistency parameters too
    assert api.get(existing + "?max_staleness_ms=1", headers=b).json() == theirs.json()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/stock", "/v1/stock/SELLER-A/WH-E1/SKU-1", "/v1/stock/SELLER-A/WH-E1/SKU-1/lots",
        "/v1/stock/SELLER-A/WH-E1/SKU-2/serials", "/v1/serials/SELLER-A/SKU-2/S-1",
        "/v1/movements", "/v1/freshness",
    ],
)  # fmt: skip
def test_missing_or_bad_key_is_401_and_bi_is_403(
    api: TestClient, keys: dict[str, str], path: str
) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer not-a-key"},
        auth(keys["SELLER-A"] + "x"),
    ):
        r = api.get(path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    r = api.get(path, headers=auth(keys["bi"]))
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")


def test_no_header_at_all_is_401(api_settings: Any, pool: Any) -> None:
    from query_api.app import create_app

    with TestClient(create_app(api_settings, pool)) as bare:
        r = bare.get("/v1/stock")
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized")


# -- bad input: always a 4xx JSON error ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/v1/stock?bogus=1", "unknown_parameter"),
        ("/v1/stock/SELLER-A/WH-E1/SKU-1?owner=x", "unknown_parameter"),
        ("/v1/freshness?x=1", "unknown_parameter"),
        ("/v1/stock?limit=0", "invalid_parameter"),
        ("/v1/stock?limit=1001", "invalid_parameter"),
        ("/v1/stock?limit=ten", "invalid_parameter"),
        ("/v1/stock?owner=", "invalid_parameter"),
        ("/v1/stock?cursor=garbage", "bad_cursor"),
        ("/v1/stock?cursor=e30.AAAA", "bad_cursor"),
        ("/v1/movements?cursor=%%%", "bad_cursor"),
        ("/v1/stock?max_staleness_ms=-1", "invalid_parameter"),
        ("/v1/stock?max_staleness_ms=1e3", "invalid_parameter"),
        ("/v1/stock?min_as_of=yesterday", "invalid_parameter"),
        ("/v1/stock?min_as_of=2026-01-01T00:00:00", "invalid_parameter"),  # no offset
        ("/v1/movements?since=2026-13-01T00:00:00Z", "invalid_parameter"),
        ("/v1/movements?since=9999-01-01T00:00:00Z", "invalid_parameter"),
        ("/v1/movements?until=1900-01-01T00:00:00Z", "invalid_parameter"),
        ("/v1/movements?since=2026-02-02T00:00:00Z&until=2026-02-01T00:00:00Z",
         "invalid_parameter"),
        ("/v1/stock/SELLER-A/WH-E1/SKU-2/serials?status=BROKEN", "invalid_parameter"),
        ("/v1/stock/SELLER-A/WH-E1/SKU-2/serials?status=in_stock", "invalid_parameter"),
    ],
)  # fmt: skip
def test_bad_input_is_400(api: TestClient, url: str, code: str) -> None:
    r = api.get(url)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code
    assert set(r.json()) == {"error", "detail"}


def test_cursor_is_tamper_evident_and_bound_to_its_filters(
    api: TestClient, keys: dict[str, str]
) -> None:
    cursor = api.get("/v1/stock", params={"limit": 1}).json()["next_cursor"]
    body, mac = cursor.split(".")
    forged = ("A" if body[0] != "A" else "B") + body[1:] + "." + mac
    for params in (
        {"limit": 1, "cursor": forged},
        {"limit": 1, "cursor": cursor + "x"},
        {"limit": 1, "cursor": cursor, "owner": "SELLER-A"},  # other filters
    ):
        r = api.get("/v1/stock", params=params)
        assert (r.status_code, r.json()["error"]) == (400, "bad_cursor"), params
    r = api.get("/v1/movements", params={"cursor": cursor})  # another list's
    assert (r.status_code, r.json()["error"]) == (400, "bad_cursor")
    # seller B cannot continue the OMS's list either (its filters differ: owner implied)
    r = api.get("/v1/stock", params={"limit": 1, "cursor": cursor}, headers=auth(keys["SELLER-B"]))
    assert (r.status_code, r.json()["error"]) == (400, "bad_cursor")


def test_unknown_routes_and_methods_are_json(api: TestClient) -> None:
    r = api.get("/v1/nothing")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = api.post("/v1/stock")
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")
