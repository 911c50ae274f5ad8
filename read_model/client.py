"""The one way to get a ClickHouse client: chDB (`chdb://path`, `chdb://memory`) or a
server (`http(s)://`), behind the same clickhouse-connect API."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from clickhouse_connect import get_client
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from read_model.errors import classify
from stockcdc.settings import Settings

INSERT_SECONDS = Counter(
    "stockcdc_insert_seconds",
    "Time spent inserting into each ClickHouse table (its materialized views included)",
    ["table"],
)


@contextmanager
def inserting(table: str, what: str | None = None) -> Iterator[None]:
    """An insert into `table`: its time counted in `INSERT_SECONDS` once it succeeded, a
    failure classified (transient or terminal) as `what` (default: insert into it)."""
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:  # driver errors have no common base; classify decides
        raise classify(exc, what or f"insert into {table}") from exc
    INSERT_SECONDS.labels(table).inc(time.perf_counter() - started)


def make_client(settings: Settings, url: str | None = None) -> Client:
    """A client for `url` (default `settings.clickhouse_dsn`). chDB allows one process per
    on-disk path: open it once per process and share the client."""
    dsn = url or settings.clickhouse_dsn
    try:
        return get_client(dsn=dsn)
    except Exception as exc:  # driver errors have no common base; classify decides
        raise classify(exc, f"connecting to {dsn}") from exc


class ColumnInserter:
    """Column-oriented inserts that ask for a table's column types once per column list:
    the driver otherwise runs a DESCRIBE before every insert, a round trip per table per
    batch on the writer's path. Failures are classified (transient or terminal)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._types: dict[tuple[str, tuple[str, ...]], Sequence[ClickHouseType]] = {}

    def __call__(self, table: str, columns: Sequence[Sequence[Any]], names: Sequence[str]) -> None:
        key = (table, tuple(names))
        types = self._types.get(key)
        if types is None:
            with inserting(table):
                context = self._client.create_insert_context(
                    table, list(names), column_oriented=True
                )
            types = self._types[key] = context.column_types
        with inserting(table):
            self._client.insert(
                table, columns, column_names=list(names), column_types=types, column_oriented=True
            )
