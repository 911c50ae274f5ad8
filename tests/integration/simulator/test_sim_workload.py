"""The workload in three regions at once: invariants hold after thousands of concurrent
mixed operations, the target rate is held, and the same seed gives the same database."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import date

import psycopg
import pytest

from simulator.db import connect
from simulator.invariants import check_invariants
from simulator.seed import parse_size, seed_region
from simulator.workload import run
from stockcdc.settings import WMS_TABLES, Region, Settings

pytestmark = pytest.mark.integration

AS_OF = date(2025, 6, 1)


def _seed(settings: Settings, region: Region, dbname: str, seed: int, size: str) -> None:
    with connect(settings, region, dbname) as conn:
        seed_region(conn, region, seed=seed, size=parse_size(size), as_of=AS_OF)


def _table_hashes(settings: Settings, region: Region, dbname: str) -> dict[str, str]:
    with psycopg.connect(settings.pg_dsn(region, "app", dbname=dbname)) as conn:
        return {
            t: conn.execute(
                psycopg.sql.SQL(
                    "SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x.id), '')) FROM {} x"
                ).format(psycopg.sql.Identifier(t))
            ).fetchone()[0]  # type: ignore[index]
            for t in WMS_TABLES
        }


def test_same_seed_same_database(
    settings: Settings, scratch_wms_db: Callable[[Region], str]
) -> None:
    r0, r1 = settings.region_list()[:2]
    a, b, c, d = (scratch_wms_db(r) for r in (r0, r0, r0, r1))
    _seed(settings, r0, a, 7, "small")
    _seed(settings, r0, b, 7, "small")
    _seed(settings, r0, c, 8, "small")
    _seed(settings, r1, d, 7, "small")
    ha, hb, hc = (_table_hashes(settings, r0, n) for n in (a, b, c))
    assert ha == hb
    assert ha["inventory"] != hc["inventory"]
    with connect(settings, r0, a) as ca, connect(settings, r1, d) as cd:
        q = "SELECT code, id FROM owner ORDER BY code"
        owners_a, owners_d = ca.execute(q).fetchall(), cd.execute(q).fetchall()
        # same sellers under the same codes in every region, with different ids
        assert [o[0] for o in owners_a] == [o[0] for o in owners_d]
        assert [o[1] for o in owners_a] != [o[1] for o in owners_d]
        assert check_invariants(ca) == []
        assert check_invariants(cd) == []


def test_invariants_hold_after_concurrent_mixed_operations_in_three_regions(
    settings: Settings, scratch_wms_db: Callable[[Region], str]
) -> None:
    regions = settings.region_list()
    dbnames = {r.name: scratch_wms_db(r) for r in regions}
    for r in regions:
        _seed(settings, r, dbnames[r.name], 3, "3000")
    reports = run(settings, regions, dbname=dbnames, workers=4, count=2500, seed=3)
    for rep in reports:
        assert rep.stats.errors == {}, rep.stats.error_samples
        assert rep.applied >= 2500
        assert rep.latency(50) > 0
        assert {"allocate", "pick", "ship", "receive", "putaway", "move"} <= set(rep.stats.applied)
    applied: Counter[str] = Counter()
    for rep in reports:
        applied.update(rep.stats.applied)
    assert applied["transfer_out"] > 0
    for r in regions:
        with connect(settings, r, dbnames[r.name]) as conn:
            assert check_invariants(conn) == [], r.name
    # every transfer that shipped has its inbound TRANSFER order at the destination
    shipped = inbound = 0
    for r in regions:
        with connect(settings, r, dbnames[r.name]) as conn:
            shipped += conn.execute(
                "SELECT count(*) FROM outbound_order WHERE order_type = 'TRANSFER' "
                "AND status = 'SHIPPED'"
            ).fetchone()[0]  # type: ignore[index]
            inbound += conn.execute(
                "SELECT count(*) FROM inbound_order WHERE order_type = 'TRANSFER'"
            ).fetchone()[0]  # type: ignore[index]
    assert shipped == inbound


def test_target_rate_is_held(settings: Settings, scratch_wms_db: Callable[[Region], str]) -> None:
    region = settings.region_list()[0]
    name = scratch_wms_db(region)
    _seed(settings, region, name, 1, "tiny")
    started = time.monotonic()
    (rep,) = run(settings, [region], dbname=name, workers=2, rate=40, duration=2.5, seed=1)
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed <= 5.0
    assert 25 <= rep.rate <= 45  # about 40/s; slots without a target are given back
    assert rep.stats.errors == {}
