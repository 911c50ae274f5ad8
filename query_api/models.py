"""Request and response models: the OpenAPI contract the OMS backend codes against.

Answers are serialised straight from the read model's dataclasses with orjson (no model
instances per row); these models describe exactly that JSON in /openapi.json, and the
typed client (query_api/client.py) parses answers with them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2299, 12, 31, tzinfo=UTC)  # ClickHouse DateTime64 upper bound
MAX_LIMIT = 1000
MAX_STALENESS_MS = 365 * 86_400_000


def _in_range(value: datetime) -> datetime:
    if not MIN_TIME <= value < MAX_TIME:
        raise ValueError("time must be between 1970-01-01 and 2299-12-31 (UTC)")
    return value.astimezone(UTC)


#: An ISO 8601 time with a UTC offset, in the range the read model can store.
ApiTime = Annotated[AwareDatetime, AfterValidator(_in_range)]

_KEY = Field(min_length=1, max_length=200)


class SerialStatus(StrEnum):
    IN_STOCK = "IN_STOCK"
    ALLOCATED = "ALLOCATED"
    SHIPPED = "SHIPPED"
    RETURNED = "RETURNED"
    DAMAGED = "DAMAGED"
    SCRAPPED = "SCRAPPED"
    LOST = "LOST"


class FreshnessState(StrEnum):
    LIVE = "live"
    CATCHING_UP = "catching_up"
    STALE = "stale"
    UNKNOWN = "unknown"  # configured region with no watermark yet


# -- query parameters (unknown parameters are a 400) -------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsistencyParams(_Params):
    """Consistency controls of every stock read."""

    max_staleness_ms: int | None = Field(
        None,
        ge=0,
        le=MAX_STALENESS_MS,
        description="Answer 503 (with Retry-After) when a region involved has a watermark "
        "older than this many milliseconds.",
    )
    min_as_of: ApiTime | None = Field(
        None,
        description="Wait (bounded by the server's timeout) until every region involved "
        "has a watermark at or after this time; 504 if it does not get there.",
    )


class StockListParams(ConsistencyParams):
    owner: str | None = Field(None, min_length=1, max_length=200)
    warehouse: str | None = Field(None, min_length=1, max_length=200)
    sku: str | None = Field(None, min_length=1, max_length=200)
    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, min_length=1, max_length=4096)


class SerialListParams(ConsistencyParams):
    status: SerialStatus | None = None


class MovementParams(ConsistencyParams):
    owner: str | None = Field(None, min_length=1, max_length=200)
    warehouse: str | None = Field(None, min_length=1, max_length=200)
    sku: str | None = Field(None, min_length=1, max_length=200)
    since: ApiTime | None = Field(None, description="Inclusive lower bound of occurred_at.")
    until: ApiTime | None = Field(None, description="Exclusive upper bound of occurred_at.")
    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, min_length=1, max_length=4096)


class StockHistoryParams(ConsistencyParams):
    warehouse: str | None = Field(
        None, min_length=1, max_length=200, description="One warehouse only (default: all)."
    )
    since: ApiTime | None = Field(
        None, description="Start of the series (default: the SKU's first ledger row)."
    )
    until: ApiTime | None = Field(None, description="End of the series (default: now).")
    points: int = Field(
        200,
        ge=1,
        le=MAX_LIMIT,
        description="Number of equal time buckets over [since, until); each warehouse's "
        "series has at most this many points plus its start and end.",
    )


class NoParams(_Params):
    """Endpoints without query parameters still refuse unknown ones."""


# -- answers ------------------------------------------------------------------------


class RegionFreshness(BaseModel):
    """How current the answer is for one region: its watermark (a lower bound of what
    the answer reflects)."""

    as_of: datetime = Field(
        description="Watermark time: max(source commit time of the last applied "
        "transaction, latest heartbeat)."
    )
    lsn: int = Field(
        description="Commit LSN of the WMS up to which what the answer reads is applied "
        "(stock figures are written before the rows behind lots, serials and movements, "
        "so a stock answer's may be ahead of a drill-down's)."
    )
    lag_ms: int = Field(description="Milliseconds between as_of and the answer.")


Freshness = dict[str, RegionFreshness]

_FRESHNESS_EXAMPLE: dict[str, Any] = {
    "us-west": {"as_of": "2026-03-01T10:00:00.123Z", "lsn": 40712632, "lag_ms": 180}
}


class StockItem(BaseModel):
    """Stock figures of one (owner, warehouse, sku), exactly as wms/OPERATIONS.md."""

    owner: str
    warehouse: str
    sku: str
    on_hand: int
    available: int
    allocated: int
    pending_putaway: int
    qc_hold: int
    frozen: int
    damaged: int
    returned: int
    expired: int
    inbound_expected: int
    earliest_expiry: date | None
    last_movement_at: datetime | None

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "owner": "SELLER-0001",
                "warehouse": "US-LAX-1",
                "sku": "SKU-000123",
                "on_hand": 120,
                "available": 95,
                "allocated": 10,
                "pending_putaway": 5,
                "qc_hold": 0,
                "frozen": 2,
                "damaged": 3,
                "returned": 0,
                "expired": 5,
                "inbound_expected": 40,
                "earliest_expiry": "2026-09-30",
                "last_movement_at": "2026-03-01T09:59:58.412Z",
            }
        }
    )


class StockPage(BaseModel):
    items: list[StockItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    freshness: Freshness = Field(examples=[_FRESHNESS_EXAMPLE])


class StockOne(StockItem):
    """One key's figures, with the freshness of its region."""

    freshness: Freshness


