"""A chDB read model built from hand-made transactions through ProjectionWriter, and the
API over it (in-process ASGI, and a live uvicorn for the client tests).

chDB allows one on-disk path per process: the read model is session-scoped (built once)
and its client is closed after the last test of this directory (`pytest_runtest_teardown`
below), before other directories (read_model's session fixture) open their own path.

The data set (figures computed by hand in test_query_api_endpoints.py):

region qa-east   warehouses WH-E1 (RCV, A-01 sellable, STG), WH-E2 (B-01 sellable)
                 owners SELLER-A (id 1), SELLER-B (id 2)
                 SELLER-A SKU-1 (lots L-EARLY 2026-03-01, L-LATE 2027-06-01),
                 SELLER-A SKU-2 (serials, lot L-S1 without expiry), SELLER-B SKU-1
region qa-west   warehouse WH-W1 (C-01 sellable); owners SELLER-B (id 1), SELLER-A (id 2)
region qa-north  warehouse WH-N1; owner SELLER-C; its watermark is old (stale tests)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient
from pydantic import SecretStr

from query_api.app import create_app
from query_api.auth import DEMO_KEYS, Scope, new_key
from query_api.service import ReadModel
from read_model.client import make_client
from read_model.migrate import migrate
from read_model.writer import ProjectionWriter
from schemas.events import Op, RegionWrite, RowChange, Snapshot, Transaction, Watermark
from schemas.wms_model import WMS_MODEL
from stockcdc.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
EAST, WEST, NORTH = "qa-east", "qa-west", "qa-north"
OMS_KEY = DEMO_KEYS["oms"]
SELLER_A_KEY, SELLER_A_LINE = new_key(Scope.SELLER, "SELLER-A")
SELLER_B_KEY, SELLER_B_LINE = new_key(Scope.SELLER, "SELLER-B")
BI_KEY, BI_LINE = new_key(Scope.BI, None)

_DEFAULTS: dict[str, object] = {
    "bigint": 0, "integer": 0, "text": "", "char": "US", "jsonb": "{}", "boolean": True,
    "date": None, "timestamptz": T0,
}  # fmt: skip


def row(table: str, values: dict[str, Any]) -> tuple[object, ...]:
    """A full typed row: the given values, NULL for nullable columns, else a default."""
    return tuple(
        values[c.name] if c.name in values else (None if c.nullable else _DEFAULTS[c.base_type])
        for c in WMS_MODEL[table].columns
    )


class Tx:
    """Transactions of one region with increasing LSNs (commit time = T0 + lsn ms)."""

    def __init__(self, region: str, writer: ProjectionWriter) -> None:
        self.region = region
        self.writer = writer
        self.lsn = 1000
        self.txid = 500

    def commit(
        self, *changes: tuple[str, str, dict[str, Any]], rows_later: bool = False
    ) -> Transaction:
        """Write one transaction (table, op, values) and advance the watermark to it
        (with `rows_later`, its figures' only: its rows wait for `writer.write_rows`)."""
        self.txid += 1
        out = []
        for table, op, values in changes:
            self.lsn += 10
            out.append(
                RowChange(
                    self.region, table, Op(op), (values["id"],),
                    None if op == "d" else row(table, values),
                    self.lsn, self.txid, T0_MS + self.lsn, Snapshot.NO,
                )
            )  # fmt: skip
        self.lsn += 10
        tx = Transaction(self.region, self.txid, self.lsn, T0_MS + self.lsn, out)
        mark = Watermark(self.region, tx.commit_lsn, tx.commit_ts_ms)
        self.writer.write_all([RegionWrite(self.region, [tx], mark)], rows_later=rows_later)
        return tx

    def heartbeat(self, at: datetime | None = None) -> None:
        """A heartbeat at `at` (default now): the region is fresh without new commits."""
        ts = int((at or datetime.now(UTC)).timestamp() * 1000)
        self.writer.advance(Watermark(self.region, self.lsn, T0_MS + self.lsn, ts))


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 2, day, hour, minute, tzinfo=UTC)


