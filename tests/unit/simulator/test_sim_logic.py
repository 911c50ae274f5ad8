"""Pure logic of the simulator: sizes, barcodes, the catalogue, mixes, pacing,
percentiles and the cross-region serial rule."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from simulator.errors import SeedError, SimulatorError
from simulator.model import SELLABLE_BY_LOC_TYPE
from simulator.oracle import SerialState, current_serial
from simulator.seed import SIZE_PRESETS, SeedSize, catalogue, ean13, parse_size, region_warehouses
from simulator.workload import DEFAULT_MIX, DRIVERS, Pacer, parse_mix, percentile
from stockcdc.settings import Region


@pytest.mark.parametrize(
    ("text", "rows"),
    [("tiny", 40), ("large", 3_400_000), ("250k", 250_000), ("3.4M", 3_400_000), ("1_000", 1000)],
)
def test_parse_size(text: str, rows: int) -> None:
    assert parse_size(text).balance_rows == rows


@pytest.mark.parametrize("text", ["huge", "-3", "0", ""])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(SeedError):
        parse_size(text)


def test_large_preset_reaches_ten_million_rows_across_three_regions() -> None:
    assert 3 * SIZE_PRESETS["large"] >= 10_000_000


def test_ean13_check_digit() -> None:
    assert ean13("400638133393") == "4006381333931"
    assert len(ean13("690001000002")) == 13


def test_catalogue_is_deterministic_and_mixes_tracking() -> None:
    size = SeedSize(40)
    owners, skus = catalogue(5, size)
    assert (owners, skus) == catalogue(5, size)
    assert catalogue(6, size)[1] != skus
    assert len({o.code for o in owners}) == size.owners
    for owner in owners:
        tracking = {s.tracking for s in skus if s.owner_code == owner.code}
        assert tracking == {"NONE", "LOT", "SERIAL"}
    assert all(s.shelf_life_days for s in skus if s.tracking == "LOT")
    assert all(float(s.weight_kg) > 0 and float(s.unit_cost) > 0 for s in skus)


def test_every_location_type_and_known_region_warehouses() -> None:
    assert {k for k, v in SELLABLE_BY_LOC_TYPE.items() if v} == {"STORAGE", "PICK"}
    assert [w[0] for w in region_warehouses(Region("us-west", 0, 1))] == ["US-LAX-1", "US-SEA-1"]
    assert region_warehouses(Region("mars-1", 3, 1))[0][0] == "MARS_1-WH-1"


def test_mix_covers_every_operation_and_parses_overrides() -> None:
    assert set(DEFAULT_MIX) == set(DRIVERS)
    mix = parse_mix("allocate=20, ship=0")
    assert (mix["allocate"], mix["ship"], mix["move"]) == (20, 0, DEFAULT_MIX["move"])
    with pytest.raises(SimulatorError):
        parse_mix("teleport=3")
    with pytest.raises(SimulatorError):
        parse_mix("ship=lots")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 50) == 0


def test_pacer_counts_and_gives_back() -> None:
    pacer = Pacer(rate=None, count=2, deadline=None)
    assert pacer.next_slot()
    assert pacer.next_slot()
    pacer.give_back()
    pacer.done()
    assert pacer.next_slot()
    pacer.done()
    assert not pacer.next_slot()


def test_pacer_waits_for_a_slot_in_flight_that_may_come_back() -> None:
    """The count is used up while one operation still runs; it finds nothing to do and
    gives its slot back: the run must not end one short (seen as 2499 of 2500)."""
    pacer = Pacer(rate=None, count=1, deadline=None)
    assert pacer.next_slot()
    threading.Timer(0.05, pacer.give_back).start()
    assert pacer.next_slot()  # waited for the slot instead of stopping
    pacer.done()
    assert not pacer.next_slot()


def test_pacer_holds_the_rate() -> None:
    pacer = Pacer(rate=100, count=30, deadline=None)
    started = time.monotonic()
    while pacer.next_slot():
        pacer.done()
    assert 0.25 <= time.monotonic() - started <= 0.6


def test_a_slot_given_back_is_handed_out_again_at_once() -> None:
    """The rate is of operations applied: one that found nothing to do takes no time
    slot (six applied at 20/s take a quarter second, not twelve slots' half)."""
    pacer = Pacer(rate=20, count=6, deadline=None)
    started, n = time.monotonic(), 0
    while pacer.next_slot():
        n += 1
        if n % 2:
            pacer.give_back()
        else:
            pacer.done()
    assert n == 12
    assert 0.2 <= time.monotonic() - started <= 0.4


def _serial(status: str, region: str, minute: int) -> tuple[str, SerialState]:
    at = datetime(2025, 1, 1, 0, minute, tzinfo=UTC)
    return region, SerialState(status, region, "WH", None, None, at, None, 1, at, (region,))


def test_current_serial_prefers_the_row_not_shipped() -> None:
    state = current_serial([_serial("IN_STOCK", "eu", 1), _serial("SHIPPED", "us", 5)])
    assert (state.status, state.region, state.regions) == ("IN_STOCK", "eu", ("eu", "us"))
    both_shipped = current_serial([_serial("SHIPPED", "eu", 7), _serial("SHIPPED", "us", 5)])
    assert both_shipped.region == "eu"
