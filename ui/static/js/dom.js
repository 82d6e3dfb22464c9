// Small DOM helpers: the pages build their elements with h() (never
// innerHTML with data), so nothing the API returns is ever parsed as HTML.

// h makes an element: h("button", {class: "x", onclick: f}, "Save").
// Attributes starting with "on" are listeners; true/false toggle boolean ones.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// mount replaces what parent holds.
export function mount(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
  return parent;
}

let uid = 0;

// field is a labelled input: field("Name", {name: "name", required: true}).
export function field(label, attrs = {}, hint) {
  const id = attrs.id || `f${++uid}`;
  const input = attrs.type === "select"
    ? h("select", { ...attrs, type: undefined, id, options: undefined }, (attrs.options || []).map((o) => h("option", { value: o.value, selected: o.selected }, o.label)))
    : h("input", { type: "text", ...attrs, id });
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint && h("p", { class: "hint", id: hintId }, hint));
}

// checkbox is a labelled checkbox (the label after it).
export function checkbox(label, attrs = {}) {
  const id = attrs.id || `f${++uid}`;
  return h("div", { class: "check" }, h("input", { type: "checkbox", ...attrs, id }), h("label", { for: id }, label));
}

// errorBox shows an API error (its message, and its code for support) in
// place of nothing: never a blank page.
export function errorBox(err) {
  const msg = err && err.message ? err.message : String(err);
  return h("div", { class: "error", role: "alert" }, h("strong", {}, "The cell said: "), msg, err && err.code ? h("span", { class: "code" }, ` (${err.code})`) : null);
}

// toast says something briefly (announced to screen readers).
export function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 4000);
}

// busy disables a button while the promise runs, showing progress.
export async function busy(button, label, fn) {
  const old = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = label;
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = old;
  }
}

// formData reads a form's named inputs into an object (checkboxes as booleans,
// number inputs as numbers).
export function formData(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.type === "number") out[el.name] = el.value === "" ? 0 : Number(el.value);
    else out[el.name] = el.value;
  }
  return out;
}

// when formats a time for people (local time), or "never".
export function when(t) {
  if (!t) return "never";
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

// bytes formats a byte count.
export function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

// table builds a table with a caption: rows are arrays of cells.
export function table(caption, headers, rows) {
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}
