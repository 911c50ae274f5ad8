// DOM building and formatting helpers. Data is only ever set as text (never as HTML),
// so nothing from the WMS can inject markup.

/** An element: h("td", {class: "num", dataset: {field: "on_hand"}}, "12", child, ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Whole days from today (UTC) to an ISO date; negative when past. */
export function daysUntil(isoDate) {
  if (!isoDate) return null;
  const today = new Date();
  const t0 = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate());
  return Math.round((Date.parse(`${isoDate}T00:00:00Z`) - t0) / 86_400_000);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function fmtLag(ms) {
  if (ms === null || ms === undefined) return "no data";
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

export function fmtDays(days) {
  if (days === null) return "";
  if (days < 0) return `expired ${-days} d ago`;
  return days === 0 ? "today" : `${days} d`;
}
