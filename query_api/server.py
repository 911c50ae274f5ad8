"""`stockcdc serve`: the API under uvicorn, with the projector in a background thread of
the same process (embedded chDB allows one process per path) or alone (a ClickHouse
server; the projector then runs as `stockcdc project` elsewhere).

Ctrl-C / SIGTERM: uvicorn stops taking requests and drains, then the projector finishes
its batch and commits its offsets, and `serve` returns 0. A projector that dies stops
the API too, and `serve` returns 1 (the command's exit status): an API whose projector
is gone would serve ever staler figures; a supervisor restarts the process instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import structlog
import uvicorn

from cdc_consumers.service import (
    ProjectorThread,
    build_projector,
    reconciling,
    running,
    stop_on_signals,
)
from query_api.app import create_app
from query_api.service import QueryService, ReadModel
from read_model.client import make_client
from stockcdc.settings import Settings

log = structlog.get_logger(__name__)


def serve(settings: Settings, with_projector: bool = True) -> int:
    """Run until interrupted (then 0), or until the projector dies (then 1). The
    projector and the API have clients of their own (in embedded mode, connections to
    this process's one chDB engine): each client runs one query at a time, so reads never
    queue behind a projector batch or each other."""
    embedded = settings.clickhouse_dsn.startswith("chdb://")
    if embedded and not with_projector:
        log.warning("serve.no_projector.embedded", detail="nothing will update this read model")
    thread: ProjectorThread | None = None
    with ExitStack() as stack:
        stop = stack.enter_context(_stopping_on_signals())
        pool = ReadModel.open(settings)
        stack.callback(pool.close)
        app = create_app(settings, pool)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.api_host,
                port=settings.api_port,
                log_level="info",
                access_log=False,
            )
        )
        threading.Thread(
            target=_exit_when_set, args=(stop, server), name="signal-watch", daemon=True
        ).start()
        if with_projector:
            writer = make_client(settings)
            stack.callback(writer.close)
            # Embedded, this projector writes every region: the API follows its
            # watermarks as they are written (a server may have other members).
            service: QueryService = app.state.service
            pushed = service.follow_writer() if embedded else None
            thread = stack.enter_context(running(build_projector(settings, writer, None, pushed)))
            stack.enter_context(reconciling(settings))
            threading.Thread(
                target=_stop_when_dead, args=(thread, server), name="projector-watch", daemon=True
            ).start()
        log.info("serve.start", host=settings.api_host, port=settings.api_port,
                 projector=with_projector, embedded=embedded)  # fmt: skip
        server.run()  # returns after SIGINT/SIGTERM; ExitStack then stops the projector
    if thread is not None and thread.error is not None:
        log.error("serve.stopped", reason="the projector failed")
        return 1
    log.info("serve.stopped")
    return 0


def _stop_when_dead(thread: threading.Thread, server: uvicorn.Server) -> None:
    thread.join()
    if not server.should_exit:
        log.error("serve.projector.died", detail="stopping the API")
        server.should_exit = True


@contextmanager
def _stopping_on_signals() -> Iterator[threading.Event]:
    """`stop_on_signals` for the block, then the handlers found before. uvicorn handles
    SIGINT / SIGTERM while it runs, then puts back the handlers it found and raises the
    signal again: with Python's own, SIGTERM killed the process there, before the
    projector could finish its batch and commit (and SIGINT raised KeyboardInterrupt)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = stop_on_signals()
    try:
        yield stop
    finally:
        stop.set()  # ends _exit_when_set
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _exit_when_set(stop: threading.Event, server: uvicorn.Server) -> None:
    """Stop uvicorn once `stop` is set: a signal that came before uvicorn's handlers
    were in place (start-up) stops it too."""
    stop.wait()
    server.should_exit = True
