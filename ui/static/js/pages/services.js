// The Services page: the store (install with progress), the installed
// services (status, restart, remove keeping or dropping their data) and each
// service's accounts, with a credential shown only when asked for. Where
// containerd is absent the API answers 503 with why: each section shows that
// message in place of its content, and the rest of the page still works.
import { get, post, del, esc } from "../api.js";
import { h, mount, field, checkbox, errorBox, toast, busy, formData, when, bytes, table } from "../dom.js";

export default {
  path: "services",
  title: "Services",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const status = h("p", { id: "services-status", class: "muted", "aria-live": "polite" });
    const activeBox = h("div", { id: "services-active-box" });
    const panel = h("div", { id: "services-panel" });
    const storeBox = h("div", { id: "services-store-box" });
    mount(main,
      h("h1", {}, "Services"),
      status,
      h("section", { "aria-labelledby": "services-installed-h" }, h("h2", { id: "services-installed-h", tabindex: "-1" }, "Installed services"), activeBox, panel),
      h("section", { "aria-labelledby": "services-store-h" }, h("h2", { id: "services-store-h" }, "Store"),
        h("p", { class: "muted" }, "Services the cell can run for the household. Installing one downloads it and starts it; it then shows above."),
        storeBox));

    const say = (text) => { status.textContent = text; };

    // polling holds the ids whose install this render watches, so a reload
    // of the store does not start a second loop.
    const polling = new Set();
    let active = [];

    async function refresh() {
      await loadActive();
      await loadStore();
    }

    async function loadActive() {
      let list;
      try {
        list = (await get("/api/services/active")).services || [];
        active = list;
      } catch (e) {
        mount(activeBox, errorBox(e));
        return;
      }
      if (!list.length) {
        mount(activeBox, h("p", { class: "muted", id: "services-none" }, "No service is installed yet: pick one from the store below."));
        return;
      }
      mount(activeBox, h("div", { class: "table-wrap" }, cards(table("Services installed on the cell",
        ["Service", "State", "Address", "Accounts", "Actions"],
        list.map((s) => [
          h("span", {}, h("strong", {}, s.name || s.id), " ", h("span", { class: "muted" }, s.version || "")),
          h("span", { id: `service-state-${s.id}` }, h("span", { class: `state-${s.state === "running" ? "ok" : s.state}` }, s.state),
            s.reason ? h("span", { class: "muted" }, ` — ${s.reason}`) : null,
            s.restarts ? h("span", { class: "muted" }, ` (restarted ${s.restarts}×)`) : null),
          s.url ? h("a", { href: s.url, target: "_blank", rel: "noopener" }, s.url) : (s.subdomain || ""),
          String(s.accounts ?? 0),
          h("div", { class: "actions" },
            h("button", { type: "button", class: "secondary", id: `service-status-${s.id}`, "aria-label": `Status of ${s.name || s.id}`, onclick: () => showStatus(s) }, "Status"),
            h("button", { type: "button", class: "secondary", id: `service-restart-${s.id}`, "aria-label": `Restart ${s.name || s.id}`, onclick: (ev) => restart(ev.currentTarget, s) }, "Restart"),
            h("button", { type: "button", class: "secondary", id: `service-accounts-${s.id}`, "aria-label": `Accounts of ${s.name || s.id}`, onclick: () => showAccounts(s) }, "Accounts"),
            h("button", { type: "button", class: "danger", id: `service-remove-${s.id}`, "aria-label": `Remove ${s.name || s.id}`, onclick: () => confirmRemove(s) }, "Remove")),
        ])))));
    }

    async function loadStore() {
      let list;
      try {
        list = (await get("/api/store")).services || [];
      } catch (e) {
        mount(storeBox, errorBox(e));
        return;
      }
      if (!list.length) {
        mount(storeBox, h("p", { class: "muted" }, "The store is empty: the cell has no signed catalog yet."));
        return;
      }
      mount(storeBox, h("div", { class: "grid", id: "store-list" }, list.map((s) => {
        const progress = h("div", { id: `install-progress-${s.id}`, class: "install-progress", "aria-live": "polite" });
        const button = s.installed
          ? h("button", { type: "button", disabled: true, id: `install-${s.id}` }, "Installed")
          : !s.available
            ? h("button", { type: "button", disabled: true, id: `install-${s.id}` }, "Not available for this machine")
            : h("button", { type: "button", id: `install-${s.id}`, "aria-label": `Install ${s.name || s.id}`, onclick: (ev) => install(ev.currentTarget, s, progress) }, "Install");
        // A service still installing (from before this page was opened) is watched too.
        if (active.some((a) => a.id === s.id && a.state === "installing")) poll(s, progress, button);
        return h("article", { class: "card store-entry", id: `store-${s.id}` },
          h("h3", {}, s.name || s.id, " ", h("span", { class: "muted" }, s.version || "")),
          h("p", {}, s.description || ""),
          h("ul", { class: "facts" },
            s.subdomain ? h("li", {}, "Address: ", h("code", {}, s.subdomain)) : null,
            s.memory_bytes ? h("li", {}, `Memory: up to ${bytes(s.memory_bytes)}`) : null,
            h("li", {}, s.internet_egress ? "Reaches the internet" : "Stays inside the cell"),
            s.accounts ? h("li", {}, `Accounts: ${s.accounts}`) : null,
            (s.capabilities || []).length ? h("li", {}, `Needs: ${s.capabilities.join(", ")}`) : null),
          h("div", { class: "actions" }, button),
          progress);
      })));
    }

    async function install(button, s, progress) {
      button.disabled = true;
      mount(progress, h("p", {}, `Installing ${s.name || s.id}…`), h("progress", { "aria-label": `Installing ${s.name || s.id}` }));
      try {
        await post("/api/store/install", { id: s.id });
      } catch (e) {
        button.disabled = false;
        mount(progress, errorBox(e));
        return;
      }
      say(`Installing ${s.name || s.id}.`);
      poll(s, progress, button);
    }

    // poll asks for the service's status every second until it runs or
    // fails, while the page is shown.
    function poll(s, progress, button) {
      // The store may be drawn again meanwhile: always write to the box shown now.
      const box = () => document.getElementById(`install-progress-${s.id}`) || progress;
      if (polling.has(s.id)) return;
      polling.add(s.id);
      const name = s.name || s.id;
      mount(progress, h("p", {}, `Installing ${name}…`), h("progress", { "aria-label": `Installing ${name}` }));
      const tick = async () => {
        if (!ctx.run()) { polling.delete(s.id); return; }
        let st;
        try {
          st = await get(`/api/services/catalog/${esc(s.id)}/status`);
        } catch (e) {
          if (e.status === 404) { setTimeout(tick, 1000); return; } // not recorded yet
          polling.delete(s.id);
          button.disabled = false;
          mount(box(), errorBox(e));
          return;
        }
        if (st.state === "running") {
          polling.delete(s.id);
          say(`${name} is installed and running.`);
          toast(`${name} is running`);
          await refresh();
          mount(box(), h("p", { class: "state-ok" }, `${name} is running.`));
          return;
        }
        if (st.state === "failed") {
          polling.delete(s.id);
          say(`${name} failed to install.`);
          await refresh();
          mount(box(), h("p", { class: "state-failed", role: "alert" }, `${name} failed: ${st.reason || "no reason given"}`));
          return;
        }
        mount(box(),
          h("p", {}, `${name}: ${st.state}${st.reason ? ` — ${st.reason}` : ""}${st.container && st.container !== "unknown" ? ` (container ${st.container})` : ""}`),
          h("progress", { "aria-label": `Installing ${name}` }));
        setTimeout(tick, 1000);
      };
      setTimeout(tick, 500);
    }

    async function showStatus(s) {
      mount(panel, h("p", { class: "loading" }, "Asking…"));
      try {
        const st = await get(`/api/services/catalog/${esc(s.id)}/status`);
        const head = h("h3", { tabindex: "-1", id: "service-status-h" }, `Status of ${s.name || s.id}`);
        mount(panel, h("div", { class: "card", id: "service-status" }, head,
          h("dl", { class: "facts" },
            h("dt", {}, "State"), h("dd", {}, st.state, st.reason ? ` — ${st.reason}` : ""),
            h("dt", {}, "Container"), h("dd", {}, st.container || "unknown"),
            h("dt", {}, "Process"), h("dd", {}, st.pid ? String(st.pid) : "none"),
            h("dt", {}, "Started"), h("dd", {}, when(st.started_at)),
            h("dt", {}, "Restarts"), h("dd", {}, String(st.restarts ?? 0)),
            h("dt", {}, "Address"), h("dd", {}, h("code", {}, st.address || "")))));
        head.focus();
      } catch (e) {
        mount(panel, errorBox(e));
      }
    }

    async function restart(button, s) {
      try {
        await busy(button, "Restarting…", () => post(`/api/services/catalog/${esc(s.id)}/restart`));
        say(`${s.name || s.id} is restarting.`);
        toast(`${s.name || s.id} is restarting`);
        setTimeout(() => { if (ctx.run()) loadActive(); }, 1500);
      } catch (e) {
        mount(panel, errorBox(e));
      }
    }

    function confirmRemove(s) {
      const keep = checkbox("Keep its data (you can install it again and find everything)", { id: "remove-keep-data", checked: true, name: "keep" });
      const head = h("h3", { tabindex: "-1", id: "remove-confirm-h" }, `Remove ${s.name || s.id}?`);
      const err = h("div");
      const yes = h("button", { type: "button", class: "danger", id: "remove-confirm", onclick: async () => {
        const keepData = keep.querySelector("input").checked;
        try {
          await busy(yes, "Removing…", () => post("/api/store/remove", { id: s.id, keep_data: keepData }));
          mount(panel);
          say(`${s.name || s.id} is removed${keepData ? "; its data is kept" : " with its data"}.`);
          toast(`${s.name || s.id} removed`);
          await refresh();
          document.getElementById("services-installed-h")?.focus();
        } catch (e) {
          mount(err, errorBox(e));
        }
      } }, `Yes, remove ${s.name || s.id}`);
      mount(panel, h("div", { class: "card confirm-box", id: "remove-confirm-box", role: "group", "aria-labelledby": "remove-confirm-h" },
        head,
        h("p", {}, "The service stops and its address goes away. Its accounts are removed."),
        keep, err,
        h("div", { class: "actions" }, yes,
          h("button", { type: "button", class: "secondary", id: "remove-cancel", onclick: () => { mount(panel); document.getElementById(`service-remove-${s.id}`)?.focus(); } }, "Cancel"))));
      head.focus();
    }

    async function showAccounts(s) {
      const name = s.name || s.id;
      const head = h("h3", { tabindex: "-1", id: "service-accounts-h" }, `Accounts of ${name}`);
      const listBox = h("div", { id: "service-accounts-list" });
      const err = h("div");
      const form = h("form", { id: "service-account-form", onsubmit: async (ev) => {
        ev.preventDefault();
        const d = formData(form);
        const body = {};
        if (d.peer) body.peer = d.peer.trim();
        if (d.username) body.username = d.username.trim();
        mount(err);
        try {
          const a = await busy(form.querySelector("button"), "Adding…", () => post(`/api/services/catalog/${esc(s.id)}/accounts`, body));
          form.reset();
          toast(`Account ${a.username} added`);
          await loadAccounts();
          loadActive(); // its count of accounts
        } catch (e) {
          mount(err, errorBox(e));
        }
      } },
      field("For the peer (their name)", { name: "peer", id: "account-peer", autocomplete: "off" }, "The account takes the peer's name, and the peer finds its password in their portal."),
      field("Or a username of your choice", { name: "username", id: "account-username", autocomplete: "off" }),
      err,
      h("div", { class: "actions" }, h("button", { type: "submit", id: "account-add" }, "Add account")));

      async function loadAccounts() {
        let list;
        try {
          list = (await get(`/api/services/catalog/${esc(s.id)}/accounts`)).accounts || [];
        } catch (e) {
          mount(listBox, errorBox(e));
          return;
        }
        if (!list.length) {
          mount(listBox, h("p", { class: "muted" }, `${name} has no account yet.`));
          return;
        }
        mount(listBox, h("div", { class: "table-wrap" }, cards(table(`Accounts of ${name}`, ["Username", "Peer", "Created", "Actions"],
          list.map((a) => {
            const creds = h("div", { id: `credentials-${a.username}`, "aria-live": "polite" });
            const confirmBox = h("div");
            return [
              h("span", {}, a.username, creds),
              a.peer || "",
              when(a.created_at),
              h("div", {},
                h("div", { class: "actions" },
                  h("button", { type: "button", class: "secondary", id: `credentials-show-${a.username}`, "aria-label": `Show credentials of ${a.username}`, onclick: (ev) => reveal(ev.currentTarget, a, creds) }, "Show credentials"),
                  h("button", { type: "button", class: "danger", id: `account-delete-${a.username}`, "aria-label": `Delete the account ${a.username}`, onclick: () => confirmDelete(a, confirmBox) }, "Delete")),
                confirmBox),
            ];
          })))));
      }

      async function reveal(button, a, box) {
        const label = (verb) => { button.textContent = `${verb} credentials`; button.setAttribute("aria-label", `${verb} credentials of ${a.username}`); };
        if (box.childElementCount) { mount(box); label("Show"); return; }
        try {
          const c = await busy(button, "Asking…", () => get(`/api/services/catalog/${esc(s.id)}/accounts/${esc(a.username)}/credentials`));
          mount(box, h("dl", { class: "facts credentials" },
            h("dt", {}, "Address"), h("dd", {}, c.url ? h("a", { href: c.url, target: "_blank", rel: "noopener" }, c.url) : ""),
            h("dt", {}, "Username"), h("dd", {}, h("code", {}, c.username)),
            h("dt", {}, "Password"), h("dd", {}, h("code", { class: "secret" }, c.password))));
          label("Hide");
        } catch (e) {
          mount(box, errorBox(e));
        }
      }

      function confirmDelete(a, box) {
        const yes = h("button", { type: "button", class: "danger", id: `account-delete-confirm-${a.username}`, onclick: async () => {
          try {
            await busy(yes, "Deleting…", () => del(`/api/services/catalog/${esc(s.id)}/accounts/${esc(a.username)}`));
            toast(`Account ${a.username} deleted`);
            await loadAccounts();
            loadActive();
            head.focus();
          } catch (e) {
            mount(box, errorBox(e));
          }
        } }, `Yes, delete ${a.username}`);
        mount(box, h("div", { class: "confirm-box", role: "group", "aria-label": `Delete ${a.username}?` },
          h("p", {}, `Delete ${a.username}? They can no longer sign in to ${name}.`),
          h("div", { class: "actions" }, yes,
            h("button", { type: "button", class: "secondary", onclick: () => mount(box) }, "Cancel"))));
        yes.focus();
      }

      mount(panel, h("div", { class: "card", id: "service-accounts" }, head, listBox,
        h("h4", {}, "Add an account"), form,
        h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => { mount(panel); document.getElementById(`service-accounts-${s.id}`)?.focus(); } }, "Close"))));
      head.focus();
      await loadAccounts();
    }

    await refresh();
  },
};

// cards marks a table to become one card per row on a phone (app.css
// table.cards), each cell labelled with its column's header.
function cards(t) {
  t.classList.add("cards");
  const heads = [...t.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const tr of t.querySelectorAll("tbody tr")) [...tr.children].forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
  return t;
}
