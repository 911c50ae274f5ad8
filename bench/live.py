"""The product as benchmarks run it: `stockcdc serve` (projector + Query API in one process,
as in embedded mode), `stockcdc project` or `stockcdc demo` in a child process configured by
`STOCKCDC_*` variables, the simulator's workload in another, the projector's counters, and
CPU accounting of the processes involved.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, SecretStr

from query_api.auth import Scope, new_key
from simulator.workload import run as run_workload
from stockcdc.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The projector's counters read before and after a measured window.
PROJECTOR_METRICS = (
    "stockcdc_flush_seconds_count",
    "stockcdc_flush_seconds_sum",
    "stockcdc_write_seconds_sum",
    "stockcdc_rows_write_seconds_sum",
    "stockcdc_transactions_total",
    "stockcdc_rows_written_total",
    "stockcdc_commit_failures_total",
)


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


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and all its live descendants, each with the
    time of the children it has reaped (so a child that ended in between still counts)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # ended while listed
            continue
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(child for child, parent in parents.items() if parent == p)
    total = 0.0
    for p in tree:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if p == pid:
                raise
            continue  # a descendant ended: its parent's reaped-children time has it
        total += sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine since boot; diff two readings."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return float(total - idle), float(total)


class ServeProcess:
    """`python -m stockcdc serve` on a free port over `settings` (its chDB path, topics,
    group), with a fresh OMS key; logs go to `log_path`. Use as a context manager.
    Subclasses run another command of the product the same way."""

    #: The `stockcdc` command run, and the path of `base_url` that answers 200 once it is up.
    command: tuple[str, ...] = ("serve",)
    ready_path = "/healthz"
    start_timeout_s = 120.0

    def __init__(self, settings: Settings, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.api_key, key_line = new_key(Scope.OMS, None)
        self.args = args  # more options of the command, e.g. `serve --no-projector`
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

    def start(self, timeout_s: float | None = None) -> None:
        """Start the process and wait until `ready_path` answers 200."""
        timeout_s = timeout_s or self.start_timeout_s
        name = " ".join(("stockcdc", *self.command))
        env = {**os.environ, **settings_env(self.settings)}
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "stockcdc", *self.command, *self.args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as http:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log_tail()}")
                try:
                    if http.get(self.ready_path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not up in {timeout_s:.0f}s:\n{self.log_tail()}")
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

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _families(self) -> Any:
        text = httpx.get(f"{self.base_url}/metrics", timeout=10.0).text
        return text_string_to_metric_families(text)

    def metrics(self, names: tuple[str, ...]) -> dict[str, float]:
        """Prometheus samples of the process's /metrics, summed over labels, by name."""
        out = dict.fromkeys(names, 0.0)
        for family in self._families():
            for sample in family.samples:
                if sample.name in out:
                    out[sample.name] += sample.value
        return out

    def insert_seconds(self) -> dict[str, float]:
        """Seconds the projector spent inserting into each table so far
        (`stockcdc_insert_seconds_total`, materialized views included)."""
        out: dict[str, float] = {}
        for family in self._families():
            for sample in family.samples:
                if sample.name == "stockcdc_insert_seconds_total":
                    out[sample.labels["table"]] = sample.value
        return out

    def lag_s(self) -> dict[str, float]:
        """Each projected region's lag (seconds): now minus the latest source time the
        projector applied, a transaction's commit or a Debezium heartbeat, whichever is
        later (an idle region stays current through its heartbeats)."""
        latest: dict[str, float] = {}
        names = ("stockcdc_watermark_commit_ts_seconds", "stockcdc_heartbeat_ts_seconds")
        for family in self._families():
            for sample in family.samples:
                if sample.name in names and "region" in sample.labels:
                    region = sample.labels["region"]
                    latest[region] = max(latest.get(region, 0.0), sample.value)
        now = time.time()
        return {region: round(now - ts, 3) for region, ts in latest.items()}

    def wait_caught_up(
        self, regions: int, max_lag_s: float = 2.0, timeout_s: float = 300.0
    ) -> float:
        """Wait until the projector has applied, in each of `regions` regions, a source
        time at most `max_lag_s` old (its initial snapshot and backlog done); returns
        how long that took."""
        started = time.monotonic()
        lags: dict[str, float] = {}
        while True:
            if not self.is_alive():
                raise RuntimeError(f"stockcdc exited while catching up:\n{self.log_tail()}")
            try:
                lags = self.lag_s()
            except httpx.HTTPError:
                lags = {}
            if len(lags) >= regions and max(lags.values()) <= max_lag_s:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"not caught up in {timeout_s:.0f}s: lags {lags}")
            time.sleep(0.5)

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


