"""BI access through SQL (issue 7): `POST /v1/sql` runs one read-only query for a `bi`
key and answers JSON, CSV, Parquet or Arrow.

The query runs on its own ClickHouse session locked by read_model.bi (readonly, limits,
system tables refused): every refusal and limit comes from the engine. Seller and OMS
keys are refused (403), as BI keys are by every other route. The router's lifespan also
runs the daily stock snapshot job (read_model.bi.snapshot_due).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Annotated, Any, cast

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from query_api.auth import KeyStore, Principal, Scope
from query_api.errors import ApiError
from query_api.models import ErrorBody
from query_api.service import QueryService, ReadModel
from read_model import bi
from read_model.errors import ReadModelError
from stockcdc.settings import Settings

log = structlog.get_logger(__name__)


class SqlFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
    ARROW = "arrow"


#: Media type of each format (answers), and the Accept values that choose it.
MEDIA_TYPES: dict[SqlFormat, str] = {
    SqlFormat.JSON: "application/json",
    SqlFormat.CSV: "text/csv; charset=utf-8",
    SqlFormat.PARQUET: "application/vnd.apache.parquet",
    SqlFormat.ARROW: "application/vnd.apache.arrow.stream",
}
_ACCEPT: dict[str, SqlFormat] = {
    "application/json": SqlFormat.JSON,
    "text/csv": SqlFormat.CSV,
    "application/vnd.apache.parquet": SqlFormat.PARQUET,
    "application/x-parquet": SqlFormat.PARQUET,
    "application/parquet": SqlFormat.PARQUET,
    "application/vnd.apache.arrow.stream": SqlFormat.ARROW,
    "*/*": SqlFormat.JSON,
    "application/*": SqlFormat.JSON,
}


class SqlRequest(BaseModel):
    """One read query and the answer's format (else chosen by the Accept header)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sql": "SELECT owner, sum(on_hand) AS on_hand FROM bi_stock GROUP BY owner",
                    "format": "json",
                }
            ]
        },
    )

    sql: str = Field(
        min_length=1,
        max_length=1_000_000,
        description="Exactly one read query (SELECT, WITH ..., UNION, EXPLAIN) over the BI "
        "relations (README, BI access). Anything else is refused by the engine.",
    )
    format: SqlFormat | None = Field(
        default=None,
        description="json (default), csv (with a header row), parquet or arrow (IPC "
        "stream). Unset: from the Accept header.",
    )


class SqlColumn(BaseModel):
    name: str
    type: str = Field(description="ClickHouse type.")


class SqlResult(BaseModel):
    """A JSON answer: columns, rows as arrays in column order, and freshness."""

    columns: list[SqlColumn]
    rows: list[list[Any]]
    row_count: int
    statistics: dict[str, float] = Field(description="elapsed (s), rows_read, bytes_read.")
    freshness: dict[str, dict[str, Any]] = Field(
        description="Per region: as_of, lsn, lag_ms of the watermark read before the query."
    )


def _error(description: str, error: str, detail: str) -> dict[str, object]:
    return {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": {"example": {"error": error, "detail": detail}}},
    }


_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The result, in the chosen format",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.arrow.stream": {
                "schema": {"type": "string", "format": "binary"}
            },
        },
    },
    400: _error("Not SQL, or SQL the engine cannot run", "sql_syntax", "Code: 62. Syntax error"),
    401: _error("Missing or unknown API key", "unauthorized", "unknown or revoked API key"),
    403: _error(
        "Not a bi key, or refused by the engine (write, DDL, setting, system table, "
        "file/network function)",
        "read_only",
        "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)",
    ),
    406: _error("No supported format in Accept", "not_acceptable", "supported: ..."),
    422: _error(
        "A limit was hit (time, memory, result rows or bytes)",
        "result_too_large",
        "Code: 396. DB::Exception: Limit for result exceeded, max rows: 1.00 million",
    ),
    503: _error(
        "Read model unavailable (Retry-After)",
        "read_model_unavailable",
        "the read model (ClickHouse) did not answer; retry later",
    ),
}

_bearer = HTTPBearer(auto_error=False, description="A bi key: `Authorization: Bearer <key>`.")


