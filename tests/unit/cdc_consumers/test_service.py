"""The scheduler of in-process jobs (reconciliation): runs on its interval, survives a
failing run, never runs at interval 0, stops with its block; the reconciliation runs on
a client of its own. The projector's thread (`running`): an error that ends its run is
logged and kept, for the command to exit 1."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from cdc_consumers import service
from cdc_consumers.projector import Projector, ProjectorError
from cdc_consumers.service import every, reconciling, running
from read_model import reconcile
from stockcdc.settings import Settings


def test_every_runs_repeatedly_and_a_failure_does_not_stop_it() -> None:
    runs: list[float] = []
    done = threading.Event()

    def job() -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        if len(runs) >= 3:
            done.set()

    with every(0.02, job, "test-job"):
        assert done.wait(5), runs
    count = len(runs)
    time.sleep(0.1)
    assert len(runs) == count  # stopped with the block


def test_interval_zero_never_runs() -> None:
    runs: list[int] = []
    with every(0, lambda: runs.append(1), "off"):
        time.sleep(0.05)
    assert runs == []


class _Client:
    """Stands for a clickhouse-connect client: records that it was closed."""

    closed = False

    def close(self) -> None:
        self.closed = True


def test_the_reconciliation_queries_through_a_client_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The projector writes through its client from its own thread; a reconciliation
    through the same client would run a second query in that session at the same time
    (clickhouse-connect refuses it over HTTP: "Attempt to execute concurrent queries
    within the same session"). `reconciling` opens its own client and closes it."""
    opened: list[_Client] = []
    used: list[Any] = []
    ran = threading.Event()

    def make_client(settings: Settings) -> _Client:
        opened.append(_Client())
        return opened[-1]

    def run(settings: Settings, client: Any) -> None:
        used.append(client)
        ran.set()

    monkeypatch.setattr(service, "make_client", make_client)
    monkeypatch.setattr(reconcile, "reconcile", run)
    with reconciling(Settings(reconcile_interval_s=0.02)):
        assert ran.wait(5)
    assert len(opened) == 1
    assert used
    assert all(c is opened[0] for c in used)
    assert opened[0].closed


def test_no_reconciliation_opens_no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "make_client", lambda settings: pytest.fail("opened"))
    with reconciling(Settings(reconcile_interval_s=0)):
        time.sleep(0.05)


@dataclass
class FakeProjector:
    """What `running` uses of a Projector: `run` until `stop`, or fail."""

    error: Exception | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        if self.error is not None:
            raise self.error
        self.stop.wait()


def test_running_keeps_and_logs_the_error_that_killed_the_projector() -> None:
    boom = ProjectorError("topic x has no partitions after 60s")
    with capture_logs() as logs, running(cast(Projector, FakeProjector(boom))) as thread:
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert thread.error is boom
    (failed,) = [e for e in logs if e["event"] == "projector.failed"]
    assert failed["log_level"] == "error"
    assert "no partitions" in failed["error"]


def test_running_a_projector_stopped_as_asked_has_no_error() -> None:
    with capture_logs() as logs, running(cast(Projector, FakeProjector())) as thread:
        assert thread.is_alive()
    assert not thread.is_alive()
    assert thread.error is None
    assert not [e for e in logs if e["event"] == "projector.failed"]
