// 运行监控, live: a WebSocket sends the last hour of recorded figures, then each new
// point and a word whenever the partners' health or the alerts change. The charts are
// drawn here from those points (rates are differences of running totals); the tables
// are fetched again from the server and swapped in (the parts marked data-live-part),
// so the page shows exactly what the server renders. Without this script the page
// shows the figures as of loading.

import { COLOURS, barChart, lineChart, swatch } from "./charts.js";
import { announce, follow, setStatus } from "./live.js";

const page = document.getElementById("ops-page");
let points = [];
let refreshing = null;

const NAMES = {};
for (const row of document.querySelectorAll("#messages tr[data-partner], #health tr[data-partner]")) {
  NAMES[row.dataset.partner] = row.querySelector("th").firstChild.textContent.trim();
}

function partners() {
  const seen = new Set();
  for (const point of points) for (const code of Object.keys(point.p)) seen.add(code);
  return [...seen].sort();
}

function colourOf(code, all) {
  return COLOURS[all.indexOf(code) % COLOURS.length];
}

// Rates between consecutive points: [[t, per second], ...] of total `index`.
function rates(code, index) {
  const values = [];
  for (let i = 1; i < points.length; i += 1) {
    const before = points[i - 1].p[code];
    const after = points[i].p[code];
    const seconds = (points[i].t - points[i - 1].t) / 1000;
    if (!after || seconds <= 0) continue;
    const delta = after[index] - (before ? before[index] : 0);
    values.push([points[i].t, Math.max(0, delta) / seconds]);
  }
  return values;
}

function draw() {
  const all = partners();
  for (const figure of document.querySelectorAll("figure.chart[data-kind]")) {
    const index = Number(figure.dataset.index);
    const label = figure.querySelector("figcaption").textContent;
    const series = all.map((code) => ({
      name: NAMES[code] || code,
      colour: colourOf(code, all),
      values: figure.dataset.kind === "rate" ? rates(code, index)
        : points.filter((p) => p.p[code]).map((p) => [p.t, p.p[code][index]]),
    }));
    if (figure.dataset.kind === "level") {
      series.push({ name: "收件箱", colour: "#55606e", values: points.map((p) => [p.t, p.in]) });
    }
    lineChart(figure.querySelector("svg"), series,
      { label, unit: figure.dataset.kind === "rate" ? "条/秒" : "条" });
  }
  const legend = document.getElementById("chart-legend");
  if (legend) {
    legend.replaceChildren(...[...all.map((code) => [NAMES[code] || code, colourOf(code, all)]),
      ["收件箱（积压图）", "#55606e"]].map(([name, colour]) => {
      const item = document.createElement("li");
      item.append(swatch(colour), document.createTextNode(name));
      return item;
    }));
  }
}

function drawLatency(groups) {
  for (const [key, group] of Object.entries(groups || {})) {
    const figure = document.getElementById(`latency-${key}`);
    if (!figure) continue;
    barChart(figure.querySelector("svg"), group.bars, { label: group.label });
    figure.querySelector(".latency-text").textContent = group.count
      ? `共 ${group.count} 次，平均 ${group.mean} 秒` : "尚无记录";
  }
}

async function refresh() {
  const response = await fetch(window.location.pathname, { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  const active = document.activeElement;
  for (const part of document.querySelectorAll("[data-live-part]")) {
    if (!part.id || (active && part.contains(active) && active !== document.body)) continue;
    const next = fresh.getElementById(part.id);
    if (next) part.replaceWith(document.adoptNode(next));
  }
  for (const row of document.querySelectorAll("#messages tr[data-partner]")) {
    NAMES[row.dataset.partner] = row.querySelector("th").textContent.trim();
  }
}

function refreshSoon() {
  // One fetch at a time; a change arriving meanwhile is covered by the next one.
  if (refreshing) return;
  refreshing = refresh().catch(() => undefined).finally(() => {
    refreshing = null;
    setStatus("（实时更新中）");
  });
}

function connect() {
  follow(page.dataset.live, {
    open() {
      setStatus("（实时更新中）");
    },
    message(news) {
      if (news.type === "history") {
        points = news.points;
        draw();
        drawLatency(news.latency);
        refreshSoon();
        return;
      }
      if (news.point) {
        points.push(news.point);
        const hour = news.point.t - 3600 * 1000;
        while (points.length && points[0].t < hour) points.shift();
        draw();
        drawLatency(news.latency);
      } else {
        announce("通办伙伴状态或告警已更新");
      }
      refreshSoon();
    },
    close() {
      setStatus("（实时更新已中断，正在重新连接；也可刷新页面查看最新数据）");
    },
  });
}

if (page) connect();
