"""read_model.bi on a chDB read model: daily snapshots equal the state at their cut after
later changes, `bi_stock` and the snapshots show the figures the API serves, the BI
session refuses writes by itself (readonly) and system tables, and the server-mode
access DDL is what the configuration asks for and parses."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from read_model import bi, queries
from read_model.ddl import BI_RELATIONS
from read_model.writer import ProjectionWriter
from schemas.events import Op, RowChange, Snapshot, Transaction, Watermark
from stockcdc.settings import Settings
from tests.unit.query_api.conftest import inv, row

DAY1, DAY2 = date(2026, 3, 1), date(2026, 3, 2)


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


class Region:
    """Transactions of one region committed at given times (LSN increasing)."""

    def __init__(self, name: str, client: Client) -> None:
        self.name = name
        self.writer = ProjectionWriter(client)
        self.lsn = 100

    def commit(self, when: datetime, *changes: tuple[str, str, dict[str, Any]]) -> None:
        ts = int(when.timestamp() * 1000)
        out = []
        for table, op, values in changes:
            self.lsn += 10
            out.append(
                RowChange(
                    self.name, table, Op(op), (values["id"],),
                    None if op == "d" else row(table, values), self.lsn, 1, ts, Snapshot.NO,
                )
            )  # fmt: skip
        self.lsn += 10
        tx = Transaction(self.name, self.lsn, self.lsn, ts, out)
        self.writer.write(self.name, [tx], Watermark(self.name, tx.commit_lsn, ts))

    def heartbeat(self, when: datetime) -> None:
        ts = int(when.timestamp() * 1000)
        self.writer.advance(Watermark(self.name, self.lsn, ts, ts))


def history(ch: Client, region: str, day: date) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in ch.query(
            "SELECT sku, on_hand, available, allocated, frozen FROM bi_stock_history"
            " WHERE region = {r:String} AND day = {d:Date} ORDER BY sku",
            parameters={"r": region, "d": day},
        ).result_rows
    ]


def current(ch: Client, region: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in ch.query(
            "SELECT sku, on_hand, available, allocated, frozen FROM bi_stock"
            " WHERE region = {r:String} ORDER BY sku",
            parameters={"r": region},
        ).result_rows
    ]


def test_a_days_snapshot_is_the_state_at_its_end_after_later_changes(
    ch: Client, region: str
) -> None:
    r = Region(region, ch)
    r.commit(
        at(DAY1, 8),
        ("warehouse", "c", {"id": 1, "code": f"WH-{region}"}),
        ("owner", "c", {"id": 1, "code": "SELLER-H"}),
        ("sku", "c", {"id": 1, "owner_id": 1, "sku_code": "SKU-1"}),
        ("sku", "c", {"id": 2, "owner_id": 1, "sku_code": "SKU-2"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "A", "sellable": True}),
        inv(1, 1, 1, 1, 1, None, "AVAILABLE", 10),
    )
    r.commit(at(DAY1, 15), ("inventory", "u", {**inv(1, 1, 1, 1, 1, None, "AVAILABLE", 7, 2)[2]}))
    day1_end = current(ch, region)
    assert day1_end == [("SKU-1", 7, 5, 2, 0)]
    # Day 2: SKU-1 sold out (row deleted), SKU-2 received and frozen.
    r.commit(
        at(DAY2, 9),
        ("inventory", "d", {"id": 1}),
        inv(2, 1, 1, 1, 2, None, "FROZEN", 4),
    )
    r.heartbeat(at(DAY2, 23))
    assert current(ch, region) == [("SKU-2", 4, 0, 0, 4)]

    with pytest.raises(bi.NotCaughtUp):
        bi.snapshot_stock(ch, DAY2)  # the region has not passed the end of day 2 yet
    snap = bi.snapshot_stock(ch, DAY1)
    assert snap.cut_ts == at(DAY2, 0)
    assert snap.cuts[region] > 0
    assert history(ch, region, DAY1) == day1_end
    # a cut inside the day: before the 15:00 change
    mid = bi.snapshot_stock(ch, date(2026, 2, 28), at(DAY1, 12))
    assert history(ch, region, mid.day) == [("SKU-1", 10, 10, 0, 0)]
    # again (idempotent): the latest run of a day is its history, once
    bi.snapshot_stock(ch, DAY1)
    assert history(ch, region, DAY1) == day1_end
    r.heartbeat(at(date(2026, 3, 3), 1))
    bi.snapshot_stock(ch, DAY2)
    assert history(ch, region, DAY2) == [("SKU-2", 4, 0, 0, 4)]
    assert history(ch, region, DAY1) == day1_end  # still, after day 2's changes


def test_bi_stock_and_the_snapshots_show_what_the_api_serves(ch: Client, region: str) -> None:
    """One definition of the figures: where `stock_current` (the projection writer's
    figures) and the balance rows disagree, `bi_stock` and a daily snapshot show what
    `stock_current` serves, as the API does, not a second computation."""
    day = date(2025, 6, 1)  # before every other test's commits: their regions are past it
    owner = f"OW-{region}"
    r = Region(region, ch)
    r.commit(
        at(day, 8),
        ("warehouse", "c", {"id": 1, "code": f"WH-{region}"}),
        ("owner", "c", {"id": 1, "code": owner}),
        ("sku", "c", {"id": 1, "owner_id": 1, "sku_code": "SKU-1"}),
        ("sku", "c", {"id": 2, "owner_id": 1, "sku_code": "SKU-2"}),
        ("location", "c", {"id": 1, "warehouse_id": 1, "code": "A", "sellable": True}),
        inv(1, 1, 1, 1, 1, None, "AVAILABLE", 10),
        inv(2, 1, 1, 1, 2, None, "FROZEN", 4),
    )
    assert current(ch, region) == [("SKU-1", 10, 10, 0, 0), ("SKU-2", 4, 0, 0, 4)]
    # Versions at the same commit that win (higher _seq): SKU-1 other figures, SKU-2 gone.
    for change in ("99 AS on_hand, 98 AS available, 1 AS allocated", "1 AS _is_deleted"):
        ch.command(
            f"INSERT INTO stock_current SELECT * REPLACE ({change}, _seq + 1 AS _seq)"
            " FROM stock_current WHERE region = {r:String} AND sku = {s:String}",
            parameters={"r": region, "s": "SKU-1" if "on_hand" in change else "SKU-2"},
        )
    served = queries.stock_page(ch, owner)
    assert [(s.sku, s.on_hand, s.available, s.allocated) for s in served] == [("SKU-1", 99, 98, 1)]
    in_bi = queries._rows(
        ch,
        queries.StockRow,
        "SELECT * FROM bi_stock WHERE owner = {o:String} ORDER BY warehouse, sku",
        {"o": owner},
    )
    assert in_bi == served
    assert current(ch, region) == [("SKU-1", 99, 98, 1, 0)]

    r.heartbeat(datetime(2026, 12, 31, tzinfo=UTC))
    snap = bi.snapshot_stock(ch, day)
    assert snap.cuts[region] == r.lsn
    assert history(ch, region, day) == [("SKU-1", 99, 98, 1, 0)]


def test_the_writer_logs_commit_times(ch: Client, region: str) -> None:
    r = Region(region, ch)
    r.commit(at(DAY1, 8), ("owner", "c", {"id": 1, "code": "X"}))
    rows = ch.query(
        "SELECT commit_lsn, commit_ts FROM _commit_log WHERE region = {r:String}",
        parameters={"r": region},
    ).result_rows
    assert [(lsn, ts.replace(tzinfo=UTC)) for lsn, ts in rows] == [(r.lsn, at(DAY1, 8))]


@pytest.fixture
def bi_client(ch: Client) -> Any:
    client = bi.open_bi_client(Settings(), f"chdb://{ch.path}")  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO _commit_log VALUES ('x', 1, now())",
        "CREATE TABLE bi_evil (a Int8) ENGINE = Memory",
        "DROP TABLE _commit_log",
        "SET readonly = 0",
        "SET max_result_rows = 0",
        "SELECT 1 SETTINGS max_execution_time = 100000",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    ],
)
def test_the_bi_session_refuses_writes_by_itself(bi_client: Client, statement: str) -> None:
    """Without the parser gate: readonly = 1 alone refuses every write and change."""
    with pytest.raises(Exception, match=r"Code: 164\.") as info:
        bi_client.raw_query(statement)
    assert "READONLY" in str(info.value)


def test_the_bi_session_refuses_system_tables(bi_client: Client) -> None:
    with pytest.raises(Exception, match=bi.SYSTEM_TABLES_REFUSED):
        bi_client.raw_query("SELECT * FROM system.tables")
    assert bi_client.raw_query("SELECT 1", fmt="TabSeparated") == b"1\n"  # system.one


def test_access_ddl_from_the_configuration(ch: Client) -> None:
    s = Settings(
        bi_database="stock", bi_users=("bi_api", "analyst"),
        bi_seller_users=("bi_s1=SELLER-0001", "bi_s2=SELLER-0002"),
        bi_max_result_rows=5000,
    )  # fmt: skip
    ddl = bi.render_access_ddl(s)
    stmts = [x for x in ddl.splitlines() if x and not x.startswith("--")]
    grants = [x for x in stmts if x.startswith("GRANT SELECT")]
    assert grants == [f"GRANT SELECT ON `stock`.`{r}` TO bi_reader;" for r in BI_RELATIONS]
    assert "readonly = 1" in ddl
    assert "max_result_rows = 5000" in ddl
    for rel in BI_RELATIONS:
        assert (
            f"CREATE ROW POLICY IF NOT EXISTS `bi_owner_bi_s1` ON `stock`.`{rel}`"
            " FOR SELECT USING owner = 'SELLER-0001' TO `bi_s1`;" in stmts
        )
        assert (
            f"CREATE ROW POLICY IF NOT EXISTS bi_all_owners ON `stock`.`{rel}`"
            " FOR SELECT USING 1 TO `bi_api`, `analyst`;" in stmts
        )
    assert sum("CREATE USER" in x for x in stmts) == 4
    # Every statement is valid ClickHouse (the engine's parser), but chDB has no writable
    # user directory: it cannot execute access DDL (README, BI access).
    for stmt in stmts:
        ch.query("SELECT formatQuery({q:String})", parameters={"q": stmt})
    with pytest.raises(Exception, match=r"Code: (514|497)\."):
        ch.command(stmts[0])
    with pytest.raises(ValueError, match="identifier"):
        bi.render_access_ddl(Settings(bi_users=("bad name",)))
    with pytest.raises(ValueError, match="owner code"):
        bi.render_access_ddl(Settings(bi_seller_users=("nobody",)))
