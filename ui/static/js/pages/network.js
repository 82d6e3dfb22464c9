// The Network page: how a phone away from home reaches the cell, and why it
// may not. At the top, the endpoint every device's config dials, every
// warning the cell has (in the cell's own words: each is a reason a phone
// outside cannot connect) and the devices whose config names an old endpoint;
// the endpoint is edited here too (the config's network.endpoint), with the
// warning that changing it means sending every device its config again.
// Then the facts behind it: the uplink and the public address, the port the
// home router forwards (UPnP, NAT-PMP or PCP) and the settings of the
// outside (asking the router at all, the URLs that tell the public address
// and echo the reachability test: empty unless the admin names a service, as
// no third party should learn of the cell unasked), dynamic DNS with its settings
// (the provider's secret is a password field that is never filled in: the
// page only says whether one is stored, and leaving it empty keeps it), the
// clock, and a diagnostics form that runs one test on the cell and shows its
// answer. Each part loads and fails on its own, so one broken call never
// blanks the page.
import { get, post, put, ApiError } from "../api.js";
import { h, mount, field, checkbox, errorBox, busy, toast, when, table } from "../dom.js";

const providers = [
  { value: "off", label: "Off" },
  { value: "rfc2136", label: "RFC 2136 update (BIND, Knot, PowerDNS)" },
  { value: "dyndns2", label: "dyndns2 (most commercial providers)" },
];
const algorithms = ["hmac-sha256", "hmac-sha224", "hmac-sha384", "hmac-sha512", "hmac-sha1"];

