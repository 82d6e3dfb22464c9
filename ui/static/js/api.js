// The cell's public API, as every page uses it: JSON in and out, the session
// cookie, and the CSRF token on every change. An answer that is not a success
// throws an ApiError carrying the API's own code and message, which the pages
// show as they are.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `the cell answered ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

let csrf = "";

// forget drops the CSRF token (at logout, or when the session ended).
export function forget() { csrf = ""; }

async function token() {
  if (!csrf) {
    const r = await call("GET", "/api/auth/csrf-token");
    csrf = r.token;
  }
  return csrf;
}

// onUnauthorized is called when a request finds no session (it expired):
// the app sends the user to the login and back.
export const hooks = { onUnauthorized: () => {} };

// call sends one request. body: an object (sent as JSON), a Blob or File
// (sent as it is), or undefined. opts.raw: return the Response itself.
export async function call(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  let payload;
  if (body instanceof Blob) {
    payload = body;
    headers["Content-Type"] = opts.contentType || "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  if (method !== "GET" && method !== "HEAD" && !path.startsWith("/api/auth/login") && !path.startsWith("/api/setup/")) {
    headers["X-CSRF-Token"] = await token();
  }
  if (opts.setupCode) headers["X-Setup-Code"] = opts.setupCode;
  const res = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  if (opts.raw && res.ok) return res;
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok) {
    const e = data && data.error ? data.error : {};
    if (res.status === 401 && !path.startsWith("/api/auth/login")) {
      forget();
      hooks.onUnauthorized();
    }
    if (res.status === 403 && e.code === "csrf_mismatch") forget();
    throw new ApiError(res.status, e.code, e.message || (typeof data === "string" ? data : ""));
  }
  return data;
}

export const get = (p) => call("GET", p);
export const post = (p, b) => call("POST", p, b === undefined ? {} : b);
export const put = (p, b) => call("PUT", p, b);
export const del = (p) => call("DELETE", p);

// upload sends a file with XMLHttpRequest, whose upload events fetch lacks,
// calling progress(sent, total) as it goes.
export async function upload(path, file, progress) {
  const t = await token();
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("POST", path);
    x.setRequestHeader("Content-Type", "application/octet-stream");
    x.setRequestHeader("X-CSRF-Token", t);
    x.upload.onprogress = (ev) => progress(ev.loaded, ev.total);
    x.onload = () => {
      let data = null;
      try { data = JSON.parse(x.responseText); } catch { /* not JSON */ }
      if (x.status >= 200 && x.status < 300) resolve(data);
      else {
        const e = data && data.error ? data.error : {};
        reject(new ApiError(x.status, e.code, e.message));
      }
    };
    x.onerror = () => reject(new ApiError(0, "network", "the upload was cut off: is the cell still reachable?"));
    x.send(file);
  });
}

// esc quotes a path segment.
export const esc = encodeURIComponent;
