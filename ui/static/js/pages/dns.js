// The names page: the cell's DNS server (where it listens, its zone, how the
// upstream resolvers are doing) and the zone's own records (add, delete with
// a confirm step in the page).
import { get, post, del, esc, ApiError } from "../api.js";
import { h, mount, field, errorBox, busy, toast, when } from "../dom.js";

const types = ["A", "AAAA", "CNAME", "TXT", "MX", "SRV"];
const valueHint = {
  A: "An IPv4 address, e.g. 10.77.0.5.",
  AAAA: "An IPv6 address.",
  CNAME: "Another name, e.g. nas.home.arpa.",
  TXT: "Any text.",
  MX: "Preference and mail server, e.g. 10 mail.home.arpa.",
  SRV: "Priority, weight, port and target, e.g. 0 5 5060 sip.home.arpa.",
};

export default {
  path: "dns",
  title: "Names",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const status = h("div", { id: "dns-status" });
    const records = h("div", { id: "dns-records" });
    const addErr = h("div", { id: "dns-add-error", tabindex: "-1" });
    const addBtn = h("button", { type: "submit", id: "dns-add" }, "Add record");
    const hint = h("p", { class: "hint", id: "dns-value-hint" }, valueHint.A);
    const value = h("input", { type: "text", id: "dns-value", name: "value", required: true, autocomplete: "off", spellcheck: "false", "aria-describedby": "dns-value-hint" });
    const form = h("form", { id: "dns-add-form", novalidate: true, "aria-labelledby": "dns-add-h" },
      h("h3", { id: "dns-add-h" }, "Add a record"),
      addErr,
      field("Name", { id: "dns-name", name: "name", required: true, autocapitalize: "none", spellcheck: "false", autocomplete: "off" },
        "Within the cell's zone: \"nas\" becomes nas.<zone>."),
      field("Type", { id: "dns-type", name: "type", type: "select", options: types.map((t) => ({ value: t, label: t, selected: t === "A" })) }),
      h("div", { class: "field" }, h("label", { for: "dns-value" }, "Value"), value, hint),
      field("Time to live in seconds (optional)", { id: "dns-ttl", name: "ttl", type: "number", min: 1, inputmode: "numeric" }, "Empty: 300 seconds."),
      h("div", { class: "actions" }, addBtn));
    form.querySelector("#dns-type").addEventListener("change", (ev) => { hint.textContent = valueHint[ev.target.value] || ""; });
    mount(main, h("h1", {}, "Names"),
      h("section", { "aria-labelledby": "dns-status-h" }, h("h2", { id: "dns-status-h" }, "The cell's name server"), status),
      h("section", { "aria-labelledby": "dns-records-h" }, h("h2", { id: "dns-records-h" }, "Records"), records, form));

    const loadStatus = async () => {
      let st;
      try {
        st = await get("/api/dns");
      } catch (e) {
        mount(status, errorBox(e));
        return;
      }
      const ups = st.upstreams || [];
      const cache = st.cache || {};
      const stateClass = st.state === "ok" ? "state-ok" : st.state === "degraded" ? "state-degraded" : "state-down";
      mount(status,
        h("dl", { class: "facts" },
          h("dt", {}, "State"), h("dd", {}, h("span", { class: stateClass, id: "dns-state" }, st.state || "unknown"), st.reason ? h("span", { class: "muted" }, ` — ${st.reason}`) : null),
          h("dt", {}, "Zone"), h("dd", { class: "mono", id: "dns-zone" }, st.zone || "none"),
          h("dt", {}, "Listening on"), h("dd", { class: "mono" }, (st.listening || []).length ? st.listening.join(", ") : "nowhere"),
          h("dt", {}, "Records"), h("dd", {}, `${st.record_count ?? 0} (zone serial ${st.serial ?? "?"})`),
          h("dt", {}, "Cache"), h("dd", {}, `${cache.entries ?? 0} entries, ${cache.hits ?? 0} hits, ${cache.misses ?? 0} misses`)),
        h("div", { class: "table-wrap" }, h("table", { id: "dns-upstreams", class: "cards" },
          h("caption", {}, "Upstream resolvers"),
          h("thead", {}, h("tr", {}, ["Address", "Health", "Answers", "Failures", "Round trip", "Last error"].map((x) => h("th", { scope: "col" }, x)))),
          h("tbody", {}, ups.length ? ups.map((u) => h("tr", {},
            h("th", { scope: "row", class: "mono" }, u.address),
            h("td", { "data-label": "Health" }, h("span", { class: u.healthy ? "state-ok" : "state-down" }, u.healthy ? "healthy" : "not answering"),
              u.last_ok !== undefined ? h("div", { class: "muted" }, `last answer: ${when(u.last_ok)}`) : null),
            h("td", { "data-label": "Answers" }, String(u.answers ?? 0)),
            h("td", { "data-label": "Failures" }, String(u.failures ?? 0)),
            h("td", { "data-label": "Round trip" }, u.rtt_ms ? `${Number(u.rtt_ms).toFixed(1)} ms` : "—"),
            h("td", { "data-label": "Last error" }, u.last_error || "—"))) : h("tr", {}, h("td", { colspan: 6 }, "No upstream resolvers."))))));
    };

    const loadRecords = async () => {
      let list;
      try {
        list = (await get("/api/dns/records")).records || [];
      } catch (e) {
        mount(records, errorBox(e));
        return;
      }
      mount(records, h("div", { class: "table-wrap" }, h("table", { id: "dns-records-table", class: "cards" },
        h("caption", {}, `Records of the zone (${list.length})`),
        h("thead", {}, h("tr", {}, ["Name", "Type", "Value", "TTL", "Actions"].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, list.length ? list.map(recordRow) : h("tr", {}, h("td", { colspan: 5 }, "No records of your own yet."))))));
    };

    const recordRow = (r) => {
      const actions = h("div", { class: "actions" });
      const err = h("div", { class: "row-error" });
      const label = `${r.fqdn || r.name} ${r.type}`;
      const delBtn = h("button", { type: "button", class: "danger", id: `dns-delete-${r.id}` }, `Delete ${label}`);
      const normal = () => mount(actions, delBtn);
      delBtn.addEventListener("click", () => {
        const yes = h("button", { type: "button", class: "danger", id: `dns-delete-confirm-${r.id}` }, `Yes, delete ${label}`);
        const no = h("button", { type: "button", class: "secondary", id: `dns-delete-cancel-${r.id}`, onclick: () => { normal(); delBtn.focus(); } }, "Cancel");
        yes.addEventListener("click", () => busy(yes, "Deleting…", async () => {
          try {
            await del(`/api/dns/records/${esc(String(r.id))}`);
            toast(`${label} is deleted.`);
            await Promise.all([loadRecords(), loadStatus()]);
            form.querySelector("#dns-name").focus();
          } catch (e) {
            // The record may be gone even when the server refused to apply it.
            await loadRecords();
            const row = records.querySelector(`#dns-row-${r.id} .row-error`);
            if (row) mount(row, errorBox(e));
            else toast(`${label} is deleted, but: ${e.message}`);
          }
        }));
        mount(actions, h("p", { class: "confirm", role: "alert" }, `Delete ${label} → ${r.value}?`), yes, no);
        no.focus();
      });
      normal();
      return h("tr", { id: `dns-row-${r.id}` },
        h("th", { scope: "row", class: "mono" }, r.fqdn || r.name),
        h("td", { "data-label": "Type" }, r.type),
        h("td", { "data-label": "Value", class: "mono" }, r.value),
        h("td", { "data-label": "TTL" }, r.ttl ? `${r.ttl} s` : "300 s"),
        h("td", { "data-label": "Actions" }, actions, err));
    };

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const name = form.querySelector("#dns-name").value.trim();
      const type = form.querySelector("#dns-type").value;
      const val = value.value.trim();
      const ttlRaw = form.querySelector("#dns-ttl").value;
      if (!name || !val) {
        mount(addErr, errorBox(new ApiError(0, "", "Give the record a name and a value.")));
        form.querySelector(name ? "#dns-value" : "#dns-name").focus();
        return;
      }
      const body = { name, type, value: val };
      if (ttlRaw !== "") body.ttl = Number(ttlRaw);
      busy(addBtn, "Adding…", async () => {
        try {
          const rec = await post("/api/dns/records", body);
          mount(addErr);
          form.querySelector("#dns-name").value = "";
          value.value = "";
          form.querySelector("#dns-ttl").value = "";
          toast(`${rec && rec.fqdn ? rec.fqdn : name} is added.`);
          await Promise.all([loadRecords(), loadStatus()]);
          form.querySelector("#dns-name").focus();
        } catch (e) {
          mount(addErr, errorBox(e));
          addErr.focus();
          // A record may be stored even when the server refused to apply it.
          await loadRecords();
        }
      });
    });

    await Promise.all([loadStatus(), loadRecords()]);
  },
};