def bi_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller if its key has the bi scope; 401 unknown, 403 seller or oms keys."""
    keys: KeyStore = request.app.state.keys
    header = f"Bearer {credentials.credentials}" if credentials is not None else None
    principal = keys.authenticate(header)
    if principal.scope is not Scope.BI:
        raise ApiError(
            403, "forbidden", f"{principal.scope.value} keys may not run SQL: bi keys only"
        )
    return principal


def choose_format(requested: SqlFormat | None, accept: str | None) -> SqlFormat:
    """The body's format, else the first supported media type of Accept (JSON when
    absent); 406 when Accept names none we produce."""
    if requested is not None:
        return requested
    if not accept:
        return SqlFormat.JSON
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in _ACCEPT:
            return _ACCEPT[media]
    raise ApiError(406, "not_acceptable", f"supported: {', '.join(sorted(set(_ACCEPT) - {'*/*'}))}")


def _bi_pool(app: FastAPI) -> ReadModel:
    """The BI clients, opened on first use (a second chDB handle on the read model's
    engine, or `api_clickhouse_pool` server clients), closed by the lifespan."""
    pool: ReadModel | None = getattr(app.state, "bi", None)
    if pool is None:
        settings: Settings = app.state.settings
        n = 1 if settings.clickhouse_dsn.startswith("chdb://") else settings.api_clickhouse_pool
        sessions = [bi.BiSession(settings) for _ in range(max(1, n))]
        pool = ReadModel(cast(Any, sessions))  # the pool hands out sessions, not clients
        app.state.bi = pool
    return pool


async def _snapshots(app: FastAPI, settings: Settings) -> None:
    """Every `bi_snapshot_interval_s`: snapshot the finished days not stored yet."""
    while True:
        await asyncio.sleep(settings.bi_snapshot_interval_s)
        service: QueryService | None = getattr(app.state, "service", None)
        if service is None:
            continue
        try:
            taken = await service.db.run(bi.snapshot_due, settings.bi_snapshot_backfill_days, None)
        except ReadModelError as exc:
            log.warning("bi.snapshot.failed", error=str(exc)[:500])
            continue
        for s in taken:
            log.info("bi.snapshot", day=s.day.isoformat(), rows=s.rows, cuts=s.cuts)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the snapshot job; close the BI clients and stop the job at shutdown."""
    settings: Settings = app.state.settings
    job = None
    if settings.bi_snapshot_interval_s > 0:
        job = asyncio.create_task(_snapshots(app, settings), name="bi-snapshots")
    try:
        yield
    finally:
        if job is not None:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        pool: ReadModel | None = getattr(app.state, "bi", None)
        if pool is not None:
            pool.close()
            app.state.bi = None


router = APIRouter(lifespan=lifespan)


@router.post(
    "/v1/sql",
    response_model=SqlResult,
    response_class=JSONResponse,  # documents the JSON model; answers are built below
    responses=_RESPONSES,
    tags=["bi"],
    summary="Run one read-only SQL query over the BI relations (bi keys only)",
)
async def run_sql(
    request: Request,
    body: SqlRequest,
    _who: Annotated[Principal, Depends(bi_principal)],
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The engine refuses writes, DDL, settings changes, system tables and functions
    that read files or the network, and enforces the BI time, memory and result limits
    (STOCKCDC_BI_*). Format: `format` in the body, else the Accept header."""
    settings: Settings = request.app.state.settings
    if len(body.sql) > settings.bi_max_sql_chars:
        raise ApiError(400, "sql_too_long", f"sql is longer than {settings.bi_max_sql_chars}")
    fmt = choose_format(body.format, accept)
    service: QueryService | None = getattr(request.app.state, "service", None)
    marks = await service.marks() if service is not None else {}
    pool = _bi_pool(request.app)
    try:
        data = await pool.run(bi.BiSession.run, body.sql, fmt.value)
    except bi.BiQueryError as exc:
        raise ApiError(exc.status, exc.error, exc.detail) from exc
    fresh = service.freshness(marks, marks) if service is not None else {}
    if fmt is SqlFormat.JSON:
        engine = orjson.loads(data)
        payload = {
            "columns": engine.get("meta", []),
            "rows": engine.get("data", []),
            "row_count": engine.get("rows", 0),
            "statistics": engine.get("statistics", {}),
            "freshness": fresh,
        }
        return Response(orjson.dumps(payload), media_type=MEDIA_TYPES[fmt])
    return Response(
        data,
        media_type=MEDIA_TYPES[fmt],
        headers={"X-Freshness": orjson.dumps(fresh).decode()},
    )
