// The routing page: how peers reach the internet (NAT), where each peer may
// go, and the port forwards from the internet to a peer (add, delete with a
// confirm step in the page).
import { get, put, post, del, esc, ApiError } from "../api.js";
import { h, mount, field, errorBox, busy, toast, when } from "../dom.js";

const policyParts = [["internet", "Internet"], ["lan", "Home network"], ["peers", "Other peers"]];

export default {
  path: "routing",
  title: "Routing",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const nat = h("div", { id: "routing-nat" });
    const policies = h("div", { id: "routing-policies" });
    const forwards = h("div", { id: "routing-forwards" });
    const addErr = h("div", { id: "forward-add-error", tabindex: "-1" });
    const addBtn = h("button", { type: "submit", id: "forward-add" }, "Add forward");
    const peerSelect = h("select", { id: "fwd-peer", name: "peer", required: true });
    const form = h("form", { id: "forward-add-form", novalidate: true, "aria-labelledby": "forward-add-h" },
      h("h3", { id: "forward-add-h" }, "Add a port forward"),
      addErr,
      field("Protocol", { id: "fwd-proto", name: "proto", type: "select", options: [{ value: "tcp", label: "TCP", selected: true }, { value: "udp", label: "UDP" }] }),
      field("Port on the internet side", { id: "fwd-port", name: "port", type: "number", min: 1, max: 65535, inputmode: "numeric", required: true }),
      h("div", { class: "field" }, h("label", { for: "fwd-peer" }, "To peer"), peerSelect),
      field("Port on the peer (optional)", { id: "fwd-to-port", name: "to_port", type: "number", min: 1, max: 65535, inputmode: "numeric" }, "Empty: the same port."),
      h("div", { class: "actions" }, addBtn));
    mount(main, h("h1", {}, "Routing"),
      h("section", { "aria-labelledby": "nat-h" }, h("h2", { id: "nat-h" }, "Internet access"), nat),
      h("section", { "aria-labelledby": "pol-h" }, h("h2", { id: "pol-h" }, "Where each peer may go"), policies),
      h("section", { "aria-labelledby": "fwd-h" }, h("h2", { id: "fwd-h" }, "Port forwards"),
        h("p", {}, "A port forward lets someone on the internet reach a service on one of your peers."), forwards, form));

    const load = async () => {
      let r;
      try {
        r = await get("/api/routing");
      } catch (e) {
        mount(nat, errorBox(e));
        mount(policies);
        mount(forwards);
        return;
      }
      const n = r.nat || {};
      mount(nat, h("dl", { class: "facts" },
        h("dt", {}, "NAT for peers"), h("dd", { id: "nat-enabled", class: n.enabled ? "state-ok" : "muted" }, n.enabled ? "on: peers reach the internet through the cell" : "off"),
        h("dt", {}, "Internet interface"), h("dd", {}, n.wan_interface || "none found"),
        h("dt", {}, "Masqueraded networks"), h("dd", { class: "mono" }, (n.masquerade || []).length ? n.masquerade.join(", ") : "none"),
        h("dt", {}, "Firewall"), h("dd", { class: n.firewall ? "state-ok" : "muted" }, n.firewall ? "active" : "not active")));

      const peers = r.peers || [];
      mount(peerSelect, peers.map((p) => h("option", { value: p.name }, p.name)));
      if (!peers.length) peerSelect.append(h("option", { value: "" }, "no peers yet"));
      mount(policies, h("div", { class: "table-wrap" }, h("table", { id: "policy-table", class: "cards" },
        h("caption", {}, "Policy per peer (checked: allowed)"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Peer"), policyParts.map(([, l]) => h("th", { scope: "col" }, l)), h("th", { scope: "col" }, "Result"))),
        h("tbody", {}, peers.length ? peers.map(policyRow) : h("tr", {}, h("td", { colspan: 5 }, "No peers yet."))))));

      const fw = r.forwards || [];
      mount(forwards, h("div", { class: "table-wrap" }, h("table", { id: "forwards-table", class: "cards" },
        h("caption", {}, `Port forwards (${fw.length})`),
        h("thead", {}, h("tr", {}, ["Forward", "To peer", "Peer port", "Added", "Actions"].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, fw.length ? fw.map(forwardRow) : h("tr", {}, h("td", { colspan: 5 }, "No port forwards."))))));
    };

    const policyRow = (p) => {
      const result = h("td", { "data-label": "Result", "aria-live": "polite" });
      return h("tr", { id: `policy-row-${p.name}` },
        h("th", { scope: "row" }, p.name, p.enabled ? "" : h("span", { class: "muted" }, " (disabled)")),
        policyParts.map(([key, label]) => {
          const id = `routing-policy-${p.name}-${key}`;
          const box = h("input", { type: "checkbox", id, checked: p[key] === "allow" });
          box.addEventListener("change", async () => {
            box.disabled = true;
            try {
              await put(`/api/routing/peers/${esc(p.name)}`, { [key]: box.checked ? "allow" : "deny" });
              mount(result, `${label}: ${box.checked ? "allowed" : "denied"}`);
            } catch (e) {
              box.checked = !box.checked;
              mount(result, errorBox(e));
            } finally {
              box.disabled = false;
              box.focus();
            }
          });
          return h("td", { "data-label": label }, h("div", { class: "check" }, box, h("label", { for: id }, `${label} for ${p.name}`)));
        }),
        result);
    };

    const forwardRow = (f) => {
      const key = `${f.proto}-${f.port}`;
      const actions = h("div", { class: "actions" });
      const err = h("div", { class: "row-error" });
      const delBtn = h("button", { type: "button", class: "danger", id: `forward-delete-${key}` }, `Delete ${f.proto}/${f.port}`);
      const normal = () => mount(actions, delBtn);
      delBtn.addEventListener("click", () => {
        const yes = h("button", { type: "button", class: "danger", id: `forward-delete-confirm-${key}` }, `Yes, delete ${f.proto}/${f.port}`);
        const no = h("button", { type: "button", class: "secondary", id: `forward-delete-cancel-${key}`, onclick: () => { normal(); delBtn.focus(); } }, "Cancel");
        yes.addEventListener("click", () => busy(yes, "Deleting…", async () => {
          try {
            await del(`/api/routing/forwards/${esc(f.proto)}/${f.port}`);
            toast(`The forward ${f.proto}/${f.port} is deleted.`);
            await load();
            form.querySelector("#fwd-port").focus();
          } catch (e) { mount(err, errorBox(e)); }
        }));
        mount(actions, h("p", { class: "confirm", role: "alert" }, `Delete the forward of ${f.proto}/${f.port} to ${f.peer}?`), yes, no);
        no.focus();
      });
      normal();
      return h("tr", { id: `forward-row-${key}` },
        h("th", { scope: "row", class: "mono" }, `${f.proto}/${f.port}`),
        h("td", { "data-label": "To peer" }, f.peer),
        h("td", { "data-label": "Peer port" }, String(f.to_port || f.port)),
        h("td", { "data-label": "Added" }, when(f.created_at)),
        h("td", { "data-label": "Actions" }, actions, err));
    };

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const proto = form.querySelector("#fwd-proto").value;
      const port = Number(form.querySelector("#fwd-port").value);
      const toRaw = form.querySelector("#fwd-to-port").value;
      const peer = peerSelect.value;
      if (!port || port < 1 || port > 65535) {
        mount(addErr, errorBox(new ApiError(0, "", "The port must be a number from 1 to 65535.")));
        form.querySelector("#fwd-port").focus();
        return;
      }
      if (!peer) {
        mount(addErr, errorBox(new ApiError(0, "", "Add a peer first: a forward goes to a peer.")));
        return;
      }
      const body = { proto, port, peer };
      if (toRaw !== "") body.to_port = Number(toRaw);
      busy(addBtn, "Adding…", async () => {
        try {
          await post("/api/routing/forwards", body);
          mount(addErr);
          form.querySelector("#fwd-port").value = "";
          form.querySelector("#fwd-to-port").value = "";
          toast(`The forward ${proto}/${port} to ${peer} is added.`);
          await load();
          const row = forwards.querySelector(`#forward-delete-${proto}-${port}`);
          if (row) row.focus();
        } catch (e) {
          mount(addErr, errorBox(e));
          addErr.focus();
        }
      });
    });

    await load();
  },
};
