"""`up` is idempotent and `status` tells the truth about a killed service."""

from __future__ import annotations

import os
import signal
import time

import pytest

from infra import services
from infra.jvm import connect_service
from stockcdc.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _by_name(settings: Settings) -> dict[str, services.ServiceStatus]:
    return {s.name: s for s in services.status(settings)}


def test_up_twice_is_harmless(settings: Settings, services_up: None) -> None:
    before = _by_name(settings)
    started = time.monotonic()
    services.up(settings)
    assert time.monotonic() - started < 30, "up on a running stack should be quick"
    after = _by_name(settings)
    assert {n: s.pid for n, s in after.items()} == {n: s.pid for n, s in before.items()}
    assert all(s.up for s in after.values())


def test_status_reports_a_killed_service_and_up_brings_it_back(
    settings: Settings, services_up: None
) -> None:
    connect = connect_service(settings)
    pid = connect.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while connect.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)

    status = _by_name(settings)
    assert not status["connect"].up
    assert status["connect"].pid is None
    assert all(not status[f"connector/{r.connector_name}"].up for r in settings.region_list())
    assert status["kafka"].up

    services.up(settings)
    status = _by_name(settings)
    assert all(s.up for s in status.values()), status
    assert status["connect"].pid not in (None, pid)
