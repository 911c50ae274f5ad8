"""The live chain for integration tests: an isolated pipeline, seeded, captured by
Debezium, projected by a `Projector` thread into the module's chDB.

`live_chain(pipeline, ...)` is a context manager so every module's fixture frees chDB
(one engine per process) even when set-up fails.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from cdc_consumers.projector import Projector, Sink
from infra.pipeline import IsolatedPipeline
from read_model.client import make_client
from read_model.migrate import migrate
from read_model.writer import ProjectionWriter
from simulator.seed import parse_size, seed_region
from stockcdc.settings import Settings

CATCH_UP_TIMEOUT_S = 180


def wait_for(cond: Callable[[], bool], timeout_s: float = 60, what: str = "timed out") -> None:
    """Poll `cond` until true; fail with `what` after `timeout_s` (things the chain does
    arrive with its next batch, so tests wait for them rather than look once)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@dataclass
class LiveChain:
    """The pipeline with a projector running into one shared ClickHouse client."""

    pipeline: IsolatedPipeline
    client: Client
    projector: Projector
    thread: threading.Thread

    @property
    def settings(self) -> Settings:
        return self.pipeline.settings

    def stop_projector(self) -> None:
        self.projector.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the projector did not stop"

    def start_projector(self, settings: Settings | None = None, sink: Sink | None = None) -> None:
        """A new projector (same group unless `settings` says otherwise)."""
        s = settings or self.settings
        self.projector = Projector(s, sink or ProjectionWriter(self.client))
        self.thread = threading.Thread(target=self.projector.run, daemon=True)
        self.thread.start()

    def wait_caught_up(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Commit a marker row in every region, after everything else; it is visible in
        the projection only once every earlier transaction of its region is."""
        markers = {}
        for region in self.pipeline.regions:
            code = f"SYNC-{uuid.uuid4().hex[:10]}"
            with psycopg.connect(self.settings.pg_dsn(region, "app")) as conn:
                conn.execute("INSERT INTO owner (code, name) VALUES (%s, 'sync marker')", (code,))
            markers[region.name] = code
        deadline = time.monotonic() + timeout_s
        for name, code in markers.items():
            while not self.client.query(
                "SELECT count() FROM cur_owner WHERE region = {r:String} AND code = {c:String}",
                parameters={"r": name, "c": code},
            ).result_rows[0][0]:
                assert self.thread.is_alive(), "projector died"
                assert time.monotonic() < deadline, (
                    f"{name} not caught up: {self.projector.describe()}"
                )
                time.sleep(0.2)


@dataclass
class LiveApi:
    """A live chain with the Query API in process (TestClient over the chain's chDB)."""

    chain: LiveChain
    api: TestClient

    @property
    def pipeline(self) -> IsolatedPipeline:
        return self.chain.pipeline

    def wait_caught_up(self) -> None:
        self.chain.wait_caught_up()


@contextmanager
def live_chain(pipeline: IsolatedPipeline, *, seed: int, size: str) -> Iterator[LiveChain]:
    """Seed every region, start capture (the seed arrives as the initial snapshot), run a
    projector; stop it and close the client on exit."""
    s = pipeline.settings
    for region in pipeline.regions:
        with psycopg.connect(s.pg_dsn(region, "app")) as conn:
            seed_region(conn, region, seed=seed, size=parse_size(size))
    pipeline.start_capture()
    client = make_client(s)
    projector = Projector(s, ProjectionWriter(client))
    thread = threading.Thread(target=projector.run, daemon=True)
    chain = LiveChain(pipeline, client, projector, thread)
    try:
        migrate(client, s.clickhouse_cluster)
        thread.start()
        yield chain
    finally:
        chain.projector.stop.set()
        if chain.thread.is_alive():
            chain.thread.join(timeout=60)
        client.close()
