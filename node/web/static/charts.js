// Small charts drawn as inline SVG (no chart library): lines over time and bucket bars.
// Only SVG presentation attributes are set, never a style attribute, so the pages'
// Content-Security-Policy (style-src 'self') holds.

const SVG = "http://www.w3.org/2000/svg";
export const COLOURS = ["#0b57d0", "#b3261e", "#1e6b34", "#8a4b00", "#6a3fa0", "#00796b",
  "#c2185b", "#455a64"];

function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function clear(svg) {
  while (svg.firstChild) svg.firstChild.remove();
}

function box(svg) {
  const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
  return { width, height, left: 40, right: 8, top: 8, bottom: 22 };
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function number(value) {
  if (value === 0) return "0";
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1).replace(/\.0$/, "");
  return value.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
}

// 北京时间 whatever the browser's zone, as the server's pages show times.
function clock(ms, seconds = false) {
  const date = new Date(ms + 8 * 3600 * 1000);
  const two = (n) => String(n).padStart(2, "0");
  const text = `${two(date.getUTCHours())}:${two(date.getUTCMinutes())}`;
  return seconds ? `${text}:${two(date.getUTCSeconds())}` : text;
}

// series: [{name, colour, values: [[t, v], ...]}]; the x axis spans the times given.
export function lineChart(svg, series, { label, unit }) {
  clear(svg);
  const b = box(svg);
  const plotWidth = b.width - b.left - b.right;
  const plotHeight = b.height - b.top - b.bottom;
  const times = series.flatMap((s) => s.values.map(([t]) => t));
  const values = series.flatMap((s) => s.values.map(([, v]) => v));
  if (times.length < 2) {
    svg.append(element("text", { x: b.width / 2, y: b.height / 2, "text-anchor": "middle" },
      "数据记录中，请稍候"));
    svg.setAttribute("aria-label", `${label}：数据记录中`);
    return;
  }
  const start = Math.min(...times);
  const end = Math.max(...times, start + 1);
  const top = niceMax(Math.max(...values));
  const x = (t) => b.left + ((t - start) / (end - start)) * plotWidth;
  const y = (v) => b.top + plotHeight - (v / top) * plotHeight;
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    svg.append(element("line", { x1: b.left, x2: b.width - b.right, y1: y(value), y2: y(value),
      stroke: "#c9d1db", "stroke-width": 1 }));
    svg.append(element("text", { x: b.left - 4, y: y(value) + 4, "text-anchor": "end" },
      number(value)));
  }
  const short = end - start < 10 * 60 * 1000; // under ten minutes: to the second
  svg.append(element("text", { x: b.left, y: b.height - 4 }, clock(start, short)));
  svg.append(element("text", { x: b.width - b.right, y: b.height - 4, "text-anchor": "end" },
    clock(end, short)));
  const latest = [];
  for (const s of series) {
    if (s.values.length === 0) continue;
    const points = s.values.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const line = element("polyline", { points, fill: "none", stroke: s.colour,
      "stroke-width": 2, "stroke-linejoin": "round" });
    line.dataset.series = s.name;
    svg.append(line);
    latest.push(`${s.name} ${number(s.values[s.values.length - 1][1])} ${unit}`);
  }
  svg.setAttribute("aria-label", `${label}，${clock(start)} 至 ${clock(end)}，最新：${latest.join("，") || "无"}`);
}

// bars: [{label, n}]; one bar per bucket, labelled below with the first and last bound.
export function barChart(svg, bars, { label }) {
  clear(svg);
  const b = box(svg);
  b.left = 28;
  const plotWidth = b.width - b.left - b.right;
  const plotHeight = b.height - b.top - b.bottom;
  const total = bars.reduce((sum, bar) => sum + bar.n, 0);
  if (total === 0) {
    svg.append(element("text", { x: b.width / 2, y: b.height / 2, "text-anchor": "middle" },
      "尚无记录"));
    svg.setAttribute("aria-label", `${label}：尚无记录`);
    return;
  }
  const top = niceMax(Math.max(...bars.map((bar) => bar.n)));
  const width = plotWidth / bars.length;
  svg.append(element("text", { x: b.left - 4, y: b.top + 8, "text-anchor": "end" }, number(top)));
  svg.append(element("line", { x1: b.left, x2: b.width - b.right, y1: b.top + plotHeight,
    y2: b.top + plotHeight, stroke: "#8893a0", "stroke-width": 1 }));
  bars.forEach((bar, i) => {
    const height = (bar.n / top) * plotHeight;
    const rect = element("rect", { x: b.left + i * width + 1, y: b.top + plotHeight - height,
      width: Math.max(1, width - 2), height, fill: "#0b57d0" });
    rect.append(element("title", {}, `${bar.le}：${bar.n} 次`));
    svg.append(rect);
  });
  svg.append(element("text", { x: b.left, y: b.height - 4 }, bars[0].le));
  svg.append(element("text", { x: b.width - b.right, y: b.height - 4, "text-anchor": "end" },
    bars[bars.length - 1].le));
  const busiest = bars.reduce((best, bar) => (bar.n > best.n ? bar : best), bars[0]);
  svg.setAttribute("aria-label", `${label}：共 ${total} 次，最多的区间是 ${busiest.le}（${busiest.n} 次）`);
}

export function swatch(colour) {
  const svg = element("svg", { width: 20, height: 6, viewBox: "0 0 20 6", "aria-hidden": "true" });
  svg.append(element("line", { x1: 0, x2: 20, y1: 3, y2: 3, stroke: colour, "stroke-width": 4 }));
  return svg;
}
