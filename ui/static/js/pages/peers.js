// The peers page: the list with each peer's tunnel state, adding a peer (its
// QR code on screen at once, the config to download, the one-time password
// shown once), and per peer: enable/disable, where it may go, the QR code
// again, and deleting with a confirm step in the page. A peer whose config
// names an endpoint that is no longer the cell's carries a "config outdated"
// mark that shows its QR code (showing it hands the new config out);
// #/peers?show=<name> opens a peer's QR code at once (the Network page links
// there).
import { get, post, put, del, esc, ApiError } from "../api.js";
import { h, mount, field, errorBox, busy, toast, when, bytes } from "../dom.js";

const policyParts = [["internet", "Internet"], ["lan", "Home network"], ["peers", "Other peers"]];

export default {
  path: "peers",
  title: "Peers",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const list = h("div", { id: "peers-list" });
    const shown = h("div", { id: "peer-shown", tabindex: "-1" });
    const addErr = h("div", { id: "peer-add-error", tabindex: "-1" });
    const addBtn = h("button", { type: "submit", id: "peer-add" }, "Add peer");
    const form = h("form", { id: "peer-add-form", novalidate: true, "aria-labelledby": "peer-add-h" },
      h("h2", { id: "peer-add-h" }, "Add a peer"),
      h("p", {}, "A peer is one device (a phone, a laptop) that connects to the cell through WireGuard."),
      addErr,
      field("Name", { id: "peer-name", name: "name", required: true, autocapitalize: "none", spellcheck: "false", autocomplete: "off" },
        "Also the peer's username for the portal: lowercase letters, digits and dashes."),
      field("Description (optional)", { id: "peer-description", name: "description", autocomplete: "off" }),
      field("Route", {
        id: "peer-route", name: "route", type: "select", options: [
          { value: "full", label: "All traffic through the cell", selected: true },
          { value: "split", label: "Only the cell's network (split tunnel)" },
        ],
      }),
      h("div", { class: "actions" }, addBtn));
    mount(main, h("h1", {}, "Peers"), shown, h("section", {}, form), list);

    // showPeer puts a peer's QR code (and, right after adding, its one-time
    // password) at the top of the page.
    // outdated: the peer's config was outdated, so Done reloads the list
    // (the config just shown is the current one).
    const showPeer = (name, created, outdated) => {
      const close = h("button", { type: "button", class: "secondary", id: "peer-shown-close", onclick: async () => { mount(shown); form.querySelector("#peer-name").focus(); if (outdated) await load(); } }, "Done");
      mount(shown, h("section", { class: "peer-shown", "aria-labelledby": "peer-shown-h" },
        h("h2", { id: "peer-shown-h", tabindex: "-1" }, created ? `${name} is added: scan this code` : `Connect ${name}`),
        h("p", {}, "In the WireGuard app on the device: add a tunnel, then scan this code. On a computer, download the config and import it."),
        h("img", { id: "peer-qr", class: "qr", alt: `QR code of ${name}'s WireGuard config`, src: `/api/peers/${esc(name)}/qr?format=svg`, width: 320, height: 320 }),
        h("div", { class: "actions" },
          h("a", { class: "button", id: "peer-config-download", href: `/api/peers/${esc(name)}/config`, download: `${name}.conf` }, `Download ${name}.conf`),
          close),
        created && created.one_time_password ? h("div", { class: "notice", id: "peer-otp-note" },
          h("p", {}, "Portal sign-in for ", h("strong", {}, created.username || name), ": one-time password ",
            h("code", { id: "peer-otp" }, created.one_time_password)),
          h("p", {}, "It is shown only this once: give it to the person now. At their first sign-in they choose their own password.")) : null));
      shown.querySelector("#peer-shown-h").focus();
    };

    const load = async () => {
      let peers, wg = null;
      try {
        peers = (await get("/api/peers")).peers || [];
      } catch (e) {
        mount(list, errorBox(e));
        return;
      }
      try { wg = await get("/api/wireguard/status"); } catch { /* the tunnel's state is extra: the list stands without it */ }
      const live = new Map(((wg && wg.peers) || []).map((p) => [p.name, p]));
      mount(list, h("div", { class: "table-wrap" }, h("table", { id: "peers-table", class: "cards" },
        h("caption", {}, `Peers (${peers.length})`),
        h("thead", {}, h("tr", {}, ["Name", "Address", "State", "Last handshake", "Traffic", "May reach", "Actions"].map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, peers.length ? peers.map((p) => row(p, live.get(p.name))) :
          h("tr", {}, h("td", { colspan: 7 }, "No peers yet: add the first one above."))))));
    };

    const row = (p, w) => {
      const hs = (w && w.last_handshake) || p.last_handshake;
      const rx = w ? w.rx_bytes : p.rx_bytes;
      const tx = w ? w.tx_bytes : p.tx_bytes;
      const err = h("div", { class: "row-error" });
      const actions = h("div", { class: "actions" });
      const toggle = h("button", { type: "button", class: "secondary", id: `peer-toggle-${p.name}` }, p.enabled ? `Disable ${p.name}` : `Enable ${p.name}`);
      toggle.addEventListener("click", () => busy(toggle, p.enabled ? "Disabling…" : "Enabling…", async () => {
        try {
          await put(`/api/peers/${esc(p.name)}`, { enabled: !p.enabled });
          toast(`${p.name} is ${p.enabled ? "disabled" : "enabled"}.`);
          await load();
          const again = list.querySelector(`#peer-toggle-${CSS.escape(p.name)}`);
          if (again) again.focus();
        } catch (e) { mount(err, errorBox(e)); }
      }));
      const qr = h("button", { type: "button", class: "secondary", id: `peer-qr-${p.name}`, onclick: () => showPeer(p.name, null) }, `Show QR of ${p.name}`);
      const delBtn = h("button", { type: "button", class: "danger", id: `peer-delete-${p.name}` }, `Delete ${p.name}`);
      const normal = () => { mount(actions, toggle, qr, delBtn); };
      delBtn.addEventListener("click", () => {
        const yes = h("button", { type: "button", class: "danger", id: `peer-delete-confirm-${p.name}` }, `Yes, delete ${p.name}`);
        const no = h("button", { type: "button", class: "secondary", id: `peer-delete-cancel-${p.name}`, onclick: () => { normal(); delBtn.focus(); } }, "Cancel");
        yes.addEventListener("click", () => busy(yes, "Deleting…", async () => {
          try {
            await del(`/api/peers/${esc(p.name)}`);
            toast(`${p.name} is deleted.`);
            if (shown.querySelector("#peer-qr") && shown.textContent.includes(p.name)) mount(shown);
            await load();
            form.querySelector("#peer-name").focus();
          } catch (e) { mount(err, errorBox(e)); }
        }));
        mount(actions, h("p", { class: "confirm", role: "alert" }, `Delete ${p.name}? Its device loses the tunnel and its portal account goes too.`), yes, no);
        no.focus();
      });
      normal();
      const policy = h("fieldset", { class: "policy" }, h("legend", { class: "visually-hidden" }, `Where ${p.name} may go`),
        policyParts.map(([key, label]) => {
          const id = `policy-${p.name}-${key}`;
          const box = h("input", { type: "checkbox", id, checked: p.policy && p.policy[key] === "allow" });
          box.addEventListener("change", async () => {
            box.disabled = true;
            try {
              await put(`/api/routing/peers/${esc(p.name)}`, { [key]: box.checked ? "allow" : "deny" });
              toast(`${p.name}: ${label.toLowerCase()} ${box.checked ? "allowed" : "denied"}.`);
              mount(err);
            } catch (e) {
              box.checked = !box.checked;
              mount(err, errorBox(e));
            } finally {
              box.disabled = false;
              box.focus();
            }
          });
          return h("div", { class: "check" }, box, h("label", { for: id }, label));
        }));
      return h("tr", { id: `peer-row-${p.name}` },
        h("th", { scope: "row" }, p.name, p.description ? h("div", { class: "muted" }, p.description) : null),
        h("td", { "data-label": "Address", class: "mono" }, p.ipv4, p.ipv6 ? h("div", {}, p.ipv6) : null),
        h("td", { "data-label": "State" }, h("span", { class: p.enabled ? "state-ok" : "state-down" }, p.enabled ? "enabled" : "disabled"),
          h("div", { class: "muted" }, p.route === "split" ? "split tunnel" : "all traffic"),
          p.config_outdated ? h("div", {}, h("button", {
            type: "button", class: "badge-outdated", id: `peer-outdated-${p.name}`,
            "aria-label": `${p.name}: config outdated: send again`, onclick: () => showPeer(p.name, null, true),
          }, "config outdated: send again")) : null),
        h("td", { "data-label": "Last handshake" }, when(hs)),
        h("td", { "data-label": "Traffic", class: "nowrap" }, `${bytes(rx)} in`, h("br"), `${bytes(tx)} out`),
        h("td", { "data-label": "May reach" }, policy),
        h("td", { "data-label": "Actions" }, actions, err));
    };

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const name = form.querySelector("#peer-name").value.trim();
      const description = form.querySelector("#peer-description").value.trim();
      const route = form.querySelector("#peer-route").value;
      if (!name) {
        mount(addErr, errorBox(new ApiError(0, "", "Give the peer a name.")));
        form.querySelector("#peer-name").focus();
        return;
      }
      busy(addBtn, "Adding…", async () => {
        try {
          const created = await post("/api/peers", { name, description, route });
          mount(addErr);
          form.reset();
          const pname = created.peer ? created.peer.name : name;
          showPeer(pname, created);
          toast(`${pname} is added.`);
          await load();
        } catch (e) {
          mount(addErr, errorBox(e));
          addErr.focus();
        }
      });
    });

    await load();
    const ask = ctx.params.get("show");
    const askedRow = ask && list.querySelector(`#peer-row-${CSS.escape(ask)}`);
    if (askedRow) showPeer(ask, null, !!askedRow.querySelector(".badge-outdated"));
  },
};
