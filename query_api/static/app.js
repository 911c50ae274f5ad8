// The seller dashboard: a hash-routed single page over the JSON Query API.
// Routes: #/stock, #/sku/<warehouse>/<sku>/<lots|serials|movements|chart>,
// #/serial and #/serial/<sku>/<serial_no>. Without a key in sessionStorage: sign-in.
// Live: the freshness report is polled every POLL_MS; when a region's applied LSN moves,
// the page on screen re-reads its figures (no reload) and changed cells flash.
import { all, ApiError, enc, get, session } from "./api.js";
import { drawChart } from "./chart.js";
import { daysUntil, fmtDays, fmtLag, fmtTime, h } from "./dom.js";

const POLL_MS = 2000;
const NO_CONTACT_MS = 10_000; // no freshness answer for this long: every badge is stale
const HOLDS = ["pending_putaway", "qc_hold", "frozen", "damaged", "returned", "expired"];
const COLUMNS = [
  ["warehouse", "Warehouse"], ["sku", "SKU"], ["available", "Available"],
  ["allocated", "Allocated"], ["on_hand", "On hand"], ["inbound_expected", "In transit"],
  ["pending_putaway", "Putaway"], ["qc_hold", "QC hold"], ["frozen", "Frozen"],
  ["damaged", "Damaged"], ["returned", "Returned"], ["expired", "Expired"],
  ["earliest_expiry", "Earliest expiry"], ["last_movement_at", "Last movement"],
];
const TEXT = new Set(["warehouse", "sku", "earliest_expiry", "last_movement_at"]);

const view = document.getElementById("view");
let current = { refresh: null, dispose: null };
let lastVersion = null;
let lastContact = Date.now();
let refreshing = false;

// Filters and sort survive live refreshes and navigation.
const stockState = {
  q: "", warehouse: "", show: "all", low: 10, days: 30,
  sort: "warehouse", dir: 1, previous: new Map(),
};

// -- routing --------------------------------------------------------------------------

async function route() {
  current.dispose?.();
  current = { refresh: null, dispose: null };
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const signedIn = Boolean(session.key);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").textContent = signedIn ? session.owner : "";
  if (!signedIn) return signIn();
  try {
    if (parts[0] === "sku" && parts.length >= 3) await skuPage(parts[1], parts[2], parts[3] || "lots");
    else if (parts[0] === "serial") await serialPage(parts[1] || "", parts[2] || "");
    else await stockPage();
  } catch (err) {
    failed(err);
  }
}

function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    session.clear();
    signIn("Your key was refused: sign in again.");
    return;
  }
  view.replaceChildren(h("p", { class: "error", role: "alert" }, err.message));
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// -- sign-in --------------------------------------------------------------------------

function signIn(message = "") {
  document.getElementById("nav").hidden = true;
  const error = h("p", { class: "error", id: "sign-in-error", role: "alert" }, message);
  const input = h("input", {
    id: "key", type: "password", autocomplete: "off", required: true,
    placeholder: "seller API key", "aria-label": "Seller API key",
  });
  const form = h("form", { id: "sign-in", class: "card narrow" },
    h("h1", {}, "Seller stock dashboard"),
    h("p", { class: "muted" }, "Sign in with the API key of your seller account."),
    input, h("button", { type: "submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const me = await get("/v1/whoami", {}, input.value.trim());
      if (me.scope !== "seller") throw new Error("This dashboard is for sellers: use a seller key.");
      session.save(input.value.trim(), me.owner);
      go("#/stock");
      poll();
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401 ? "Unknown key." : err.message;
    }
  });
  view.replaceChildren(form);
  input.focus();
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  go("#/");
});

// -- freshness badges and the live loop -----------------------------------------------

