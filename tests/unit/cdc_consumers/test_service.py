"""The scheduler of in-process jobs (reconciliation): runs on its interval, survives a
failing run, never runs at interval 0, stops with its block. The projector's thread
(`running`): an error that ends its run is logged and kept, for the command to exit 1."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import cast

from structlog.testing import capture_logs

from cdc_consumers.projector import Projector, ProjectorError
from cdc_consumers.service import every, running


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
