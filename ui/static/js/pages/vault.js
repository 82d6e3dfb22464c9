// The Vault page: the cell's certificate authority (its root to download and
// install on the household's devices, the revocation list), the certificates
// it issued (issue one, revoke one) and the trust keys it accepts signatures
// from. A new certificate's private key is shown once, here: the cell keeps
// no copy.
import { get, post, esc } from "../api.js";
import { h, mount, field, errorBox, toast, busy, formData, when, table } from "../dom.js";

export default {
  path: "vault",
  title: "Vault",
  roles: ["admin"],
  nav: true,
  async render(main) {
    const certsBox = h("div", { id: "vault-certs" });
    const keysBox = h("div", { id: "vault-trust-keys" });
    const issued = h("div", { id: "vault-issued", "aria-live": "polite" });
    const issueErr = h("div");
    const form = h("form", { id: "vault-issue-form", onsubmit: async (ev) => {
      ev.preventDefault();
      const d = formData(form);
      const body = {
        common_name: d.common_name.trim(),
        sans: d.sans.split(/[\s,]+/).filter(Boolean),
        days: d.days || 0,
      };
      mount(issueErr);
      try {
        const r = await busy(form.querySelector("button[type=submit]"), "Issuing…", () => post("/api/vault/certs", body));
        const head = h("h3", { tabindex: "-1", id: "vault-issued-h" }, `Issued: ${r.common_name || body.common_name}`);
        mount(issued, h("div", { class: "card" }, head,
          h("p", { role: "alert" }, h("strong", {}, "Save the private key now: "), "the cell keeps no copy and cannot show it again."),
          h("h4", {}, "Certificate"),
          h("pre", { id: "vault-issued-cert", tabindex: "0" }, r.certificate || ""),
          h("div", { class: "actions" }, download("Download the certificate", `${safe(body.common_name)}.crt`, r.certificate || "", "vault-issued-cert-download")),
          h("h4", {}, "Private key"),
          h("pre", { id: "vault-issued-key", tabindex: "0" }, r.private_key || ""),
          h("div", { class: "actions" }, download("Download the private key", `${safe(body.common_name)}.key`, r.private_key || "", "vault-issued-key-download"))));
        form.reset();
        head.focus();
        await loadCerts();
      } catch (e) {
        mount(issueErr, errorBox(e));
      }
    } },
    field("Name (common name)", { name: "common_name", id: "vault-cn", required: true, autocomplete: "off" }, "A DNS name, an address or a plain name, such as printer.home.example.org"),
    field("Other names and addresses", { name: "sans", id: "vault-sans", autocomplete: "off" }, "Separated by commas or spaces; at most 32"),
    field("Valid for (days)", { name: "days", id: "vault-days", type: "number", min: 1, max: 825, value: 365 }),
    issueErr,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "vault-issue" }, "Issue a certificate")));

    mount(main,
      h("h1", {}, "Vault"),
      h("section", { "aria-labelledby": "vault-ca-h" }, h("h2", { id: "vault-ca-h" }, "The cell's certificate authority"),
        h("p", {}, "Install the root on each device once, and the cell's addresses open without warnings."),
        h("div", { class: "actions" },
          h("a", { class: "button", id: "vault-ca-pem", href: "/api/vault/ca?format=pem", download: "cell-ca.pem" }, "Download the root (PEM)"),
          h("a", { class: "button secondary", id: "vault-ca-der", href: "/api/vault/ca?format=der", download: "cell-ca.crt" }, "Download the root for phones (DER)")),
        h("div", { class: "actions" },
          h("a", { class: "button secondary", id: "vault-crl-pem", href: "/api/vault/crl?format=pem", download: "cell-ca.crl.pem" }, "Revocation list (PEM)"),
          h("a", { class: "button secondary", id: "vault-crl-der", href: "/api/vault/crl?format=der", download: "cell-ca.crl" }, "Revocation list (DER)"))),
      h("section", { "aria-labelledby": "vault-certs-h" }, h("h2", { id: "vault-certs-h", tabindex: "-1" }, "Certificates"), certsBox,
        h("h3", {}, "Issue a certificate"), form, issued),
      h("section", { "aria-labelledby": "vault-keys-h" }, h("h2", { id: "vault-keys-h" }, "Trust keys"),
        h("p", { class: "muted" }, "Public keys whose signatures the cell accepts, such as the one that signs the services catalog."),
        keysBox));

    async function loadCerts() {
      let list;
      try {
        list = (await get("/api/vault/certs")).certs || [];
      } catch (e) {
        mount(certsBox, errorBox(e));
        return;
      }
      if (!list.length) {
        mount(certsBox, h("p", { class: "muted" }, "No certificate yet."));
        return;
      }
      mount(certsBox, h("div", { class: "table-wrap" }, cards(table("Certificates of the cell's CA", ["Name", "Kind", "Valid until", "Status", "Serial", "Actions"],
        list.map((c) => {
          const box = h("div");
          return [
            h("span", {}, h("strong", {}, c.common_name), (c.sans || []).length ? h("span", { class: "muted" }, h("br"), c.sans.join(", ")) : null),
            c.kind,
            when(c.not_after),
            h("span", { class: c.status === "valid" ? "state-ok" : "state-failed" }, c.status, c.revoked_at ? ` ${when(c.revoked_at)}` : ""),
            h("code", { class: "wrap" }, c.serial),
            h("div", {},
              h("div", { class: "actions" },
                c.certificate ? download("Download", `${safe(c.common_name)}.crt`, c.certificate, `vault-cert-download-${c.serial}`, `Download the certificate of ${c.common_name}`) : null,
                c.kind === "issued" && c.status === "valid"
                  ? h("button", { type: "button", class: "danger", id: `vault-revoke-${c.serial}`, "aria-label": `Revoke the certificate of ${c.common_name}`, onclick: () => confirmRevoke(c, box) }, "Revoke")
                  : null),
              box),
          ];
        })))));
    }

    function confirmRevoke(c, box) {
      const err = h("div");
      const yes = h("button", { type: "button", class: "danger", id: `vault-revoke-confirm-${c.serial}`, onclick: async () => {
        try {
          await busy(yes, "Revoking…", () => post(`/api/vault/certs/${esc(c.serial)}/revoke`));
          toast(`The certificate of ${c.common_name} is revoked`);
          await loadCerts();
          document.getElementById("vault-certs-h")?.focus();
        } catch (e) {
          mount(err, errorBox(e));
        }
      } }, "Yes, revoke it");
      mount(box, h("div", { class: "confirm-box", role: "group", "aria-label": `Revoke ${c.common_name}?` },
        h("p", {}, `Revoke the certificate of ${c.common_name}? Whatever uses it stops being trusted.`), err,
        h("div", { class: "actions" }, yes, h("button", { type: "button", class: "secondary", onclick: () => mount(box) }, "Cancel"))));
      yes.focus();
    }

    async function loadKeys() {
      let list;
      try {
        list = (await get("/api/vault/trust-keys")).trust_keys || [];
      } catch (e) {
        mount(keysBox, errorBox(e));
        return;
      }
      mount(keysBox, list.length
        ? h("div", { class: "table-wrap" }, cards(table("Trust keys", ["Name", "Purpose", "Fingerprint", "Added"],
          list.map((k) => [h("strong", {}, k.name), k.purpose, h("code", { class: "wrap" }, k.sha256_fingerprint), when(k.created_at)]))))
        : h("p", { class: "muted" }, "No trust key."));
    }

    await Promise.all([loadCerts(), loadKeys()]);
  },
};

// download is a button that saves text the page already holds: a blob URL
// made when clicked (a download is no fetch, so the CSP does not stop it),
// as the private key exists nowhere else to link to.
function download(label, filename, text, id, aria) {
  return h("button", { type: "button", class: "secondary", id, "aria-label": aria, onclick: () => {
    const url = URL.createObjectURL(new Blob([text], { type: "application/x-pem-file" }));
    const a = h("a", { href: url, download: filename });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } }, label);
}

function safe(name) {
  return String(name || "cert").replace(/[^A-Za-z0-9._-]+/g, "_");
}

// cards marks a table to become one card per row on a phone (app.css
// table.cards), each cell labelled with its column's header.
function cards(t) {
  t.classList.add("cards");
  const heads = [...t.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const tr of t.querySelectorAll("tbody tr")) [...tr.children].forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
  return t;
}
