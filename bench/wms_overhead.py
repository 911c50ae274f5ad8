"""WMS overhead benchmark: simulator throughput on a region with no replication slot,
against the same region while Debezium streams from its slot into Kafka, in one run.

    .venv/bin/python -m bench.wms_overhead            # pinned and unpinned, 4 pairs of 15 s
    .venv/bin/python -m bench.wms_overhead --quick    # CI smoke run: pinned, 2 pairs of 6 s

An isolated pipeline of one region (its own database, connector, slot, topic) is seeded;
the simulator then runs unthrottled for a fixed time per phase, alternating replication
off (connector stopped, slot dropped) and on (connector streaming from a fresh slot,
its snapshot done), off/on/off/on..., so drift cancels. Writes bench/results/wms_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import fmean
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from bench.common import RESULTS_DIR, Profile, machine
from bench.live import cpu_seconds
from infra.connect import ConnectClient, resnapshot
from infra.jvm import connect_service, kafka_service
from infra.pipeline import IsolatedPipeline
from infra.postgres import Cluster
from simulator.db import connect
from simulator.seed import parse_size, seed_region
from simulator.workload import run as run_workload
from stockcdc.settings import Region, Settings, get_settings

NAME = "wms_overhead"
GOAL: dict[str, float] = {"ratio": 0.9}
PLACEMENT = {
    "pinned": "pinned (the region's PostgreSQL, walsender included, and the simulator on one "
    "core, Kafka and Connect on the other, in both phases: the JVMs' work is not charged to "
    "the WMS, the decoding is)",
    "unpinned": "unpinned (every process on both cores, as the services run by default)",
}


@dataclass(frozen=True, slots=True)
class Sizes:
    """What one profile runs."""

    seed_size: str
    workers: int
    phase_s: float
    warmup_s: float
    pairs: int  # off/on pairs per mode
    modes: tuple[str, ...]  # "pinned", "unpinned"


def sizes(profile: Profile) -> Sizes:
    """The quick (CI) or full sizes."""
    return Sizes(
        seed_size=profile.pick("5k", "20k"),
        workers=4,
        phase_s=profile.pick(6.0, 15.0),
        warmup_s=profile.pick(2.0, 5.0),
        pairs=profile.pick(2, 4),
        modes=profile.pick(("pinned",), ("pinned", "unpinned")),
    )


# --------------------------------------------------------------------------- CPU pinning


def _tids(pid: int) -> list[int]:
    """Threads of a process."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _children(pid: int) -> list[int]:
    """Direct children of a process (PostgreSQL backends of a postmaster)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def service_pids(settings: Settings, region: Region) -> tuple[int, int, int]:
    """Pids of the region's postmaster, Kafka and Connect (all must be running)."""
    pg = Cluster(settings, region).pid()
    kafka = kafka_service(settings).pid()
    connect_ = connect_service(settings).pid()
    if pg is None or kafka is None or connect_ is None:
        raise RuntimeError(f"PostgreSQL {region.name}, Kafka and Connect must be running")
    return pg, kafka, connect_


class Pinning:
    """The region's PostgreSQL and this process on one core, Kafka and Connect on the
    others; on exit every thread gets back its process's original affinity."""

    def __init__(self, postmaster: int, jvms: tuple[int, ...]) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise RuntimeError("pinning needs two cores")
        self.wms_cpus, self.cdc_cpus = {cpus[0]}, set(cpus[1:])
        self.postmaster, self.jvms = postmaster, jvms
        self._original = {p: os.sched_getaffinity(p) for p in (postmaster, *jvms, os.getpid())}

    def _groups(self) -> Iterator[tuple[int, list[int]]]:
        """(process whose affinity applies, its threads or backends) now."""
        yield self.postmaster, [self.postmaster, *_children(self.postmaster)]
        yield os.getpid(), _tids(os.getpid())
        for jvm in self.jvms:
            yield jvm, _tids(jvm)

    def _apply(self, mask_of: dict[int, set[int]]) -> None:
        for owner, tids in self._groups():
            for tid in tids:
                with suppress(ProcessLookupError):  # a thread or backend gone meanwhile
                    os.sched_setaffinity(tid, mask_of[owner])

    def __enter__(self) -> Pinning:
        wms, cdc = self.wms_cpus, self.cdc_cpus
        self._apply({self.postmaster: wms, os.getpid(): wms, **dict.fromkeys(self.jvms, cdc)})
        return self

    def __exit__(self, *exc: object) -> None:
        self._apply(self._original)


