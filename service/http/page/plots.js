// What both pages draw with: elements built from data (text is always set as text, never parsed as markup),
// a score histogram with the reject threshold, ROC curves, and the words for a p-value. Plain SVG, no library.

const SVG_NS = "http://www.w3.org/2000/svg";

// Okabe-Ito: told apart with the common colour-vision deficiencies.
export const COLORS = ["#e69f00", "#0072b2", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#999933", "#882255",
  "#44aa99", "#661100", "#6699cc", "#aa4499"];
export const ID_COLOR = "#5b6b7f";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  return fill(node, attrs, children);
}

function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function formatScore(x) {
  if (!Number.isFinite(x)) return String(x);
  if (Math.abs(x) >= 1e5 || (x !== 0 && Math.abs(x) < 1e-3)) return x.toExponential(2);
  return Number(x.toPrecision(3)).toString();
}

export function percent(x, digits = 1) {
  return `${(100 * x).toFixed(digits)} %`;
}

const GROUPED = new Intl.NumberFormat("en");

export function count(n) {
  return GROUPED.format(n);
}

// A conformal p-value in words: of the in-distribution images the threshold was set on, how many score this
// high or higher. p = (1 + k) / (n + 1), so k = p (n + 1) - 1 of n.
export function pValueWords(p, n) {
  const k = Math.max(0, Math.round(p * (n + 1) - 1));
  if (k === 0) return `None of the ${GROUPED.format(n)} in-distribution calibration images scored this high.`;
  if (k >= n) return `All ${GROUPED.format(n)} in-distribution calibration images scored this high or higher.`;
  const share = k / n;
  const per = share >= 0.1 ? 10 : share >= 0.01 ? 100 : share >= 0.001 ? 1000 : 10000;
  const of = Math.max(1, Math.round(share * per));
  return `About ${of} in ${GROUPED.format(per)} in-distribution images score this high or higher ` +
    `(${GROUPED.format(k)} of the ${GROUPED.format(n)} the threshold was set on; p = ${formatScore(p)}).`;
}

function ticks(lo, hi, count = 5) {
  const span = hi - lo;
  const raw = span / count;
  const step = [1, 2, 2.5, 5, 10].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((s) => s >= raw);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

// Shares per bin on a square-root scale: the tall in-distribution bins and the thin tails both stay visible.
const SHARE_TICKS = [0.01, 0.05, 0.1, 0.25, 0.5, 1];

// rows: [{name, counts, color}], counts on `edges`. marker: {score, color, label} (an upload's score) or null.
export function histogram({ edges, rows, threshold, marker = null, width = 560, height = 210, label }) {
  const m = { left: 44, right: 14, top: 22, bottom: 40 };
  const lo = edges[0];
  const hi = edges[edges.length - 1];
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const x = (v) => m.left + ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo)) * plotW;
  const shares = rows.map((r) => {
    const total = r.counts.reduce((a, b) => a + b, 0) || 1;
    return r.counts.map((c) => c / total);
  });
  const top = Math.max(0.01, ...shares.flat());
  const y = (s) => m.top + plotH * (1 - Math.sqrt(s / top));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart" });
  chart.append(svg("title", {}, label));
  const tx = x(threshold);
  chart.append(svg("rect", { x: tx, y: m.top, width: Math.max(0, m.left + plotW - tx), height: plotH, class: "reject-zone" }));
  // above the plot, on the threshold label's line: inside, they would sit on the bars and beside the share ticks
  chart.append(svg("text", { x: m.left + plotW, y: m.top - 8, "text-anchor": "end", class: "zone-label" }, "rejected"));
  chart.append(svg("text", { x: m.left, y: m.top - 8, class: "zone-label" }, "accepted"));
  let last = Infinity;  // a tick closer than 12 px to the one below it is left out
  for (const s of SHARE_TICKS) {
    if (s > top || last - y(s) < 12) continue;
    last = y(s);
    chart.append(svg("line", { x1: m.left, x2: m.left + plotW, y1: y(s), y2: y(s), class: "grid" }));
    chart.append(svg("text", { x: m.left - 4, y: y(s) + 3, "text-anchor": "end", class: "tick" }, `${s * 100}%`));
  }
  rows.forEach((row, i) => {
    let d = `M ${x(edges[0])} ${y(0)}`;
    shares[i].forEach((s, b) => { d += ` L ${x(edges[b])} ${y(s)} L ${x(edges[b + 1])} ${y(s)}`; });
    d += ` L ${x(hi)} ${y(0)} Z`;
    chart.append(svg("path", { d, fill: row.color, stroke: row.color, class: "bars" }));
  });
  for (const t of ticks(lo, hi)) {
    chart.append(svg("line", { x1: x(t), x2: x(t), y1: m.top + plotH, y2: m.top + plotH + 4, class: "axis" }));
    chart.append(svg("text", { x: x(t), y: m.top + plotH + 15, "text-anchor": "middle", class: "tick" }, formatScore(t)));
  }
  chart.append(svg("line", { x1: m.left, x2: m.left + plotW, y1: m.top + plotH, y2: m.top + plotH, class: "axis" }));
  chart.append(svg("text", { x: m.left + plotW / 2, y: height - 4, "text-anchor": "middle", class: "axis-title" },
    "OOD score (higher: less like the training data)"));
  chart.append(svg("line", { x1: tx, x2: tx, y1: m.top - 4, y2: m.top + plotH, class: "threshold" }));
  chart.append(svg("text", { x: tx, y: m.top - 8, "text-anchor": "middle", class: "threshold-label" }, "threshold"));
  if (marker) chart.append(markerAt(marker, x, lo, hi, m.top, plotH));
  return chart;
}

