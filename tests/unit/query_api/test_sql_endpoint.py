"""`POST /v1/sql` over the conftest read model (chDB): the BI relations equal the hand
figures, every format, key scopes, and every kind of write or escape refused by the
engine with a clear 4xx, with the limits enforced."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pyarrow.ipc as ipc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from fastapi.testclient import TestClient

from query_api.app import create_app
from query_api.service import ReadModel
from stockcdc.settings import Settings
from tests.unit.query_api.conftest import ReadModelFixture, auth
from tests.unit.query_api.test_query_api_endpoints import A_ALL, B_E1_SKU1, C_N1_SKU9

FIGURES = ("on_hand", "available", "allocated", "pending_putaway", "qc_hold", "frozen",
           "damaged", "returned", "expired", "inbound_expected")  # fmt: skip
STOCK_SQL = (
    "SELECT owner, warehouse, sku, " + ", ".join(FIGURES) + ", earliest_expiry,"
    " last_movement_at FROM bi_stock WHERE owner IN ('SELLER-A', 'SELLER-B', 'SELLER-C')"
    " ORDER BY owner, warehouse, sku"
)
MAX_ROWS = 1000


@pytest.fixture(scope="module")
def sql_api(
    rm: ReadModelFixture, api_settings: Settings, pool: ReadModel, keys: dict[str, str]
) -> Iterator[TestClient]:
    """The app with small BI limits; its BI client is a second handle on the conftest's
    chDB engine, closed by the app's lifespan at the end of the module."""
    settings = api_settings.model_copy(
        update={
            "clickhouse_url": f"chdb://{rm.client.path}",  # type: ignore[attr-defined]
            "bi_max_execution_time_s": 3.0,
            "bi_max_memory_bytes": 100_000_000,
            "bi_max_result_rows": MAX_ROWS,
            "bi_max_sql_chars": 5_000,
            "bi_snapshot_interval_s": 0.0,
        }
    )
    with TestClient(create_app(settings, pool), headers=auth(keys["bi"])) as client:
        yield client


def sql(api: TestClient, query: str, **kw: Any) -> Any:
    r = api.post("/v1/sql", json={"sql": query, **kw})
    if r.status_code >= 500 or (r.status_code == 422 and "LIMIT" not in query.upper()):
        print(r.text)  # shown on failure
    return r


def _iso(v: Any) -> Any:
    """Engine JSON/CSV time text → the API's ISO form (`2026-02-02T09:00:00Z`)."""
    if isinstance(v, str) and len(v) >= 19 and v[10] == " ":
        return datetime.fromisoformat(v).replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return v


def expected_stock() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [*cast(list[dict[str, Any]], A_ALL), B_E1_SKU1, C_N1_SKU9]
    return sorted(rows, key=lambda r: (r["owner"], r["warehouse"], r["sku"]))


def test_bi_stock_equals_the_hand_figures_as_json(sql_api: TestClient) -> None:
    r = sql(sql_api, STOCK_SQL)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    names = [c["name"] for c in body["columns"]]
    assert names[:3] == ["owner", "warehouse", "sku"]
    assert {c["name"]: c["type"] for c in body["columns"]}["on_hand"] == "Int64"
    got = [{n: _iso(v) for n, v in zip(names, row, strict=True)} for row in body["rows"]]
    assert got == expected_stock()
    assert body["row_count"] == len(got)
    assert set(body["freshness"]) >= {"qa-east", "qa-west"}
    assert isinstance(body["rows"][0][3], int)  # Int64 as a JSON number, not a string