# --------------------------------------------------------------------------- replication


class Replication:
    """Turns capture of the pipeline's one region on (connector streaming from a fresh
    slot, snapshot done) and off (connector stopped, slot dropped)."""

    def __init__(self, pipeline: IsolatedPipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.region = pipeline.regions[0]
        self.registered = False
        self.consumer = KafkaConsumer(
            **self.settings.kafka_client_config(), enable_auto_commit=False
        )
        self.tp = TopicPartition(self.region.cdc_topic, 0)

    def close(self) -> None:
        self.consumer.close()

    def end_offset(self) -> int:
        if self.region.cdc_topic not in self.consumer.topics():
            return 0
        return int(self.consumer.end_offsets([self.tp])[self.tp])

    def _slot_active(self) -> bool | None:
        with psycopg.connect(self.settings.pg_dsn(self.region, dbname="postgres")) as c:
            row = c.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (self.region.slot_name,),
            ).fetchone()
        return None if row is None else bool(row[0])

    def on(self, timeout_s: float = 300.0) -> None:
        """Start streaming from a fresh slot; returns once a marker committed after the
        slot existed was streamed (the snapshot is done then)."""
        if not self.registered:
            self.pipeline.start_capture()
            self.registered = True
        else:
            resnapshot(self.settings, self.region)
        deadline = time.monotonic() + timeout_s
        while not self._slot_active():
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {self.region.slot_name} not created")
            time.sleep(0.2)
        self.streamed(deadline - time.monotonic())

    def streamed(self, timeout_s: float = 120.0) -> float:
        """Commit a marker row and wait until Debezium streamed it into Kafka; returns
        the seconds that took (how far behind replication is)."""
        offset = self.end_offset()
        code = f"SYNC-{uuid.uuid4().hex[:10]}"
        with connect(self.settings, self.region) as conn:
            conn.execute("INSERT INTO owner (code, name) VALUES (%s, 'sync marker')", (code,))
        committed = time.perf_counter()
        self.consumer.assign([self.tp])
        self.consumer.seek(self.tp, offset)
        needle = code.encode()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200).values():
                for rec in records:
                    if rec.value and needle in rec.value and json.loads(rec.value)["op"] == "c":
                        return time.perf_counter() - committed
        raise TimeoutError(f"marker {code} not streamed in {timeout_s:.0f}s")

    def off(self, timeout_s: float = 60.0) -> None:
        """Stop the connector and drop its slot: the region has no replication at all."""
        if not self.registered:
            return
        name = self.region.connector_name
        deadline = time.monotonic() + timeout_s
        with ConnectClient(self.settings) as client:
            client.stop_connector(name)
            while (client.status(name) or {}).get("connector", {}).get("state") != "STOPPED":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"connector {name} did not stop")
                time.sleep(0.2)
        while self._slot_active():
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {self.region.slot_name} still active")
            time.sleep(0.2)
        with psycopg.connect(
            self.settings.pg_dsn(self.region, dbname="postgres"), autocommit=True
        ) as c:
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (self.region.slot_name,),
            )

    def walsender_pid(self) -> int | None:
        with psycopg.connect(self.settings.pg_dsn(self.region, dbname="postgres")) as c:
            row = c.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                (self.region.slot_name,),
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])


# --------------------------------------------------------------------------- the run


def _phase(
    rep: Replication, state: str, sz: Sizes, seed: int, jvms: tuple[int, ...]
) -> dict[str, Any]:
    """One phase: replication `state`, the simulator unthrottled for `phase_s`."""
    switched = time.perf_counter()
    if state == "on":
        rep.on()
    else:
        rep.off()
    switch_s = time.perf_counter() - switched
    walsender = rep.walsender_pid() if state == "on" else None
    offset0 = rep.end_offset()
    cpu0 = {p: cpu_seconds(p) for p in (*jvms, *([walsender] if walsender else []))}
    report = run_workload(
        rep.settings, [rep.region], workers=sz.workers, duration=sz.phase_s, seed=seed
    )[0]
    cpu = {p: cpu_seconds(p) - c for p, c in cpu0.items()}
    out: dict[str, Any] = {
        "replication": state,
        "switch_s": round(switch_s, 1),
        "ops_per_s": round(report.rate, 1),
        "applied": report.applied,
        "errors": sum(report.stats.errors.values()),
        "seconds": round(report.seconds, 2),
        "wms_txn_latency_ms": {f"p{q}": round(report.latency(q), 2) for q in (50, 99)},
        "kafka_connect_cpu_cores": round(sum(cpu[p] for p in jvms) / report.seconds, 2),
    }
    if state == "on":
        out["streamed_behind_s"] = round(rep.streamed(), 2)
        out["events_streamed"] = rep.end_offset() - offset0
        if walsender is not None:
            out["walsender_cpu_cores"] = round(cpu[walsender] / report.seconds, 2)
    return out


