// A SKU's on-hand over time, one stepped line per warehouse (uPlot, vendored from npm).
import uPlot from "./vendor/uPlot.esm.js";

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777"];

/** uPlot wants one shared x axis: the union of every series' times, each series
 * carrying its last value forward (the figures hold between ledger buckets). */
export function align(series) {
  const times = [...new Set(series.flatMap((s) => s.points.map((p) => Date.parse(p.at))))];
  times.sort((a, b) => a - b);
  const columns = series.map((s) => {
    const byTime = new Map(s.points.map((p) => [Date.parse(p.at), p.on_hand]));
    let last = null;
    return times.map((t) => (byTime.has(t) ? (last = byTime.get(t)) : last));
  });
  return [times.map((t) => t / 1000), ...columns];
}

export function drawChart(target, history) {
  const data = align(history.series);
  const width = () => Math.max(280, target.clientWidth || 600);
  const plot = new uPlot(
    {
      width: width(),
      height: 280,
      scales: { x: { time: true } },
      axes: [{}, { label: "on hand" }],
      series: [
        {},
        ...history.series.map((s, i) => ({
          label: s.warehouse,
          stroke: COLORS[i % COLORS.length],
          width: 2,
          points: { show: false },
          paths: uPlot.paths.stepped({ align: 1 }),
        })),
      ],
    },
    data,
    target,
  );
  const resize = () => plot.setSize({ width: width(), height: 280 });
  window.addEventListener("resize", resize);
  return () => { window.removeEventListener("resize", resize); plot.destroy(); };
}
