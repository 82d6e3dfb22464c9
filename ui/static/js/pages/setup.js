// The first-run wizard: the setup code first (it opens every change of the
// wizard), the CA fingerprint to compare, then each step's fields as GET
// /api/setup/step describes them, and the completion. The code is kept in
// memory only (never in storage): a reload asks for it again. Each step and
// field shows the cell's own description (what it decides, in plain words)
// beside the page's words for it (labels, and the form a value takes).
import { call, get, ApiError } from "../api.js";
import { h, mount, field, errorBox, busy, toast } from "../dom.js";

let setupCode = "";

// Words for the steps and fields the cell knows today; a field the page does
// not know still gets a label made from its name.
const stepText = {
  admin: ["The admin account", "The name and password you will sign in with. The cell has no default account: this is the only way in."],
  cell: ["Your cell", "A short name for the cell, and the domain its names live under (for example home.arpa)."],
  network: ["Network", "The defaults suit most homes; change them only if they clash with your network."],
};
const fieldText = {
  username: ["Admin username", "Letters, digits, dots, dashes and underscores."],
  password: ["Admin password", "At least the length the cell asks for; a sentence is easier to remember."],
  name: ["Cell name", ""],
  domain: ["Domain", ""],
  wg_port: ["WireGuard port (UDP)", "The cell asks your home router to forward it (UPnP, NAT-PMP or PCP); where the router cannot, forward it by hand."],
  subnet_v4: ["IPv4 subnet for peers", "In CIDR form, e.g. 10.77.0.0/24."],
  subnet_v6: ["IPv6 subnet for peers", "Leave it empty to keep the one chosen for this cell."],
  wan_interface: ["Internet interface", "For example eth0, or auto."],
  endpoint: ["Endpoint (public name or address)", "For example home.example.org, or 198.51.100.7:51820."],
};

