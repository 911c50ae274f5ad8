"""BI access through SQL: `POST /v1/sql` (issue 7). Filled in by the BI work."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
