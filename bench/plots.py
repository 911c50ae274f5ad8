"""PNG plots of benchmark results (matplotlib's object API: no pyplot state, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bench.common import percentile


def plot_freshness(result: dict[str, Any], path: Path) -> None:
    """Histogram and CDF of the freshness samples, with p50/p99 and the goal lines."""
    samples = sorted(result["plots"]["freshness_ms"])
    if not samples:
        return
    goal = result["goal"]
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    fig = Figure(figsize=(11, 4.2))
    hist, cdf = fig.subplots(1, 2)
    hist.hist(samples, bins=min(60, max(10, len(samples) // 8)), color="#4c72b0")
    hist.set_xlabel("commit → visible in the API (ms)")
    hist.set_ylabel("samples")
    cdf.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], color="#4c72b0")
    cdf.set_xlabel("commit → visible in the API (ms)")
    cdf.set_ylabel("fraction of samples")
    cdf.set_ylim(0, 1.01)
    for ax in (hist, cdf):
        ax.axvline(p50, color="#55a868", label=f"p50 {p50:.0f} ms")
        ax.axvline(p99, color="#c44e52", label=f"p99 {p99:.0f} ms")
        ax.axvline(goal["p50_ms"], color="#55a868", linestyle=":", label="goal p50")
        ax.axvline(goal["p99_ms"], color="#c44e52", linestyle=":", label="goal p99")
        ax.grid(alpha=0.3)
    hist.legend(fontsize=8)
    rate = result.get("workload", {}).get("achieved_ops_per_s")
    fig.suptitle(
        f"Freshness, {len(samples)} samples"
        + (f", workload {rate:.0f} ops/s" if rate is not None else "")
        + f" ({result.get('profile', '')})"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_ingest(result: dict[str, Any], path: Path) -> None:
    """Events committed over time while the projector replays the backlog, and the rate
    per interval, against the goal rate and the bare consumer's mean rate."""
    timeline = result["plots"]["ingest_timeline"]
    if len(timeline) < 2:
        return
    t = [p[0] for p in timeline]
    n = [p[1] for p in timeline]
    rate_t = [(t[i] + t[i - 1]) / 2 for i in range(1, len(t))]
    rate = [(n[i] - n[i - 1]) / max(t[i] - t[i - 1], 1e-9) for i in range(1, len(t))]
    fig = Figure(figsize=(11, 4.2))
    total, per_s = fig.subplots(1, 2)
    total.plot(t, n, color="#4c72b0")
    total.set_xlabel("seconds")
    total.set_ylabel("events committed")
    per_s.plot(rate_t, rate, color="#4c72b0", linewidth=0.8, label="projected")
    per_s.axhline(result["goal"]["events_per_s"], color="#c44e52", linestyle=":", label="goal")
    bare = result.get("bare_kafka_python_events_per_s")
    if bare:
        per_s.axhline(bare, color="#8172b2", linestyle="--", label="bare kafka-python (mean)")
    per_s.set_xlabel("seconds")
    per_s.set_ylabel("events/s")
    per_s.legend(fontsize=8)
    for ax in (total, per_s):
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Ingest of {result.get('backlog_events', n[-1]):,} events"
        + (f" ({p})" if (p := result.get("profile")) else "")
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
