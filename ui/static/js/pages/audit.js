// The Audit page: the signed, hash-chained log of every change and refusal,
// filtered and paged (newest first, as the API serves it), exported as CSV
// for verifying offline, and verified on the cell with the outcome in words.
// The filters live in the page's address (#/audit?actor=...&offset=...), so
// a filtered view can be bookmarked and the browser's back button pages back.
import { get } from "../api.js";
import { h, mount, field, errorBox, busy, when, table } from "../dom.js";

const PAGE = 50;
const FILTERS = ["actor", "action", "target_type", "target_id", "result", "since", "until"];

export default {
  path: "audit",
  title: "Audit",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const p = ctx.params;
    const offset = Math.max(0, Number(p.get("offset")) || 0);
    const limit = Math.min(1000, Math.max(1, Number(p.get("limit")) || PAGE));
    const listBox = h("div", { id: "audit-list", "aria-live": "polite" });
    const verifyBox = h("div", { id: "audit-verify-result", "aria-live": "polite" });

    const form = h("form", { id: "audit-filter", class: "filters", onsubmit: (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const name of FILTERS) {
        let v = form.elements[name].value.trim();
        if (!v) continue;
        if (name === "since" || name === "until") v = new Date(v).toISOString(); // datetime-local is the browser's local time
        q.set(name, v);
      }
      ctx.go(`audit${q.toString() ? `?${q}` : ""}`);
    } },
    h("div", { class: "filter-grid" },
      field("Who (actor)", { name: "actor", id: "audit-actor", value: p.get("actor") || "", autocomplete: "off" }),
      field("Action", { name: "action", id: "audit-action", value: p.get("action") || "", autocomplete: "off", placeholder: "peer.add" }),
      field("Target type", { name: "target_type", id: "audit-target-type", value: p.get("target_type") || "", autocomplete: "off", placeholder: "peer" }),
      field("Target", { name: "target_id", id: "audit-target-id", value: p.get("target_id") || "", autocomplete: "off" }),
      field("Result", { name: "result", id: "audit-result", value: p.get("result") || "", autocomplete: "off", placeholder: "ok" }, "ok, or the code of a refusal such as forbidden"),
      field("From", { name: "since", id: "audit-since", type: "datetime-local", value: localInput(p.get("since")) }),
      field("Until", { name: "until", id: "audit-until", type: "datetime-local", value: localInput(p.get("until")) })),
    h("div", { class: "actions" },
      h("button", { type: "submit", id: "audit-apply" }, "Filter"),
      h("a", { class: "button secondary", href: "#/audit", id: "audit-clear" }, "Clear the filters")));

    const verifyButton = h("button", { type: "button", id: "audit-verify", onclick: () => verify() }, "Verify the log");
    mount(main,
      h("h1", {}, "Audit"),
      h("p", { class: "muted" }, "Every change made on the cell and every refusal, signed and chained so that no entry can be altered or removed unseen."),
      h("section", { "aria-labelledby": "audit-check-h" }, h("h2", { id: "audit-check-h" }, "Check and export"),
        h("div", { class: "actions" },
          verifyButton,
          h("a", { class: "button secondary", id: "audit-export", href: "/api/audit/export?format=csv", download: "audit.csv" }, "Export as CSV"),
          h("a", { class: "button secondary", id: "audit-export-json", href: "/api/audit/export?format=json", download: "audit.json" }, "Export as JSON")),
        h("p", { class: "hint" }, "The export ends with a signed checkpoint: ", h("code", {}, "cellctl audit verify"), " checks it offline with the public key shown after verifying."),
        verifyBox),
      h("section", { "aria-labelledby": "audit-filter-h" }, h("h2", { id: "audit-filter-h" }, "Filter"), form),
      h("section", { "aria-labelledby": "audit-entries-h" }, h("h2", { id: "audit-entries-h" }, "Entries"), listBox));

    async function verify() {
      try {
        const v = await busy(verifyButton, "Verifying…", () => get("/api/audit/verify"));
        mount(verifyBox, verdict(v));
      } catch (e) {
        mount(verifyBox, errorBox(e));
      }
    }

    const q = new URLSearchParams();
    for (const name of FILTERS) if (p.get(name)) q.set(name, p.get(name));
    q.set("limit", String(limit));
    q.set("offset", String(offset));
    let r;
    try {
      r = await get(`/api/audit?${q}`);
    } catch (e) {
      mount(listBox, errorBox(e));
      return;
    }
    const entries = r.entries || [];
    const total = r.total || 0;
    const link = (off) => {
      const n = new URLSearchParams(q);
      n.set("offset", String(Math.max(0, off)));
      if (limit === PAGE) n.delete("limit");
      if (!off) n.delete("offset");
      return `#/audit${n.toString() ? `?${n}` : ""}`;
    };
    const filtered = FILTERS.some((f) => p.get(f));
    const pager = h("nav", { class: "actions pager", "aria-label": "Audit pages" },
      offset > 0 ? h("a", { class: "button secondary", id: "audit-prev", href: link(offset - limit), rel: "prev" }, "Newer entries") : null,
      offset + entries.length < total ? h("a", { class: "button secondary", id: "audit-next", href: link(offset + limit), rel: "next" }, "Older entries") : null);
    mount(listBox,
      h("p", { id: "audit-count" }, total
        ? `Entries ${offset + 1}–${offset + entries.length} of ${total}${filtered ? " matching the filters" : ""}, newest first.`
        : filtered ? "No entry matches the filters." : "The log is empty."),
      entries.length ? h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Audit entries (scrolls sideways)" }, cards(table("Audit entries", ["#", "Time", "Who", "From", "Action", "Target", "Result", "Details"],
        entries.map((e) => [
          String(e.seq),
          h("time", { datetime: e.time }, when(e.time)),
          e.actor || "",
          e.source_ip || "",
          h("code", {}, e.action),
          [e.target_type, e.target_id].filter(Boolean).join(" "),
          h("span", { class: e.result === "ok" ? "state-ok" : "state-failed" }, e.result),
          details(e.details),
        ])))) : null,
      pager);
  },
};

