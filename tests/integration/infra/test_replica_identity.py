"""REPLICA IDENTITY FULL on exactly `FULL_BEFORE_TABLES`, so that Debezium sends their old
rows: set with the schema (scratch and isolated databases, fresh clusters) and by every
`infra up` (clusters an older version made; see also test_postgres_cluster.py)."""

from __future__ import annotations

import psycopg
import pytest

from infra import services
from schemas.wms_model import FULL_BEFORE_TABLES
from stockcdc.settings import WMS_TABLES, Settings
from tests.conftest import ScratchDb

pytestmark = pytest.mark.integration

#: pg_class.relreplident of every WMS table: 'f' FULL, 'd' DEFAULT.
EXPECTED = {t: "f" if t in FULL_BEFORE_TABLES else "d" for t in WMS_TABLES}


def replica_identities(conn: psycopg.Connection[tuple[object, ...]]) -> dict[object, object]:
    """relreplident of each table of schema public."""
    rows = conn.execute(
        "SELECT c.relname, c.relreplident FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind = 'r'"
    )
    return {name: identity for name, identity in rows}


def test_a_schema_load_sets_full_identity_on_exactly_the_full_before_tables(
    settings: Settings, scratch_wms_db: ScratchDb
) -> None:
    region = settings.region("us-west")
    db = scratch_wms_db(region)
    with psycopg.connect(settings.pg_dsn(region, dbname=db)) as conn:
        assert replica_identities(conn) == EXPECTED


def test_infra_up_sets_it_on_the_dev_clusters(settings: Settings, services_up: None) -> None:
    services.up(settings, connectors=False)
    clusters = services.clusters(settings)
    assert clusters
    for cluster in clusters:
        with psycopg.connect(settings.pg_dsn(cluster.region)) as conn:
            assert replica_identities(conn) == EXPECTED, cluster.region.name
