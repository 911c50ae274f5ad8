"""DESIGN decision 6: the CDC role reads and replicates, and can write nothing."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from stockcdc.settings import WMS_TABLES, Settings

pytestmark = pytest.mark.integration

WRITES = {
    "INSERT": "INSERT INTO {t} DEFAULT VALUES",
    "UPDATE": "UPDATE {t} SET id = id",
    "DELETE": "DELETE FROM {t}",
    "TRUNCATE": "TRUNCATE {t}",
}


@pytest.mark.parametrize("region_name", ["us-west", "eu-central", "ap-southeast"])
def test_cdc_role_is_refused_every_write_on_every_wms_table(
    settings: Settings, postgres_up: None, region_name: str
) -> None:
    region = settings.region(region_name)
    with psycopg.connect(settings.pg_dsn(region, "cdc")) as conn:
        for table in WMS_TABLES:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            for template in WRITES.values():
                stmt = sql.SQL(template).format(t=sql.Identifier(table))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(stmt)
                conn.rollback()
        # Nor can it change the schema or grant itself more.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE inventory ADD COLUMN x int")
        conn.rollback()
        role = conn.execute(
            "SELECT rolreplication, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert role == (True, False, False, False)
