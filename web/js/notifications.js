// The notification list: newest first, unread ones marked, live arrivals on top, a link to the chat a
// notification is about (data.session_id).
import { api } from "./api.js";
import { attempt, el } from "./dom.js";
import { setUnread } from "./live.js";

function item(n) {
  const read = el("button", {
    type: "button",
    "aria-label": `Mark “${n.title}” read`,
    hidden: Boolean(n.read_at),
    onclick: () => attempt(async () => {
      await api("POST", `/notifications/${n.id}/read`);
      node.classList.remove("unread");
      read.hidden = true;
      setUnread((await api("GET", "/notifications/unread-count")).count);
    }),
  }, "Mark read");
  const open = n.data?.session_id ? el("a", { href: `#/chat/${n.data.session_id}` }, "Open chat") : null;
  const node = el("li", { class: `note${n.read_at ? "" : " unread"}`, "data-kind": n.kind },
    el("div", {}, el("strong", {}, n.title), el("p", {}, n.body),
      el("time", { datetime: n.created_at }, new Date(n.created_at).toLocaleString())),
    el("div", { class: "row" }, open, read));
  return node;
}

export async function notificationsView(app) {
  const page = await api("GET", "/notifications?limit=50");
  const list = el("ul", { class: "list notes", "aria-label": "Notifications" }, page.items.map(item));
  const readAll = el("button", {
    type: "button",
    onclick: () => attempt(async () => {
      await api("POST", "/notifications/read-all");
      list.querySelectorAll(".unread").forEach((n) => n.classList.remove("unread"));
      list.querySelectorAll("button").forEach((b) => (b.hidden = true));
      setUnread(0);
    }),
  }, "Mark all read");
  const arrived = (e) => list.prepend(item(e.detail));
  window.addEventListener("parlor:notification", arrived);
  app.replaceChildren(el("h2", {}, "Notifications"), readAll,
    page.items.length ? list : el("p", { class: "empty" }, "Nothing yet."));
  if (!page.items.length) window.addEventListener("parlor:notification", () => app.querySelector(".empty")?.replaceWith(list), { once: true });
  return () => window.removeEventListener("parlor:notification", arrived);
}