def test_every_format_returns_the_same_rows(sql_api: TestClient) -> None:
    want = [[r[k] for k in ("owner", "warehouse", "sku", *FIGURES)] for r in expected_stock()]
    q = STOCK_SQL.replace(", earliest_expiry, last_movement_at", "")

    c = sql(sql_api, q, format="csv")
    assert c.status_code == 200
    assert c.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(c.text)))
    assert rows[0] == ["owner", "warehouse", "sku", *FIGURES]
    assert [[*r[:3], *map(int, r[3:])] for r in rows[1:]] == want
    assert "qa-east" in c.headers["x-freshness"]

    p = sql(sql_api, q, format="parquet")
    assert p.status_code == 200
    assert p.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(p.content))
    assert table.column_names == ["owner", "warehouse", "sku", *FIGURES]
    assert [list(r.values()) for r in table.to_pylist()] == want

    a = sql_api.post(
        "/v1/sql", json={"sql": q}, headers={"Accept": "application/vnd.apache.arrow.stream"}
    )
    assert a.status_code == 200
    assert a.headers["content-type"] == "application/vnd.apache.arrow.stream"
    arrow = ipc.open_stream(io.BytesIO(a.content)).read_all()
    assert [list(r.values()) for r in arrow.to_pylist()] == want

    by_accept = sql_api.post("/v1/sql", json={"sql": q}, headers={"Accept": "text/csv"})
    assert by_accept.text == c.text
    none = sql_api.post("/v1/sql", json={"sql": q}, headers={"Accept": "image/png"})
    assert none.status_code == 406
    assert none.json()["error"] == "not_acceptable"


def test_bi_relations_lots_serials_movements_age(sql_api: TestClient) -> None:
    lots = sql(sql_api, "SELECT lot_no, on_hand, available, allocated, frozen, fefo_rank"
               " FROM bi_stock_lots WHERE owner = 'SELLER-A' AND warehouse = 'WH-E1'"
               " AND sku = 'SKU-1' ORDER BY fefo_rank").json()["rows"]  # fmt: skip
    # L-EARLY: 5 at A-01 + 2 picked at STG (allocated, not sellable); L-LATE: 10 (3 alloc)
    # + 2 FROZEN. The PENDING_PUTAWAY row has no lot.
    assert lots == [["L-EARLY", 7, 5, 2, 0, 1], ["L-LATE", 12, 7, 3, 2, 2]]

    s5 = sql(sql_api, "SELECT status, region, warehouse, location, regions FROM bi_serials"
             " WHERE owner = 'SELLER-A' AND sku = 'SKU-2' AND serial_no = 'S-5'")  # fmt: skip
    s5 = s5.json()["rows"]
    assert s5 == [["IN_STOCK", "qa-west", "WH-W1", "C-01", ["qa-east", "qa-west"]]]
    s4 = sql(sql_api, "SELECT status, location FROM bi_serials WHERE serial_no = 'S-4'")
    assert s4.json()["rows"] == [["SHIPPED", None]]

    mv = sql(sql_api, "SELECT warehouse, sku, sum(d_on_hand), count() FROM bi_movements"
             " WHERE owner = 'SELLER-A' GROUP BY warehouse, sku"
             " ORDER BY warehouse, sku")  # fmt: skip
    assert mv.json()["rows"] == [
        ["WH-E1", "SKU-1", 26, 2], ["WH-E1", "SKU-2", 3, 3], ["WH-E2", "SKU-1", 4, 1],
        ["WH-W1", "SKU-1", 6, 1], ["WH-W1", "SKU-2", 1, 1],
    ]  # fmt: skip

    # in_date defaults to T0 (2026-01-01): every unit sits in one bucket by its age today.
    age = sql(sql_api, "SELECT on_hand, qty_0_30 + qty_31_60 + qty_61_90 + qty_91_180"
              " + qty_over_180, dateDiff('day', toDate(oldest_in_date), as_of_date)"
              " FROM bi_inventory_age WHERE owner = 'SELLER-A' AND warehouse = 'WH-E1'"
              " AND sku = 'SKU-1'").json()["rows"]  # fmt: skip
    assert age[0][0] == age[0][1] == 26, age
    assert age[0][2] >= 0, age


def test_only_bi_keys_may_run_sql(sql_api: TestClient, keys: dict[str, str]) -> None:
    for who in ("oms", "SELLER-A"):
        r = sql_api.post("/v1/sql", json={"sql": "SELECT 1"}, headers=auth(keys[who]))
        assert (r.status_code, r.json()["error"]) == (403, "forbidden"), who
    assert (
        sql_api.post("/v1/sql", json={"sql": "SELECT 1"}, headers={"Authorization": ""}).status_code
        == 401
    )
    assert sql_api.get("/v1/stock").status_code == 403  # a BI key on a stock route