class ProjectProcess(ServeProcess):
    """`python -m stockcdc project --no-progress`: the projector alone, as deployed beside
    a separate API. Its Prometheus metrics (`projector_metrics_port`) are on the free
    port, at `base_url`/metrics; it is up once they answer."""

    command = ("project", "--no-progress")
    ready_path = "/metrics"

    def __init__(self, settings: Settings, log_path: Path, args: tuple[str, ...] = ()) -> None:
        super().__init__(settings, log_path, args)
        self.settings = self.settings.model_copy(update={"projector_metrics_port": self.port})


class DemoProcess(ServeProcess):
    """`python -m stockcdc demo --keep-services`: services up (already running: left as
    they are), seeded if empty, one change shown flowing, then the simulated warehouses,
    the projector and the API in one process, the API on the free port.

    `--keep-services` is not optional here: without it the demo stops Kafka, Connect and
    every PostgreSQL cluster on exit, which other users of the dev services share."""

    command = ("demo", "--keep-services")
    start_timeout_s = 600.0  # connectors registered, a change shown in each region


# --------------------------------------------------------------------------- the workload


def workload_child(settings: Settings, rate: float, workers: int, stop: Any, out: Any) -> None:
    """The simulator in its own process (its threads would otherwise share the measuring
    interpreter), at `rate` per region until `stop` (a multiprocessing Event) is set; puts
    its region reports and CPU time (or its error) on `out`."""
    halt = threading.Event()

    def relay() -> None:
        stop.wait()
        halt.set()

    threading.Thread(target=relay, daemon=True).start()
    try:
        reports = run_workload(
            settings, settings.region_list(), workers=workers, rate=rate, seed=11, stop=halt
        )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.put(
            {
                "regions": [r.as_dict() for r in reports],
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    except BaseException as exc:
        out.put({"error": repr(exc)})
        raise


class WorkloadProcess:
    """`workload_child` in a spawned process at `ops_per_s` over all of `settings`'
    regions, `workers` per region: `start()`, then `stop()` returns its report."""

    def __init__(self, settings: Settings, ops_per_s: float, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        rate = ops_per_s / len(settings.region_list())
        self._proc = ctx.Process(
            target=workload_child,
            args=(settings, rate, workers, self._stop, self._out),
            daemon=True,
        )

    def start(self) -> None:
        self._proc.start()

    def is_alive(self) -> bool:
        return self._proc.is_alive()

    def stop(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Stop the workload and return its report: `regions` (each `RegionReport.as_dict`)
        and `cpu_s`, or `error` when it failed."""
        self._stop.set()
        report: dict[str, Any] = self._out.get(timeout=timeout_s)
        self._proc.join(60)
        return report


def achieved_ops_per_s(report: dict[str, Any]) -> float:
    """Operations per second the workload applied, all regions together."""
    return float(sum(r["achieved_rate"] for r in report["regions"]))


def insert_shares(
    before: dict[str, float], after: dict[str, float], seconds: float, top: int = 8
) -> dict[str, float]:
    """The tables the projector spent most insert time on in a window, as the share of
    the window's wall time (from `ServeProcess.insert_seconds` at both ends)."""
    spent = {t: after[t] - before.get(t, 0.0) for t in after}
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])[:top]
    return {t: round(s / seconds, 3) for t, s in ranked if s > 0}


def projector_activity(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, Any]:
    """What the projector did in a window, from `PROJECTOR_METRICS` read at both ends:
    batches, the writer's time on them (their figures, then their rows), the time from
    a flush's write to its offsets' commit, throughput."""
    d = {k: after[k] - before[k] for k in before}
    flushes = d["stockcdc_flush_seconds_count"]
    writing = d["stockcdc_write_seconds_sum"] + d["stockcdc_rows_write_seconds_sum"]
    return {
        "batches_per_s": round(flushes / seconds, 1),
        "batch_write_ms_mean": round(1000 * d["stockcdc_write_seconds_sum"] / max(1.0, flushes)),
        "rows_write_ms_per_s": round(1000 * d["stockcdc_rows_write_seconds_sum"] / seconds),
        "writing_fraction_of_time": round(writing / seconds, 2),
        "flush_to_commit_ms_mean": round(
            1000 * d["stockcdc_flush_seconds_sum"] / max(1.0, flushes)
        ),
        "transactions_per_s": round(d["stockcdc_transactions_total"] / seconds, 1),
        "rows_written_per_s": round(d["stockcdc_rows_written_total"] / seconds),
        "offset_commits_refused": int(d["stockcdc_commit_failures_total"]),
    }
