"""Issue 16 item 7 on the real chain: a WMS transaction far larger than
`max_transaction_rows_in_memory` (a region seeded while capture runs, in one
transaction) reaches ClickHouse in chunks, equals the WMS afterwards, and is never
visible in part to a reader polling while it is written."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence

import psycopg
import pytest

from cdc_consumers.projector import Projector
from infra.pipeline import IsolatedPipeline as Pipeline
from read_model.client import make_client
from read_model.migrate import migrate
from read_model.writer import ProjectionWriter, WriteStats
from schemas.events import RegionWrite, Watermark
from simulator.seed import parse_size, seed_region
from tests.integration.cdc_consumers.test_projection_chain import assert_projection_equals_wms
from tests.integration.chain import LiveChain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOUND = 50
#: Tables the seed fills, whose visible rows a reader counts while it is written.
TABLES = ("warehouse", "owner", "sku", "location", "lot", "inventory", "inventory_txn")


class RecordingSink:
    """The ClickHouse sink, noting how transactions reach it and whether rows are
    written that no watermark covers yet (a transaction in the middle of its chunks)."""

    def __init__(self, writer: ProjectionWriter) -> None:
        self.writer = writer
        self.largest = 0  # most changes of one transaction in one write
        self.writes_of: Counter[int] = Counter()  # per tx id
        self.rows_of: Counter[int] = Counter()
        self.hidden = False

    def load_watermarks(self, regions: Collection[str] = ()) -> dict[str, Watermark]:
        return self.writer.load_watermarks(regions)

    def write_all(self, writes: Sequence[RegionWrite]) -> WriteStats:
        for _, transactions, _ in writes:
            for tx in transactions:
                self.largest = max(self.largest, len(tx.changes))
                if tx.tx_id is not None:
                    self.writes_of[tx.tx_id] += 1
                    self.rows_of[tx.tx_id] += len(tx.changes)
        stats = self.writer.write_all(writes)
        self.hidden = any(w is None and any(tx.tx_id for tx in txs) for _, txs, w in writes)
        return stats


@pytest.fixture(scope="module")
def chain(pipeline: Pipeline) -> Iterator[tuple[LiveChain, RecordingSink]]:
    """Capture of empty databases (the snapshot has no rows), a projector whose
    transactions spill past `BOUND` changes."""
    s = pipeline.settings.model_copy(update={"max_transaction_rows_in_memory": BOUND})
    pipeline.start_capture()
    client = make_client(s)
    sink = RecordingSink(ProjectionWriter(client))
    projector = Projector(s, sink)
    live = LiveChain(pipeline, client, projector, threading.Thread(target=projector.run))
    try:
        migrate(client, s.clickhouse_cluster)
        live.thread.start()
        live.wait_caught_up()  # streaming: a commit from now on arrives as a transaction
        yield live, sink
    finally:
        live.projector.stop.set()
        if live.thread.is_alive():
            live.thread.join(timeout=60)
        client.close()


def visible(live: LiveChain, region: str) -> dict[str, int]:
    """Rows of `region` a reader sees now, per table (each count at one watermark)."""
    return {
        t: live.client.query(
            f"SELECT count() FROM cur_{t} WHERE region = {{r:String}}", parameters={"r": region}
        ).result_rows[0][0]
        for t in TABLES
    }


def test_a_seed_while_capture_runs_is_written_in_chunks_and_visible_whole(
    chain: tuple[LiveChain, RecordingSink],
) -> None:
    live, sink = chain
    region = live.pipeline.regions[0]
    before = visible(live, region.name)
    seeded: dict[str, int] = {}

    def seed() -> None:
        with psycopg.connect(live.settings.pg_dsn(region, "app")) as conn:
            seeded.update(seed_region(conn, region, seed=3, size=parse_size("1500")).rows_by_table)

    seeder = threading.Thread(target=seed, daemon=True)
    seeder.start()
    # A reader polls from before the commit until all of it is visible; each sample
    # notes whether chunks were written that no watermark covers yet.
    samples: list[tuple[dict[str, int], bool]] = []
    after: dict[str, int] | None = None
    deadline = time.monotonic() + 300
    while True:
        samples.append((visible(live, region.name), sink.hidden))
        if after is None and not seeder.is_alive():
            assert seeded, "the seed failed"
            after = {t: before[t] + seeded.get(t, 0) for t in TABLES}
        if after is not None and samples[-1][0] == after:
            break
        assert time.monotonic() < deadline, f"not caught up: {live.projector.describe()}"
        assert live.thread.is_alive(), "projector died"
    total = sum(seeded.values())
    assert total > 40 * BOUND, seeded  # a few thousand rows, in one transaction

    partial = [
        {t: n for t, n in seen.items() if n not in (before[t], after[t])}
        for seen, _ in samples
        if any(n not in (before[t], after[t]) for t, n in seen.items())
    ]
    assert not partial, f"part of the transaction was visible: {partial[0]} of {after}"
    inside = sum(hidden for _, hidden in samples)
    assert inside > 0, f"none of {len(samples)} polls fell inside the transaction's writes"

    # It reached the sink in chunks, none above the bound, whole.
    big = max(sink.rows_of, key=sink.rows_of.__getitem__)
    assert sink.rows_of[big] == total
    assert sink.writes_of[big] >= total // BOUND
    assert sink.largest <= BOUND
    live.wait_caught_up()
    assert_projection_equals_wms(live)
