"""What every benchmark shares: the profile (quick for CI smoke, full for the product's
figures), percentiles, and peak memory of a process.

Each measurement module exposes `run(profile: Profile) -> dict` returning JSON-ready
figures with their `goal`, and may add `plots` data that `bench.plots` draws. `python -m
bench` runs them all and writes `bench/results/<profile>.json`.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RESULTS_DIR = Path(__file__).parent / "results"

ProfileName = Literal["quick", "full"]


@dataclass(frozen=True, slots=True)
class Profile:
    """Sizes of one run: `quick` is a smoke run for CI (minutes, small data), `full` is
    what the README's figures come from (the sizes the goals are stated at)."""

    name: ProfileName

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    def pick(self, quick: Any, full: Any) -> Any:
        """The quick or the full value of a size."""
        return quick if self.quick else full


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return float(ordered[k])


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """n, p50/p95/p99/max in milliseconds, rounded for the report."""
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else 0.0,
    }


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of a live process, default this one, in MiB."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM in {path}")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
    }
