"""Running the projector as a service: ClickHouse client, migrations, signals, progress."""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import structlog
from clickhouse_connect.driver.client import Client
from kafka import KafkaConsumer, TopicPartition

from cdc_consumers.projector import Projector
from read_model.client import make_client
from read_model.migrate import migrate
from read_model.writer import OnAdvance, ProjectionWriter
from stockcdc.settings import Settings

log = structlog.get_logger(__name__)


def build_projector(
    settings: Settings,
    client: Client | None = None,
    stop: threading.Event | None = None,
    on_advance: OnAdvance | None = None,
) -> Projector:
    """A projector writing to `client` (default: a new one on `settings.clickhouse_dsn`),
    its schema migrated first; it runs until `stop` is set. `on_advance` is told every
    watermark it writes, once written (the API of the same process follows them)."""
    client = client or make_client(settings)
    migrate(client, settings.clickhouse_cluster)
    writer = ProjectionWriter(client, on_advance)
    return Projector(settings, writer, stop=stop or threading.Event())


@contextmanager
def every(interval_s: float, job: Callable[[], object], name: str) -> Iterator[None]:
    """Run `job` every `interval_s` seconds in a background thread (never when the
    interval is 0) until the block exits. A failing run is logged and the next one
    still happens: a scheduled check must not die quietly."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                job()
            except Exception:
                log.exception("job.failed", job=name)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    if interval_s > 0:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=60)


@contextmanager
def reconciling(settings: Settings) -> Iterator[None]:
    """The scheduled reconciliation of this process (`settings.reconcile_interval_s`), on
    a client of its own, closed on exit: a client runs one query at a time (a server
    refuses a second one in the same HTTP session) and the projector's is busy writing."""
    from read_model.reconcile import reconcile

    if settings.reconcile_interval_s <= 0:
        yield
        return
    client = make_client(settings)
    try:
        with every(settings.reconcile_interval_s, lambda: reconcile(settings, client), "reconcile"):
            yield
    finally:
        client.close()


#: Allocations between young-generation collections while a projector runs (Python's
#: default is 700). A batch holds tens of thousands of live events, so with the default
#: they were scanned again and again, and promoted into many full collections: 20-25% of
#: the projector's CPU on a 370k-event backlog, 5-10% with this.
PROJECTOR_GC_THRESHOLD = 10_000


@contextmanager
def batch_gc(threshold: int = PROJECTOR_GC_THRESHOLD) -> Iterator[None]:
    """Collect the young generation every `threshold` allocations inside the block (the
    process's setting: the API's requests in the same process get it too), then restore."""
    old = gc.get_threshold()
    gc.set_threshold(max(threshold, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


class ProjectorThread(threading.Thread):
    """The thread `Projector.run` runs in. An exception that ends the run is logged
    (`projector.failed`, with its traceback) and kept in `error`: the command that runs
    the projector must then exit non-zero, for its supervisor to restart it, instead of
    carrying on without it (threading alone would print it and forget it)."""

    def __init__(self, projector: Projector) -> None:
        super().__init__(name="projector", daemon=True)
        self.projector = projector
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.projector.run()
        except BaseException as exc:
            self.error = exc
            log.exception("projector.failed", error=repr(exc))


@contextmanager
def running(projector: Projector) -> Iterator[ProjectorThread]:
    """Run the projector in a background thread (with `batch_gc`); stop it and wait on
    exit. The thread's `error` says whether it died."""
    thread = ProjectorThread(projector)
    with batch_gc():
        thread.start()
        try:
            yield thread
        finally:
            projector.stop.set()
            thread.join(timeout=60)


def stop_on_signals() -> threading.Event:
    """An event SIGINT / SIGTERM set: the projector given it stops after its current
    batch (then it commits). Installed before start-up (chDB, migrations), so a stop
    that comes early is as clean as a late one."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@dataclass(frozen=True)
class RegionProgress:
    """How far the consumer group is through one region's topic."""

    region: str
    committed: int
    end: int

    @property
    def remaining(self) -> int:
        return max(self.end - self.committed, 0)


def progress(settings: Settings) -> list[RegionProgress]:
    """Committed offsets of the projector group against the topics' ends: the initial-load
    (and catch-up) progress shown by the CLI, without touching any WMS."""
    # A consumer of the group that never subscribes: it reads commits, joins nothing.
    consumer = KafkaConsumer(
        **settings.kafka_client_config(),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        tps = [TopicPartition(r.cdc_topic, 0) for r in settings.region_list()]
        existing = set(consumer.topics())
        tps = [tp for tp in tps if tp.topic in existing]
        ends = consumer.end_offsets(tps) if tps else {}
        regions = {r.cdc_topic: r.name for r in settings.region_list()}
        return [
            RegionProgress(regions[tp.topic], consumer.committed(tp) or 0, int(ends.get(tp, 0)))
            for tp in tps
        ]
    finally:
        consumer.close()