async function poll() {
  if (!session.key) return;
  try {
    const report = await get("/v1/freshness");
    lastContact = Date.now();
    badges(report.warehouses);
    const version = report.regions.map((r) => `${r.region}:${r.applied_lsn}`).join(",");
    if (version !== lastVersion) {
      const first = lastVersion === null;
      lastVersion = version;
      if (!first && current.refresh && !refreshing) {
        refreshing = true;
        try { await current.refresh(); } catch (err) { console.warn(err); } finally { refreshing = false; }
      }
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return failed(err);
    if (Date.now() - lastContact > NO_CONTACT_MS) {
      for (const b of document.querySelectorAll(".badge")) {
        b.dataset.state = "stale";
        b.lastChild.textContent = "no contact";
      }
    }
  }
}

function badges(warehouses) {
  const bar = document.getElementById("freshness");
  bar.replaceChildren(...warehouses.map((w) => h("span",
    { class: "badge", dataset: { warehouse: w.warehouse, state: w.state },
      title: `${w.region}: ${w.state}, ${fmtLag(w.lag_ms)} behind the WMS` },
    h("b", {}, w.warehouse), " ",
    h("span", {}, w.state === "live" ? fmtLag(w.lag_ms) : `${w.state.replace("_", " ")} ${fmtLag(w.lag_ms)}`))));
}

// -- stock table ----------------------------------------------------------------------

async function stockPage() {
  const s = stockState;
  const tbody = h("tbody");
  const summary = h("p", { class: "muted", id: "stock-summary" });
  const warehouseSelect = h("select", { id: "f-warehouse", "aria-label": "Warehouse" });
  const heads = COLUMNS.map(([field, label]) => h("th", {
    dataset: { sort: field }, class: TEXT.has(field) ? "" : "num", tabindex: 0,
    onclick: () => { s.dir = s.sort === field ? -s.dir : 1; s.sort = field; draw(); },
  }, label));
  const input = (id, attrs, key) => h("input", { id, ...attrs,
    value: s[key], oninput: (e) => { s[key] = attrs.type === "number" ? Number(e.target.value) : e.target.value; draw(); } });
  const show = h("select", { id: "f-show", "aria-label": "Show", onchange: (e) => { s.show = e.target.value; draw(); } },
    ...[["all", "All keys"], ["low", "Low stock"], ["expiry", "Near expiry"], ["holds", "With holds"], ["inbound", "In transit"]]
      .map(([v, l]) => h("option", { value: v, selected: s.show === v }, l)));
  warehouseSelect.addEventListener("change", (e) => { s.warehouse = e.target.value; draw(); });
  view.replaceChildren(h("section", { class: "stock" },
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      input("f-search", { type: "search", placeholder: "Search SKU", "aria-label": "Search SKU" }, "q"),
      warehouseSelect, show,
      h("label", {}, "Low ≤ ", input("f-low", { type: "number", min: 0 }, "low")),
      h("label", {}, "Expiry ≤ ", input("f-days", { type: "number", min: 0 }, "days"), " d")),
    summary,
    h("div", { class: "table-wrap" }, h("table", { id: "stock-table" }, h("thead", {}, h("tr", {}, heads)), tbody))));

  let rows = [];
  let asOf = null;
  tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-sku]");
    if (tr) go(`#/sku/${enc(tr.dataset.warehouse)}/${enc(tr.dataset.sku)}/lots`);
  });

  function flags(r) {
    const days = daysUntil(r.earliest_expiry);
    return {
      low: r.available <= s.low,
      expired: days !== null && days < 0,
      expiring: days !== null && days >= 0 && days <= s.days,
    };
  }

  function draw() {
    const q = s.q.trim().toLowerCase();
    const shown = rows.filter((r) => {
      const f = flags(r);
      if (q && !r.sku.toLowerCase().includes(q)) return false;
      if (s.warehouse && r.warehouse !== s.warehouse) return false;
      if (s.show === "low") return f.low;
      if (s.show === "expiry") return f.expiring || f.expired;
      if (s.show === "holds") return HOLDS.some((k) => r[k] > 0);
      if (s.show === "inbound") return r.inbound_expected > 0;
      return true;
    });
    const key = s.sort;
    shown.sort((a, b) => {
      const x = a[key] ?? "", y = b[key] ?? "";
      const c = x < y ? -1 : x > y ? 1 : 0;
      return c * s.dir || (a.warehouse + a.sku < b.warehouse + b.sku ? -1 : 1);
    });
    for (const th of heads) {
      th.dataset.dir = th.dataset.sort === key ? (s.dir > 0 ? "asc" : "desc") : "";
    }
    tbody.replaceChildren(...shown.map((r) => {
      const f = flags(r);
      const was = s.previous.get(`${r.warehouse}|${r.sku}`);
      const cls = [f.low && "low", f.expiring && "expiring", f.expired && "expired"].filter(Boolean).join(" ");
      return h("tr", { class: cls, dataset: { warehouse: r.warehouse, sku: r.sku } },
        COLUMNS.map(([field]) => {
          let text = r[field] ?? "";
          if (field === "last_movement_at") text = fmtTime(r[field]);
          if (field === "earliest_expiry" && r[field]) text = `${r[field]} (${daysUntil(r[field])} d)`;
          const changed = was && was[field] !== r[field] && !TEXT.has(field);
          return h("td", { dataset: { field }, class: [TEXT.has(field) ? "" : "num", changed && "changed"].filter(Boolean).join(" ") }, text);
        }));
    }));
    const lows = rows.filter((r) => flags(r).low).length;
    const near = rows.filter((r) => flags(r).expiring || flags(r).expired).length;
    summary.textContent = `${shown.length} of ${rows.length} keys · ${lows} low stock · ${near} near expiry` +
      (asOf ? ` · as of ${fmtTime(asOf)}` : "");
  }

  async function load() {
    const page = await get("/v1/stock", { limit: 1000 });
    let items = page.items;
    if (page.next_cursor) items = await all("/v1/stock");
    const previous = new Map(rows.map((r) => [`${r.warehouse}|${r.sku}`, r]));
    s.previous = previous;
    rows = items;
    asOf = Object.values(page.freshness).map((f) => f.as_of).sort().at(-1) ?? null;
    const whs = [...new Set(rows.map((r) => r.warehouse))].sort();
    warehouseSelect.replaceChildren(h("option", { value: "" }, "All warehouses"),
      ...whs.map((w) => h("option", { value: w, selected: s.warehouse === w }, w)));
    draw();
  }

  s.previous = new Map();
  await load();
  current.refresh = load;
}

