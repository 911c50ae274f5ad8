"""The API follows the watermarks of the writer in its process (embedded mode, issue 15):
readers see a flush as soon as it is written, without a ClickHouse read per refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from query_api import service as service_module
from query_api.service import Mark, QueryService, ReadModel
from read_model.writer import ProjectionWriter
from schemas.events import RegionWrite, Transaction, Watermark
from stockcdc.settings import Settings
from tests.unit.query_api.conftest import ReadModelFixture
from tests.unit.read_model.test_projection import Tx, inv, master_data

T = TypeVar("T")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_a_mark_keeps_the_highest_lsn_and_the_latest_heartbeat() -> None:
    mark = Mark("r", 100, ts(10_000), ts(12_000), NOW)
    ahead = mark.advanced(Watermark("r", 200, 20_000, None), NOW)
    assert (ahead.lsn, ahead.commit_ts, ahead.heartbeat_ts) == (200, ts(20_000), ts(12_000))
    replayed = ahead.advanced(Watermark("r", 150, 15_000, 11_000), NOW)  # a replay: older
    assert (replayed.lsn, replayed.commit_ts, replayed.heartbeat_ts) == (
        200, ts(20_000), ts(12_000),
    )  # fmt: skip
    beat = replayed.advanced(Watermark("r", 200, 20_000, 30_000), NOW)  # an idle region
    assert (beat.lsn, beat.as_of) == (200, ts(30_000))


class CountingPool(ReadModel):
    """Counts the watermark reads that reach ClickHouse, once each has answered (a read
    still under way has not filled the cache, so a reader would read again meanwhile)."""

    reads = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        result = await super().run(fn, *args)
        if fn is service_module._marks:
            self.reads += 1
        return result


async def following_a_writer(
    rm: ReadModelFixture, t: Tx, first: Sequence[Transaction]
) -> tuple[CountingPool, QueryService, ProjectionWriter, asyncio.Task[None]]:
    """An API following a writer that wrote `first`, its refresher's first read done."""
    pool = CountingPool([rm.client])
    api = QueryService(Settings(api_watermark_cache_ms=100), pool)
    writer = ProjectionWriter(rm.client, api.follow_writer())
    await asyncio.to_thread(writer.write, t.region, first, t.wm(first[-1]))
    refresher = asyncio.create_task(api.refresh_marks())
    while pool.reads == 0:  # its first read, once answered, knows the region
        await asyncio.sleep(0.01)
    return pool, api, writer, refresher


def test_the_writers_watermarks_reach_readers_without_a_read(rm: ReadModelFixture) -> None:
    region = "qa-pushed"
    t = Tx(region)
    md = master_data(t, "PUSH")
    first = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 5)))
    then = t.tx(("inventory", "u", {**inv(10, 2, 1, "AVAILABLE", 4)}))

    async def scenario() -> None:
        pool, api, writer, refresher = await following_a_writer(rm, t, [md, first])
        assert (await api.marks())[region].lsn == first.commit_lsn
        await asyncio.to_thread(writer.write, region, [then], t.wm(then))
        await asyncio.sleep(0.05)  # the writer's callback runs on this loop
        assert (await api.marks())[region].lsn == then.commit_lsn
        assert pool.reads == 1  # told, not read: the next read is seconds away
        refresher.cancel()

    asyncio.run(scenario())


def test_figures_written_ahead_of_their_rows_move_only_the_figure_marks(
    rm: ReadModelFixture,
) -> None:
    region = "qa-pushed-ahead"
    t = Tx(region)
    md = master_data(t, "AHEAD")
    first = t.tx(("inventory", "c", inv(10, 2, 1, "AVAILABLE", 5)))
    then = t.tx(("inventory", "c", inv(11, 2, 2, "AVAILABLE", 4)))

    async def scenario() -> None:
        pool, api, writer, refresher = await following_a_writer(rm, t, [md, first])
        ahead = [RegionWrite(region, [then], t.wm(then))]
        await asyncio.to_thread(writer.write_all, ahead, True)
        await asyncio.sleep(0.05)
        assert (await api.marks(figures=True))[region].lsn == then.commit_lsn
        assert (await api.marks())[region].lsn == first.commit_lsn  # its rows: not yet
        await asyncio.to_thread(writer.write_rows)
        await asyncio.sleep(0.05)
        assert (await api.marks())[region].lsn == then.commit_lsn
        assert pool.reads == 1
        refresher.cancel()

    asyncio.run(scenario())
