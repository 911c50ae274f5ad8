"""Fixtures shared by every test layer.

Integration tests need the real services, started by `make test` (or `make up`). A test
whose service is missing fails with the command to run; it never skips itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from infra import services
from infra.pipeline import IsolatedPipeline
from infra.postgres import grant_roles, load_wms_schema
from stockcdc.settings import Region, Settings, get_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


def _require(settings: Settings, prefix: str) -> None:
    down = [s.name for s in services.status(settings) if s.name.startswith(prefix) and not s.up]
    if down:
        pytest.fail(
            f"services not running: {', '.join(down)}; start them with `make up` "
            "(`make test` starts and stops them itself)"
        )


@pytest.fixture(scope="session")
def postgres_up(settings: Settings) -> None:
    """The regional WMS clusters are running."""
    _require(settings, "postgres/")


@pytest.fixture(scope="session")
def services_up(settings: Settings) -> None:
    """The whole chain is running: PostgreSQL, Kafka, Connect and every connector."""
    _require(settings, "")


ScratchDb = Callable[[Region], str]


@pytest.fixture
def scratch_wms_db(settings: Settings, postgres_up: None) -> Iterator[ScratchDb]:
    """Factory of throwaway WMS databases (schema + grants) in a region's cluster; each
    test gets its own, dropped afterwards. Returns the database name; connect with
    `settings.pg_dsn(region, role, dbname=name)`. Not replicated by Debezium."""
    made: list[tuple[Region, str]] = []

    def make(region: Region) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(settings.pg_dsn(region, dbname="postgres"), autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append((region, name))
        with psycopg.connect(settings.pg_dsn(region, dbname=name), autocommit=True) as c:
            load_wms_schema(c)
            grant_roles(c, settings, dbname=name)
        return name

    yield make
    for region, name in made:
        with psycopg.connect(settings.pg_dsn(region, dbname="postgres"), autocommit=True) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def pipeline(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IsolatedPipeline]:
    """An isolated pipeline for one test module (see `IsolatedPipeline`)."""
    _require(settings, "")
    p = IsolatedPipeline(settings, tmp_path_factory.mktemp("pipeline"))
    yield p
    p.close()