class LotItem(BaseModel):
    """Figures of one lot, FEFO order (expiry ascending, no expiry last, first receipt)."""

    lot_no: str
    production_date: date | None
    expiry_date: date | None
    on_hand: int
    available: int
    allocated: int
    pending_putaway: int
    qc_hold: int
    frozen: int
    damaged: int
    returned: int
    expired: int


class LotList(BaseModel):
    items: list[LotItem]
    freshness: Freshness


class SerialItem(BaseModel):
    """A serial's state in one region (a version of it, in a history)."""

    region: str
    serial_no: str
    status: SerialStatus
    warehouse: str | None
    location: str | None
    lot_no: str | None
    received_at: datetime | None
    shipped_at: datetime | None
    updated_at: datetime
    order_no: str | None
    tracking_no: str | None


class SerialList(BaseModel):
    items: list[SerialItem]
    freshness: Freshness


class SerialDetail(BaseModel):
    """Current state (the row that is not SHIPPED, else the latest) and every version
    in every region, oldest first."""

    owner: str
    sku: str
    serial_no: str
    current: SerialItem
    history: list[SerialItem]
    freshness: Freshness


class MovementItem(BaseModel):
    """One ledger row (inventory_txn) with global codes."""

    owner: str
    region: str
    id: int
    occurred_at: datetime
    txn_type: str
    warehouse: str
    sku: str
    lot_no: str | None
    from_location: str | None
    to_location: str | None
    from_status: str | None
    to_status: str | None
    qty: int
    d_on_hand: int
    d_allocated: int
    ref_type: str | None
    ref_no: str | None


class MovementPage(BaseModel):
    items: list[MovementItem]
    next_cursor: str | None
    freshness: Freshness


class WarehouseFreshness(BaseModel):
    warehouse: str
    region: str
    lag_ms: int | None
    state: FreshnessState


class RegionStatus(BaseModel):
    """One region's watermark and what it means for readers."""

    region: str
    applied_lsn: int | None
    source_commit_ts: datetime | None = Field(
        description="Source commit time of the last applied transaction."
    )
    heartbeat_ts: datetime | None
    as_of: datetime | None = Field(description="max(source_commit_ts, heartbeat_ts).")
    lag_ms: int | None
    figures_lsn: int | None = Field(
        description="Commit LSN up to which the stock figures are applied (stock answers "
        "read there); at or ahead of applied_lsn, the rows (drill-downs, BI)."
    )
    figures_lag_ms: int | None = Field(description="Lag of the stock figures' watermark.")
    state: FreshnessState = Field(
        description="live: lag within the server's live bound; catching_up: behind, but "
        "the projector advanced the watermark recently; stale: no progress; unknown: no "
        "watermark yet."
    )


