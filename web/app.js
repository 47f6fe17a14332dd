// Parlor's web app: plain ES modules, no build step. It uses the same REST API and Socket.IO events as any
// client (docs/events.md), with the official socket.io-client browser build vendored in web/vendor/.
import { io } from "/web/vendor/socket.io.esm.min.js";

const API = "/api/v1";
const app = document.getElementById("app");
const statusLine = document.getElementById("status");
const meter = document.getElementById("meter");
const logoutButton = document.getElementById("logout");
let session = JSON.parse(localStorage.getItem("parlor.session") || "null");
let socket = null;
let refreshTimer = null;

// --- small helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== false && value != null) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function say(text) {
  statusLine.textContent = text;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (session) headers.Authorization = `Bearer ${session.access_token}`;
  const resp = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 204) return null;
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${resp.status}`);
  return data;
}

// --- account ---------------------------------------------------------------------------------------

function keep(next) {
  session = next;
  if (next) localStorage.setItem("parlor.session", JSON.stringify(next));
  else localStorage.removeItem("parlor.session");
  logoutButton.hidden = !next;
  clearTimeout(refreshTimer);
  if (next && next.expires_in) {
    // Refresh a minute before the access token expires.
    refreshTimer = setTimeout(refresh, Math.max(5, next.expires_in - 60) * 1000);
  }
}

async function refresh() {
  try {
    const next = await api("POST", "/auth/refresh", { refresh_token: session.refresh_token });
    keep({ ...session, ...next });
    if (socket) socket.auth = { token: session.access_token };
  } catch {
    keep(null);
    route();
  }
}

logoutButton.addEventListener("click", async () => {
  try {
    await api("POST", "/auth/logout", { refresh_token: session.refresh_token });
  } finally {
    if (socket) socket.disconnect();
    socket = null;
    keep(null);
    location.hash = "#/";
    route();
  }
});

function authView() {
  const email = el("input", { id: "email", type: "email", required: true, autocomplete: "username" });
  const password = el("input", { id: "password", type: "password", required: true, minlength: 8, autocomplete: "current-password" });
  async function submit(kind) {
    try {
      const data = await api("POST", `/auth/${kind}`, { email: email.value, password: password.value });
      keep(data);
      route();
    } catch (err) {
      say(err.message);
    }
  }
  const form = el(
    "form",
    { class: "card", onsubmit: (e) => { e.preventDefault(); submit("login"); } },
    el("h2", {}, "Sign in"),
    el("label", { for: "email" }, "Email"), email,
    el("label", { for: "password" }, "Password"), password,
    el("div", { class: "row" },
      el("button", { type: "submit" }, "Log in"),
      el("button", { type: "button", onclick: () => submit("register") }, "Sign up")),
  );
  app.replaceChildren(form);
}

// --- live: quota, credits, notifications -----------------------------------------------------------

function connect() {
  if (socket) return socket;
  socket = io({ auth: { token: session.access_token }, transports: ["websocket"] });
  socket.on("connect_error", (err) => say(`Not connected: ${err.message}`));
  socket.on("quota", (q) => showMeter({ remaining: q.remaining }));
  socket.on("credits", (c) => showMeter({ credits: c.balance }));
  socket.on("notification", (n) => say(`🔔 ${n.notification.title}`));
  return socket;
}

const meterState = {};
function showMeter(change) {
  Object.assign(meterState, change);
  const parts = [];
  if (meterState.remaining != null) parts.push(`${meterState.remaining} messages left today`);
  if (meterState.credits != null) parts.push(`${meterState.credits} credits`);
  meter.textContent = parts.join(" · ");
}

// --- home: personas and chats ----------------------------------------------------------------------

async function homeView() {
  const [personas, chats, usage] = await Promise.all([
    api("GET", "/personas?limit=50"),
    api("GET", "/chat/sessions?limit=50"),
    api("GET", "/usage/current"),
  ]);
  showMeter({ remaining: usage.remaining, credits: usage.credits });
  const name = el("input", { id: "persona-name", required: true, maxlength: 100 });
  const greeting = el("input", { id: "persona-greeting", maxlength: 2000 });
  const create = el(
    "form",
    {
      class: "card",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api("POST", "/personas", { name: name.value, greeting: greeting.value });
          route();
        } catch (err) {
          say(err.message);
        }
      },
    },
    el("h2", {}, "New persona"),
    el("label", { for: "persona-name" }, "Name"), name,
    el("label", { for: "persona-greeting" }, "Greeting"), greeting,
    el("button", { type: "submit" }, "Create persona"),
  );
  const gallery = el("ul", { class: "list", "aria-label": "My personas" },
    ...personas.items.map((p) =>
      el("li", {}, el("span", {}, p.name),
        el("button", { type: "button", onclick: () => startChat(p.id), "aria-label": `Chat with ${p.name}` }, "Chat"))));
  const sessions = el("ul", { class: "list", "aria-label": "My chats" },
    ...chats.items.map((c) => el("li", {}, el("a", { href: `#/chat/${c.id}` }, c.title))));
  app.replaceChildren(
    el("section", {}, el("h2", {}, "Personas"), gallery, create),
    el("section", {}, el("h2", {}, "Chats"), sessions),
  );
}

async function startChat(personaId) {
  try {
    const chat = await api("POST", "/chat/sessions", { persona_id: personaId });
    location.hash = `#/chat/${chat.id}`;
  } catch (err) {
    say(err.message);
  }
}

// --- chat ------------------------------------------------------------------------------------------