function details(d) {
  const keys = Object.keys(d || {}).sort();
  if (!keys.length) return "";
  return h("ul", { class: "details" }, keys.map((k) => h("li", {}, `${k}: ${d[k]}`)));
}

// verdict says what the verification found, in words.
function verdict(v) {
  const last = v.checkpoint ? ` (signed ${when(v.checkpoint.time)})` : "";
  const head = v.head ? h("p", { class: "hint" }, "Head hash: ", h("code", { class: "wrap" }, v.head)) : null;
  const key = v.public_key ? h("p", { class: "hint" }, "The cell's audit public key: ", h("code", { class: "wrap", id: "audit-public-key" }, v.public_key)) : null;
  const pruned = v.base ? h("p", {}, `Entries before #${v.first_seq} were pruned; the kept log starts from a signed base of ${v.base.size} entries.`) : null;
  if (v.ok) {
    const upTo = v.entries ? `, chain verified up to entry #${v.first_seq + v.entries - 1}${last}` : "";
    return h("div", { class: "verdict ok", id: "audit-verdict", role: "status" },
      h("p", {}, h("strong", { class: "state-ok" }, "The log is intact: "), `${v.entries} entries${upTo}.`), pruned, head, key);
  }
  let what;
  if (v.first_bad_seq !== null && v.first_bad_seq !== undefined) what = `the chain breaks at entry #${v.first_bad_seq}: it or an entry before it was altered or removed`;
  else if (!v.checkpoint_ok) what = "the signed checkpoint is missing or its signature is wrong";
  else what = "the log does not verify";
  return h("div", { class: "verdict bad", id: "audit-verdict", role: "alert" },
    h("p", {}, h("strong", { class: "state-failed" }, "The log is NOT intact: "), `${what}.`),
    v.reason ? h("p", {}, `The cell says: ${v.reason}`) : null,
    h("p", {}, `${v.entries} entries were checked.`), pruned, head, key);
}

// localInput turns an RFC 3339 time into a datetime-local input's value.
function localInput(t) {
  if (!t) return "";
  const d = new Date(t);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// cards marks a table to become one card per row on a phone (app.css
// table.cards), each cell labelled with its column's header.
function cards(t) {
  t.classList.add("cards");
  const heads = [...t.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const tr of t.querySelectorAll("tbody tr")) [...tr.children].forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
  return t;
}
