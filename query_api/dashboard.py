"""The seller dashboard, served by the query API (issue 6). Filled in by the dashboard work."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
