"""The seller dashboard, served by the query API itself (no separate server).

A single page (`static/index.html` + plain JS modules + CSS) that signs in with a seller
key, keeps it in the browser's sessionStorage and calls the JSON API with it; nothing here
reads the read model. Third-party front-end code (uPlot, for the chart) is copied from
the npm registry's package into `static/vendor/` by `make vendor`; nothing loads from a
CDN, and the Content-Security-Policy below forbids any other origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response

from query_api.errors import not_found

STATIC = Path(__file__).parent / "static"

#: Only this origin: no CDN, no inline script; styles may be set by uPlot at run time.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> Response:
    """The product's front door is the dashboard."""
    return RedirectResponse("/dashboard/", status_code=307)


@router.get("/dashboard")
async def dashboard_redirect() -> Response:
    return RedirectResponse("/dashboard/", status_code=307)


@router.get("/dashboard/")
async def dashboard() -> Response:
    """The single page; its routes live after `#` so any deep link loads this file."""
    return FileResponse(STATIC / "index.html", headers={**_HEADERS, "Cache-Control": "no-cache"})


@router.get("/dashboard/static/{path:path}")
async def static_file(path: str) -> Response:
    """A file under `static/`; anything outside it (`..`, absolute paths) is a 404."""
    root = STATIC.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise not_found(f"no such dashboard file: {path}")
    return FileResponse(target, headers={**_HEADERS, "Cache-Control": "no-cache"})
