// The dashboard: every part's state and reason, the health history as a
// graph, and each peer's traffic over time; refreshed every 10 seconds while
// the page is open. Each graph has a text summary for screen readers.
import { get, ApiError } from "../api.js";
import { h, mount, errorBox, bytes, when } from "../dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 600, H = 120, PAD = 6;

function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const k of kids) el.append(k);
  return el;
}

// chart draws series (arrays of numbers, oldest first) as lines scaled to
// the largest value; the SVG is hidden from screen readers, which get the
// summary instead.
function chart(label, series, classes, top) {
  const max = top || Math.max(1, ...series.flat());
  const n = Math.max(2, ...series.map((x) => x.length));
  const x = (i) => PAD + (i * (W - 2 * PAD)) / (n - 1);
  const y = (v) => H - PAD - (v / max) * (H - 2 * PAD);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "aria-hidden": "true", focusable: "false" },
    s("line", { class: "axis", x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD }));
  series.forEach((pts, k) => {
    if (!pts.length) return;
    const d = pts.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(s("path", { class: classes[k] || "line", d, "vector-effect": "non-scaling-stroke" }));
  });
  svg.dataset.label = label;
  return svg;
}

const stateClass = (st) => (st === "ok" ? "state-ok" : st === "degraded" ? "state-degraded" : st === "not_configured" ? "muted" : "state-down");
const stateWord = (st) => (st === "not_configured" ? "not configured" : st);

function uptime(sec) {
  if (!sec && sec !== 0) return "";
  const d = Math.floor(sec / 86400), hr = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60);
  return d ? `${d} d ${hr} h` : hr ? `${hr} h ${m} min` : `${m} min`;
}

function renderStatus(box, st) {
  const parts = Object.entries(st.parts || {}).sort(([a, pa], [b, pb]) => {
    // Trouble first, then the rest by name.
    const rank = (p) => ({ down: 0, failed: 0, degraded: 1, ok: 2, not_configured: 3 }[p.state] ?? 1);
    return rank(pa) - rank(pb) || a.localeCompare(b);
  });
  const bad = parts.filter(([, p]) => p.state === "down" || p.state === "degraded" || p.state === "failed");
  mount(box,
    h("p", { class: "big-state", id: "cell-state" }, "The cell is ", h("span", { class: stateClass(st.state) }, stateWord(st.state)),
      bad.length ? ` (${bad.map(([n]) => n).join(", ")} need${bad.length === 1 ? "s" : ""} attention)` : "",
      st.version ? h("span", { class: "muted" }, ` · version ${st.version}`) : null,
      st.uptime_seconds !== undefined ? h("span", { class: "muted" }, ` · up ${uptime(st.uptime_seconds)}`) : null),
    h("ul", { class: "parts", id: "parts", "aria-label": "Parts of the cell" }, parts.map(([name, p]) =>
      h("li", { id: `part-${name}` }, h("span", { class: "part-name" }, name), h("span", { class: stateClass(p.state) }, stateWord(p.state)),
        p.reason ? h("span", { class: "reason" }, p.reason) : null))));
}

function renderHealth(box, history) {
  // The API answers newest first; the graph reads left to right.
  const recs = (history || []).slice().reverse();
  if (!recs.length) {
    mount(box, h("p", { class: "muted" }, "No health checks recorded yet."));
    return;
  }
  const okCount = (r) => Object.values(r.parts || {}).filter((p) => p.state === "ok").length;
  const counted = (r) => Object.values(r.parts || {}).filter((p) => p.state !== "not_configured").length;
  const ok = recs.map(okCount);
  const total = recs.map(counted);
  const allOk = recs.filter((r, i) => ok[i] === total[i]).length;
  const last = recs[recs.length - 1];
  const lastBad = Object.entries(last.parts || {}).filter(([, p]) => p.state !== "ok" && p.state !== "not_configured").map(([n, p]) => `${n} ${p.state}`);
  mount(box,
    chart("Share of the configured parts working, per health check", [ok.map((v, i) => (total[i] ? v / total[i] : 1))], ["line"], 1),
    h("div", { class: "chart-legend", "aria-hidden": "true" }, h("span", { class: "rx" }, "share of the configured parts working (top: all)")),
    h("p", { id: "health-summary" },
      `${recs.length} health checks from ${when(recs[0].time)} to ${when(last.time)}: every configured part was working in ${allOk} of them. `,
      `Latest: ${ok[ok.length - 1]} of ${total[total.length - 1]} parts working`, lastBad.length ? ` (${lastBad.join(", ")}).` : "."));
}

