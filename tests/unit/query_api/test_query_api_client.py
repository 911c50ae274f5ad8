"""The typed client, sync and async, against the API under a live uvicorn."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from query_api.client import AsyncQueryClient, QueryApiError, QueryClient
from query_api.models import SerialStatus


def test_sync_client(live_url: str, keys: dict[str, str]) -> None:
    with QueryClient(live_url, keys["SELLER-A"]) as api:
        one = api.stock("SELLER-A", "WH-E1", "SKU-1", max_staleness_ms=3_600_000)
        assert (one.on_hand, one.available, one.inbound_expected) == (26, 12, 20)
        assert one.freshness["qa-east"].lsn > 0
        assert [i.sku for i in api.iter_stock(limit=2)] == [
            "SKU-1", "SKU-2", "SKU-1", "SKU-1", "SKU-2",
        ]  # fmt: skip
        lots = api.lots("SELLER-A", "WH-E1", "SKU-1")
        assert [lot.lot_no for lot in lots.items] == ["L-EARLY", "L-LATE"]
        serials = api.serials("SELLER-A", "WH-E1", "SKU-2", status=SerialStatus.IN_STOCK)
        assert [s.serial_no for s in serials.items] == ["S-1", "S-3"]
        detail = api.serial("SELLER-A", "SKU-2", "S-5")
        assert detail.current.region == "qa-west"
        moves = list(api.iter_movements(limit=3, since=datetime(2026, 2, 2, tzinfo=UTC)))
        assert {m.owner for m in moves} == {"SELLER-A"}
        assert len(moves) == 7
        assert {r.region for r in api.freshness().regions} >= {"qa-east", "qa-west"}
        with pytest.raises(QueryApiError) as err:
            api.stock("SELLER-B", "WH-E1", "SKU-1")  # another owner's: 404 like absent
        assert (err.value.status, err.value.error) == (404, "not_found")
        with pytest.raises(QueryApiError) as err:
            api.stock("SELLER-C", "WH-N1", "SKU-9", max_staleness_ms=1)
        assert err.value.status == 404  # seller A may not even learn it is stale
    with QueryClient(live_url, keys["oms"]) as api, pytest.raises(QueryApiError) as err:
        api.stock("SELLER-C", "WH-N1", "SKU-9", max_staleness_ms=1000)
    assert (err.value.status, err.value.error) == (503, "stale")
    assert err.value.retry_after is not None
    assert err.value.retry_after >= 1
    with QueryClient(live_url, "wrong") as api, pytest.raises(QueryApiError) as err:
        api.freshness()
    assert err.value.status == 401


def test_async_client(live_url: str, keys: dict[str, str]) -> None:
    async def run() -> None:
        async with AsyncQueryClient(live_url, keys["oms"]) as api:
            one, page = await asyncio.gather(
                api.stock("SELLER-B", "WH-E1", "SKU-1"), api.stock_page(owner="SELLER-A")
            )
            assert one.on_hand == 9
            assert len(page.items) == 5
            skus = [i.sku async for i in api.iter_stock(sku="SKU-1", limit=1)]
            assert skus == ["SKU-1"] * 4
            lots = await api.lots("SELLER-A", "WH-E1", "SKU-1")
            assert lots.items[0].available == 5
            assert len((await api.serials("SELLER-A", "WH-E1", "SKU-2")).items) == 5
            assert (await api.serial("SELLER-A", "SKU-2", "S-4")).current.tracking_no == "TRK-1"
            moves = [m async for m in api.iter_movements(owner="SELLER-B")]
            assert [m.id for m in moves] == [5]
            assert (await api.freshness()).warehouses
            with pytest.raises(QueryApiError) as err:
                await api.movements(limit=5000)
            assert (err.value.status, err.value.error) == (400, "invalid_parameter")

    asyncio.run(run())
