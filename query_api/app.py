"""The FastAPI app: routes of the Query API contract (DESIGN.md), health and metrics.

`create_app(settings, db)` wires everything; tests pass a `ReadModel` over their chDB
read model, `stockcdc serve` passes the process's. Answers are the read model's rows
serialised by orjson straight into the response body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
import structlog
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.responses import Response

from query_api import dashboard, errors, sql
from query_api.auth import KeyStore, Principal, Scope
from query_api.errors import ApiError
from query_api.metrics import (
    FIGURES_LAG_MS,
    PROJECTION_LAG_MS,
    PROJECTION_LSN,
    LatencyMiddleware,
    RequestLimits,
)
from query_api.models import (
    ConsistencyParams,
    FreshnessReport,
    Health,
    MovementPage,
    MovementParams,
    NoParams,
    ReconciliationReport,
    SerialDetail,
    SerialList,
    SerialListParams,
    StockHistory,
    StockHistoryParams,
    StockListParams,
    StockOne,
    StockPage,
    WhoAmI,
    error_responses,
)
from query_api.models import LotList as LotListModel
from query_api.service import QueryService, ReadModel
from read_model.errors import ReadModelError
from read_model.reconcile import last_report
from stockcdc.settings import Settings

log = structlog.get_logger(__name__)

_JSON_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def json_response(payload: Any, status: int = 200) -> Response:
    """orjson straight from the rows' dataclasses to bytes: no intermediate models."""
    return Response(
        orjson.dumps(payload, option=_JSON_OPTS), status_code=status, media_type="application/json"
    )


# -- dependencies ----------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    description="API key: `Authorization: Bearer <key>`. Seller keys see one owner; "
    "OMS keys see every owner.",
)


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in the thread pool,
# two extra thread hops per request for a dict lookup and a hash.


