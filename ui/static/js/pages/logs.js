// The Logs page: the daemon's recent lines as a live tail (asked again every
// two seconds while the page is shown, with a pause), a search through the
// kept lines, and each component's verbosity (the service containers' levels
// are shown but set by their services, not here).
import { get, put } from "../api.js";
import { h, mount, field, errorBox, toast, busy, table } from "../dom.js";

const LEVELS = ["debug", "info", "warn", "error"];

export default {
  path: "logs",
  title: "Logs",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    let paused = false;
    let components = [];
    const tail = h("pre", { id: "logs-tail", class: "log", tabindex: "0", "aria-label": "The latest log lines" });
    const tailState = h("p", { id: "logs-tail-state", class: "muted", "aria-live": "polite" }, "Live: the latest lines, every 2 seconds.");
    const tailErr = h("div");
    const pause = h("button", { type: "button", class: "secondary", id: "logs-pause", "aria-pressed": "false", onclick: () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      pause.setAttribute("aria-pressed", String(paused));
      tailState.textContent = paused ? "Paused: the lines stay as they are." : "Live: the latest lines, every 2 seconds.";
      if (!paused) refreshTail();
    } }, "Pause");
    const tailService = h("select", { id: "logs-tail-service", onchange: () => refreshTail() }, h("option", { value: "" }, "All components"));

    const results = h("div", { id: "logs-results", "aria-live": "polite" });
    const searchService = h("select", { id: "logs-search-service", name: "service" }, h("option", { value: "" }, "All components"));
    const searchForm = h("form", { id: "logs-search", role: "search", onsubmit: async (ev) => {
      ev.preventDefault();
      const q = searchForm.elements.q.value.trim();
      if (!q) {
        mount(results, errorBox({ message: "Type some text to look for." }));
        searchForm.elements.q.focus();
        return;
      }
      const p = new URLSearchParams({ q });
      if (searchService.value) p.set("service", searchService.value);
      try {
        const r = await busy(searchForm.querySelector("button[type=submit]"), "Searching…", () => get(`/api/logs/search?${p}`));
        const lines = r.lines || [];
        mount(results,
          h("p", { id: "logs-results-count" }, lines.length ? `${lines.length} line${lines.length === 1 ? "" : "s"} found.` : `Nothing found for “${q}”.`),
          lines.length ? h("pre", { class: "log", id: "logs-results-lines", tabindex: "0", "aria-label": "Lines found" }, lines.map(line)) : null);
      } catch (e) {
        mount(results, errorBox(e));
      }
    } },
    field("Look for", { name: "q", id: "logs-q", type: "search", autocomplete: "off", maxlength: 256 }),
    h("div", { class: "field" }, h("label", { for: "logs-search-service" }, "In"), searchService),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "logs-search-go" }, "Search")));

    const levelsBox = h("div", { id: "logs-levels" });

    mount(main,
      h("h1", {}, "Logs"),
      h("section", { "aria-labelledby": "logs-tail-h" }, h("h2", { id: "logs-tail-h" }, "Live"),
        h("div", { class: "actions" },
          h("div", { class: "field" }, h("label", { for: "logs-tail-service" }, "Component"), tailService)),
        h("div", { class: "actions" }, pause), tailState, tailErr, tail),
      h("section", { "aria-labelledby": "logs-search-h" }, h("h2", { id: "logs-search-h" }, "Search"), searchForm, results),
      h("section", { "aria-labelledby": "logs-levels-h" }, h("h2", { id: "logs-levels-h" }, "Verbosity"),
        h("p", { class: "muted" }, "How much each part of the cell writes: debug is the most, error the least. Keep info unless you are chasing a problem."),
        levelsBox));

    async function refreshTail() {
      const p = new URLSearchParams({ lines: "200" });
      if (tailService.value) p.set("service", tailService.value);
      try {
        const r = await get(`/api/logs?${p}`);
        mount(tailErr);
        if (paused) return;
        // Keep the reader's place: follow the end only when they are at it.
        const atEnd = tail.scrollHeight - tail.scrollTop - tail.clientHeight < 24;
        const lines = r.lines || [];
        mount(tail, lines.length ? lines.map(line) : "(nothing logged yet)");
        if (atEnd) tail.scrollTop = tail.scrollHeight;
      } catch (e) {
        mount(tailErr, errorBox(e));
      }
    }

    async function loadLevels() {
      let r;
      try {
        r = await get("/api/logs/verbosity");
      } catch (e) {
        mount(levelsBox, errorBox(e));
        return;
      }
      const levels = r.levels || {};
      components = Object.keys(levels).sort();
      for (const sel of [tailService, searchService]) {
        const keep = sel.value;
        mount(sel, h("option", { value: "" }, "All components"), components.map((c) => h("option", { value: c, selected: c === keep }, c)));
      }
      const err = h("div");
      const form = h("form", { id: "logs-levels-form", class: "levels", onsubmit: async (ev) => {
        ev.preventDefault();
        const changed = {};
        for (const c of components) {
          const v = form.elements[`level-${c}`].value;
          if (v !== levels[c]) changed[c] = v;
        }
        if (!Object.keys(changed).length) {
          toast("Nothing changed");
          return;
        }
        try {
          await busy(form.querySelector("button[type=submit]"), "Saving…", () => put("/api/logs/verbosity", { levels: changed }));
          toast(`Verbosity saved: ${Object.entries(changed).map(([k, v]) => `${k} ${v}`).join(", ")}`);
          await loadLevels();
          document.getElementById("logs-levels-save")?.focus();
        } catch (e) {
          mount(err, errorBox(e));
        }
      } },
      h("div", { class: "table-wrap" }, table("Verbosity of the cell's components", ["Component", "Level"],
        components.map((c) => [
          h("label", { for: `level-${c}` }, c),
          h("select", { id: `level-${c}`, name: `level-${c}` }, LEVELS.map((l) => h("option", { value: l, selected: l === String(levels[c]).toLowerCase() }, l))),
        ]))),
      err,
      h("div", { class: "actions" }, h("button", { type: "submit", id: "logs-levels-save" }, "Save the levels")));
      const containers = r.containers || {};
      const names = Object.keys(containers).sort();
      mount(levelsBox, form,
        names.length
          ? h("div", { class: "table-wrap" }, table("Service containers (set by each service)", ["Container", "Level"], names.map((n) => [n, String(containers[n])])))
          : null);
    }

    await loadLevels();
    await refreshTail();
    tail.scrollTop = tail.scrollHeight;
    const loop = () => setTimeout(async () => {
      if (!ctx.run()) return;
      if (!paused && document.visibilityState === "visible") await refreshTail();
      loop();
    }, 2000);
    loop();
  },
};

// line is one log line as text: time, level, component, message, attributes.
function line(l) {
  const t = l.time ? new Date(l.time) : null;
  const time = t && !isNaN(t) ? t.toLocaleTimeString() : "";
  const attrs = Object.entries(l.attrs || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  return h("span", { class: `log-line lvl-${String(l.level).toLowerCase()}` },
    `${time} ${String(l.level).toUpperCase().padEnd(5)} ${l.service}: ${l.msg}${attrs ? ` ${attrs}` : ""}\n`);
}