// -- one SKU at one warehouse ------------------------------------------------------

const TABS = [["lots", "Lots"], ["serials", "Serials"], ["movements", "Movements"], ["chart", "Stock over time"]];

async function skuPage(warehouse, sku, tab) {
  const base = `/v1/stock/${enc(session.owner)}/${enc(warehouse)}/${enc(sku)}`;
  const figures = h("div", { class: "figures", id: "figures" });
  const body = h("div", { id: "tab", dataset: { tab } });
  view.replaceChildren(h("section", { class: "sku" },
    h("a", { href: "#/stock", class: "back" }, "← Stock"),
    h("h2", {}, sku, h("span", { class: "muted" }, ` at ${warehouse}`)),
    figures,
    h("nav", { class: "tabs" }, TABS.map(([id, label]) =>
      h("a", { href: `#/sku/${enc(warehouse)}/${enc(sku)}/${id}`, class: id === tab ? "active" : "", dataset: { tab: id } }, label))),
    body));

  let previous = null;
  async function loadFigures() {
    const one = await get(base);
    figures.replaceChildren(...COLUMNS.filter(([f]) => !["warehouse", "sku"].includes(f)).map(([f, label]) => {
      let value = one[f] ?? "—";
      if (f === "last_movement_at") value = fmtTime(one[f]) || "—";
      const changed = previous && previous[f] !== one[f];
      return h("div", { class: changed ? "figure changed" : "figure", dataset: { field: f } },
        h("span", { class: "label" }, label), h("span", { class: "value" }, value));
    }));
    previous = one;
  }
  const loaders = { lots: lotsTab, serials: serialsTab, movements: movementsTab, chart: chartTab };
  const tabLoader = (loaders[tab] || lotsTab)(body, base, warehouse, sku);
  await Promise.all([loadFigures(), tabLoader.load()]);
  current.refresh = () => Promise.all([loadFigures(), tabLoader.refresh?.()]);
  current.dispose = tabLoader.dispose;
}