async def get_service(request: Request) -> QueryService:
    service: QueryService = request.app.state.service
    return service


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from its bearer key; 401 when missing or unknown. A BI key is for
    `POST /v1/sql` only (query_api.sql): 403 on the stock endpoints."""
    keys: KeyStore = request.app.state.keys
    header = f"Bearer {credentials.credentials}" if credentials is not None else None
    principal = keys.authenticate(header)
    if principal.scope is Scope.BI:
        raise ApiError(403, "forbidden", "bi keys are for POST /v1/sql only")
    return principal


ServiceDep = Annotated[QueryService, Depends(get_service)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
OwnerPath = Annotated[str, Path(min_length=1, max_length=200, description="owner.code")]
WarehousePath = Annotated[str, Path(min_length=1, max_length=200, description="warehouse.code")]
SkuPath = Annotated[str, Path(min_length=1, max_length=200, description="sku.sku_code")]
SerialPath = Annotated[str, Path(min_length=1, max_length=200, description="serial_no")]

_READ_ERRORS = error_responses(400, 401, 403, 404, 503, 504)
_LIST_ERRORS = error_responses(400, 401, 403, 503, 504)


def create_app(settings: Settings, db: ReadModel | None = None) -> FastAPI:
    """The API over `db` (default: a pool of `settings.api_clickhouse_pool` clients on
    `settings.clickhouse_dsn`, opened at startup, closed at shutdown)."""
    keys = KeyStore(settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = db is None
        if own:
            app.state.service = QueryService(settings, ReadModel.open(settings))
        service: QueryService = app.state.service
        dsn = urlsplit(settings.clickhouse_dsn)  # never log credentials in the URL
        log.info("api.start", keys=len(keys), clickhouse=f"{dsn.scheme}://{dsn.hostname or ''}")
        refresher = asyncio.create_task(service.refresh_marks())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            if own:
                service.db.close()

    app = FastAPI(
        title="stockcdc Query API",
        version="1.0.0",
        summary="Near-real-time stock of every WMS region for the OMS backend.",
        description=(
            "Stock figures exactly as wms/OPERATIONS.md defines them, with lot and serial "
            "drill-down and the ledger. Every answer carries `freshness` per region "
            "involved; stock reads take `max_staleness_ms` and `min_as_of`. Errors are "
            '`{"error": code, "detail": text}`.'
        ),
        lifespan=lifespan,
        default_response_class=Response,
    )
    app.state.keys = keys
    app.state.settings = settings
    if db is not None:
        app.state.service = QueryService(settings, db)
    errors.install(app)
    app.add_middleware(LatencyMiddleware)
    # Added last: outermost, so oversized requests never reach auth or the routes.
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.api_max_body_bytes,
        max_url_chars=settings.api_max_url_chars,
    )
    app.include_router(sql.router)
    app.include_router(dashboard.router)

    @app.get(
        "/v1/stock",
        response_model=StockPage,
        responses=_LIST_ERRORS,
        tags=["stock"],
        summary="Stock figures per (owner, warehouse, sku), keyset-paginated",
    )
    async def stock_list(
        service: ServiceDep, who: PrincipalDep, params: Annotated[StockListParams, Query()]
    ) -> Response:
        """Ordered by (owner, warehouse, sku). A seller key lists its own owner; asking
        for another owner answers an empty list, as for an owner that does not exist."""
        return json_response(await service.stock_list(who, params))

    @app.get(
        "/v1/stock/{owner}/{warehouse}/{sku}",
        response_model=StockOne,
        responses=_READ_ERRORS,
        tags=["stock"],
        summary="Stock figures of one key",
    )
    async def stock_one(
        service: ServiceDep,
        who: PrincipalDep,
        owner: OwnerPath,
        warehouse: WarehousePath,
        sku: SkuPath,
        params: Annotated[ConsistencyParams, Query()],
    ) -> Response:
        """404 when the key is absent (no balance rows and nothing inbound)."""
        return json_response(await service.stock_one(who, owner, warehouse, sku, params))

    @app.get(
        "/v1/stock/{owner}/{warehouse}/{sku}/lots",
        response_model=LotListModel,
        responses=_READ_ERRORS,
        tags=["stock"],
        summary="Per-lot figures in FEFO order",
    )
    async def stock_lots(
        service: ServiceDep,
        who: PrincipalDep,
        owner: OwnerPath,
        warehouse: WarehousePath,
        sku: SkuPath,
        params: Annotated[ConsistencyParams, Query()],
    ) -> Response:
        """404 when owner, warehouse or SKU is unknown."""
        return json_response(await service.lots(who, owner, warehouse, sku, params))

    @app.get(
        "/v1/stock/{owner}/{warehouse}/{sku}/serials",
        response_model=SerialList,
        responses=_READ_ERRORS,
        tags=["stock"],
        summary="Serials of one key at the warehouse",
    )
    async def stock_serials(
        service: ServiceDep,
        who: PrincipalDep,
        owner: OwnerPath,
        warehouse: WarehousePath,
        sku: SkuPath,
        params: Annotated[SerialListParams, Query()],
    ) -> Response:
        """Ordered by serial_no; `status` filters one status."""
        return json_response(await service.serials(who, owner, warehouse, sku, params))

    @app.get(
        "/v1/serials/{owner}/{sku}/{serial_no}",
        response_model=SerialDetail,
        responses=_READ_ERRORS,
        tags=["serials"],
        summary="A serial's current state and its history across regions",
    )
    async def serial(
        service: ServiceDep,
        who: PrincipalDep,
        owner: OwnerPath,
        sku: SkuPath,
        serial_no: SerialPath,
        params: Annotated[ConsistencyParams, Query()],
    ) -> Response:
        """Current state: the row that is not SHIPPED, else the latest (OPERATIONS.md)."""
        return json_response(await service.serial(who, owner, sku, serial_no, params))

    @app.get(
        "/v1/movements",
        response_model=MovementPage,
        responses=_LIST_ERRORS,
        tags=["movements"],
        summary="Ledger rows, keyset-paginated by (occurred_at, region, id)",
    )
    async def movements(
        service: ServiceDep, who: PrincipalDep, params: Annotated[MovementParams, Query()]
    ) -> Response:
        """`since` inclusive, `until` exclusive. A seller key lists its own owner."""
        return json_response(await service.movements(who, params))

    @app.get(
        "/v1/stock-history/{owner}/{sku}",
        response_model=StockHistory,
        responses=_READ_ERRORS,
        tags=["stock"],
        summary="A SKU's on-hand and allocated over time, per warehouse",
    )
    async def stock_history(
        service: ServiceDep,
        who: PrincipalDep,
        owner: OwnerPath,
        sku: SkuPath,
        params: Annotated[StockHistoryParams, Query()],
    ) -> Response:
        """Running sums of the SKU's ledger per warehouse in `points` time buckets (the
        dashboard's chart). 404 when the owner has no such SKU."""
        return json_response(await service.stock_history(who, owner, sku, params))

    @app.get(
        "/v1/whoami",
        response_model=WhoAmI,
        responses=error_responses(400, 401, 403),
        tags=["auth"],
        summary="The caller's key scope and owner",
    )
    async def whoami(who: PrincipalDep, _params: Annotated[NoParams, Query()]) -> Response:
        """What a key sees: a seller key its one owner, an OMS key every owner (null)."""
        return json_response({"scope": who.scope.value, "owner": who.owner})

    @app.get(
        "/v1/freshness",
        response_model=FreshnessReport,
        responses=error_responses(400, 401, 403, 503),
        tags=["freshness"],
        summary="Watermark, lag and state per region and per warehouse",
    )
    async def freshness(
        service: ServiceDep, who: PrincipalDep, _params: Annotated[NoParams, Query()]
    ) -> Response:
        return json_response(await service.freshness_report())

    @app.get(
        "/v1/reconciliation",
        response_model=ReconciliationReport,
        responses=error_responses(400, 401, 403, 404),
        tags=["ops"],
        summary="The last reconciliation of the projection with every regional WMS",
    )
    async def reconciliation(who: PrincipalDep, _params: Annotated[NoParams, Query()]) -> Response:
        if who.scope is not Scope.OMS:
            raise ApiError(403, "forbidden", "the reconciliation report is for OMS keys")
        report = last_report(settings)
        if report is None:
            raise ApiError(404, "not_found", "no reconciliation has run yet")
        return json_response(report)

    @app.get("/healthz", response_model=Health, tags=["ops"], summary="The process is up")
    async def healthz(_params: Annotated[NoParams, Query()]) -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready"}},
        tags=["ops"],
        summary="The projection is reachable and every region's watermark is known",
    )
    async def readyz(service: ServiceDep, _params: Annotated[NoParams, Query()]) -> Response:
        try:
            ok, detail, regions = await service.ready()
        except ReadModelError:
            return json_response(
                {"status": "not_ready", "detail": "read model unreachable", "regions": []}, 503
            )
        return json_response(
            {"status": "ok" if ok else "not_ready", "detail": detail, "regions": regions},
            200 if ok else 503,
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def metrics(service: ServiceDep) -> Response:
        try:
            marks = await service.marks()
            figures = await service.marks(figures=True)
        except ReadModelError:
            marks, figures = {}, {}
        now = service.clock()
        for region, m in marks.items():
            PROJECTION_LAG_MS.labels(region).set(m.lag_ms(now))
            PROJECTION_LSN.labels(region).set(m.lsn)
        for region, m in figures.items():
            FIGURES_LAG_MS.labels(region).set(m.lag_ms(now))
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without its 422 answers: validation errors are 400 ErrorBody."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        for item in schema.get("paths", {}).values():
            for op in item.values():
                # FastAPI's own 422 only (a route may document a 422 of its own: /v1/sql)
                if "HTTPValidationError" in str(op.get("responses", {}).get("422", "")):
                    op["responses"].pop("422")
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
