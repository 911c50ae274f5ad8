"""On the real chain (WMS database, Debezium, Kafka, the projector's decoding and
assembly): an update and a delete of a balance row reach the sink with `before` equal
to the row as it was, because infra gave `inventory` REPLICA IDENTITY FULL; a table
left DEFAULT gets no old row."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence

import psycopg
import pytest
from psycopg import sql

from cdc_consumers.projector import Projector
from infra.pipeline import IsolatedPipeline
from schemas.events import Op, RegionWrite, RowChange, Watermark
from schemas.wms_model import WMS_MODEL
from simulator.seed import parse_size, seed_region
from tests.integration.chain import CATCH_UP_TIMEOUT_S, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Sink:
    """Keeps every change it is given."""

    def __init__(self) -> None:
        self.changes: list[RowChange] = []

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        return {}

    def write_all(self, writes: Sequence[RegionWrite]) -> None:
        for _, transactions, _ in writes:
            self.changes += [c for t in transactions for c in t.changes if isinstance(c, RowChange)]

    def find(self, table: str, op: Op, key: tuple[object, ...]) -> RowChange | None:
        found = [c for c in self.changes if (c.table, c.op, c.key) == (table, op, key)]
        assert len(found) <= 1, found
        return found[0] if found else None


@pytest.fixture(scope="module")
def chain(pipeline: IsolatedPipeline) -> Iterator[tuple[IsolatedPipeline, Sink]]:
    """The pipeline's first region seeded (its initial snapshot), a projector into a `Sink`."""
    region = pipeline.regions[0]
    with psycopg.connect(pipeline.settings.pg_dsn(region, "app")) as conn:
        seed_region(conn, region, seed=3, size=parse_size("50"))
    pipeline.start_capture()
    sink = Sink()
    projector = Projector(pipeline.settings, sink)
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    try:
        yield pipeline, sink
    finally:
        projector.stop.set()
        thread.join(timeout=60)


Conn = psycopg.Connection[tuple[object, ...]]


def first_id(conn: Conn, table: str) -> object:
    row = conn.execute(sql.SQL("SELECT min(id) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    assert row[0] is not None, f"no {table} row seeded"
    return row[0]


def select_row(conn: Conn, table: str, id_: object) -> tuple[object, ...]:
    """The row as PostgreSQL has it, in `spec.columns` order (values typed by psycopg)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, WMS_MODEL[table].column_names))
    row = conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE id = %s").format(columns, sql.Identifier(table)), (id_,)
    ).fetchone()
    assert row is not None
    return row


def test_an_update_and_a_delete_of_a_balance_row_carry_the_old_row(
    chain: tuple[IsolatedPipeline, Sink],
) -> None:
    pipeline, sink = chain
    region = pipeline.regions[0]
    with psycopg.connect(pipeline.settings.pg_dsn(region, "app"), autocommit=True) as conn:
        key, owner_key = (first_id(conn, "inventory"),), (first_id(conn, "owner"),)
        wait_for(
            lambda: sink.find("inventory", Op.READ, key) is not None,
            CATCH_UP_TIMEOUT_S,
            "the initial snapshot did not arrive",
        )
        original = select_row(conn, "inventory", key[0])
        conn.execute(
            "UPDATE inventory SET qty_on_hand = qty_on_hand + 1, version = version + 1,"
            " last_movement_at = now() WHERE id = %s",
            key,
        )
        updated = select_row(conn, "inventory", key[0])
        conn.execute("DELETE FROM inventory WHERE id = %s", key)
        conn.execute("UPDATE owner SET name = name || ' (renamed)' WHERE id = %s", owner_key)

    wait_for(
        lambda: sink.find("owner", Op.UPDATE, owner_key) is not None,
        CATCH_UP_TIMEOUT_S,
        "the changes did not arrive",
    )
    update = sink.find("inventory", Op.UPDATE, key)
    delete = sink.find("inventory", Op.DELETE, key)
    assert update is not None
    assert delete is not None
    assert original != updated
    assert update.before == original
    assert update.row == updated
    assert delete.before == updated
    assert delete.row is None
    # owner keeps REPLICA IDENTITY DEFAULT: no old row, and its before is not decoded.
    renamed = sink.find("owner", Op.UPDATE, owner_key)
    assert renamed is not None
    assert renamed.before is None
    # The snapshot reads carried none either.
    snapshot = sink.find("inventory", Op.READ, key)
    assert snapshot is not None
    assert snapshot.before is None
    assert snapshot.row == original
