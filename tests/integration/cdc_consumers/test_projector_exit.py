"""`stockcdc project` and `stockcdc serve` exit non-zero when the projector dies, for a
supervisor to restart them, instead of exiting 0 (`project`) or serving ever staler
figures (`serve`); `serve --no-projector` is not concerned and stops cleanly on SIGTERM.

The projector dies inside `Projector.run`: its Kafka is a port nobody listens on, so
kafka-python gives up bootstrapping after its 30 s (not a setting of ours). The
commands run at once, each on its own chDB path and state directory, needing no
service at all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: kafka-python's bootstrap timeout (30 s) and the start-up around it, with room to spare.
DEATH_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Command:
    """One `stockcdc` command in its own process, its output in `log_path`."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    api_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.log()}"
            assert time.monotonic() < deadline, f"the API never answered: {self.log()}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Command]]:
    dead_kafka = free_port()
    started: dict[str, Command] = {}
    argv = {
        "project": ["project", "--no-progress"],
        "project-progress": ["project", "--progress"],
        "serve": ["serve"],
        "serve-alone": ["serve", "--no-projector"],
    }
    try:
        for name, args in argv.items():
            base = tmp_path_factory.mktemp(name)
            port = free_port()
            env = {
                **os.environ,
                "STOCKCDC_STATE_DIR": str(base / "state"),
                "STOCKCDC_CLICKHOUSE_URL": f"chdb://{base / 'clickhouse'}",
                "STOCKCDC_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{dead_kafka}",
                "STOCKCDC_RECONCILE_INTERVAL_S": "0",
                "STOCKCDC_PROJECTOR_METRICS_PORT": "0",
                "STOCKCDC_API_PORT": str(port),
            }
            log_path = base / "out.log"
            with log_path.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "stockcdc", *args],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started[name] = Command(proc, log_path, port)
        # the APIs come up in seconds, long before the projectors give up on Kafka
        started["serve"].wait_healthy()
        started["serve-alone"].wait_healthy()
        yield started
    finally:
        for c in started.values():
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait(timeout=30)


def test_project_exits_1_when_the_projector_dies(commands: dict[str, Command]) -> None:
    c = commands["project"]
    assert c.proc.wait(timeout=DEATH_S) == 1, c.log()
    log = c.log()
    assert "projector.failed" in log, log
    assert "Unable to bootstrap" in log, log  # the projector's own error, with its traceback


def test_project_with_progress_bars_exits_1_the_same_way(commands: dict[str, Command]) -> None:
    """The progress bars read the group's offsets from the same dead Kafka: that is
    logged and waited out, the projector's own death decides the exit."""
    c = commands["project-progress"]
    assert c.proc.wait(timeout=DEATH_S) == 1, c.log()
    log = c.log()
    for line in ("project.progress_unavailable", "projector.failed", "Unable to bootstrap"):
        assert line in log, log


def test_serve_stops_the_api_and_exits_1_when_the_projector_dies(
    commands: dict[str, Command],
) -> None:
    c = commands["serve"]  # its API served while the projector was starting (fixture)
    assert c.proc.wait(timeout=DEATH_S) == 1, c.log()
    log = c.log()
    for line in ("projector.failed", "serve.projector.died", "serve.stopped"):
        assert line in log, log
    assert not c.healthy()


def test_serve_without_a_projector_keeps_serving_and_stops_cleanly(
    commands: dict[str, Command],
) -> None:
    c = commands["serve-alone"]
    # the others' projectors have died by now: this one has none, it carries on
    commands["project"].proc.wait(timeout=DEATH_S)
    assert c.proc.poll() is None, c.log()
    assert c.healthy()
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(timeout=60) == 0, c.log()
    assert "serve.stopped" in c.log()
    assert "projector.failed" not in c.log()