async function chatView(sessionId) {
  const chat = await api("GET", `/chat/sessions/${sessionId}`);
  const list = el("ol", { class: "messages", "aria-label": "Conversation", "aria-live": "polite" });
  const rows = new Map(); // message id -> {node, message}
  let lastRev = 0;
  let streamId = null;

  function render(message) {
    lastRev = Math.max(lastRev, message.rev);
    let row = rows.get(message.id);
    if (!row) {
      const text = el("div", { class: "text" });
      const tools = el("div", { class: "tools" });
      row = { node: el("li", { class: `msg ${message.role}` }, text, tools), text, tools };
      rows.set(message.id, row);
      const after = [...rows.values()].map((r) => r.message).filter((m) => m && m.seq > message.seq);
      const next = after.length ? rows.get(after.sort((a, b) => a.seq - b.seq)[0].id).node : null;
      list.insertBefore(row.node, next);
    }
    row.message = message;
    row.node.dataset.status = message.status;
    row.text.textContent = message.status === "deleted" ? "(deleted)" : message.content;
    renderTools();
  }

  // Variant arrows on replies with several; regenerate on the newest reply; delete on every live message.
  function renderTools() {
    const live = [...rows.values()].map((r) => r.message).filter((m) => m.status !== "deleted");
    const newest = live.sort((a, b) => b.seq - a.seq)[0];
    for (const { message, tools } of rows.values()) {
      const controls = [];
      const count = message.variants.length;
      if (count > 1 && message.status !== "streaming") {
        const pick = (v) => s.timeout(5000).emitWithAck("message:select", { message_id: message.id, variant: v }).then((a) => a.ok && render(a.message));
        controls.push(
          el("button", { type: "button", disabled: message.variant === 0, "aria-label": "Previous variant", onclick: () => pick(message.variant - 1) }, "‹"),
          el("span", { class: "variant" }, `${message.variant + 1}/${count}`),
          el("button", { type: "button", disabled: message.variant === count - 1, "aria-label": "Next variant", onclick: () => pick(message.variant + 1) }, "›"),
        );
      }
      if (newest && message.id === newest.id && message.role === "assistant" && message.kind === "message" && message.status !== "streaming") {
        controls.push(el("button", { type: "button", onclick: () => s.emit("ai:regenerate", { message_id: message.id }) }, "Regenerate"));
      }
      if (message.status !== "deleted" && message.status !== "streaming") {
        controls.push(
          el("button", {
            type: "button",
            "aria-label": `Delete message ${message.seq}`,
            onclick: () => s.timeout(5000).emitWithAck("message:delete", { message_id: message.id }).then((a) => a.ok && render(a.message)),
          }, "Delete"),
        );
      }
      tools.replaceChildren(...controls);
    }
  }

  function appendChunk(id, text) {
    const row = rows.get(id);
    if (row) row.text.textContent += text;
  }

  const s = connect();
  // The controls exist before any socket handler can touch them (a reconnect may run join at once).
  const input = el("textarea", { id: "composer", rows: 2, required: true, maxlength: 8000 });
  const stop = el("button", { type: "button", disabled: true, onclick: () => streamId && s.emit("ai:stop", { stream_id: streamId }) }, "Stop");
  const form = el(
    "form",
    {
      class: "composer",
      onsubmit: async (e) => {
        e.preventDefault();
        const content = input.value.trim();
        if (!content) return;
        input.value = "";
        const ack = await s.timeout(10000).emitWithAck("message:send", {
          session_id: sessionId,
          client_id: crypto.randomUUID(),
          content,
        });
        if (ack.ok) render(ack.message);
        else say(`${ack.error.code}: ${ack.error.message}`);
      },
    },
    el("label", { for: "composer", class: "visually-hidden" }, "Your message"), input,
    el("div", { class: "row" }, el("button", { type: "submit" }, "Send"), stop),
  );
  const history = await api("GET", `/chat/sessions/${sessionId}/messages?limit=200`);
  history.items.forEach(render);

  async function join() {
    await s.timeout(5000).emitWithAck("chat:join", { session_id: sessionId });
    // After a reconnect: everything that changed, then the reply still streaming, from where it is.
    const synced = await s.timeout(5000).emitWithAck("sync", { session_id: sessionId, after_rev: lastRev });
    if (synced.ok) synced.messages.forEach(render);
    for (const stream of synced.streams || []) {
      const row = rows.get(stream.stream_id);
      if (row) row.text.textContent = "";
      streamId = stream.stream_id;
      stop.disabled = false;
      await s.timeout(5000).emitWithAck("ai:resume", { stream_id: stream.stream_id, from_index: 0 });
    }
  }
  s.off("connect").on("connect", join);
  s.off("ai:start").on("ai:start", (d) => {
    if (d.session_id !== sessionId) return;
    render(d.message);
    streamId = d.stream_id;
    stop.disabled = false;
  });
  s.off("ai:chunk").on("ai:chunk", (d) => appendChunk(d.stream_id, d.text));
  s.off("ai:done").on("ai:done", (d) => {
    render(d.message);
    streamId = null;
    stop.disabled = true;
  });
  s.off("ai:error").on("ai:error", (d) => {
    say(`The reply failed: ${d.message}`);
    streamId = null;
    stop.disabled = true;
  });
  s.off("message:new").on("message:new", (d) => d.message.session_id === sessionId && render(d.message));
  s.off("message:updated").on("message:updated", (d) => d.message.session_id === sessionId && render(d.message));
  if (s.connected) await join();

  app.replaceChildren(el("h2", {}, chat.title), list, form);
  input.focus();
}

// --- routing ---------------------------------------------------------------------------------------

async function route() {
  say("");
  if (!session) return authView();
  logoutButton.hidden = false;
  const chat = location.hash.match(/^#\/chat\/([0-9a-f-]{36})$/);
  try {
    if (chat) await chatView(chat[1]);
    else await homeView();
  } catch (err) {
    say(err.message);
  }
}

window.addEventListener("hashchange", route);
if (session) keep(session);
route();
