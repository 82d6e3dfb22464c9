// The account page: change one's own password. A peer signing in with the
// one-time password from the admin lands here first and cannot go anywhere
// else until they have chosen their own (the router holds them here).
import { post, get, ApiError } from "../api.js";
import { h, mount, field, errorBox, busy, toast } from "../dom.js";
import { signedIn } from "../app.js";

export default {
  path: "account",
  title: "Your password",
  roles: ["admin", "peer"],
  nav: false,
  async render(main, ctx) {
    const must = Boolean(ctx.me && ctx.me.must_change_password);
    const errs = h("div", { id: "account-error", tabindex: "-1" });
    const ok = h("div", { id: "account-status", role: "status", tabindex: "-1" });
    const btn = h("button", { type: "submit", id: "change-password" }, "Change password");
    const form = h("form", { id: "password-form", novalidate: true },
      errs,
      // For password managers, which file the new password under this name.
      h("input", { type: "text", name: "username", autocomplete: "username", value: ctx.me ? ctx.me.username : "", hidden: true, readonly: true, tabindex: "-1" }),
      field(must ? "One-time password" : "Current password", { id: "current-password", name: "current_password", type: "password", autocomplete: "current-password", required: true },
        must ? "The password the admin gave you." : undefined),
      field("New password", { id: "new-password", name: "new_password", type: "password", autocomplete: "new-password", required: true },
        "Long is better than clever: a short sentence works well."),
      field("Repeat the new password", { id: "repeat-password", name: "repeat_password", type: "password", autocomplete: "new-password", required: true }),
      h("div", { class: "actions" }, btn));
    mount(main,
      h("h1", {}, "Your password"),
      must ? h("div", { class: "notice", id: "must-change", role: "alert" },
        h("strong", {}, "Choose your own password before anything else."),
        " The password you signed in with works only this once.") : null,
      h("p", {}, "Signed in as ", h("strong", {}, ctx.me ? ctx.me.username : ""), "."),
      h("section", { class: "narrow" }, form), ok);

    const fail = (e, focus) => {
      mount(errs, errorBox(e));
      form.querySelector(focus).focus();
    };
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      mount(ok);
      const current = form.querySelector("#current-password").value;
      const next = form.querySelector("#new-password").value;
      const repeat = form.querySelector("#repeat-password").value;
      if (!current) return fail(new ApiError(0, "", "Type your current password."), "#current-password");
      if (!next) return fail(new ApiError(0, "", "Type a new password."), "#new-password");
      if (next !== repeat) return fail(new ApiError(0, "", "The new password and its repetition differ: type the same password twice."), "#repeat-password");
      if (next === current) return fail(new ApiError(0, "", "The new password is the same as the current one: choose another."), "#new-password");
      busy(btn, "Changing…", async () => {
        try {
          await post("/api/auth/change-password", { current_password: current, new_password: next });
        } catch (e) {
          return fail(e, "#current-password");
        }
        mount(errs);
        form.reset();
        toast("Your password is changed.");
        let me = null;
        try { me = await get("/api/auth/me"); } catch (e) {
          if (!(e instanceof ApiError) || e.status !== 401) mount(errs, errorBox(e));
          return;
        }
        if (must || (me && me.must_change_password)) {
          signedIn(me, null);
          return;
        }
        mount(ok, h("p", { class: "state-ok" }, "Your password is changed."));
        ok.focus();
      });
    });
    setTimeout(() => form.querySelector("#current-password").focus(), 0);
  },
};