def txn(id_: int, wh: int, owner: int, sku: int, kind: str, when: datetime, **kw: Any) -> Any:
    return ("inventory_txn", "c", {"id": id_, "warehouse_id": wh, "owner_id": owner,
            "sku_id": sku, "txn_type": kind, "occurred_at": when, "qty": kw.pop("qty", 1),
            "operator": "t", **kw})  # fmt: skip


def inv(id_: int, wh: int, loc: int, owner: int, sku: int, lot: int | None, status: str,
        qty: int, alloc: int = 0) -> Any:  # fmt: skip
    return ("inventory", "c", {"id": id_, "warehouse_id": wh, "location_id": loc,
            "owner_id": owner, "sku_id": sku, "lot_id": lot, "status": status,
            "qty_on_hand": qty, "qty_allocated": alloc})  # fmt: skip


def serial(id_: int, sku: int, owner: int, no: str, status: str, loc: int | None,
           lot: int | None, updated: datetime, **kw: Any) -> Any:  # fmt: skip
    return ("serial_number", "c", {"id": id_, "sku_id": sku, "owner_id": owner, "serial_no": no,
            "warehouse_id": kw.pop("wh", 1), "status": status, "location_id": loc,
            "lot_id": lot, "received_at": T0, "updated_at": updated, **kw})  # fmt: skip


def build_east(t: Tx) -> None:
    t.commit(
        ("warehouse", "c", {"id": 1, "code": "WH-E1"}),
        ("warehouse", "c", {"id": 2, "code": "WH-E2"}),
        ("owner", "c", {"id": 1, "code": "SELLER-A"}),
        ("owner", "c", {"id": 2, "code": "SELLER-B"}),
        ("sku", "c", {"id": 1, "owner_id": 1, "sku_code": "SKU-1", "tracking": "LOT"}),
        ("sku", "c", {"id": 2, "owner_id": 1, "sku_code": "SKU-2", "tracking": "SERIAL"}),
        ("sku", "c", {"id": 3, "owner_id": 2, "sku_code": "SKU-1"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "RCV", "sellable": False}),
        ("location", "c", {"id": 2, "warehouse_id": 1, "code": "A-01", "sellable": True}),
        ("location", "c", {"id": 3, "warehouse_id": 1, "code": "STG", "sellable": False}),
        ("location", "c", {"id": 4, "warehouse_id": 2, "code": "B-01", "sellable": True}),
        ("lot", "c", {"id": 1, "sku_id": 1, "lot_no": "L-EARLY", "expiry_date": date(2026, 3, 1),
                      "production_date": date(2025, 9, 1), "first_received_at": T0}),
        ("lot", "c", {"id": 2, "sku_id": 1, "lot_no": "L-LATE", "expiry_date": date(2027, 6, 1),
                      "first_received_at": T0}),
        ("lot", "c", {"id": 3, "sku_id": 2, "lot_no": "L-S1", "first_received_at": T0}),
    )  # fmt: skip
    t.commit(
        inv(1, 1, 2, 1, 1, 2, "AVAILABLE", 10, 3),
        inv(2, 1, 2, 1, 1, 1, "AVAILABLE", 5),
        inv(3, 1, 3, 1, 1, 1, "AVAILABLE", 2, 2),  # picked, at STG (not sellable)
        inv(4, 1, 1, 1, 1, None, "PENDING_PUTAWAY", 7),
        inv(5, 1, 2, 1, 1, 2, "FROZEN", 2),
        inv(6, 2, 4, 1, 1, 2, "AVAILABLE", 4),
        inv(7, 1, 2, 1, 2, 3, "AVAILABLE", 3, 1),
        inv(8, 1, 2, 2, 3, None, "AVAILABLE", 9),
        ("inbound_order", "c", {"id": 1, "warehouse_id": 1, "owner_id": 1, "status": "CREATED"}),
        ("inbound_line", "c", {"id": 1, "inbound_order_id": 1, "sku_id": 1, "qty_expected": 20}),
        ("outbound_order", "c", {"id": 1, "warehouse_id": 1, "owner_id": 1, "order_no": "SO-1",
                                 "status": "SHIPPED", "order_type": "B2C",
                                 "tracking_no": "TRK-1"}),
        ("outbound_line", "c", {"id": 1, "outbound_order_id": 1, "sku_id": 2, "qty_ordered": 1}),
        serial(1, 2, 1, "S-1", "IN_STOCK", 2, 3, at(1)),
        serial(2, 2, 1, "S-2", "ALLOCATED", 2, 3, at(1), outbound_line_id=1),
        serial(3, 2, 1, "S-3", "IN_STOCK", 2, 3, at(1)),
        serial(4, 2, 1, "S-4", "IN_STOCK", 2, 3, at(1)),
        serial(5, 2, 1, "S-5", "IN_STOCK", 2, 3, at(1)),
        txn(1, 1, 1, 1, "RECEIVE", at(1, 8), qty=26, d_on_hand=26, ref_type="INBOUND",
            ref_no="PO-1"),
        txn(2, 1, 1, 1, "ALLOCATE", at(2, 9), qty=5, d_allocated=5),
        txn(3, 2, 1, 1, "RECEIVE", at(2, 9), qty=4, d_on_hand=4),
        txn(4, 1, 1, 2, "RECEIVE", at(3), qty=5, d_on_hand=5),
        txn(5, 1, 2, 3, "RECEIVE", at(3), qty=9, d_on_hand=9),
    )  # fmt: skip
    # S-4 is allocated then shipped with SO-1 (its history); S-5 moves to qa-west.
    t.commit(serial(4, 2, 1, "S-4", "ALLOCATED", 2, 3, at(4), outbound_line_id=1))
    t.commit(
        serial(4, 2, 1, "S-4", "SHIPPED", None, 3, at(5), outbound_line_id=1,
               shipped_at=at(5)),
        serial(5, 2, 1, "S-5", "SHIPPED", None, 3, at(5), shipped_at=at(5)),
        txn(6, 1, 1, 2, "SHIP", at(5), qty=1, d_on_hand=-1),
        txn(7, 1, 1, 2, "TRANSFER_OUT", at(5), qty=1, d_on_hand=-1),
    )  # fmt: skip