function markerAt(marker, x, lo, hi, top, plotH) {
  const off = marker.score > hi || !Number.isFinite(marker.score) ? "right" : marker.score < lo ? "left" : null;
  const mx = x(Number.isFinite(marker.score) ? marker.score : hi);
  const text = off === "right" ? `${marker.label} →` : off === "left" ? `← ${marker.label}` : marker.label;
  const share = (mx - x(lo)) / (x(hi) - x(lo));  // near an edge the label runs inwards, never off the chart
  const anchor = off === "right" || share > 0.8 ? "end" : off === "left" || share < 0.2 ? "start" : "middle";
  return svg("g", { class: "marker" },
    svg("line", { x1: mx, x2: mx, y1: top + 14, y2: top + plotH, stroke: marker.color }),
    svg("circle", { cx: mx, cy: top + 14, r: 4, fill: marker.color }),
    svg("text", { x: mx, y: top + 30, "text-anchor": anchor, fill: marker.color, class: "marker-label" }, text));
}

// ROC curves from binned counts: moving the threshold bin by bin, the share of in-distribution images kept
// (true positive rate, ID positive as in the model files' tables) against the share of each set accepted.
export function rocPoints(idCounts, oodCounts) {
  const totalId = idCounts.reduce((a, b) => a + b, 0) || 1;
  const totalOod = oodCounts.reduce((a, b) => a + b, 0) || 1;
  const points = [[0, 0]];
  let keptId = 0;
  let keptOod = 0;
  for (let b = 0; b < idCounts.length; b++) {
    keptId += idCounts[b];
    keptOod += oodCounts[b];
    points.push([keptOod / totalOod, keptId / totalId]);
  }
  return points;
}

// curves: [{name, color, points: [[fpr, tpr]], at: [fpr, tpr] (the stored threshold's point) or null}]
export function roc({ curves, width = 360, height = 330, label }) {
  const m = { left: 46, right: 12, top: 12, bottom: 42 };
  const size = Math.min(width - m.left - m.right, height - m.top - m.bottom);
  const x = (v) => m.left + v * size;
  const y = (v) => m.top + (1 - v) * size;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart" });
  chart.append(svg("title", {}, label));
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    chart.append(svg("line", { x1: x(t), x2: x(t), y1: y(0), y2: y(1), class: "grid" }));
    chart.append(svg("line", { x1: x(0), x2: x(1), y1: y(t), y2: y(t), class: "grid" }));
    chart.append(svg("text", { x: x(t), y: y(0) + 14, "text-anchor": "middle", class: "tick" }, String(t)));
    chart.append(svg("text", { x: x(0) - 5, y: y(t) + 3, "text-anchor": "end", class: "tick" }, String(t)));
  }
  chart.append(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), class: "chance" }));
  for (const c of curves) {
    const d = c.points.map(([f, t], i) => `${i ? "L" : "M"} ${x(f).toFixed(1)} ${y(t).toFixed(1)}`).join(" ");
    chart.append(svg("path", { d, stroke: c.color, class: "curve" }));
    if (c.at) chart.append(svg("circle", { cx: x(c.at[0]), cy: y(c.at[1]), r: 3.5, fill: c.color, class: "at" }));
  }
  chart.append(svg("text", { x: x(0.5), y: height - 6, "text-anchor": "middle", class: "axis-title" },
    "share of the set accepted (FPR)"));
  chart.append(svg("text", { x: 12, y: y(0.5), "text-anchor": "middle", class: "axis-title",
    transform: `rotate(-90 12 ${y(0.5)})` }, "in-distribution kept (TPR)"));
  return chart;
}

export function legend(items) {
  return el("ul", { class: "legend" }, items.map(({ name, color }) =>
    el("li", {}, el("span", { class: "swatch", style: null, "data-color": color }), name)));
}

// Inline style attributes are refused by the page's content security policy; colours are set through the CSSOM.
export function paintSwatches(root) {
  for (const s of root.querySelectorAll(".swatch[data-color]")) s.style.background = s.dataset.color;
}

export async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(body?.error?.message || `${url}: HTTP ${response.status}`);
  return body;
}