function renderTraffic(box, hist) {
  const peers = (hist && hist.peers) || [];
  if (!peers.length) {
    mount(box, h("p", { class: "muted", id: "traffic-empty" }, "No traffic history yet."));
    return;
  }
  const minutes = Math.round((hist.interval_seconds || 60) / 60) || 1;
  mount(box, h("div", { class: "grid" }, peers.map((p) => {
    const pts = p.points || [];
    const rx = pts.map((x) => x.rx_bytes || 0), tx = pts.map((x) => x.tx_bytes || 0);
    const sum = (a) => a.reduce((t, v) => t + v, 0);
    const span = pts.length ? `from ${when(pts[0].t)} to ${when(pts[pts.length - 1].t)}` : "";
    return h("div", { class: "card", id: `traffic-${p.name}` },
      h("h3", {}, p.name),
      pts.length ? chart(`Traffic of ${p.name}`, [rx, tx], ["line", "line2"]) : null,
      pts.length ? h("div", { class: "chart-legend", "aria-hidden": "true" }, h("span", { class: "rx" }, "received"), h("span", { class: "tx" }, "sent")) : null,
      h("p", { class: "muted" }, pts.length
        ? `${bytes(sum(rx))} received and ${bytes(sum(tx))} sent ${span}, in ${minutes}-minute steps; busiest step ${bytes(Math.max(...rx, ...tx))}.`
        : "No traffic recorded yet."));
  })));
}

export default {
  path: "dashboard",
  title: "Dashboard",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const status = h("div", { id: "dashboard-status" });
    const health = h("div", { id: "dashboard-health" });
    const traffic = h("div", { id: "dashboard-traffic" });
    const updated = h("p", { class: "muted", id: "dashboard-updated" });
    const said = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
    mount(main, h("h1", {}, "Dashboard"), updated, said,
      h("section", { "aria-labelledby": "status-h" }, h("h2", { id: "status-h" }, "State of the cell"), status),
      h("section", { "aria-labelledby": "health-h" }, h("h2", { id: "health-h" }, "Health over time"), health),
      h("section", { "aria-labelledby": "traffic-h" }, h("h2", { id: "traffic-h" }, "Traffic per peer"), traffic));

    let lastState = "";
    const refresh = async () => {
      const [st, hh, wh] = await Promise.allSettled([
        get("/api/status"), get("/api/health/history?limit=60"), get("/api/wireguard/history"),
      ]);
      if (!ctx.run()) return;
      if (st.status === "fulfilled") renderStatus(status, st.value); else mount(status, errorBox(st.reason));
      if (hh.status === "fulfilled") renderHealth(health, hh.value.history); else mount(health, errorBox(hh.reason));
      if (wh.status === "fulfilled") renderTraffic(traffic, wh.value);
      else if (wh.reason instanceof ApiError && wh.reason.status === 404) mount(traffic, h("p", { class: "muted", id: "traffic-empty" }, "No traffic history yet."));
      else mount(traffic, errorBox(wh.reason));
      // Announce only a change of the cell's state, not every refresh.
      const now = st.status === "fulfilled" ? st.value.state : "unknown";
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every 10 seconds.`;
      if (lastState && now !== lastState) said.textContent = `The cell is now ${stateWord(now)}.`;
      lastState = now;
    };
    await refresh();
    const tick = async () => {
      if (!ctx.run()) return;
      try { await refresh(); } catch { /* the next tick tries again */ }
      if (ctx.run()) setTimeout(tick, 10000);
    };
    setTimeout(tick, 10000);
  },
};
