"""The API's one error type and its one handler: every failure answers
`{"error": code, "detail": text}` with a 4xx (bad input, auth, absent) or a 503/504
(read model unreachable, stale, not caught up); never a bare 500.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from read_model.errors import ReadModelError

log = structlog.get_logger(__name__)


class ApiError(Exception):
    """An answer that is not a success: HTTP status, stable machine code, human detail."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})


def not_found(what: str = "no such resource") -> ApiError:
    """The one 404, identical for absent data and for another owner's data."""
    return ApiError(404, "not_found", what)


def bad_request(error: str, detail: str) -> ApiError:
    return ApiError(400, error, detail)


def error_response(err: ApiError) -> Response:
    return Response(
        orjson.dumps({"error": err.error, "detail": err.detail}),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )


def _from_validation(exc: RequestValidationError) -> ApiError:
    problems = []
    unknown = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("query", "path", "header", "body")]
        name = ".".join(loc) or "request"
        if e.get("type") == "extra_forbidden":
            unknown.append(name)
        else:
            problems.append(f"{name}: {e.get('msg', 'invalid')}")
    if unknown and not problems:
        return bad_request("unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}")
    return bad_request(
        "invalid_parameter", "; ".join(problems + [f"{u}: unknown" for u in unknown])
    )


def install(app: FastAPI) -> None:
    """Register the one handler for every error path of the app."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(_from_validation(exc))

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail), exc.headers))

    async def read_model(_: Request, exc: Exception) -> Response:
        # The driver's text can carry SQL: log it, answer in general terms.
        log.warning("api.read_model.error", error=str(exc)[:2000])
        return error_response(
            ApiError(
                503,
                "read_model_unavailable",
                "the read model (ClickHouse) did not answer; retry later",
                {"Retry-After": "1"},
            )
        )

    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("api.unexpected", error=type(exc).__name__)
        return error_response(ApiError(500, "internal", "unexpected server error"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ReadModelError, read_model)
    app.add_exception_handler(Exception, unexpected)
