// The REST API with the signed-in user's tokens: keeps the session in localStorage, refreshes the access
// token a minute before it expires, and fetches protected images and files as blobs (an <img> cannot send
// an Authorization header; the page's CSP allows blob: images).
const API = "/api/v1";
let session = JSON.parse(localStorage.getItem("parlor.session") || "null");
let refreshTimer = null;
let refreshing = null;
const signedOut = new Set();

export class ApiError extends Error {
  constructor(status, code, message) {
    super(code ? `${code}: ${message}` : message);
    this.status = status;
    this.code = code;
  }
}

export const current = () => session;
export const onSignedOut = (fn) => signedOut.add(fn);

export function keep(next) {
  if (next && !next.refreshed_at) next = { ...next, refreshed_at: Date.now() };
  session = next;
  if (next) localStorage.setItem("parlor.session", JSON.stringify(next));
  else localStorage.removeItem("parlor.session");
  clearTimeout(refreshTimer);
  if (next && next.expires_in) {
    const due = next.refreshed_at + next.expires_in * 1000;
    refreshTimer = setTimeout(refresh, Math.max(5000, due - Date.now() - 60000));
  }
}

// One refresh at a time: concurrent callers share it (the server rotates the refresh token).
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const next = await request("POST", "/auth/refresh", { refresh_token: session.refresh_token }, { auth: false });
        keep({ ...session, ...next, refreshed_at: Date.now() });
        return true;
      } catch {
        keep(null);
        signedOut.forEach((fn) => fn());
        return false;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

async function request(method, path, body, { auth = true, raw = false, retried = false } = {}) {
  const headers = {};
  if (auth && session) headers.Authorization = `Bearer ${session.access_token}`;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path.startsWith("/api/") ? path : API + path, { method, headers, body: payload });
  if (resp.status === 401 && auth && session && !retried) {
    if (await refresh()) return request(method, path, body, { auth, raw, retried: true });
  }
  if (!resp.ok) {
    let error = {};
    try {
      error = (await resp.json()).error || {};
    } catch {
      // not JSON: the status says enough
    }
    throw new ApiError(resp.status, error.code, error.message || `HTTP ${resp.status}`);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return resp.json();
}

export const api = (method, path, body) => request(method, path, body);
export const signIn = (kind, email, password) => request("POST", `/auth/${kind}`, { email, password }, { auth: false });

export async function signOut() {
  try {
    if (session) await request("POST", "/auth/logout", { refresh_token: session.refresh_token });
  } finally {
    keep(null);
    signedOut.forEach((fn) => fn());
  }
}

// multipart/form-data upload: the category goes first so the server streams the file to the store.
export function upload(category, file) {
  const form = new FormData();
  form.append("category", category);
  form.append("file", file, file.name);
  return request("POST", "/files/upload", form);
}

export function importCard(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return request("POST", "/personas/import", form);
}

// Protected bytes as an object URL, cached by path (a changed avatar has a new file id, so a new path).
const blobs = new Map();
export function blobUrl(path) {
  if (!blobs.has(path)) {
    blobs.set(path, request("GET", path, undefined, { raw: true }).then((r) => r.blob()).then((b) => URL.createObjectURL(b)));
    blobs.get(path).catch(() => blobs.delete(path));
  }
  return blobs.get(path);
}

// Downloads protected bytes under the name the server gives them (Content-Disposition).
export async function download(path, fallbackName) {
  const resp = await request("GET", path, undefined, { raw: true });
  const disposition = resp.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || fallbackName;
  const url = URL.createObjectURL(await resp.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
