// The app: a hash router over the pages (pages/index.js lists them), the
// header with the navigation of the signed-in role, and the three states a
// visitor can be in: the cell not set up (the wizard), not signed in (the
// login, then back to where they were), signed in as admin or as a peer.
import { get, post, hooks, forget, ApiError } from "./api.js";
import { h, mount, errorBox } from "./dom.js";
import { pages } from "./pages/index.js";

const state = { me: null, setupComplete: null };

// go navigates to a page path ("peers", "login?next=peers").
export function go(path) {
  if (location.hash === `#/${path}`) route();
  else location.hash = `#/${path}`;
}

hooks.onUnauthorized = () => {
  state.me = null;
  const here = current().path;
  if (here !== "login" && here !== "setup") go(`login?next=${encodeURIComponent(here)}`);
};

function current() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  return { path: path || "", params: new URLSearchParams(query || "") };
}

async function whoami() {
  try {
    state.me = await get("/api/auth/me");
  } catch (e) {
    if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 409)) throw e;
    state.me = null;
  }
  return state.me;
}

export async function signOut() {
  try { await post("/api/auth/logout"); } catch { /* the session may be gone already */ }
  forget();
  state.me = null;
  go("login");
}

// signedIn is called by the login page with the new session's user.
export function signedIn(me, next) {
  state.me = me;
  go(next || (me.role === "peer" ? "portal" : "dashboard"));
}

function header() {
  const top = document.getElementById("top");
  const me = state.me;
  const nav = me ? pages.filter((p) => p.nav && p.roles.includes(me.role)) : [];
  const here = current().path;
  mount(top,
    h("div", { class: "brand" }, h("a", { href: me ? (me.role === "peer" ? "#/portal" : "#/dashboard") : "#/" }, "Personal Internet Cell")),
    nav.length ? h("nav", { "aria-label": "Main" }, h("ul", {}, nav.map((p) =>
      h("li", {}, h("a", { href: `#/${p.path}`, "aria-current": p.path === here ? "page" : false }, p.title))))) : null,
    me ? h("div", { class: "who" }, h("span", {}, me.username), " ",
      h("a", { href: "#/account" }, "Password"), " ",
      h("button", { type: "button", class: "link", onclick: signOut }, "Sign out")) : null);
}

let seq = 0;

async function route() {
  const run = ++seq;
  const main = document.getElementById("main");
  let { path, params } = current();
  try {
    let asked = false;
    if (state.setupComplete !== true) {
      // Both at once: the second round trip would otherwise wait on the first.
      asked = path !== "login" && !state.me;
      const [st] = await Promise.all([get("/api/setup/status"), asked ? whoami() : null]);
      state.setupComplete = st.complete;
    }
    if (!state.setupComplete) path = "setup";
    else if (!state.me && path !== "login" && !asked) await whoami();
    if (state.setupComplete && !state.me && path !== "login") {
      go(`login?next=${encodeURIComponent(path)}`);
      return;
    }
    if (state.me && state.me.must_change_password && path !== "account") path = "account";
    let page = pages.find((p) => p.path === path);
    if (!page || (state.me && !page.roles.includes(state.me.role)) || (!state.me && !page.roles.includes("public"))) {
      page = pages.find((p) => p.path === (state.me ? (state.me.role === "peer" ? "portal" : "dashboard") : "login"));
    }
    if (run !== seq) return;
    header();
    document.title = `${page.title} · Personal Internet Cell`;
    mount(main, h("p", { class: "loading" }, "Loading…"));
    await page.render(main, { me: state.me, params, go, run: () => run === seq, setupDone: () => { state.setupComplete = true; } });
    main.focus({ preventScroll: true });
  } catch (e) {
    if (run !== seq) return;
    mount(main, h("h1", {}, "Something went wrong"), errorBox(e),
      h("p", {}, h("a", { href: "#/" }, "Back to the start")));
  }
}

window.addEventListener("hashchange", route);
route();