_OUTFILE = os.path.join(tempfile.gettempdir(), f"stockcdc-bi-{uuid.uuid4().hex}.csv")

#: (statement, HTTP status, error code): each refused by the engine (readonly, its
#: parser, a switched-off feature or the system-table filter), never run.
REFUSED = [
    ("INSERT INTO wms_owner (region, id, code) VALUES ('x', 1, 'X')", 403, "not_a_query"),
    ("CREATE TABLE bi_evil (a Int8) ENGINE = Memory", 403, "not_a_query"),
    ("DROP TABLE wms_owner", 403, "not_a_query"),
    ("ALTER TABLE wms_owner DELETE WHERE 1", 403, "not_a_query"),
    ("TRUNCATE TABLE wms_owner", 403, "not_a_query"),
    ("OPTIMIZE TABLE wms_owner FINAL", 403, "not_a_query"),
    ("SET readonly = 0", 403, "not_a_query"),
    ("SET max_result_rows = 0", 403, "not_a_query"),
    ("SYSTEM DROP DNS CACHE", 403, "not_a_query"),
    ("KILL QUERY WHERE 1", 403, "not_a_query"),
    ("SHOW TABLES", 403, "not_a_query"),
    (f"SELECT 1 INTO OUTFILE '{_OUTFILE}'", 403, "not_a_query"),
    (f"SELECT 1) INTO OUTFILE '{_OUTFILE}'; SELECT (1", 400, "sql_syntax"),
    ("SELECT 1 FORMAT JSON", 403, "not_a_query"),
    ("SELECT 1; DROP TABLE wms_owner", 400, "sql_syntax"),
    ("SELECT * FROM numbers(10) SETTINGS max_result_rows = 100000", 403, "read_only"),
    ("SELECT 1 SETTINGS readonly = 0", 403, "read_only"),
    ("SELECT name FROM system.tables", 403, "system_table"),
    ("SELECT * FROM system.processes", 403, "system_table"),
    ("SELECT * FROM system.settings WHERE name = 'readonly'", 403, "system_table"),
    ("SELECT * FROM information_schema.tables", 403, "system_table"),
    ("SELECT * FROM INFORMATION_SCHEMA.COLUMNS", 403, "system_table"),
    ("SELECT * FROM file('/etc/hostname', 'LineAsString')", 403, "read_only"),
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", 403, "read_only"),
    ("SELECT * FROM s3('http://127.0.0.1:9/bucket/key.csv', 'CSV')", 403, "read_only"),
    ("SELECT * FROM remote('127.0.0.1:9000', default.wms_owner)", 403, "read_only"),
    ("SELECT * FROM postgresql('127.0.0.1:25431', 'wms', 'owner', 'u', 'p')", 403, "read_only"),
    ("SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')", 403, "read_only"),
    ("SELECT * FROM executable('id', 'LineAsString', 'x String')", 403, "read_only"),
    ("SELECT * FROM python('x')", 403, "function_not_allowed"),
    # A SETTINGS clause inside a subquery is accepted by the parser but lifts nothing:
    (
        "SELECT * FROM (SELECT * FROM file('/etc/hostname', 'LineAsString') SETTINGS readonly = 0)",
        403,
        "read_only",
    ),
    (
        "SELECT * FROM (SELECT name FROM system.tables SETTINGS additional_table_filters = {})",
        403,
        "system_table",
    ),
    (
        "SELECT * FROM (SELECT * FROM python('x') SETTINGS allow_python_table_function = 1)",
        403,
        "function_not_allowed",
    ),
]