class FreshnessReport(BaseModel):
    regions: list[RegionStatus]
    warehouses: list[WarehouseFreshness]
    freshness: Freshness


class HistoryPoint(BaseModel):
    """A warehouse's figures as of `at`: the running sum of its ledger rows before it."""

    at: datetime
    on_hand: int
    allocated: int


class HistorySeries(BaseModel):
    warehouse: str
    region: str
    points: list[HistoryPoint] = Field(
        description="Time ascending: the opening figures at `since`, the figures at the end "
        "of every bucket that has ledger rows, and the closing figures at `until`."
    )


class StockHistory(BaseModel):
    """A SKU's on-hand and allocated over time per warehouse, from the ledger
    (OPERATIONS.md: per warehouse, sum(d_on_hand) = on-hand, sum(d_allocated) =
    allocated), so the closing point equals the current figures."""

    owner: str
    sku: str
    since: datetime
    until: datetime
    step_ms: int = Field(description="Width of a time bucket.")
    series: list[HistorySeries] = Field(
        description="One per warehouse with ledger rows of the SKU, by warehouse code."
    )
    freshness: Freshness


class WhoAmI(BaseModel):
    """The caller's key: its scope and, for a seller key, the one owner it sees."""

    scope: Literal["oms", "seller"]
    owner: str | None


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="Stable machine-readable code.")
    detail: str = Field(description="Human-readable explanation.")


class Health(BaseModel):
    status: Literal["ok", "not_ready"]
    detail: str | None = None
    regions: list[str] = []


_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Bad input", "invalid_parameter", "limit: Input should be less than or equal to 1000"),
    401: ("Missing or unknown API key", "unauthorized", "unknown or revoked API key"),
    403: ("Key scope not allowed here", "forbidden", "bi keys are for POST /v1/sql only"),
    404: ("Absent, or another owner's", "not_found", "no such stock key"),
    503: (
        "Stale or read model unavailable (Retry-After)",
        "stale",
        "region us-west is 8200 ms behind (max_staleness_ms=5000)",
    ),
    504: ("min_as_of not reached in time", "not_caught_up", "region us-west did not reach ..."),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` entries of the given error statuses, with the error model."""
    return {
        code: {
            "model": ErrorBody,
            "description": _ERRORS[code][0],
            "content": {
                "application/json": {
                    "example": {"error": _ERRORS[code][1], "detail": _ERRORS[code][2]}
                }
            },
        }
        for code in codes
    }


class ReconciledTable(BaseModel):
    """One replicated table of one region: row counts, checksums and sampled keys."""

    table: str
    source_rows: int
    projected_rows: int
    source_checksum: int
    projected_checksum: int
    missing_count: int = Field(description="Rows in the WMS, not in the projection")
    unexpected_count: int = Field(description="Rows in the projection only")
    different_count: int = Field(description="Rows whose values differ")
    missing: list[Any] = Field(description="Sample of missing keys")
    unexpected: list[Any] = Field(description="Sample of unexpected keys")
    different: list[Any] = Field(description="Sample: [key, WMS row, projected row]")


class ReconciledRegion(BaseModel):
    region: str
    comparable: bool = Field(description="False: the region never reached a common point")
    detail: str
    cut_lsn: int = Field(description="The LSN both sides were compared at")
    wms_snapshot: str
    seconds: float
    stock_keys: int
    differences: int
    tables: list[ReconciledTable]
    figures: list[dict[str, Any]] = Field(
        description="(owner, warehouse, SKU) whose figures differ: key, wms, projection"
    )


class ReconciliationReport(BaseModel):
    """The last reconciliation of the projection with every regional WMS."""

    started_at: datetime
    finished_at: datetime
    ok: bool
    differences: int
    regions: list[ReconciledRegion]