def _mode(rep: Replication, mode: str, sz: Sizes, seed: int) -> dict[str, Any]:
    """Off/on pairs in one CPU placement; the ratio of the means, and of each pair (the
    machine's noise)."""
    postmaster, *jvm_pids = service_pids(rep.settings, rep.region)
    jvms = tuple(jvm_pids)
    pinning: AbstractContextManager[Any] = (
        Pinning(postmaster, jvms) if mode == "pinned" else nullcontext()
    )
    states = ("off", "on") * sz.pairs
    with pinning:
        phases = [_phase(rep, state, sz, seed + i, jvms) for i, state in enumerate(states)]
    off = [p["ops_per_s"] for p in phases if p["replication"] == "off"]
    on = [p["ops_per_s"] for p in phases if p["replication"] == "on"]
    return {
        "off_ops_per_s": round(fmean(off), 1),
        "on_ops_per_s": round(fmean(on), 1),
        "ratio": round(fmean(on) / fmean(off), 3),
        "pair_ratios": [round(b / a, 3) for a, b in zip(off, on, strict=True)],
        "phases": phases,
    }


def _method(sz: Sizes) -> str:
    """The "method" sentence of the result, from the sizes run."""
    return (
        f"Simulator throughput on one region, same {sz.workers} workers unthrottled for "
        f"{sz.phase_s:.0f} s per phase, alternating replication off (no slot) and on (Debezium "
        f"streaming from its slot into Kafka) {sz.pairs} times; ratio = mean on / mean off. "
        f"CPU placement: {' and '.join(PLACEMENT[m] for m in sz.modes)}."
    )


def run(profile: Profile, sz: Sizes | None = None) -> dict[str, Any]:
    """Seed one region of an isolated pipeline, then the alternating phases per mode
    (`sz` overrides the profile's sizes)."""
    sz = sz or sizes(profile)
    base = get_settings()
    one_region = base.model_copy(update={"regions": base.regions[:1]})
    with tempfile.TemporaryDirectory(prefix="bench-wms-overhead-") as tmp:
        pipeline = IsolatedPipeline(one_region, Path(tmp))
        s, region = pipeline.settings, pipeline.regions[0]
        rep: Replication | None = None
        try:
            with connect(s, region) as conn:
                seed_region(conn, region, seed=5, size=parse_size(sz.seed_size))
            rep = Replication(pipeline)
            run_workload(s, [region], workers=sz.workers, duration=sz.warmup_s, seed=1)
            modes = {mode: _mode(rep, mode, sz, 10 * (i + 1)) for i, mode in enumerate(sz.modes)}
        finally:
            if rep is not None:
                rep.close()
            pipeline.close()
    headline = modes.get("pinned") or modes["unpinned"]
    return {
        "name": NAME,
        "profile": profile.name,
        "method": _method(sz),
        "goal": GOAL,
        "machine": machine(),
        "region": region.name,
        "sizes": asdict(sz),
        "off_ops_per_s": headline["off_ops_per_s"],
        "on_ops_per_s": headline["on_ops_per_s"],
        "ratio": headline["ratio"],
        "met": {"ratio": headline["ratio"] >= GOAL["ratio"]},
        "modes": modes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (CI)")
    parser.add_argument("--phase-s", type=float, help="seconds of each phase")
    parser.add_argument("--pairs", type=int, help="off/on pairs per mode")
    parser.add_argument("--modes", help="comma separated: pinned, unpinned")
    args = parser.parse_args()
    profile = Profile("quick" if args.quick else "full")
    sz = sizes(profile)
    sz = replace(
        sz,
        phase_s=args.phase_s or sz.phase_s,
        pairs=args.pairs or sz.pairs,
        modes=tuple(args.modes.split(",")) if args.modes else sz.modes,
    )
    result = run(profile, sz)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
