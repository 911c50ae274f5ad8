"""The benchmarks' quick profile runs every measurement end to end on the real chain
(small sizes: a smoke run, not the README's figures) and writes its results and plots."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import MEASUREMENTS, main
from bench.common import RESULTS_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.bench]


@pytest.mark.timeout(1800)
def test_every_measurement_of_the_quick_profile_runs() -> None:
    assert main(["--quick"]) == 0
    report = json.loads((RESULTS_DIR / "quick.json").read_text())
    assert report["failed"] == {}
    assert set(report["results"]) == set(MEASUREMENTS)
    assert {row["figure"] for row in report["summary"]} >= {
        "ingest: events/s projected",
        "freshness p99",
        "API single-SKU p99",
        "WMS throughput with / without replication",
        "projector CPU per WMS transaction",
        "idle demo CPU",
    }
    assert report["memory_peak_rss_mb"], "no peak RSS measured"
    for png in ("quick-freshness.png", "quick-ingest.png"):
        assert (RESULTS_DIR / png).stat().st_size > 10_000


@pytest.mark.timeout(900)
def test_the_projector_cpu_measurement_of_the_quick_profile_runs() -> None:
    """`projector_cpu` alone (`--only`): the projector's CPU per transaction and the idle
    demo's cores are measured and shown against their goals."""
    assert main(["--quick", "--only", "projector_cpu"]) == 0
    report = json.loads((RESULTS_DIR / "quick.json").read_text())
    assert report["failed"] == {}
    result = report["results"]["projector_cpu"]
    assert result["projector"]["window"]["transactions"] > 0
    assert result["cpu_ms_per_tx"] > 0
    assert result["achieved_ops_per_s"] > 0
    assert result["demo"]["window"]["transactions"] > 0, "the demo's warehouses are at work"
    assert result["demo_cores"] > 0
    assert {row["figure"] for row in report["summary"]} >= {
        "projector CPU per WMS transaction",
        "projector CPU: workload achieved",
        "idle demo CPU",
    }
    assert report["memory_peak_rss_mb"]["projector_cpu.project_peak_rss_mb"] > 0
    assert report["memory_peak_rss_mb"]["projector_cpu.demo_peak_rss_mb"] > 0