function table(id, headers, rows) {
  return h("div", { class: "table-wrap" }, h("table", { id },
    h("thead", {}, h("tr", {}, headers.map(([label, num]) => h("th", { class: num ? "num" : "" }, label)))),
    h("tbody", {}, rows)));
}

function lotsTab(body, base) {
  async function load() {
    const { items } = await get(`${base}/lots`);
    if (!items.length) { body.replaceChildren(h("p", { class: "muted" }, "No lots: this SKU is not lot-tracked here.")); return; }
    body.replaceChildren(table("lots-table",
      [["FEFO #", 1], ["Lot"], ["Produced"], ["Expiry"], ["Days to expiry", 1], ["Available", 1],
        ["Allocated", 1], ["On hand", 1], ["QC hold", 1], ["Frozen", 1], ["Damaged", 1], ["Expired", 1]],
      items.map((lot, i) => {
        const days = daysUntil(lot.expiry_date);
        const cls = days === null ? "" : days < 0 ? "expired" : days <= stockState.days ? "expiring" : "";
        return h("tr", { class: cls, dataset: { lot: lot.lot_no } },
          h("td", { class: "num" }, i + 1), h("td", {}, lot.lot_no), h("td", {}, lot.production_date ?? ""),
          h("td", {}, lot.expiry_date ?? "none"), h("td", { class: "num", dataset: { field: "days" } }, fmtDays(days)),
          ...["available", "allocated", "on_hand", "qc_hold", "frozen", "damaged", "expired"]
            .map((f) => h("td", { class: "num", dataset: { field: f } }, lot[f])));
      })));
  }
  return { load, refresh: load };
}

function serialsTab(body, base, warehouse, sku) {
  let status = "";
  const select = h("select", { id: "serial-status", "aria-label": "Status", onchange: (e) => { status = e.target.value; load(); } },
    h("option", { value: "" }, "Every status"),
    ...["IN_STOCK", "ALLOCATED", "DAMAGED", "RETURNED"].map((v) => h("option", { value: v }, v)));
  const holder = h("div");
  body.replaceChildren(h("div", { class: "filters" }, select), holder);
  async function load() {
    const { items } = await get(`${base}/serials`, { status });
    if (!items.length) { holder.replaceChildren(h("p", { class: "muted" }, "No serials here.")); return; }
    const shown = items.slice(0, 500);
    holder.replaceChildren(
      h("p", { class: "muted" }, `${items.length} serials${items.length > shown.length ? " (first 500 shown)" : ""}`),
      table("serials-table", [["Serial"], ["Status"], ["Location"], ["Lot"], ["Received"]],
        shown.map((x) => h("tr", { dataset: { serial: x.serial_no } },
          h("td", {}, h("a", { href: `#/serial/${enc(sku)}/${enc(x.serial_no)}` }, x.serial_no)),
          h("td", {}, h("span", { class: `status s-${x.status}` }, x.status)),
          h("td", {}, x.location ?? ""), h("td", {}, x.lot_no ?? ""), h("td", {}, fmtTime(x.received_at))))));
  }
  return { load, refresh: load };
}

function movementsTab(body, base, warehouse, sku) {
  async function load() {
    const items = await all("/v1/movements", { warehouse, sku }, 5000);
    const latest = items.slice(-200).reverse();
    body.replaceChildren(
      h("p", { class: "muted" }, `${items.length} ledger rows${items.length > 200 ? ", latest 200 shown" : ""}, newest first`),
      table("movements-table", [["Time"], ["Type"], ["Qty", 1], ["Δ on hand", 1], ["Δ allocated", 1], ["Lot"], ["From"], ["To"], ["Reference"]],
        latest.map((m) => h("tr", {},
          h("td", {}, fmtTime(m.occurred_at)), h("td", {}, m.txn_type), h("td", { class: "num" }, m.qty),
          h("td", { class: "num" }, m.d_on_hand), h("td", { class: "num" }, m.d_allocated), h("td", {}, m.lot_no ?? ""),
          h("td", {}, [m.from_location, m.from_status].filter(Boolean).join(" · ")),
          h("td", {}, [m.to_location, m.to_status].filter(Boolean).join(" · ")),
          h("td", {}, [m.ref_type, m.ref_no].filter(Boolean).join(" "))))));
  }
  return { load, refresh: load };
}