def build_west(t: Tx) -> None:
    t.commit(
        ("warehouse", "c", {"id": 1, "code": "WH-W1"}),
        ("owner", "c", {"id": 1, "code": "SELLER-B"}),
        ("owner", "c", {"id": 2, "code": "SELLER-A"}),
        ("sku", "c", {"id": 1, "owner_id": 2, "sku_code": "SKU-1"}),
        ("sku", "c", {"id": 2, "owner_id": 2, "sku_code": "SKU-2", "tracking": "SERIAL"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "C-01", "sellable": True}),
    )  # fmt: skip
    t.commit(
        inv(1, 1, 1, 2, 1, None, "AVAILABLE", 6),
        inv(2, 1, 1, 2, 2, None, "AVAILABLE", 1),
        serial(1, 2, 2, "S-5", "IN_STOCK", 1, None, at(6)),
        txn(1, 1, 2, 1, "RECEIVE", at(2, 9), qty=6, d_on_hand=6),
        txn(2, 1, 2, 2, "TRANSFER_IN", at(6), qty=1, d_on_hand=1),
    )  # fmt: skip


def build_north(t: Tx) -> None:
    t.commit(
        ("warehouse", "c", {"id": 1, "code": "WH-N1"}),
        ("owner", "c", {"id": 1, "code": "SELLER-C"}),
        ("sku", "c", {"id": 1, "owner_id": 1, "sku_code": "SKU-9"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "N-01", "sellable": True}),
    )  # fmt: skip
    t.commit(inv(1, 1, 1, 1, 1, None, "AVAILABLE", 3))


