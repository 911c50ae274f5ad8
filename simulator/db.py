"""Connections to the regional WMS databases and the retrying transaction runner."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from simulator.errors import RetriesExhausted
from stockcdc.settings import Region, Settings

T = TypeVar("T")
Conn = psycopg.Connection[TupleRow]

#: Errors after which the whole transaction may simply be run again.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
)


#: A database name for every region, or one per region (scratch databases differ).
DbNames = str | Mapping[str, str] | None


def dbname_for(dbname: DbNames, region: Region) -> str | None:
    """The database to use in `region` (None: the settings' default)."""
    if dbname is None or isinstance(dbname, str):
        return dbname
    return dbname[region.name]


def connect(
    settings: Settings, region: Region, dbname: str | None = None, role: str = "app"
) -> Conn:
    """An autocommit connection (transactions are explicit) as the workload role."""
    return psycopg.connect(
        settings.pg_dsn(region, role, dbname=dbname),
        autocommit=True,
        application_name=f"stockcdc-simulator-{region.name}",
    )


def run_txn(
    conn: Conn,
    fn: Callable[[psycopg.Cursor[Any]], T],
    *,
    retries: int = 20,
    on_retry: Callable[[Exception], None] | None = None,
) -> T:
    """Run `fn` in one transaction; run it again after a serialization failure or a
    deadlock (with jittered backoff). Other errors roll back and propagate."""
    for attempt in range(retries + 1):
        try:
            with conn.transaction(), conn.cursor() as cur:
                return fn(cur)
        except TRANSIENT_ERRORS as exc:
            if on_retry is not None:
                on_retry(exc)
            if attempt == retries:
                raise RetriesExhausted(f"gave up after {retries} retries: {exc}") from exc
            time.sleep(random.uniform(0, 0.002 * (2 ** min(attempt, 6))))
    raise AssertionError("unreachable")
