// Parlor's web app: plain ES modules, no build step. It uses the same REST API and Socket.IO events as any
// client (docs/events.md), with the official socket.io-client browser build vendored in web/vendor/.
import { current, keep, onSignedOut, signIn, signOut } from "./js/api.js";
import { chatView } from "./js/chat.js";
import { attempt, el, field, newScreen, say } from "./js/dom.js";
import { connect, disconnect, loadHeader } from "./js/live.js";
import { notificationsView } from "./js/notifications.js";
import { homeView, personaView } from "./js/personas.js";
import { settingsView } from "./js/settings.js";

const app = document.getElementById("app");
const signedInOnly = document.querySelectorAll("[data-signed-in]");
let leave = null; // the current screen's cleanup

function authView() {
  const email = el("input", { type: "email", required: true, autocomplete: "username" });
  const password = el("input", { type: "password", required: true, minlength: 8, autocomplete: "current-password" });
  const submit = (kind) => attempt(async () => {
    keep(await signIn(kind, email.value, password.value));
    loadHeader().catch(() => {});
    route();
  });
  app.replaceChildren(el("form", { class: "card", onsubmit: (e) => { e.preventDefault(); submit("login"); } },
    el("h2", {}, "Sign in"),
    ...field("email", "Email", email),
    ...field("password", "Password", password),
    el("div", { class: "row" },
      el("button", { type: "submit" }, "Log in"),
      el("button", { type: "button", onclick: () => submit("register") }, "Sign up"))));
  email.focus();
}

const routes = [
  [/^#\/chat\/([0-9a-f-]{36})$/, chatView],
  [/^#\/persona\/new$/, (a) => personaView(a, null)],
  [/^#\/persona\/([0-9a-f-]{36})$/, personaView],
  [/^#\/notifications$/, notificationsView],
  [/^#\/settings$/, settingsView],
  [/^/, homeView],
];

async function route() {
  leave?.();
  leave = null;
  signedInOnly.forEach((n) => (n.hidden = !current()));
  if (!current()) return authView();
  connect();
  for (const [pattern, view] of routes) {
    const match = location.hash.match(pattern);
    if (!match) continue;
    try {
      leave = (await view(app, ...match.slice(1))) || null;
    } catch (err) {
      say(err.message);
    }
    return;
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  await attempt(signOut);
});

onSignedOut(() => {
  disconnect();
  location.hash = "#/";
  route();
});

window.addEventListener("hashchange", () => {
  newScreen();
  route();
});
// The header's figures load once per sign-in; the socket keeps them current.
if (current()) {
  keep(current()); // starts the refresh timer
  loadHeader().catch(() => {});
}
route();
