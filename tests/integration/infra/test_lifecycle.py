"""`up` and `down` are idempotent, `status` tells the truth about a killed service and
`down` leaves nothing running."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

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


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (this process, when `up` ran here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_down_leaves_nothing_running_and_twice_is_harmless(
    settings: Settings, services_up: None
) -> None:
    """Last in this module: it stops the whole stack, then brings it back for the rest."""
    before = services.status(settings)
    pids = [s.pid for s in before if s.pid is not None]
    ports = [s.port for s in before if s.port is not None]
    assert pids
    assert ports
    try:
        services.down(settings)
        after = services.status(settings)
        assert not [s.name for s in after if s.up]
        assert not [pid for pid in pids if _alive(pid)], "a service process survived down"
        assert not [port for port in ports if _listening(port)], "a port is still served"
        started = time.monotonic()
        services.down(settings)  # nothing left to stop: quick and harmless
        assert time.monotonic() - started < 10
    finally:
        services.up(settings)
    assert all(s.up for s in services.status(settings))
