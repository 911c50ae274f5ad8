"""Typed Python client of the Query API for the OMS backend: `QueryClient` (sync) and
`AsyncQueryClient` (async), both on httpx, answers parsed into query_api.models.

    with QueryClient("http://127.0.0.1:8080", key) as api:
        item = api.stock("SELLER-0001", "US-LAX-1", "SKU-1", max_staleness_ms=5000)
        for row in api.iter_stock(owner="SELLER-0001"):
            ...

Every non-2xx answer raises `QueryApiError` with the API's error code, detail and (for
503) the Retry-After seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from query_api.models import (
    FreshnessReport,
    LotList,
    MovementItem,
    MovementPage,
    SerialDetail,
    SerialList,
    SerialStatus,
    StockItem,
    StockOne,
    StockPage,
)

M = TypeVar("M", bound=BaseModel)


class QueryApiError(Exception):
    """An error answer of the API: `{"error": code, "detail": text}` and its status."""

    def __init__(
        self, status: int, error: str, detail: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Call:
    path: str
    params: dict[str, str | int]


def _seg(value: str) -> str:
    return quote(value, safe="")


def _params(**values: Any) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, datetime):
            out[k] = v.isoformat()
        elif isinstance(v, SerialStatus):
            out[k] = v.value
        else:
            out[k] = v
    return out


def _consistency(max_staleness_ms: int | None, min_as_of: datetime | None) -> dict[str, Any]:
    return {"max_staleness_ms": max_staleness_ms, "min_as_of": min_as_of}


def _parse(response: httpx.Response, model: type[M]) -> M:
    if response.status_code >= 400:
        try:
            body = response.json()
            error, detail = str(body["error"]), str(body["detail"])
        except (ValueError, KeyError, TypeError):
            error, detail = "http_error", response.text[:500]
        retry = response.headers.get("Retry-After")
        raise QueryApiError(
            response.status_code,
            error,
            detail,
            float(retry) if retry and retry.isdigit() else None,
        )
    return model.model_validate_json(response.content)


class _Calls:
    """The requests of every endpoint, shared by the sync and async clients."""

    @staticmethod
    def stock(owner: str, warehouse: str, sku: str, **c: Any) -> _Call:
        return _Call(f"/v1/stock/{_seg(owner)}/{_seg(warehouse)}/{_seg(sku)}", _params(**c))

    @staticmethod
    def stock_page(**p: Any) -> _Call:
        return _Call("/v1/stock", _params(**p))

    @staticmethod
    def lots(owner: str, warehouse: str, sku: str, **c: Any) -> _Call:
        return _Call(f"/v1/stock/{_seg(owner)}/{_seg(warehouse)}/{_seg(sku)}/lots", _params(**c))

    @staticmethod
    def serials(owner: str, warehouse: str, sku: str, **c: Any) -> _Call:
        path = f"/v1/stock/{_seg(owner)}/{_seg(warehouse)}/{_seg(sku)}/serials"
        return _Call(path, _params(**c))

    @staticmethod
    def serial(owner: str, sku: str, serial_no: str, **c: Any) -> _Call:
        return _Call(f"/v1/serials/{_seg(owner)}/{_seg(sku)}/{_seg(serial_no)}", _params(**c))

    @staticmethod
    def movements(**p: Any) -> _Call:
        return _Call("/v1/movements", _params(**p))


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


class QueryClient:
    """Synchronous client (one httpx.Client, keep-alive); use as a context manager."""

    def __init__(
        self, base_url: str, api_key: str, timeout: float = 30.0, **httpx_options: Any
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, **httpx_options
        )

    def __enter__(self) -> QueryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, call: _Call, model: type[M]) -> M:
        return _parse(self._http.get(call.path, params=call.params), model)

    def stock(
        self,
        owner: str,
        warehouse: str,
        sku: str,
        *,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> StockOne:
        """One key's figures (QueryApiError 404 when absent)."""
        c = _consistency(max_staleness_ms, min_as_of)
        return self._get(_Calls.stock(owner, warehouse, sku, **c), StockOne)

    def stock_page(
        self,
        *,
        owner: str | None = None,
        warehouse: str | None = None,
        sku: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> StockPage:
        call = _Calls.stock_page(
            owner=owner, warehouse=warehouse, sku=sku, limit=limit, cursor=cursor,
            **_consistency(max_staleness_ms, min_as_of),
        )  # fmt: skip
        return self._get(call, StockPage)

    def iter_stock(self, **filters: Any) -> Iterator[StockItem]:
        """Every item of `stock_page(**filters)`, following the cursors."""
        cursor: str | None = None
        while True:
            page = self.stock_page(cursor=cursor, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def lots(
        self,
        owner: str,
        warehouse: str,
        sku: str,
        *,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> LotList:
        c = _consistency(max_staleness_ms, min_as_of)
        return self._get(_Calls.lots(owner, warehouse, sku, **c), LotList)

    def serials(
        self,
        owner: str,
        warehouse: str,
        sku: str,
        *,
        status: SerialStatus | None = None,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> SerialList:
        c = _consistency(max_staleness_ms, min_as_of)
        return self._get(_Calls.serials(owner, warehouse, sku, status=status, **c), SerialList)

    def serial(
        self,
        owner: str,
        sku: str,
        serial_no: str,
        *,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> SerialDetail:
        c = _consistency(max_staleness_ms, min_as_of)
        return self._get(_Calls.serial(owner, sku, serial_no, **c), SerialDetail)

    def movements(
        self,
        *,
        owner: str | None = None,
        warehouse: str | None = None,
        sku: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MovementPage:
        call = _Calls.movements(
            owner=owner, warehouse=warehouse, sku=sku, since=since, until=until, limit=limit,
            cursor=cursor,
        )  # fmt: skip
        return self._get(call, MovementPage)

    def iter_movements(self, **filters: Any) -> Iterator[MovementItem]:
        cursor: str | None = None
        while True:
            page = self.movements(cursor=cursor, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def freshness(self) -> FreshnessReport:
        return self._get(_Call("/v1/freshness", {}), FreshnessReport)


class AsyncQueryClient:
    """Asynchronous client (one httpx.AsyncClient); `async with` it."""

    def __init__(
        self, base_url: str, api_key: str, timeout: float = 30.0, **httpx_options: Any
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, **httpx_options
        )

    async def __aenter__(self) -> AsyncQueryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, call: _Call, model: type[M]) -> M:
        return _parse(await self._http.get(call.path, params=call.params), model)

    async def stock(
        self,
        owner: str,
        warehouse: str,
        sku: str,
        *,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> StockOne:
        c = _consistency(max_staleness_ms, min_as_of)
        return await self._get(_Calls.stock(owner, warehouse, sku, **c), StockOne)

    async def stock_page(
        self,
        *,
        owner: str | None = None,
        warehouse: str | None = None,
        sku: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> StockPage:
        call = _Calls.stock_page(
            owner=owner, warehouse=warehouse, sku=sku, limit=limit, cursor=cursor,
            **_consistency(max_staleness_ms, min_as_of),
        )  # fmt: skip
        return await self._get(call, StockPage)

    async def iter_stock(self, **filters: Any) -> AsyncIterator[StockItem]:
        cursor: str | None = None
        while True:
            page = await self.stock_page(cursor=cursor, **filters)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def lots(
        self,
        owner: str,
        warehouse: str,
        sku: str,
        *,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> LotList:
        c = _consistency(max_staleness_ms, min_as_of)
        return await self._get(_Calls.lots(owner, warehouse, sku, **c), LotList)

    async def serials(
        self,
        owner: str,
        warehouse: str,
        sku: str,
        *,
        status: SerialStatus | None = None,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> SerialList:
        c = _consistency(max_staleness_ms, min_as_of)
        call = _Calls.serials(owner, warehouse, sku, status=status, **c)
        return await self._get(call, SerialList)

    async def serial(
        self,
        owner: str,
        sku: str,
        serial_no: str,
        *,
        max_staleness_ms: int | None = None,
        min_as_of: datetime | None = None,
    ) -> SerialDetail:
        c = _consistency(max_staleness_ms, min_as_of)
        return await self._get(_Calls.serial(owner, sku, serial_no, **c), SerialDetail)

    async def movements(
        self,
        *,
        owner: str | None = None,
        warehouse: str | None = None,
        sku: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MovementPage:
        call = _Calls.movements(
            owner=owner, warehouse=warehouse, sku=sku, since=since, until=until, limit=limit,
            cursor=cursor,
        )  # fmt: skip
        return await self._get(call, MovementPage)

    async def iter_movements(self, **filters: Any) -> AsyncIterator[MovementItem]:
        cursor: str | None = None
        while True:
            page = await self.movements(cursor=cursor, **filters)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def freshness(self) -> FreshnessReport:
        return await self._get(_Call("/v1/freshness", {}), FreshnessReport)