function labelOf(name) {
  if (fieldText[name]) return fieldText[name][0];
  const s = name.replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

const codeErrors = new Set(["setup_code_required", "wrong_setup_code"]);

export default {
  path: "setup",
  title: "Setup",
  roles: ["public"],
  nav: false,
  async render(main, ctx) {
    const status = await get("/api/setup/status");
    if (status.complete) {
      ctx.setupDone();
      ctx.go("login");
      return;
    }
    const progress = h("div", { id: "setup-steps" });
    const showProgress = (st) => {
      const done = new Set(st.done || []);
      const item = (key, text) => h("li", { class: done.has(key) ? "done" : (key === st.step ? "current" : ""), "aria-current": key === st.step ? "step" : false },
        text, done.has(key) ? " (done)" : "");
      mount(progress, h("ol", { class: "steps", "aria-label": "Setup steps" },
        (st.steps || []).map((s) => item(s, stepText[s] ? stepText[s][0] : s)), item("complete", "Finish")));
    };
    showProgress(status);
    const ca = status.ca_fingerprint ? h("section", { id: "setup-ca", "aria-labelledby": "setup-ca-h" },
      h("h2", { id: "setup-ca-h" }, "Check the cell's fingerprint"),
      h("p", {}, "Compare this with the fingerprint shown where you built the cell's image (or by ",
        h("code", {}, "cellctl trust"), ") and with the certificate your browser shows for this page. If they differ, stop: you are not talking to your cell."),
      h("p", { class: "mono fingerprint", id: "setup-ca-fingerprint" }, status.ca_fingerprint)) : null;
    const body = h("div", { id: "setup-body" });
    mount(main, h("h1", {}, "Set up your cell"), progress, ca, body);

    const focusFirst = () => { const el = body.querySelector("input, select, button"); if (el) el.focus(); };

    const askCode = (err) => {
      const input = field("Setup code", { id: "setup-code", name: "code", required: true, autocomplete: "off", spellcheck: "false", value: setupCode },
        "Printed when the cell's image was built, and kept in the file setup-code in the cell's data folder.");
      const form = h("form", { id: "setup-code-form", novalidate: true },
        h("h2", {}, "Your setup code"),
        h("p", {}, "Only someone holding this code can make themselves the cell's admin."),
        err ? errorBox(err) : null,
        input,
        h("div", { class: "actions" }, h("button", { type: "submit", id: "setup-code-next" }, "Continue")));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const v = form.querySelector("#setup-code").value.trim();
        if (!v) {
          askCode(new ApiError(0, "", "Type the setup code first."));
          return;
        }
        setupCode = v;
        showStep();
      });
      mount(body, form);
      focusFirst();
    };

    // failed shows an error at the right place: a refused code goes back to
    // the code form, anything else stays with the form it came from.
    const failed = (box, e) => {
      if (e instanceof ApiError && codeErrors.has(e.code)) {
        setupCode = "";
        askCode(e);
        return;
      }
      mount(box, errorBox(e));
      box.focus();
    };

    const showComplete = () => {
      const errs = h("div", { id: "setup-error", tabindex: "-1" });
      const bar = h("div", { id: "setup-progress", "aria-live": "polite" });
      const btn = h("button", { type: "button", id: "setup-complete" }, "Finish setup");
      btn.addEventListener("click", () => busy(btn, "Finishing…", async () => {
        mount(errs);
        mount(bar, h("p", {}, "Creating the admin account and building the tunnel; this can take up to half a minute."),
          h("progress", { "aria-label": "Finishing setup" }));
        try {
          await call("POST", "/api/setup/complete", {}, { setupCode });
          setupCode = "";
          mount(bar, h("p", {}, "Setup is complete."));
          toast("Setup is complete: sign in with your admin account.");
          ctx.setupDone();
          ctx.go("login");
        } catch (e) {
          mount(bar);
          failed(errs, e);
        }
      }));
      mount(body, h("section", { "aria-labelledby": "setup-complete-h" },
        h("h2", { id: "setup-complete-h" }, "Ready"),
        h("p", {}, "Every step is filled in. Finishing creates the admin account and the cell's settings; after that the wizard is closed for good."),
        errs, bar,
        h("div", { class: "actions" }, btn)));
      btn.focus();
    };

    const showStep = async () => {
      let st;
      try {
        const s = await get("/api/setup/status");
        showProgress(s);
        if (s.step === "complete") {
          showComplete();
          return;
        }
        st = await get("/api/setup/step");
      } catch (e) {
        mount(body, errorBox(e));
        return;
      }
      const [title, intro] = stepText[st.name] || [labelOf(st.name), ""];
      // joined puts the cell's description and the page's words in one hint.
      const joined = (...parts) => parts.filter(Boolean).join(" ");
      const errs = h("div", { id: "setup-error", tabindex: "-1" });
      const inputs = [];
      for (const f of st.fields || []) {
        const attrs = { id: `setup-${f.name}`, name: f.name, required: f.required };
        if (f.type === "password") {
          Object.assign(attrs, { type: "password", autocomplete: "new-password" });
        } else if (f.type === "integer") {
          Object.assign(attrs, { type: "number", inputmode: "numeric", min: 1, max: 65535 });
        } else {
          attrs.autocomplete = f.name === "username" ? "username" : "off";
          attrs.spellcheck = "false";
        }
        if (f.default !== undefined && f.default !== null) attrs.value = String(f.default);
        const hint = joined(f.description, fieldText[f.name] ? fieldText[f.name][1] : "");
        inputs.push(field(labelOf(f.name) + (f.required ? "" : " (optional)"), attrs, hint || undefined));
        if (f.type === "password") {
          inputs.push(field("Repeat the password", { id: `setup-${f.name}-repeat`, type: "password", autocomplete: "new-password", required: f.required }));
        }
      }
      const next = h("button", { type: "submit", id: "setup-next" }, "Save and continue");
      const form = h("form", { id: `setup-step-${st.name}`, novalidate: true },
        h("h2", {}, title),
        st.description ? h("p", { id: `setup-step-${st.name}-description` }, st.description) : null,
        intro ? h("p", { class: "muted" }, intro) : null, errs, inputs,
        h("div", { class: "actions" }, next));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const data = {};
        for (const f of st.fields || []) {
          const el = form.querySelector(`#setup-${f.name}`);
          const v = el.value.trim();
          if (f.type === "password") {
            const rep = form.querySelector(`#setup-${f.name}-repeat`);
            if (el.value !== rep.value) {
              mount(errs, errorBox(new ApiError(0, "", "The two passwords differ: type the same password twice.")));
              rep.focus();
              return;
            }
            if (el.value) data[f.name] = el.value;
            continue;
          }
          if (v === "") {
            if (f.required) {
              mount(errs, errorBox(new ApiError(0, "", `${labelOf(f.name)} is required.`)));
              el.focus();
              return;
            }
            continue;
          }
          data[f.name] = f.type === "integer" ? Number(v) : v;
        }
        busy(next, "Saving…", async () => {
          try {
            await call("POST", "/api/setup/step", { step: st.name, data }, { setupCode });
            showStep();
          } catch (e) {
            failed(errs, e);
          }
        });
      });
      mount(body, form);
      focusFirst();
    };

    // After the router has focused <main>.
    setTimeout(() => (setupCode ? showStep() : askCode()), 0);
  },
};
