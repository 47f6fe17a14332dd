// Home (the persona gallery: mine, trending, search; and my chats, pinned first), the persona editor
// with an avatar upload, and Character Card import and export.
import { api, blobUrl, current, download, importCard, upload } from "./api.js";
import { attempt, el, field, pressTwice, say } from "./dom.js";

function avatar(persona, size = "") {
  const img = el("img", { class: `avatar ${size}`, alt: "", width: 48, height: 48 });
  if (persona.avatar_url) blobUrl(`${persona.avatar_url}?variant=thumbnail`).then((u) => (img.src = u)).catch(() => {});
  else img.classList.add("blank");
  return img;
}

export async function startChat(personaId) {
  const chat = await api("POST", "/chat/sessions", { persona_id: personaId });
  location.hash = `#/chat/${chat.id}`;
}

function personaCard(p) {
  const mine = p.owner_id === current()?.user?.id;
  return el("li", { class: "persona" },
    avatar(p),
    el("div", { class: "grow" },
      el("strong", {}, p.name),
      p.description ? el("p", { class: "muted" }, p.description.slice(0, 140)) : null,
      p.visibility === "public" ? el("span", { class: "tag" }, "public") : null),
    el("div", { class: "row" },
      el("button", { type: "button", "aria-label": `Chat with ${p.name}`, onclick: () => attempt(() => startChat(p.id)) }, "Chat"),
      mine ? el("a", { class: "button", href: `#/persona/${p.id}`, "aria-label": `Edit ${p.name}` }, "Edit") : null));
}

async function gallery(tab, query) {
  if (tab === "trending") return (await api("GET", "/personas/trending?limit=30")).items;
  if (tab === "search") return query ? (await api("GET", `/personas/search?limit=30&q=${encodeURIComponent(query)}`)).items : [];
  return (await api("GET", "/personas?limit=50")).items;
}

function chatRow(c) {
  const pin = el("button", {
    type: "button",
    class: "quiet",
    "aria-pressed": String(c.pinned),
    "aria-label": `${c.pinned ? "Unpin" : "Pin"} ${c.title}`,
    onclick: () => attempt(async () => {
      await api("PATCH", `/chat/sessions/${c.id}`, { pinned: !c.pinned });
      location.hash === "#/" ? window.dispatchEvent(new HashChangeEvent("hashchange")) : (location.hash = "#/");
    }),
  }, c.pinned ? "Pinned" : "Pin");
  return el("li", {}, el("a", { href: `#/chat/${c.id}` }, c.title), pin);
}

export async function homeView(app) {
  const chats = await api("GET", "/chat/sessions?limit=50");
  const list = el("ul", { class: "list", "aria-label": "Personas" });
  const tabs = el("div", { class: "row", role: "group", "aria-label": "Which personas" });
  const searchBox = el("input", { type: "search", placeholder: "Search public personas", "aria-label": "Search personas" });
  let tab = "mine";
  async function show(next) {
    tab = next;
    tabs.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.tab === tab)));
    searchBox.hidden = tab !== "search";
    const items = await gallery(tab, searchBox.value.trim());
    list.replaceChildren(...items.map(personaCard));
    if (!items.length) list.append(el("li", { class: "muted" }, tab === "search" ? "No persona found." : "None yet."));
  }
  for (const [key, label] of [["mine", "Mine"], ["trending", "Trending"], ["search", "Search"]]) {
    tabs.append(el("button", { type: "button", class: "quiet", "data-tab": key, onclick: () => attempt(() => show(key)) }, label));
  }
  let timer = null;
  searchBox.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => attempt(() => show("search")), 250);
  });
  const cardFile = el("input", { type: "file", accept: ".png,.json,image/png,application/json" });
  cardFile.addEventListener("change", () => attempt(async () => {
    const imported = await importCard(cardFile.files[0]);
    say(`Imported ${imported.persona.name}.`, true);
    location.hash = `#/persona/${imported.persona.id}`;
  }));
  const sessions = el("ul", { class: "list", "aria-label": "My chats" }, chats.items.map(chatRow));
  app.replaceChildren(
    el("section", {},
      el("div", { class: "row spread" }, el("h2", {}, "Personas"), el("a", { class: "button", href: "#/persona/new" }, "New persona")),
      tabs, searchBox, list,
      el("div", { class: "row" }, ...field("card-file", "Import a Character Card (PNG or JSON)", cardFile))),
    el("section", {}, el("h2", {}, "Chats"), chats.items.length ? sessions : el("p", { class: "muted" }, "No chat yet: pick a persona.")),
  );
  await show(tab);
}

