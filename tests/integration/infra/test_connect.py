"""The connector's heartbeat action, evaluated by the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from infra.connect import WAL_MARK_CLOCK_SQL
from stockcdc.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("micros", [0, 400, 500, 999, 999_999])
def test_a_wal_mark_never_claims_a_time_its_clock_had_not_reached(
    settings: Settings, postgres_up: None, micros: int
) -> None:
    """The mark tells readers the region is complete up to its time (`min_as_of`), so
    its epoch ms must round down: half a millisecond ahead would let a read through
    before a commit that returned in that half millisecond."""
    clock = datetime(2026, 11, 28, 12, 0, 0, micros, tzinfo=UTC)
    expr = WAL_MARK_CLOCK_SQL.replace("clock_timestamp()", "%s::timestamptz")
    assert expr != WAL_MARK_CLOCK_SQL
    with psycopg.connect(settings.pg_dsn(settings.region("us-west"), "cdc")) as conn:
        row = conn.execute(f"SELECT {expr}", (clock,)).fetchone()
    assert row is not None
    assert int(row[0]) == int(clock.replace(microsecond=0).timestamp()) * 1000 + micros // 1000
