"""The benchmark summary shows each figure against the goal issue 15 sets for it."""

from typing import Any

from bench.__main__ import _goals


def test_summary_holds_the_goals_of_issue_15() -> None:
    results: dict[str, dict[str, Any]] = {
        "freshness": {
            "freshness_ms": {"p50_ms": 250.0, "p99_ms": 1200.0},
            "workload": {"achieved_ops_per_s": 151.0},
        },
        "projector_cpu": {"cpu_ms_per_tx": 0.8, "achieved_ops_per_s": 99.0, "demo_cores": 0.2},
        "ingest": {"projected_events_per_s": 30_000.0, "ratio_projected_to_bare": 0.7},
        "api": {
            "stock_one_p99_ms": 9.0,
            "stock_one_rps": 600.0,
            "reads": {
                "lots": {"sequential": {"p99_ms": 40.0}},
                "serial": {"sequential": {"p99_ms": 60.0}},
                "movements_sku_100": {"sequential": {"p99_ms": 50.0}},
            },
        },
    }
    rows = {figure: (goal, met) for figure, _, goal, met in _goals(results)}
    assert rows == {
        "freshness p50": ("≤ 300 ms", True),
        "freshness p99": ("≤ 1,000 ms", False),
        "freshness: workload achieved": ("≥ 150 ops/s", True),
        "projector CPU per WMS transaction": ("≤ 1 ms", True),
        "projector CPU: workload achieved": ("≥ 100 ops/s", False),
        "idle demo CPU": ("≤ 0.15 cores", False),
        "ingest: events/s projected": ("≥ 25,000 ev/s", True),
        "ingest: projected / bare": ("≥ 0.8", False),
        "API single-SKU p99": ("≤ 10 ms", True),
        "API single-SKU requests/s": ("≥ 500 req/s", True),
        "API lots p99": ("≤ 50 ms", True),
        "API serial p99": ("≤ 50 ms", False),
        "API movements_sku_100 p99": ("≤ 50 ms", True),
    }


def test_a_measurement_not_run_has_no_rows() -> None:
    assert _goals({"api": {"stock_one_p99_ms": 9.0}}) == [
        ("API single-SKU p99", "9 ms", "≤ 10 ms", True)
    ]
