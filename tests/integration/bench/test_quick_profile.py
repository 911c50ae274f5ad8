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
    }
    assert report["memory_peak_rss_mb"], "no peak RSS measured"
    for png in ("quick-freshness.png", "quick-ingest.png"):
        assert (RESULTS_DIR / png).stat().st_size > 10_000
