"""The fault suite's profile: `short` (CI, the default) or `long` (STOCKCDC_FAULT_PROFILE=
long, `make faults`): how many crashes, how long outages and workloads last."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from read_model.reconcile import Report
from simulator.workload import run as run_workload
from stockcdc.settings import Region, Settings


@dataclass(frozen=True)
class Profile:
    kills: int  # kill -9 of the consumer
    outage_s: float  # a regional PostgreSQL stopped this long
    rate: float  # workload operations per second per region
    write_failure_s: float  # ClickHouse refuses every write this long


PROFILES = {
    "short": Profile(kills=6, outage_s=15, rate=20, write_failure_s=3),
    "long": Profile(kills=25, outage_s=60, rate=40, write_failure_s=20),
}


def profile() -> Profile:
    name = os.environ.get("STOCKCDC_FAULT_PROFILE", "short")
    if name not in PROFILES:
        raise ValueError(f"STOCKCDC_FAULT_PROFILE={name!r}: one of {sorted(PROFILES)}")
    return PROFILES[name]


@contextmanager
def workload(
    settings: Settings, regions: list[Region], rate: float, seed: int
) -> Iterator[threading.Thread]:
    """A mixed workload in every region until the block exits (then it is joined)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_workload(settings, regions, workers=2, rate=rate, seed=seed, stop=stop)
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="workload", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not errors, f"the workload failed: {errors[0]!r}"


def assert_zero_differences(report: Report) -> None:
    problems = [
        f"{r.region}: {r.detail or ''} {[t.summary() for t in r.tables if not t.ok]} "
        f"{r.figures[:3]}"
        for r in report.regions
        if not r.comparable or r.differences
    ]
    assert report.ok, problems