// What the target of each kind of test is, for the hint under the field.
const kinds = {
  ping: ["Ping (ICMP)", "An address or a name, e.g. 198.18.0.1 or example.org."],
  dns: ["Name lookup (DNS)", "A name, e.g. example.org; name@server asks that server."],
  http: ["Web page (HTTP GET)", "A URL, e.g. https://example.org/."],
  port: ["Port (TCP or UDP)", "host:port, e.g. example.org:443."],
  reachability: ["Reachability from outside", "Empty: the endpoint. An outside echo service sends a WireGuard-shaped packet to it and the cell listens for it: the one test that tells whether the port forward works."],
};
const dnsTypes = ["A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "PTR"];

// Words for the states the API reports.
const portStates = {
  off: "Off",
  trying: "Asking the home router…",
  mapped: "Forwarded by the home router",
  failing: "The home router did not forward the port",
};
const ddnsStates = {
  off: "Off",
  pending: "Waiting to send the address",
  ok: "Up to date",
  failing: "Failing (tried again later)",
  refused: "Refused by the provider (not tried again until you change the settings or press Update now)",
};
const sources = { uplink: "the uplink's own address", router: "the home router", url: "the address-discovery URL" };

const stateClass = (good, bad) => (good ? "state-ok" : bad ? "state-down" : "state-degraded");
const list = (xs) => ((xs || []).length ? xs.join(", ") : "none");
const fact = (dt, dd, attrs) => [h("dt", {}, dt), h("dd", attrs || {}, dd)];

export default {
  path: "network",
  title: "Network",
  roles: ["admin"],
  nav: true,
  async render(main, ctx) {
    const summary = h("div", { id: "net-summary" });
    const uplinkBox = h("div", { id: "net-uplink" });
    const portBox = h("div", { id: "net-portmap" });
    const ddnsBox = h("div", { id: "net-ddns-state" });
    const timeBox = h("div", { id: "net-time" });

    // The endpoint's form: the raw setting (empty: the domain and port).
    const epErr = h("div", { id: "net-endpoint-error", tabindex: "-1" });
    const epBtn = h("button", { type: "submit", id: "net-endpoint-save" }, "Save endpoint");
    const epHint = h("p", { class: "hint", id: "net-endpoint-input-hint" });
    const epInput = h("input", { type: "text", id: "net-endpoint-input", name: "endpoint", autocomplete: "off", autocapitalize: "none", spellcheck: "false", "aria-describedby": "net-endpoint-input-hint net-endpoint-warning" });
    const epForm = h("form", { id: "net-endpoint-form", novalidate: true, "aria-labelledby": "net-endpoint-form-h" },
      h("h3", { id: "net-endpoint-form-h" }, "Change the endpoint"),
      h("p", { class: "notice", id: "net-endpoint-warning" }, "Every device's config and QR code names the endpoint: after a change, each device must be sent its config again, or it keeps dialling the old one."),
      epErr,
      h("div", { class: "field" }, h("label", { for: "net-endpoint-input" }, "Endpoint (public name or address)"), epInput, epHint),
      h("div", { class: "actions" }, epBtn));

    // The "outside" section of the config.
    const reachErr = h("div", { id: "net-reach-error", tabindex: "-1" });
    const reachBtn = h("button", { type: "submit", id: "net-reach-save" }, "Save these settings");
    const reachForm = h("form", { id: "net-reach-form", novalidate: true, "aria-labelledby": "net-reach-h" },
      h("h3", { id: "net-reach-h" }, "Settings"),
      reachErr,
      checkbox("Ask the home router to forward the port", { id: "net-reach-portmap", name: "port_mapping" }),
      h("p", { class: "hint" }, "Off for a router whose port forward you set up by hand."),
      field("Address-discovery URL (optional)", { id: "net-reach-public-url", name: "public_address_url", type: "url", autocomplete: "off", spellcheck: "false" },
        "Answers with the asker's address as text, like https://api.ipify.org. Asked only when neither the uplink nor the router tells the public address; empty: never asked."),
      field("Echo service URL (optional)", { id: "net-reach-echo-url", name: "echo_url", type: "url", autocomplete: "off", spellcheck: "false" },
        "The outside service the reachability test asks to send a packet to the endpoint; empty: that test is unavailable."),
      field("Look at the public address again every (minutes)", { id: "net-reach-check", name: "check_minutes", type: "number", min: 1, max: 1440, inputmode: "numeric" },
        "Also at once whenever the uplink changes: 1 to 1440."),
      h("div", { class: "actions" }, reachBtn));

    // Dynamic DNS: one form, the fields of the chosen provider shown.
    const ddnsErr = h("div", { id: "net-ddns-error", tabindex: "-1" });
    const secretState = h("p", { class: "hint", id: "net-ddns-secret-state" });
    const secretLabel = h("label", { for: "net-ddns-secret" }, "Secret");
    const secret = h("input", { type: "password", id: "net-ddns-secret", name: "secret", autocomplete: "new-password", spellcheck: "false", "aria-describedby": "net-ddns-secret-state" });
    const rfcPart = h("div", { id: "net-ddns-rfc2136" },
      field("DNS server (the zone's primary)", { id: "net-ddns-server", name: "server", autocomplete: "off", spellcheck: "false" }, "host or host:port, e.g. ns1.example.org or 198.18.0.53:53."),
      field("Zone", { id: "net-ddns-zone", name: "zone", autocomplete: "off", spellcheck: "false" }, "The zone the name is in, e.g. example.org."),
      field("TSIG key name", { id: "net-ddns-key-name", name: "key_name", autocomplete: "off", spellcheck: "false" }, "As in the server's key statement, e.g. cell-key."),
      field("TSIG algorithm", { id: "net-ddns-algorithm", name: "algorithm", type: "select", options: algorithms.map((a) => ({ value: a, label: a })) }));
    const dynPart = h("div", { id: "net-ddns-dyndns2" },
      field("Update URL (https)", { id: "net-ddns-url", name: "url", type: "url", autocomplete: "off", spellcheck: "false" }, "The provider's dyndns2 address, e.g. https://dynupdate.example.net/nic/update."),
      field("Username", { id: "net-ddns-username", name: "username", autocomplete: "off", spellcheck: "false" }));
    const commonPart = h("div", { id: "net-ddns-common" },
      field("Name kept up to date (optional)", { id: "net-ddns-hostname", name: "hostname", autocomplete: "off", autocapitalize: "none", spellcheck: "false" }, "Empty: the endpoint's name."),
      rfcPart, dynPart,
      h("div", { class: "field" }, secretLabel, secret, secretState),
      field("Send the address again every (minutes)", { id: "net-ddns-interval", name: "interval_minutes", type: "number", min: 5, max: 10080, inputmode: "numeric" }, "Providers forget names nobody updates: 5 to 10080 (a week); 1440 is a day."));
    const provider = field("Provider", { id: "net-ddns-provider", name: "provider", type: "select", options: providers }, "Off stops the updates and forgets the stored secret.");
    const ddnsSave = h("button", { type: "submit", id: "net-ddns-save" }, "Save dynamic DNS");
    const ddnsRefresh = h("button", { type: "button", class: "secondary", id: "net-ddns-refresh" }, "Update now");
    const ddnsForm = h("form", { id: "net-ddns-form", novalidate: true, "aria-labelledby": "net-ddns-form-h" },
      h("h3", { id: "net-ddns-form-h" }, "Dynamic DNS settings"),
      ddnsErr, provider, commonPart,
      h("div", { class: "actions" }, ddnsSave, ddnsRefresh));
    const providerSelect = provider.querySelector("select");

    // Diagnostics.
    const testResult = h("div", { id: "net-test-result", "aria-live": "polite" });
    const targetHint = h("p", { class: "hint", id: "net-test-target-hint" });
    const target = h("input", { type: "text", id: "net-test-target", name: "target", autocomplete: "off", autocapitalize: "none", spellcheck: "false", "aria-describedby": "net-test-target-hint" });
    const kindField = field("Kind of test", { id: "net-test-kind", name: "kind", type: "select", options: Object.entries(kinds).map(([k, [label]]) => ({ value: k, label })) });
    const protoField = field("Protocol", { id: "net-test-proto", name: "proto", type: "select", options: [{ value: "tcp", label: "TCP" }, { value: "udp", label: "UDP" }] });
    const typeField = field("Record type", { id: "net-test-type", name: "type", type: "select", options: dnsTypes.map((t) => ({ value: t, label: t })) });
    const testBtn = h("button", { type: "submit", id: "net-test-run" }, "Run test");
    const testForm = h("form", { id: "net-test-form", novalidate: true, "aria-labelledby": "net-test-h" },
      kindField,
      h("div", { class: "field" }, h("label", { for: "net-test-target" }, "Target"), target, targetHint),
      protoField, typeField,
      h("div", { class: "actions" }, testBtn));
    const kindSelect = kindField.querySelector("select");

    mount(main, h("h1", {}, "Network"),
      h("section", { "aria-labelledby": "net-summary-h" }, h("h2", { id: "net-summary-h" }, "How phones reach this cell"), summary, epForm),
      h("section", { "aria-labelledby": "net-uplink-h" }, h("h2", { id: "net-uplink-h" }, "The home's connection"), uplinkBox),
      h("section", { "aria-labelledby": "net-portmap-h" }, h("h2", { id: "net-portmap-h" }, "The port on the home router"), portBox, reachForm),
      h("section", { "aria-labelledby": "net-ddns-h" }, h("h2", { id: "net-ddns-h" }, "Dynamic DNS"),
        h("p", { class: "muted" }, "Keeps the endpoint's name pointing at the home's public address when the address changes."),
        ddnsBox, ddnsForm),
      h("section", { "aria-labelledby": "net-time-h" }, h("h2", { id: "net-time-h" }, "Time"), timeBox),
      h("section", { "aria-labelledby": "net-test-h" }, h("h2", { id: "net-test-h" }, "Diagnostics"),
        h("p", { class: "muted" }, "Runs one test from the cell, with a short deadline. The cell's own addresses, link-local and multicast addresses are not targets."),
        testForm, testResult));

    // --- How phones reach the cell, the uplink, the port mapping ---

    const showSummary = (st) => {
      const ep = st.endpoint || {};
      const warnings = st.warnings || [];
      const resend = st.resend_configs || [];
      mount(summary,
        h("dl", { class: "facts" },
          fact("Endpoint", ep.endpoint || "none", { class: "mono", id: "net-endpoint" }),
          fact("Set by", ep.source === "setting" ? "the endpoint setting below" : "the cell's domain and WireGuard port (no endpoint is set)", { id: "net-endpoint-source" }),
          ep.resolves_to ? fact("Points at", list(ep.resolves_to), { class: "mono" }) : null),
        warnings.length
          ? h("div", { class: "warnings", id: "net-warnings" },
            h("h3", { id: "net-warnings-h" }, warnings.length === 1 ? "Why a phone outside may not connect" : `${warnings.length} reasons a phone outside may not connect`),
            h("ul", {}, warnings.map((w) => h("li", {}, w))))
          : h("p", { class: "state-ok", id: "net-warnings-none" }, "The cell sees nothing that keeps a phone outside from connecting."),
        resend.length
          ? h("div", { class: "notice", id: "net-resend" },
            h("h3", { id: "net-resend-h", tabindex: "-1" }, "These devices must be sent their config again"),
            h("p", {}, "Their config names an endpoint that is no longer the cell's: show each its QR code (or send its file) again."),
            h("ul", {}, resend.map((name) =>
              h("li", {}, h("a", { href: `#/peers?show=${encodeURIComponent(name)}`, id: `net-resend-${name}` }, `Send ${name} its config`)))))
          : null);
      epHint.textContent = `Empty: the cell's domain on the WireGuard port${ep.source !== "setting" && ep.endpoint ? ` (now ${ep.endpoint})` : ""}. A name or an address, with :port when the home router forwards another port, e.g. home.example.org or 198.51.100.7:51820.`;
    };

    const showUplink = (st) => {
      const up = st.uplink || {};
      const pub = st.public_address || {};
      const ifs = st.interfaces || [];
      mount(uplinkBox,
        h("h3", {}, "Uplink"),
        up.error ? errorBox(new ApiError(0, "", up.error)) : null,
        h("dl", { class: "facts", id: "net-uplink-facts" },
          fact("Interface", up.interface || "none (no default route)", { class: "mono" }),
          fact("Gateway", up.gateway || "none", { class: "mono" }),
          fact("Addresses", list(up.addresses), { class: "mono" }),
          fact("Kind", up.kind || "unknown")),
        h("h3", {}, "Public address"),
        h("dl", { class: "facts", id: "net-public-facts" },
          fact("Addresses", list(pub.addresses), { class: "mono", id: "net-public" }),
          fact("Found from", sources[pub.source] || pub.source || "nowhere yet"),
          fact("Behind carrier-grade NAT", pub.cgnat ? h("span", { class: "state-down" }, "yes: the cell cannot be reached from outside without a relay") : "no"),
          pub.error ? fact("Problem", pub.error) : null,
          fact("Checked", when(pub.checked_at))),
        ifs.length ? h("details", { id: "net-interfaces" }, h("summary", {}, `All interfaces (${ifs.length})`),
          h("div", { class: "table-wrap" }, table("Network interfaces of the cell", ["Name", "State", "Addresses", "MTU", "MAC"],
            ifs.map((i) => [h("span", { class: "mono" }, i.name), i.up ? "up" : "down", h("span", { class: "mono" }, list(i.addresses)), String(i.mtu || ""), h("span", { class: "mono" }, i.mac || "")])))) : null);
    };

    const showPortMap = (st) => {
      const m = st.port_mapping || {};
      mount(portBox,
        h("p", { class: "muted" }, "The cell asks the home router (UPnP IGD, NAT-PMP or PCP) to forward the WireGuard port to it, and renews the mapping before it ends."),
        h("dl", { class: "facts", id: "net-portmap-facts" },
          fact("Asking the router", m.enabled ? "on" : "off (the port is forwarded by hand)"),
          fact("State", h("span", { class: m.state === "off" ? "" : stateClass(m.state === "mapped", m.state === "failing"), id: "net-portmap-state" }, portStates[m.state] || m.state || "unknown")),
          m.protocol ? fact("Protocol", m.protocol) : null,
          m.internal ? fact("Inside", m.internal, { class: "mono" }) : null,
          m.external ? fact("Outside (the router's public side)", m.external, { class: "mono" }) : null,
          m.expires ? fact("Mapping ends", when(m.expires)) : null,
          m.cgnat ? fact("Carrier-grade NAT", h("span", { class: "state-down" }, "the router itself is behind it: phones cannot reach the cell without a relay")) : null,
          m.reason ? fact("Why", m.reason) : null,
          m.last_error ? fact("Last error", m.last_error) : null));
    };

    // --- Dynamic DNS ---

    const showDDNS = (d) => {
      const failing = d.state === "failing" || d.state === "refused";
      mount(ddnsBox, h("dl", { class: "facts", id: "net-ddns-facts" },
        fact("State", h("span", { class: d.state === "off" ? "" : stateClass(d.state === "ok", failing), id: "net-ddns-status" }, ddnsStates[d.state] || d.state || "unknown")),
        d.name ? fact("Name", d.name, { class: "mono" }) : null,
        d.provider !== "off" ? fact("Provider told", list(d.addresses), { class: "mono" }) : null,
        d.last_update ? fact("Last update", when(d.last_update)) : null,
        d.last_error ? fact("Last error", d.last_error, { id: "net-ddns-last-error" }) : null,
        d.failures ? fact("Failures in a row", String(d.failures)) : null,
        d.next_try ? fact("Next try", when(d.next_try)) : null));
    };

    // fillDDNS puts the stored settings in the form (never a secret: the API
    // has none to give, and the field stays empty).
    const fillDDNS = (d) => {
      providerSelect.value = d.provider || "off";
      const set = (id, v) => { ddnsForm.querySelector(`#${id}`).value = v === undefined || v === null ? "" : String(v); };
      set("net-ddns-hostname", d.hostname);
      set("net-ddns-server", d.server);
      set("net-ddns-zone", d.zone);
      set("net-ddns-key-name", d.key_name);
      ddnsForm.querySelector("#net-ddns-algorithm").value = d.algorithm || "hmac-sha256";
      set("net-ddns-url", d.url);
      set("net-ddns-username", d.username);
      set("net-ddns-interval", d.interval_minutes || 1440);
      secret.value = "";
      secretState.textContent = d.secret_set
        ? "A secret is stored: leave this empty to keep it."
        : "No secret is stored yet.";
      secretState.className = d.secret_set ? "hint secret-stored" : "hint";
      showProvider();
    };

    // showProvider shows the fields of the chosen provider only.
    const showProvider = () => {
      const p = providerSelect.value;
      commonPart.hidden = p === "off";
      rfcPart.hidden = p !== "rfc2136";
      dynPart.hidden = p !== "dyndns2";
      secretLabel.textContent = p === "rfc2136" ? "TSIG key secret (base64)" : "Password or token";
    };
    providerSelect.addEventListener("change", showProvider);

    const ddnsBody = () => {
      const v = (id) => ddnsForm.querySelector(`#${id}`).value.trim();
      const p = providerSelect.value;
      if (p === "off") return { provider: "off" };
      const body = { provider: p, hostname: v("net-ddns-hostname"), interval_minutes: Number(v("net-ddns-interval") || 1440) };
      if (p === "rfc2136") Object.assign(body, { server: v("net-ddns-server"), zone: v("net-ddns-zone"), key_name: v("net-ddns-key-name"), algorithm: v("net-ddns-algorithm") });
      else Object.assign(body, { url: v("net-ddns-url"), username: v("net-ddns-username") });
      // An empty secret is left out: the stored one is kept.
      if (secret.value !== "") body.secret = secret.value;
      return body;
    };

    ddnsForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = ddnsBody();
      busy(ddnsSave, "Saving…", async () => {
        try {
          const d = await put("/api/network/ddns", body);
          mount(ddnsErr);
          fillDDNS(d);
          showDDNS(d);
          toast(d.provider === "off" ? "Dynamic DNS is off." : "Dynamic DNS is saved: the provider is told at once.");
          loadStatus();
        } catch (e) {
          // Nothing was stored: the form keeps what was typed, but never the secret.
          secret.value = "";
          mount(ddnsErr, errorBox(e));
          ddnsErr.focus();
        }
      });
    });

    ddnsRefresh.addEventListener("click", () => busy(ddnsRefresh, "Updating…", async () => {
      try {
        const d = await post("/api/network/ddns/refresh");
        mount(ddnsErr);
        showDDNS(d);
        toast("The cell looks at the public address again and tells the provider now.");
        // The keeper answers within moments: show its outcome.
        setTimeout(() => { if (ctx.run()) loadDDNS(); }, 2000);
      } catch (e) {
        mount(ddnsErr, errorBox(e));
        ddnsErr.focus();
      }
    }));

    // --- The endpoint ---

    epForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const endpoint = epInput.value.trim();
      busy(epBtn, "Saving…", async () => {
        try {
          await put("/api/config", { network: { endpoint } });
          mount(epErr);
          toast(endpoint ? `The endpoint is ${endpoint}: send every device its config again.` : "The endpoint is the domain again: send every device its config again.");
          await loadStatus();
          (summary.querySelector("#net-resend-h") || epInput).focus();
        } catch (e) {
          mount(epErr, errorBox(e));
          epErr.focus();
        }
      });
    });

    // --- Diagnostics ---

    const showKind = () => {
      const k = kindSelect.value;
      targetHint.textContent = kinds[k][1];
      protoField.hidden = k !== "port";
      typeField.hidden = k !== "dns";
    };
    kindSelect.addEventListener("change", showKind);
    showKind();

    testForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const kind = kindSelect.value;
      const body = { kind, target: target.value.trim() };
      if (kind === "port") body.proto = testForm.querySelector("#net-test-proto").value;
      if (kind === "dns") body.type = testForm.querySelector("#net-test-type").value;
      if (!body.target && kind !== "reachability") {
        mount(testResult, errorBox(new ApiError(0, "", "Give the test a target.")));
        target.focus();
        return;
      }
      mount(testResult, h("p", { class: "muted" }, `Testing ${body.target || "the endpoint"}…`));
      busy(testBtn, "Testing…", async () => {
        try {
          const r = await post("/api/network/test", body);
          mount(testResult, h("div", { class: `verdict ${r.ok ? "ok" : "bad"}`, id: "net-test-verdict" },
            h("p", {}, h("strong", { class: r.ok ? "state-ok" : "state-down" }, r.ok ? "Passed" : "Failed"), ` — ${kinds[r.kind] ? kinds[r.kind][0] : r.kind} of ${r.target}`),
            h("p", { id: "net-test-detail" }, r.detail || ""),
            h("dl", { class: "facts" },
              r.address ? fact("Address", r.address, { class: "mono" }) : null,
              r.rtt_ms ? fact("Round trip", `${Number(r.rtt_ms).toFixed(1)} ms`) : null,
              r.status ? fact("HTTP status", String(r.status)) : null,
              (r.answers || []).length ? fact("Answers", h("ul", { class: "details" }, r.answers.map((a) => h("li", { class: "mono" }, a)))) : null)));
        } catch (e) {
          mount(testResult, errorBox(e));
        }
      });
    });

    // --- Loading ---

    const loadStatus = async () => {
      let st;
      try {
        st = await get("/api/network");
      } catch (e) {
        for (const box of [summary, uplinkBox, portBox]) mount(box, errorBox(e));
        return;
      }
      showSummary(st);
      showUplink(st);
      showPortMap(st);
      if (st.ddns) showDDNS(st.ddns);
    };

    const loadDDNS = async () => {
      try {
        const d = await get("/api/network/ddns");
        showDDNS(d);
        return d;
      } catch (e) {
        mount(ddnsBox, errorBox(e));
        return null;
      }
    };

    // fillReach puts the config's "outside" section in its form.
    const fillReach = (r) => {
      reachForm.querySelector("#net-reach-portmap").checked = !!r.port_mapping;
      reachForm.querySelector("#net-reach-public-url").value = r.public_address_url || "";
      reachForm.querySelector("#net-reach-echo-url").value = r.echo_url || "";
      reachForm.querySelector("#net-reach-check").value = String(r.check_minutes || 10);
    };

    const loadConfig = async () => {
      try {
        const cfg = await get("/api/config");
        epInput.value = (cfg.network && cfg.network.endpoint) || "";
        fillReach(cfg.outside || { port_mapping: true, check_minutes: 10 });
      } catch (e) {
        mount(epErr, errorBox(e));
        mount(reachErr, errorBox(e));
      }
    };

    reachForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = (id) => reachForm.querySelector(`#${id}`).value.trim();
      const outside = {
        port_mapping: reachForm.querySelector("#net-reach-portmap").checked,
        public_address_url: v("net-reach-public-url"),
        echo_url: v("net-reach-echo-url"),
        check_minutes: Number(v("net-reach-check") || 10),
      };
      busy(reachBtn, "Saving…", async () => {
        try {
          const cfg = await put("/api/config", { outside });
          mount(reachErr);
          fillReach(cfg.outside || outside);
          toast("The settings are saved: the cell looks at the public address and the router again.");
          await loadStatus();
        } catch (e) {
          mount(reachErr, errorBox(e));
          reachErr.focus();
        }
      });
    });

    const loadTime = async () => {
      let t;
      try {
        t = await get("/api/ntp");
      } catch (e) {
        mount(timeBox, errorBox(e));
        return;
      }
      const k = t.kernel || {};
      mount(timeBox, h("dl", { class: "facts", id: "net-time-facts" },
        fact("Clock", h("span", { class: t.synchronised ? "state-ok" : "state-down", id: "net-time-state" }, t.synchronised ? "synchronised" : "not synchronised")),
        fact("Offset", `${Number(t.offset_ms || 0).toFixed(1)} ms`),
        fact("Last sync", when(t.last_sync)),
        fact("Server", t.server ? `${t.server}${t.address ? ` (${t.address})` : ""}${t.stratum ? `, stratum ${t.stratum}` : ""}` : "none answered yet", { class: "mono" }),
        fact("Servers asked", list(t.servers), { class: "mono" }),
        t.error ? fact("Problem", t.error) : null,
        fact("The kernel says", `${k.synchronised ? "synchronised" : "not synchronised"}, estimated error ${Number(k.est_error_ms || 0).toFixed(1)} ms`),
        fact("Time for the devices", t.serving ? "served on the cell's tunnel addresses (SNTP, UDP 123)" : "not served"),
        fact("The cell's time", when(t.time))));
    };

    const [, d] = await Promise.all([loadStatus(), loadDDNS(), loadConfig(), loadTime()]);
    if (d) fillDDNS(d);
    else showProvider();
  },
};
