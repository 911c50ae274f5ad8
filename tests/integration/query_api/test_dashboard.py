"""The seller dashboard in a real headless Chromium (Debian's package, driven by
Playwright) on the real chain: seeded regional WMS databases, a short workload, the
projector into embedded chDB, and the API under uvicorn serving the dashboard.

Each test walks the page as a seller would and compares what the page shows with the
simulator's oracle (truth read from the WMS databases): sign-in, the stock table, lot and
serial drill-down, serial lookup, the chart, a live update after a WMS commit (no page
reload), a freshness badge turning stale, and isolation between two sellers. Every page
is saved as a screenshot under test-artifacts/dashboard/.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from infra.browser import CHROMIUM, INSTALL_HINT
from infra.connect import ConnectClient
from infra.pipeline import IsolatedPipeline
from query_api.app import create_app
from query_api.auth import DEMO_KEYS, Scope, new_key
from query_api.service import ReadModel
from simulator.db import run_txn
from simulator.ops import freeze
from simulator.oracle import Truth, read_truth
from simulator.workload import run as run_workload
from tests.integration.chain import LiveChain, live_chain

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "dashboard"
UI_TIMEOUT_MS = 30_000
SELLER = "SELLER-0001"
SELLER_KEY = DEMO_KEYS[f"seller:{SELLER}"]
OTHER = "SELLER-0002"
OTHER_KEY, OTHER_LINE = new_key(Scope.SELLER, OTHER)
FIGURES = ("available", "allocated", "on_hand", "inbound_expected", "pending_putaway",
           "qc_hold", "frozen", "damaged", "returned", "expired")  # fmt: skip


@dataclass
class Live:
    chain: LiveChain
    base: str
    browser: Browser
    requests: list[str]

    @property
    def pipeline(self) -> IsolatedPipeline:
        return self.chain.pipeline

    def truth(self) -> Truth:
        return read_truth(self.pipeline.settings, self.pipeline.regions)


def _launch(pw: Playwright) -> Browser:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing ({CHROMIUM}): `make browser`, or {INSTALL_HINT}")
    try:
        return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    except PlaywrightError as exc:
        pytest.fail(f"Chromium ({CHROMIUM}) did not start: {exc}")


@pytest.fixture(scope="module")
def live(pipeline: IsolatedPipeline) -> Iterator[Live]:
    with live_chain(pipeline, seed=21, size="150") as chain:
        s = chain.settings
        run_workload(s, pipeline.regions, workers=2, count=80, seed=11)
        api_settings = s.model_copy(
            update={
                "api_watermark_cache_ms": 0,
                "api_live_lag_ms": 2000,
                "api_keys": (*s.api_keys, OTHER_LINE),
            }
        )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(api_settings, ReadModel([chain.client])),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        threading.Thread(target=server.run, daemon=True).start()
        try:
            deadline = time.monotonic() + 20
            while not server.started:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
            chain.wait_caught_up()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as pw:
                browser = _launch(pw)
                try:
                    yield Live(chain, f"http://127.0.0.1:{port}", browser, [])
                finally:
                    browser.close()
        finally:
            server.should_exit = True


@pytest.fixture
def page(live: Live) -> Iterator[Page]:
    """A fresh laptop-sized tab (own sessionStorage); every request it makes is kept."""
    context = live.browser.new_context(viewport={"width": 1366, "height": 900})
    p = context.new_page()
    p.set_default_timeout(UI_TIMEOUT_MS)
    p.on("request", lambda r: live.requests.append(r.url))
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/dashboard/")
    page.fill("#key", key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#stock-table tbody tr")


def table_rows(page: Page) -> dict[tuple[str, str], dict[str, str]]:
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        "#stock-table tbody tr",
        "trs => trs.map(tr => Object.fromEntries("
        "[...tr.cells].map(td => [td.dataset.field, td.textContent])))",
    )
    return {(r["warehouse"], r["sku"]): r for r in rows}


def expected_rows(truth: Truth, owner: str) -> dict[tuple[str, str], dict[str, str]]:
    return {
        (k.warehouse, k.sku): {f: str(getattr(fig, f)) for f in FIGURES}
        for k, fig in truth.stock.items()
        if k.owner == owner
    }


# -- tests (in file order: the live-update test changes the WMS) ------------------------


def test_sign_in_and_the_stock_table_equals_the_truth(live: Live, page: Page) -> None:
    page.goto(f"{live.base}/dashboard/")
    page.wait_for_selector("#sign-in")
    shot(page, "01-sign-in")
    page.fill("#key", "not-a-key")
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('Unknown key')")
    page.fill("#key", DEMO_KEYS["oms"])
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('for sellers')")

    sign_in(page, live.base, SELLER_KEY)
    assert page.inner_text("#who") == SELLER
    truth = live.truth()
    want = expected_rows(truth, SELLER)
    assert len(want) >= 3
    got = table_rows(page)
    assert set(got) == set(want)
    for key, figures in want.items():
        assert {f: got[key][f] for f in FIGURES} == figures, key
    page.wait_for_selector("#freshness .badge[data-state=live]")
    badges = page.eval_on_selector_all(".badge", "bs => bs.map(b => b.dataset.warehouse)")
    assert set(badges) >= {w for w, _ in want}
    shot(page, "02-stock-table")

    # search, filter and sort work on the same figures
    sku = sorted(want)[0][1]
    page.fill("#f-search", sku)
    assert set(table_rows(page)) == {k for k in want if sku.lower() in k[1].lower()}
    page.fill("#f-search", "")
    page.select_option("#f-show", "low")
    page.fill("#f-low", "5")
    low = {k for k, v in want.items() if int(v["available"]) <= 5}
    assert set(table_rows(page)) == low
    shot(page, "03-stock-low-stock-filter")
    page.select_option("#f-show", "all")
    page.click("th[data-sort=available]")
    page.click("th[data-sort=available]")  # second click: descending
    shown = [int(r["available"]) for r in table_rows(page).values()]
    assert shown == sorted(shown, reverse=True)
    assert page.locator("tr.low td[data-field=available]").count() == len(
        [k for k, v in want.items() if int(v["available"]) <= 5]
    )


def test_phone_width_layout(live: Live) -> None:
    context = live.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        sign_in(page, live.base, SELLER_KEY)
        # The page itself never scrolls sideways: only the table's own box does.
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, overflow
        shot(page, "04-stock-table-phone")
        key = sorted(expected_rows(live.truth(), SELLER))[0]
        page.click(f"#stock-table tr[data-warehouse='{key[0]}'][data-sku='{key[1]}']")
        page.wait_for_selector("#figures .figure")
        assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
        shot(page, "05-sku-phone")
    finally:
        context.close()


def test_lot_drill_down_in_fefo_order(live: Live, page: Page) -> None:
    truth = live.truth()
    key, lots = next((k, v) for k, v in truth.lots.items() if k.owner == SELLER and len(v) > 1)
    sign_in(page, live.base, SELLER_KEY)
    page.click(f"#stock-table tr[data-warehouse='{key.warehouse}'][data-sku='{key.sku}']")
    page.wait_for_selector("#lots-table tbody tr")
    fig = truth.stock[key]
    for f in ("available", "allocated", "on_hand", "frozen"):
        assert page.inner_text(f"#figures [data-field={f}] .value") == str(getattr(fig, f))
    rows = page.eval_on_selector_all(
        "#lots-table tbody tr",
        "trs => trs.map(tr => [tr.dataset.lot, ...[...tr.cells].map(td => td.textContent)])",
    )
    assert [r[0] for r in rows] == [lot.lot_no for lot in lots]  # FEFO order
    assert [r[1] for r in rows] == [str(lot.fefo_rank) for lot in lots]
    today = datetime.now(UTC).date()
    for r, lot in zip(rows, lots, strict=True):
        assert r[4] == (lot.expiry_date.isoformat() if lot.expiry_date else "none")
        if lot.expiry_date is not None:
            days = (lot.expiry_date - today).days
            assert r[5] == (
                f"expired {-days} d ago" if days < 0 else f"{days} d" if days else "today"
            )
        assert r[6:9] == [str(lot.available), str(lot.allocated), str(lot.on_hand)]
    shot(page, "06-lots")


def test_serial_drill_down_and_lookup(live: Live, page: Page) -> None:
    truth = live.truth()
    skey, state = next(
        (k, v)
        for k, v in truth.serials.items()
        if k.owner == SELLER and v.status == "IN_STOCK" and v.location is not None
    )
    sign_in(page, live.base, SELLER_KEY)
    page.goto(f"{live.base}/dashboard/#/sku/{state.warehouse}/{skey.sku}/serials")
    page.wait_for_selector(f"#serials-table tr[data-serial='{skey.serial_no}']")
    in_stock = {
        k.serial_no
        for k, v in truth.serials.items()
        if (k.owner, k.sku, v.warehouse, v.status)
        == (SELLER, skey.sku, state.warehouse, "IN_STOCK")
    }
    page.select_option("#serial-status", "IN_STOCK")
    page.wait_for_function(
        "want => JSON.stringify([...document.querySelectorAll('#serials-table tbody tr')]"
        ".map(r => r.dataset.serial).sort()) === want",
        arg=json.dumps(sorted(in_stock), separators=(",", ":")),
    )
    shot(page, "07-serials")

    page.click(f"#serials-table tr[data-serial='{skey.serial_no}'] a")
    page.wait_for_selector("#serial-current")
    assert page.inner_text("#serial-current [data-field=status] .value") == state.status
    assert page.inner_text("#serial-current [data-field=warehouse] .value") == state.warehouse
    assert page.inner_text("#serial-current [data-field=location] .value") == state.location
    regions = page.eval_on_selector_all(
        "#serial-history tbody tr", "t => t.map(r => r.cells[1].textContent)"
    )
    assert set(regions) == set(state.regions)
    shot(page, "08-serial-lookup")

    # the lookup form, typed by hand; an unknown serial is reported, not an error page
    page.goto(f"{live.base}/dashboard/#/serial")
    page.fill("#s-sku", skey.sku)
    page.fill("#s-serial", "NO-SUCH-SERIAL")
    page.click("#serial-form button[type=submit]")
    page.wait_for_selector("#serial-missing")


def test_movements_and_stock_over_time(live: Live, page: Page) -> None:
    truth = live.truth()
    key, totals = next(
        (k, v) for k, v in truth.ledger.items() if k.owner == SELLER and 1 < v.rows <= 200
    )
    sign_in(page, live.base, SELLER_KEY)
    page.goto(f"{live.base}/dashboard/#/sku/{key.warehouse}/{key.sku}/movements")
    page.wait_for_selector("#movements-table tbody tr")
    assert page.locator("#movements-table tbody tr").count() == totals.rows
    d_on_hand = page.eval_on_selector_all(
        "#movements-table tbody tr", "t => t.map(r => Number(r.cells[3].textContent))"
    )
    assert sum(d_on_hand) == totals.d_on_hand
    shot(page, "09-movements")

    page.click("nav.tabs a[data-tab=chart]")
    page.wait_for_selector("#chart canvas")
    legend = page.eval_on_selector_all(
        "#chart .u-legend .u-series .u-label", "ls => ls.map(l => l.textContent)"
    )
    warehouses = {k.warehouse for k in truth.ledger if (k.owner, k.sku) == (SELLER, key.sku)}
    assert set(legend) >= warehouses
    shot(page, "10-stock-over-time")


def test_stock_history_endpoint_equals_the_truth(live: Live) -> None:
    """The chart's data: the closing point per warehouse is the oracle's on-hand and
    allocated; a point in the middle equals the WMS ledger summed up to it."""
    truth = live.truth()
    headers = {"Authorization": f"Bearer {SELLER_KEY}"}
    skus = sorted({k.sku for k in truth.ledger if k.owner == SELLER})
    with httpx.Client(base_url=live.base, headers=headers, timeout=30) as api:
        for sku in skus:
            body = api.get(f"/v1/stock-history/{SELLER}/{sku}").json()
            closing = {
                s["warehouse"]: (s["points"][-1]["on_hand"], s["points"][-1]["allocated"])
                for s in body["series"]
            }
            want = {
                k.warehouse: (v.on_hand, v.allocated)
                for k, v in truth.stock.items()
                if (k.owner, k.sku) == (SELLER, sku)
            }
            # A key with only inbound stock has no ledger rows (no series): zeros.
            assert {w: closing.get(w, (0, 0)) for w in want} == want, sku
            assert {w for w, fig in closing.items() if fig != (0, 0)} <= set(want), sku

        sku = skus[0]
        body = api.get(f"/v1/stock-history/{SELLER}/{sku}", params={"points": 7}).json()
        for series in body["series"]:
            point = series["points"][len(series["points"]) // 2]
            at = datetime.fromisoformat(point["at"].replace("Z", "+00:00"))
            region = next(r for r in live.pipeline.regions if r.name == series["region"])
            with psycopg.connect(live.pipeline.settings.pg_dsn(region, "app")) as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(t.d_on_hand), 0), coalesce(sum(t.d_allocated), 0)"
                    " FROM inventory_txn t JOIN sku s ON s.id = t.sku_id"
                    " JOIN owner o ON o.id = s.owner_id JOIN warehouse w ON w.id = t.warehouse_id"
                    " WHERE o.code = %s AND s.sku_code = %s AND w.code = %s AND t.occurred_at < %s",
                    (SELLER, sku, series["warehouse"], at),
                ).fetchone()
            assert row is not None
            assert (point["on_hand"], point["allocated"]) == (row[0], row[1]), series["warehouse"]
        other = api.get(f"/v1/stock-history/{OTHER}/{sku}")
        assert other.status_code == 404


def test_live_update_after_a_wms_commit(live: Live, page: Page) -> None:
    """Freeze one unit in the WMS: the open page shows the new figures without a reload."""
    s = live.pipeline.settings
    found = None
    for region in live.pipeline.regions:
        with psycopg.connect(s.pg_dsn(region, "app")) as conn:
            found = conn.execute(
                "SELECT i.id, w.code, s.sku_code FROM inventory i"
                " JOIN sku s ON s.id = i.sku_id JOIN owner o ON o.id = s.owner_id"
                " JOIN warehouse w ON w.id = i.warehouse_id"
                " JOIN location l ON l.id = i.location_id"
                " WHERE o.code = %s AND i.status = 'AVAILABLE' AND l.sellable"
                " AND l.loc_type <> 'STAGING' AND i.qty_on_hand - i.qty_allocated >= 1"
                " ORDER BY i.id LIMIT 1",
                (SELLER,),
            ).fetchone()
        if found:
            break
    assert found is not None, "no free unit to freeze"
    inventory_id, warehouse, sku = found
    sign_in(page, live.base, SELLER_KEY)
    page.wait_for_selector("#freshness .badge")
    row = f"#stock-table tr[data-warehouse='{warehouse}'][data-sku='{sku}']"
    before = {f: int(page.inner_text(f"{row} td[data-field={f}]")) for f in ("available", "frozen")}
    page.evaluate("window.__same_page = true")

    with psycopg.connect(s.pg_dsn(region, "app")) as conn:
        run_txn(conn, lambda cur: freeze(cur, inventory_id=inventory_id, qty=1, operator="ui-test"))
    committed = time.monotonic()

    want = {"available": before["available"] - 1, "frozen": before["frozen"] + 1}
    page.wait_for_function(
        "([row, a, f]) => {"
        " const r = document.querySelector(row);"
        " return r && r.querySelector('[data-field=available]').textContent === String(a)"
        " && r.querySelector('[data-field=frozen]').textContent === String(f); }",
        arg=[row, want["available"], want["frozen"]],
    )
    seconds = time.monotonic() - committed
    assert page.evaluate("window.__same_page === true"), "the page was reloaded"
    assert page.locator(f"{row} td.changed").count() >= 2  # the changed cells flash
    shot(page, "11-live-update")
    truth = live.truth()
    fig = next(
        v
        for k, v in truth.stock.items()
        if (k.owner, k.warehouse, k.sku) == (SELLER, warehouse, sku)
    )
    assert (fig.available, fig.frozen) == (want["available"], want["frozen"])
    assert seconds < 20, f"the page took {seconds:.1f}s to show the commit"


def test_freshness_badge_turns_stale(live: Live, page: Page) -> None:
    sign_in(page, live.base, SELLER_KEY)
    stopped = live.pipeline.regions[0]
    report = httpx.get(
        f"{live.base}/v1/freshness", headers={"Authorization": f"Bearer {SELLER_KEY}"}
    ).json()
    warehouses = {w["warehouse"] for w in report["warehouses"] if w["region"] == stopped.name}
    badge = f".badge[data-warehouse='{sorted(warehouses)[0]}']"
    page.wait_for_selector(f"{badge}[data-state=live]")
    with ConnectClient(live.pipeline.settings) as connect:
        connect.stop_connector(stopped.connector_name)
        try:
            page.wait_for_selector(f"{badge}[data-state=stale]", timeout=60_000)
            color = page.eval_on_selector(badge, "b => getComputedStyle(b).backgroundColor")
            assert color == "rgb(220, 38, 38)"  # red: visibly stale
            others = page.eval_on_selector_all(
                ".badge", "bs => bs.map(b => [b.dataset.warehouse, b.dataset.state])"
            )
            assert {w for w, st in others if st == "stale"} == warehouses
            shot(page, "12-stale-badge")
        finally:
            connect.resume(stopped.connector_name)
    page.wait_for_selector(f"{badge}[data-state=live]", timeout=120_000)


def test_a_seller_sees_only_its_own_skus(live: Live, page: Page) -> None:
    truth = live.truth()
    mine = expected_rows(truth, SELLER)
    theirs = expected_rows(truth, OTHER)
    assert theirs
    sign_in(page, live.base, OTHER_KEY)
    assert page.inner_text("#who") == OTHER
    got = table_rows(page)
    assert set(got) == set(theirs)
    assert not {sku for _, sku in got} & {sku for _, sku in mine}
    for key, figures in theirs.items():
        assert {f: got[key][f] for f in FIGURES} == figures, key
    shot(page, "13-other-seller")

    # a deep link to the first seller's key, and its serial, answer "not found"
    wh, sku = sorted(mine)[0]
    page.goto(f"{live.base}/dashboard/#/sku/{wh}/{sku}/lots")
    page.wait_for_selector("p.error:has-text('no such stock key')")
    shot(page, "14-other-sellers-key-not-found")
    serial = next(k for k in truth.serials if k.owner == SELLER)
    page.goto(f"{live.base}/dashboard/#/serial/{serial.sku}/{serial.serial_no}")
    page.wait_for_selector("#serial-missing")

    page.click("#sign-out")
    page.wait_for_selector("#sign-in")
    assert page.evaluate("sessionStorage.length") == 0


def test_nothing_loads_from_another_origin(live: Live) -> None:
    assert live.requests, "no request recorded"
    foreign = [u for u in live.requests if not u.startswith(live.base)]
    assert not foreign, foreign
