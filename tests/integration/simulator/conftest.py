"""Fixtures of the simulator's integration tests (hand-built cases live in sim_case)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from stockcdc.settings import Region, Settings
from tests.integration.simulator.sim_case import Wms, build


@pytest.fixture
def make_wms(
    settings: Settings, scratch_wms_db: Callable[[Region], str]
) -> Iterator[Callable[..., Wms]]:
    """Factory: a hand-built WMS in a region's scratch database."""
    made: list[Wms] = []

    def factory(region_index: int = 0, wh_code: str | None = None) -> Wms:
        region = settings.region_list()[region_index]
        w = build(settings, region, scratch_wms_db(region), wh_code or f"WH-{region_index}")
        made.append(w)
        return w

    yield factory
    for w in made:
        w.conn.close()