function chartTab(body, base, warehouse, sku) {
  const RANGES = [["all", "All", null], ["24h", "24 h", 86_400_000], ["1h", "1 h", 3_600_000], ["15m", "15 min", 900_000]];
  let range = "all";
  let dispose = null;
  let lastDraw = 0;
  const target = h("div", { id: "chart" });
  const note = h("p", { class: "muted", id: "chart-note" });
  const buttons = RANGES.map(([id, label]) => h("button", { type: "button", dataset: { range: id },
    onclick: () => { range = id; load(); } }, label));
  body.replaceChildren(h("div", { class: "filters" }, buttons), target, note);
  async function load() {
    const ms = RANGES.find(([id]) => id === range)[2];
    const since = ms ? new Date(Date.now() - ms).toISOString() : null;
    const history = await get(`/v1/stock-history/${enc(session.owner)}/${enc(sku)}`, { since, points: 300 });
    for (const b of buttons) b.classList.toggle("active", b.dataset.range === range);
    dispose?.();
    target.replaceChildren();
    dispose = drawChart(target, history);
    lastDraw = Date.now();
    note.textContent = `On hand per warehouse, from the ledger, ${fmtTime(history.since)} – ${fmtTime(history.until)}` +
      ` (buckets of ${Math.round(history.step_ms / 1000)} s). This page: ${warehouse}.`;
  }
  // Redrawing a chart on every commit would flicker: at most every 5 s.
  const refresh = () => (Date.now() - lastDraw > 5000 ? load() : Promise.resolve());
  return { load, refresh, dispose: () => dispose?.() };
}

// -- serial lookup --------------------------------------------------------------------

async function serialPage(sku, serial) {
  const skuInput = h("input", { id: "s-sku", value: sku, required: true, placeholder: "SKU", "aria-label": "SKU" });
  const serialInput = h("input", { id: "s-serial", value: serial, required: true, placeholder: "Serial number", "aria-label": "Serial number" });
  const result = h("div", { id: "serial-result" });
  const form = h("form", { class: "filters", id: "serial-form" }, skuInput, serialInput, h("button", { type: "submit" }, "Look up"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go(`#/serial/${enc(skuInput.value.trim())}/${enc(serialInput.value.trim())}`);
  });
  view.replaceChildren(h("section", { class: "serial" }, h("h2", {}, "Serial lookup"), form, result));
  if (!sku || !serial) return;

  async function load() {
    let body;
    try {
      body = await get(`/v1/serials/${enc(session.owner)}/${enc(sku)}/${enc(serial)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        result.replaceChildren(h("p", { class: "error", id: "serial-missing" }, `No serial ${serial} of SKU ${sku}.`));
        return;
      }
      throw err;
    }
    const c = body.current;
    const row = (x) => h("tr", {},
      h("td", {}, fmtTime(x.updated_at)), h("td", {}, x.region), h("td", {}, h("span", { class: `status s-${x.status}` }, x.status)),
      h("td", {}, x.warehouse ?? ""), h("td", {}, x.location ?? ""), h("td", {}, x.lot_no ?? ""),
      h("td", {}, x.order_no ?? ""), h("td", {}, x.tracking_no ?? ""));
    result.replaceChildren(
      h("div", { class: "figures", id: "serial-current" },
        ...[["Status", c.status], ["Warehouse", c.warehouse], ["Location", c.location], ["Lot", c.lot_no],
          ["Received", fmtTime(c.received_at)], ["Shipped", fmtTime(c.shipped_at)], ["Order", c.order_no], ["Tracking", c.tracking_no]]
          .map(([label, value]) => h("div", { class: "figure", dataset: { field: label.toLowerCase() } },
            h("span", { class: "label" }, label), h("span", { class: "value" }, value || "—")))),
      h("h3", {}, "History"),
      table("serial-history", [["Updated"], ["Region"], ["Status"], ["Warehouse"], ["Location"], ["Lot"], ["Order"], ["Tracking"]],
        body.history.map(row)));
  }
  await load();
  current.refresh = load;
}

// -- start ------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
route();
poll();
setInterval(poll, POLL_MS);
