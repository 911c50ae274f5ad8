"""The scheduler of in-process jobs (reconciliation): runs on its interval, survives a
failing run, never runs at interval 0, stops with its block."""

from __future__ import annotations

import threading
import time

from cdc_consumers.service import every


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
