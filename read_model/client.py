"""The one way to get a ClickHouse client: chDB (`chdb://path`, `chdb://memory`) or a
server (`http(s)://`), behind the same clickhouse-connect API."""

from __future__ import annotations

from clickhouse_connect import get_client
from clickhouse_connect.driver.client import Client

from read_model.errors import classify
from stockcdc.settings import Settings


def make_client(settings: Settings, url: str | None = None) -> Client:
    """A client for `url` (default `settings.clickhouse_dsn`). chDB allows one process per
    on-disk path: open it once per process and share the client."""
    dsn = url or settings.clickhouse_dsn
    try:
        return get_client(dsn=dsn)
    except Exception as exc:  # driver errors have no common base; classify decides
        raise classify(exc, f"connecting to {dsn}") from exc