const splitTags = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);

export async function personaView(app, personaId) {
  const persona = personaId ? await api("GET", `/personas/${personaId}`) : null;
  const v = persona || { name: "", description: "", personality: "", greeting: "", tags: [], visibility: "private", remixable: false };
  const name = el("input", { required: true, maxlength: 100, value: v.name });
  const description = el("textarea", { rows: 2 }, v.description);
  const personality = el("textarea", { rows: 4 }, v.personality || "");
  const greeting = el("textarea", { rows: 2 }, v.greeting);
  const tags = el("input", { value: v.tags.join(", ") });
  const visibility = el("select", {}, el("option", { value: "private", selected: v.visibility === "private" }, "Private"),
    el("option", { value: "public", selected: v.visibility === "public" }, "Public"));
  const remixable = el("input", { type: "checkbox", checked: v.remixable });
  const picture = persona ? avatar(persona, "big") : el("img", { class: "avatar big blank", alt: "" });
  picture.alt = "Avatar";
  const file = el("input", { type: "file", accept: "image/*" });
  let avatarId = persona?.avatar_file_id ?? null;
  file.addEventListener("change", () => attempt(async () => {
    say("Uploading the avatar…");
    const stored = await upload("persona_image", file.files[0]);
    avatarId = stored.id;
    picture.classList.remove("blank");
    picture.src = await blobUrl(`/api/v1/files/${stored.id}/content?variant=thumbnail`);
    say("Avatar uploaded: save to keep it.");
  }));
  const form = el("form", {
    class: "card wide",
    onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        const body = {
          name: name.value.trim(),
          description: description.value,
          personality: personality.value,
          greeting: greeting.value,
          tags: splitTags(tags.value),
          visibility: visibility.value,
          remixable: remixable.checked,
          avatar_file_id: avatarId,
        };
        const saved = persona ? await api("PUT", `/personas/${persona.id}`, body) : await api("POST", "/personas", body);
        say(`Saved ${saved.name}.`, true);
        location.hash = `#/persona/${saved.id}`;
        if (persona) await personaView(app, saved.id);
      });
    },
  },
  el("h2", {}, persona ? `Edit ${persona.name}` : "New persona"),
  picture, ...field("persona-avatar", "Avatar image", file),
  ...field("persona-name", "Name", name),
  ...field("persona-description", "Description", description),
  ...field("persona-personality", "Personality (the system prompt)", personality),
  ...field("persona-greeting", "Greeting", greeting),
  ...field("persona-tags", "Tags (comma separated)", tags),
  ...field("persona-visibility", "Visibility", visibility),
  el("label", { class: "check" }, remixable, "Others may copy its definition (remixable)"),
  el("div", { class: "row" },
    el("button", { type: "submit" }, persona ? "Save persona" : "Create persona"),
    persona ? el("button", { type: "button", onclick: () => attempt(() => startChat(persona.id)) }, "Chat") : null));
  const extra = persona ? el("div", { class: "row" },
    el("button", { type: "button", class: "quiet", onclick: () => attempt(() => download(`/personas/${persona.id}/export?format=png`, `${persona.name}.png`)) }, "Export card (PNG)"),
    el("button", { type: "button", class: "quiet", onclick: () => attempt(() => download(`/personas/${persona.id}/export?format=json`, `${persona.name}.json`)) }, "Export card (JSON)"),
    el("button", {
      type: "button",
      class: "danger",
      onclick: pressTwice("Press again to delete", () => attempt(async () => {
        await api("DELETE", `/personas/${persona.id}`);
        location.hash = "#/";
      })),
    }, "Delete persona")) : null;
  app.replaceChildren(form, extra);
  name.focus();
}
