"""Only the CDC role writes logical-decoding messages: one with the heartbeat prefix is a
WAL mark, which consumers take as the region's clock, so no WMS login may forge one."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from infra.connect import connector_config
from schemas.events import WAL_MARK_PREFIX
from stockcdc.settings import Region, Settings

pytestmark = pytest.mark.integration

# Both overloads of pg_logical_emit_message: (bool, text, text) and (bool, text, bytea).
PAYLOADS = ["'4102444800000'::text", "'\\x31'::bytea"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_workload_role_cannot_write_a_wal_mark(
    settings: Settings, scratch_wms_db: Callable[[Region], str], payload: str
) -> None:
    """A mark far in the future, had it been written, would fake freshness for ever."""
    region = settings.region("us-west")
    db = scratch_wms_db(region)
    with (
        psycopg.connect(settings.pg_dsn(region, "app", dbname=db)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        # Transactional, so that even where the grant is missing the mark is rolled back.
        conn.execute(f"SELECT pg_logical_emit_message(true, %s, {payload})", (WAL_MARK_PREFIX,))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_cdc_role_writes_wal_marks(
    settings: Settings, scratch_wms_db: Callable[[Region], str], payload: str
) -> None:
    region = settings.region("us-west")
    db = scratch_wms_db(region)  # the connector's slot decodes `wms` only, never this one
    with psycopg.connect(settings.pg_dsn(region, "cdc", dbname=db)) as conn:
        # Exactly what Debezium runs as the CDC role at every heartbeat.
        conn.execute(connector_config(settings, region)["heartbeat.action.query"])
        conn.commit()
        # Either overload; transactional and rolled back, so nothing can ever decode it.
        conn.execute(f"SELECT pg_logical_emit_message(true, 'stockcdc.probe', {payload})")
        conn.rollback()
