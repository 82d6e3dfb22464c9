// The sign-in page: username and password, then the session's user from
// /api/auth/me (which says whether a new password must be chosen first), and
// back to the page the visitor came from.
import { post, get, ApiError } from "../api.js";
import { h, mount, field, errorBox, busy } from "../dom.js";
import { signedIn } from "../app.js";

// explain turns the refusals people meet at a login into plain words, keeping
// the cell's own message.
function explain(e) {
  if (!(e instanceof ApiError)) return e;
  if (e.status === 429) {
    const x = new ApiError(e.status, e.code, `Too many tries: wait a little before trying again. ${e.message}`);
    return x;
  }
  return e;
}

export default {
  path: "login",
  title: "Sign in",
  roles: ["public"],
  nav: false,
  async render(main, ctx) {
    const errs = h("div", { id: "login-error", tabindex: "-1", "aria-live": "assertive" });
    const btn = h("button", { type: "submit", id: "login-submit" }, "Sign in");
    const form = h("form", { id: "login-form", novalidate: true },
      errs,
      field("Username", { id: "login-username", name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" }),
      field("Password", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true }),
      h("div", { class: "actions" }, btn));
    const next = ctx.params.get("next");
    mount(main, h("h1", {}, "Sign in"),
      next ? h("p", { class: "muted" }, "Sign in to go on where you were.") : null,
      h("section", { class: "narrow" }, form));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const username = form.querySelector("#login-username").value.trim();
      const password = form.querySelector("#login-password").value;
      if (!username || !password) {
        mount(errs, errorBox(new ApiError(0, "", "Type your username and your password.")));
        form.querySelector(username ? "#login-password" : "#login-username").focus();
        return;
      }
      busy(btn, "Signing in…", async () => {
        try {
          await post("/api/auth/login", { username, password });
          const me = await get("/api/auth/me");
          signedIn(me, next && next !== "login" && next !== "setup" ? next : null);
        } catch (e) {
          if (e instanceof ApiError && e.code === "setup_required") {
            ctx.go("setup");
            return;
          }
          mount(errs, errorBox(explain(e)));
          const pw = form.querySelector("#login-password");
          pw.value = "";
          pw.focus();
        }
      });
    });
    // After the router has focused <main>: the first field is what people want.
    setTimeout(() => form.querySelector("#login-username").focus(), 0);
  },
};