@pytest.mark.parametrize(
    ("statement", "status", "error"), REFUSED, ids=[r[0][:60] for r in REFUSED]
)
def test_writes_and_escapes_are_refused(
    sql_api: TestClient, rm: ReadModelFixture, statement: str, status: int, error: str
) -> None:
    owners = rm.client.query("SELECT count() FROM wms_owner").result_rows[0][0]
    r = sql(sql_api, statement)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.json()["detail"]
    assert rm.client.query("SELECT count() FROM wms_owner").result_rows[0][0] == owners
    assert not os.path.exists(_OUTFILE)
    assert not rm.client.query("EXISTS TABLE bi_evil").result_rows[0][0]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT file('{path}')",
        "SELECT length(file('{path}', NULL)) AS n",
        "SELECT arrayMap(x -> file(x), ['{path}'])",
        "SELECT 1 WHERE 1 IN (SELECT length(file('{path}')))",
        "SELECT * FROM (SELECT file('{path}') AS f)",
        "EXPLAIN QUERY TREE SELECT file('{path}')",  # folding the constant reads it
    ],
)
def test_the_file_function_is_refused(sql_api: TestClient, tmp_path: Path, statement: str) -> None:
    """Embedded chDB has no path check on the scalar file(): the gate refuses any call."""
    secret = tmp_path / "secret"
    secret.write_text(uuid.uuid4().hex)
    r = sql(sql_api, statement.format(path=secret))
    assert (r.status_code, r.json()["error"]) == (403, "function_not_allowed"), r.text
    assert secret.read_text() not in r.text


def test_file_as_a_word_is_not_a_call(sql_api: TestClient) -> None:
    r = sql(sql_api, "SELECT 'Function file' AS file, '\n Function file(1)' AS t")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("SELECT sum(cityHash64(number)) FROM numbers(100000000000)", "time_limit_exceeded"),
        (
            "SELECT * FROM (SELECT sum(cityHash64(number)) FROM numbers(100000000000)"
            " SETTINGS max_execution_time = 1000)",
            "time_limit_exceeded",
        ),
        (
            "SELECT length(groupArray(randomString(1000))) FROM numbers(1000000)",
            "memory_limit_exceeded",
        ),
        (f"SELECT number FROM numbers({MAX_ROWS + 1})", "result_too_large"),
        (
            f"SELECT * FROM (SELECT number FROM numbers({MAX_ROWS + 1})"
            " SETTINGS max_result_rows = 0)",
            "result_too_large",
        ),
    ],
)
def test_limits_are_enforced(sql_api: TestClient, statement: str, error: str) -> None:
    r = sql(sql_api, statement)
    assert (r.status_code, r.json()["error"]) == (422, error), r.text


def test_a_result_at_the_row_limit_is_answered(sql_api: TestClient) -> None:
    r = sql(sql_api, f"SELECT number FROM numbers({MAX_ROWS})", format="csv")
    assert r.status_code == 200
    assert len(r.text.splitlines()) == MAX_ROWS + 1


def test_a_failed_query_leaks_nothing_into_the_next(sql_api: TestClient) -> None:
    """chDB passes a failed query's unread output to the next query on its handle; the
    BI session is replaced after an error, so the next answer is only its own."""
    big = sql(sql_api, f"SELECT number FROM numbers({MAX_ROWS * 10}) ORDER BY number DESC")
    assert big.status_code == 422
    assert sql(sql_api, "SELECT 42 AS x", format="csv").text == '"x"\n42\n'


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"sql": "SELEC 1"}, "sql_syntax"),
        ({"sql": "SELECT * FROM no_such_table"}, "sql_error"),
        ({"sql": "SELECT 1", "format": "xml"}, "invalid_parameter"),
        ({"sql": ""}, "invalid_parameter"),
        ({"sql": "SELECT 1", "limit": 3}, "unknown_parameter"),
        ({"sql": "SELECT 1" + " " * 6000}, "sql_too_long"),
    ],
)
def test_bad_input_is_a_clear_400(sql_api: TestClient, body: dict[str, Any], error: str) -> None:
    r = sql_api.post("/v1/sql", json=body)
    assert (r.status_code, r.json()["error"]) == (400, error), r.text


def test_openapi_documents_the_endpoint(sql_api: TestClient) -> None:
    op = sql_api.get("/openapi.json").json()["paths"]["/v1/sql"]["post"]
    assert set(op["responses"]) >= {"200", "400", "401", "403", "406", "422", "503"}
    assert set(op["responses"]["200"]["content"]) >= {
        "application/json", "text/csv", "application/vnd.apache.parquet",
        "application/vnd.apache.arrow.stream",
    }  # fmt: skip
