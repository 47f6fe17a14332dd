// Settings: display name, time zone (the daily quota resets at its midnight) and profile picture.
import { api, blobUrl, upload } from "./api.js";
import { attempt, el, field, say } from "./dom.js";

export async function settingsView(app) {
  const me = await api("GET", "/auth/me");
  const name = el("input", { required: true, maxlength: 100, value: me.display_name, autocomplete: "nickname" });
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [me.timezone];
  if (!zones.includes(me.timezone)) zones.unshift(me.timezone);
  const zone = el("select", {}, zones.map((z) => el("option", { value: z, selected: z === me.timezone }, z)));
  const picture = el("img", { class: "avatar big", alt: "My profile picture", hidden: !me.avatar_url });
  if (me.avatar_url) blobUrl(me.avatar_url).then((u) => (picture.src = u)).catch(() => {});
  const file = el("input", { type: "file", accept: "image/*" });
  const form = el("form", {
    class: "card",
    onsubmit: (e) => {
      e.preventDefault();
      attempt(async () => {
        const change = { display_name: name.value.trim(), timezone: zone.value };
        if (file.files[0]) {
          const stored = await upload("avatar", file.files[0]);
          change.avatar_file_id = stored.id;
        }
        const saved = await api("PATCH", "/auth/me", change);
        if (saved.avatar_url) picture.src = await blobUrl(saved.avatar_url);
        picture.hidden = !saved.avatar_url;
        file.value = "";
        say("Settings saved.");
      });
    },
  },
  el("h2", {}, "Settings"),
  el("p", {}, `Signed in as ${me.email} · plan: ${me.plan}`),
  field("display-name", "Display name", name),
  field("timezone", "Time zone (the daily quota resets at its midnight)", zone),
  picture,
  field("profile-picture", "Profile picture", file),
  el("button", { type: "submit" }, "Save settings"));
  app.replaceChildren(form);
}
