"""`stockcdc seed | run | truth` as a user runs them (the installed command line in a
subprocess), pointed at a throwaway database with `--region` and `--dbname`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from psycopg import sql

from simulator.db import connect
from simulator.invariants import check_invariants
from simulator.oracle import STATUS_FIGURES, read_truth
from stockcdc.settings import Region, Settings

pytestmark = pytest.mark.integration


def stockcdc(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the project's CLI; wide columns so rich does not wrap what the test reads."""
    return subprocess.run(
        [sys.executable, "-m", "stockcdc", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "300", "NO_COLOR": "1"},
    )


def _count(settings: Settings, region: Region, dbname: str, table: str) -> int:
    with connect(settings, region, dbname) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_cli_seed_run_truth_on_a_scratch_database(
    settings: Settings, scratch_wms_db: Callable[[Region], str]
) -> None:
    region = settings.region_list()[0]
    name = scratch_wms_db(region)
    target = ("--region", region.name, "--dbname", name)

    seeded = stockcdc("seed", *target, "--size", "tiny", "--seed", "4")
    assert seeded.returncode == 0, seeded.stderr
    balance = _count(settings, region, name, "inventory")
    assert balance > 0
    summary = re.search(r"seeded ([\d,]+) balance rows \(([\d,]+) rows\)", seeded.stderr)
    assert summary is not None, seeded.stderr
    assert int(summary[1].replace(",", "")) == balance
    assert region.name in seeded.stdout  # the per-region table
    ledger_before = _count(settings, region, name, "inventory_txn")

    ran = stockcdc("run", *target, "--count", "60", "--workers", "2", "--seed", "4", "--json")
    assert ran.returncode == 0, ran.stderr
    (report,) = json.loads(ran.stdout)
    assert report["region"] == region.name
    assert report["workers"] == 2
    assert report["applied"] == 60
    assert sum(report["by_operation"].values()) == 60
    assert report["errors"] == 0, report["error_samples"]
    assert report["achieved_rate"] > 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert _count(settings, region, name, "inventory_txn") > ledger_before
    with connect(settings, region, name) as conn:
        assert check_invariants(conn) == []

    shown = stockcdc("truth", *target, "--json")
    assert shown.returncode == 0, shown.stderr
    truth: dict[str, Any] = json.loads(shown.stdout)
    assert truth["stock"]
    assert truth["lots"]
    assert truth["ledger"]
    assert set(truth["snapshots"]) == {region.name}
    # the figures are the oracle's, read again (nothing runs any more)
    expected = read_truth(settings, [region], dbname=name).as_json()
    for part in ("stock", "lots", "serials", "ledger"):
        assert truth[part] == expected[part], part
    ledger = {(e["owner"], e["warehouse"], e["sku"]): e for e in truth["ledger"]}
    for fig in truth["stock"]:
        key = (fig["owner"], fig["warehouse"], fig["sku"])
        assert fig["region"] == region.name
        # every unit on hand is in exactly one figure; the ledger sums to the balances
        parts = fig["available"] + fig["allocated"] + sum(fig[f] for f in STATUS_FIGURES)
        assert fig["on_hand"] == parts, key
        if key in ledger:
            assert ledger[key]["d_on_hand"] == fig["on_hand"], key
            assert ledger[key]["d_allocated"] == fig["allocated"], key
        else:
            assert fig["on_hand"] == 0 < fig["inbound_expected"], key

    table = stockcdc("truth", *target, "--limit", "5")
    assert table.returncode == 0, table.stderr
    counts = re.search(r"(\d+) keys, (\d+) lot rows, (\d+) serials", table.stderr)
    assert counts is not None, table.stderr
    assert int(counts[1]) == len(truth["stock"])
    assert int(counts[2]) == len(truth["lots"])
    assert int(counts[3]) == len(truth["serials"])
    first = truth["stock"][0]
    assert first["sku"] in table.stdout
    assert "on_hand" in table.stdout
