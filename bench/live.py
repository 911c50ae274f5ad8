"""The product as benchmarks run it: `stockcdc serve` (projector + Query API in one process,
as in embedded mode) in a child process configured by `STOCKCDC_*` variables, and CPU
accounting of the processes involved.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, SecretStr

from query_api.auth import Scope, new_key
from stockcdc.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def settings_env(settings: Settings) -> dict[str, str]:
    """Every field of `settings` as its `STOCKCDC_<NAME>` variable (nested groups as
    `STOCKCDC_<GROUP>__<NAME>`), so a child process built from the environment gets
    exactly these settings."""
    env: dict[str, str] = {}
    todo: list[tuple[str, BaseModel]] = [("STOCKCDC_", settings)]
    while todo:
        prefix, model = todo.pop()
        for name in type(model).model_fields:
            value = getattr(model, name)
            if value is None:
                continue
            if isinstance(value, BaseModel):
                todo.append((f"{prefix}{name.upper()}__", value))
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, dict):
                value = json.dumps(value)
            env[f"{prefix}{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine since boot; diff two readings."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return float(total - idle), float(total)


class ServeProcess:
    """`python -m stockcdc serve` on a free port over `settings` (its chDB path, topics,
    group), with a fresh OMS key; logs go to `log_path`. Use as a context manager."""

    def __init__(self, settings: Settings, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.api_key, key_line = new_key(Scope.OMS, None)
        self.args = args  # more `serve` options, e.g. --no-projector
        self.port = free_port()
        self.settings = settings.model_copy(
            update={"api_port": self.port, "api_host": "127.0.0.1", "api_keys": (key_line,)}
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the process and wait until the API answers /healthz."""
        env = {**os.environ, **settings_env(self.settings)}
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "stockcdc", "serve", *self.args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as http:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"stockcdc serve exited early:\n{self.log_tail()}")
                try:
                    if http.get("/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stockcdc serve not up in {timeout_s:.0f}s")
                time.sleep(0.2)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGINT (the API drains, the projector commits), then SIGKILL if it hangs."""
        code = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                code = self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def metrics(self, names: tuple[str, ...]) -> dict[str, float]:
        """Prometheus samples of the process's /metrics, summed over labels, by name."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10.0).text
        out = dict.fromkeys(names, 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in out:
                    out[sample.name] += sample.value
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> ServeProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
