// The peer portal ("My cell"), laid out for a phone: the person's own tunnel
// configuration as a QR code to scan into the WireGuard app (and as a file to
// download), their service credentials with copy buttons, and the way to
// change their password. It uses only /api/peer/* (the peer's own data).
import { get } from "../api.js";
import { h, mount, errorBox, toast } from "../dom.js";

export default {
  path: "portal",
  title: "My cell",
  roles: ["peer"],
  nav: true,
  async render(main, ctx) {
    const name = ctx.me ? ctx.me.username : "";
    const meBox = h("div", { id: "my-peer" });
    const configText = h("pre", { id: "my-config", tabindex: "0", "aria-label": "My configuration" });
    const configErr = h("div");
    const credsBox = h("div", { id: "my-credentials" });
    const file = `${safe(name || "cell")}.conf`;
    const qr = h("img", { class: "qr", id: "my-qr", src: "/api/peer/qr?format=svg", alt: "QR code of my tunnel configuration: scan it with the WireGuard app", width: 320, height: 320 });
    qr.addEventListener("error", () => mount(configErr, errorBox({ message: "The QR code could not be loaded: reload the page, or download the file below." })), { once: true });

    mount(main, h("div", { class: "portal" },
      h("h1", {}, name ? `Hello, ${name}` : "My cell"),
      meBox,
      h("section", { "aria-labelledby": "my-device-h" }, h("h2", { id: "my-device-h" }, "Connect a device"),
        h("ol", { class: "howto" },
          h("li", {}, "Install the WireGuard app on your phone or computer."),
          h("li", {}, "In the app, add a tunnel from a QR code and scan this one, or import the file below."),
          h("li", {}, "Turn the tunnel on: you are home, wherever you are.")),
        qr,
        configErr,
        h("div", { class: "actions" },
          h("a", { class: "button", id: "my-config-download", href: "/api/peer/config", download: file }, "Download my configuration")),
        h("details", { id: "my-config-details", ontoggle: (ev) => { if (ev.currentTarget.open && !configText.textContent) showConfig(); } },
          h("summary", {}, "Show the configuration as text"),
          configText)),
      h("section", { "aria-labelledby": "my-creds-h" }, h("h2", { id: "my-creds-h" }, "My services"), credsBox),
      h("section", { "aria-labelledby": "my-account-h" }, h("h2", { id: "my-account-h" }, "My password"),
        h("p", {}, "Your password opens this page and nothing else; keep it to yourself."),
        h("div", { class: "actions" }, h("a", { class: "button secondary", id: "my-password", href: "#/account" }, "Change my password")))));

    async function showConfig() {
      try {
        const text = await get("/api/peer/config");
        configText.textContent = typeof text === "string" ? text : JSON.stringify(text, null, 2);
      } catch (e) {
        mount(configErr, errorBox(e));
      }
    }

    async function loadMe() {
      try {
        const p = await get("/api/peer/me");
        mount(meBox, h("p", { class: "muted" },
          p.enabled === false ? h("strong", { class: "state-failed" }, "Your access is switched off by the cell's admin. ") : null,
          p.ipv4 ? `Your address in the cell: ${p.ipv4}` : ""));
      } catch (e) {
        mount(meBox, errorBox(e));
      }
    }

    async function loadCreds() {
      let list;
      try {
        list = (await get("/api/peer/service-credentials")).services || [];
      } catch (e) {
        mount(credsBox, errorBox(e));
        return;
      }
      if (!list.length) {
        mount(credsBox, h("p", { class: "muted", id: "my-credentials-none" }, "You have no service account yet: the cell's admin gives you one when a service is installed."));
        return;
      }
      mount(credsBox, list.map((c, i) => h("article", { class: "card cred", id: `cred-${c.service}` },
        h("h3", {}, c.name || c.service),
        row("Address", c.url, `cred-url-${i}`, c.url ? h("a", { href: c.url, target: "_blank", rel: "noopener" }, `Open ${c.name || c.service}`) : null),
        row("Username", c.username, `cred-user-${i}`),
        row("Password", c.password, `cred-pass-${i}`))));
    }

    await Promise.all([loadMe(), loadCreds()]);
  },
};

// row is one credential with its copy button; the value's element has the
// given id (cred-pass-0...), the button that id with "-copy".
function row(label, value, id, extra) {
  const code = h("code", { id }, value || "");
  return h("div", { class: "cred-row" },
    h("span", { class: "label", id: `${id}-label` }, label),
    code,
    h("button", { type: "button", class: "secondary", id: `${id}-copy`, "aria-label": `Copy the ${label.toLowerCase()}`, "aria-describedby": `${id}-label`, onclick: () => copy(code, label) }, "Copy"),
    extra);
}

// copy puts the text on the clipboard; where the browser does not allow it
// (no secure context, no permission) it selects the text for the person to
// copy themselves.
async function copy(el, label) {
  const text = el.textContent;
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
    await navigator.clipboard.writeText(text);
    toast(`${label} copied`);
  } catch {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    toast(`${label} selected: copy it with your device's copy command`);
  }
}

function safe(name) {
  return String(name).replace(/[^A-Za-z0-9._-]+/g, "_");
}