_HERE = Path(__file__).parent
_OPEN: list[Client] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Leaving this directory: close the chDB client so the next one may open its path."""
    if nextitem is None or Path(nextitem.path).parent != _HERE:
        while _OPEN:
            _OPEN.pop().close()


class ReadModelFixture:
    """The chDB read model of this package and the writers of its regions."""

    def __init__(self, client: Client) -> None:
        self.client = client
        writer = ProjectionWriter(client)
        self.tx = {r: Tx(r, writer) for r in (EAST, WEST, NORTH)}


@pytest.fixture(scope="session")
def rm(tmp_path_factory: pytest.TempPathFactory) -> ReadModelFixture:
    path: Path = tmp_path_factory.mktemp("chdb-query-api")
    client = make_client(Settings(), f"chdb://{path}")
    migrate(client)
    data = ReadModelFixture(client)
    build_east(data.tx[EAST])
    build_west(data.tx[WEST])
    build_north(data.tx[NORTH])
    data.tx[EAST].heartbeat()
    data.tx[WEST].heartbeat()
    _OPEN.append(client)
    return data


@pytest.fixture(scope="session")
def api_settings() -> Settings:
    return Settings(
        regions=(EAST, WEST, NORTH),
        api_keys=(
            *Settings().api_keys,  # the dev demo keys (OMS)
            SELLER_A_LINE,
            SELLER_B_LINE,
            BI_LINE,
        ),
        api_cursor_secret=SecretStr("unit-test-secret"),
        api_min_as_of_timeout_ms=1500,
        api_min_as_of_poll_ms=20,
        api_live_lag_ms=3_600_000,
        api_watermark_cache_ms=0,
    )


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    """Clear-text keys configured in `api_settings` (OMS: the dev demo key)."""
    return {"oms": OMS_KEY, "SELLER-A": SELLER_A_KEY, "SELLER-B": SELLER_B_KEY, "bi": BI_KEY}


@pytest.fixture(scope="session")
def pool(rm: ReadModelFixture) -> ReadModel:
    """The API's pool: the fixture's client only (chDB; one handle, serialised)."""
    return ReadModel([rm.client])


@pytest.fixture(scope="session")
def api(api_settings: Settings, pool: ReadModel) -> Iterator[TestClient]:
    """The app in process (its lifespan run), OMS demo key by default."""
    with TestClient(create_app(api_settings, pool), headers=auth(OMS_KEY)) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def live_url(api_settings: Settings, pool: ReadModel) -> Iterator[str]:
    """The API under a real uvicorn on a free local port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(api_settings, pool), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


class PageRegion:
    """A region with one owner (SELLER-P, warehouse WH-P1) whose SKUs a test adds and
    removes (each SKU one balance row of 1 unit) between reading pages."""

    def __init__(self, t: Tx) -> None:
        self.t = t
        self.ids: dict[str, int] = {}
        t.commit(
            ("warehouse", "c", {"id": 1, "code": "WH-P1"}),
            ("owner", "c", {"id": 1, "code": "SELLER-P"}),
            ("location", "c", {"id": 1, "warehouse_id": 1, "code": "P-LOC", "sellable": True}),
        )

    def change(self, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> None:
        """One transaction: new SKUs with stock, and balance rows of others deleted."""
        changes: list[Any] = []
        for code in add:
            i = self.ids[code] = len(self.ids) + 1
            changes.append(("sku", "c", {"id": i, "owner_id": 1, "sku_code": code}))
            changes.append(inv(i, 1, 1, 1, i, None, "AVAILABLE", 1))
        changes += [("inventory", "d", {"id": self.ids[code]}) for code in remove]
        self.t.commit(*changes)


@pytest.fixture
def page_region(rm: ReadModelFixture) -> PageRegion:
    return PageRegion(Tx("qa-page", ProjectionWriter(rm.client)))
