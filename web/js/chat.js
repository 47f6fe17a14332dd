// The chat: history, the reply streaming in, stop, regenerate with variant arrows, edit, delete, rewind,
// attachments, typing signals, export with progress, and resuming after a reconnect (sync after_rev, then
// ai:resume of each live stream, then chat:join), so that the screen ends equal to the server's state.
import { api, blobUrl, download, upload } from "./api.js";
import { attempt, el, pressTwice, say } from "./dom.js";
import { connect, onJob } from "./live.js";

const ACK_MS = 10000;

export async function chatView(app, sessionId) {
  const chat = await api("GET", `/chat/sessions/${sessionId}`);
  const persona = chat.persona_id ? await api("GET", `/personas/${chat.persona_id}`).catch(() => null) : null;
  const who = persona?.name || "The persona";
  const s = connect();
  const list = el("ol", { class: "messages", "aria-label": "Conversation" });
  const rows = new Map(); // message id -> {node, text, tools, files, message}
  const streams = new Map(); // stream id -> next chunk index expected
  let lastRev = 0;
  let streamId = null;
  let editing = null;

  const emit = async (event, payload) => {
    const ack = await s.timeout(ACK_MS).emitWithAck(event, payload);
    if (!ack.ok) say(`${ack.error.code}: ${ack.error.message}`);
    return ack;
  };

  // --- messages ----------------------------------------------------------------------------------

  function attachments(message) {
    return message.attachments.map((f) => {
      if (f.thumbnail) {
        const img = el("img", { class: "thumb", alt: f.filename || "image", width: f.width && Math.min(160, f.width) });
        blobUrl(`/api/v1/files/${f.id}/content?variant=thumbnail`).then((u) => (img.src = u)).catch(() => {});
        return img;
      }
      return el("button", { type: "button", class: "quiet file", onclick: () => attempt(() => download(`/files/${f.id}/content`, f.filename)) }, `File: ${f.filename || "file"}`);
    });
  }

  function render(message) {
    lastRev = Math.max(lastRev, message.rev);
    let row = rows.get(message.id);
    if (!row) {
      row = { text: el("div", { class: "text" }), files: el("div", { class: "files" }), tools: el("div", { class: "tools" }) };
      row.node = el("li", { class: `msg ${message.role}`, "data-seq": message.seq }, row.text, row.files, row.tools);
      rows.set(message.id, row);
      const next = [...list.children].find((n) => Number(n.dataset.seq) > message.seq) || null;
      list.insertBefore(row.node, next);
    }
    row.message = message;
    row.node.dataset.status = message.status;
    row.node.hidden = message.status === "deleted";
    if (editing !== message.id) row.text.textContent = message.content;
    row.files.replaceChildren(...attachments(message));
    // A reply that ended while this page was away (its ai:done missed) is settled by what sync returned.
    if (streamId === message.id && message.status !== "streaming") streaming(null);
    else renderTools();
  }

  function newestLive() {
    return [...rows.values()].map((r) => r.message).filter((m) => m.status !== "deleted").sort((a, b) => b.seq - a.seq)[0];
  }

  function renderTools() {
    const newest = newestLive();
    const busy = Boolean(streamId);
    for (const { message, tools } of rows.values()) {
      if (editing === message.id) continue;
      const controls = [];
      const count = message.variants.length;
      const settled = message.status !== "streaming" && message.status !== "deleted";
      if (count > 1 && settled) {
        const pick = (v) => emit("message:select", { message_id: message.id, variant: v }).then((a) => a.ok && render(a.message));
        controls.push(
          el("button", { type: "button", disabled: message.variant === 0 || busy, "aria-label": "Previous variant", onclick: () => pick(message.variant - 1) }, "‹"),
          el("span", { class: "variant" }, `${message.variant + 1}/${count}`),
          el("button", { type: "button", disabled: message.variant === count - 1 || busy, "aria-label": "Next variant", onclick: () => pick(message.variant + 1) }, "›"),
        );
      }
      if (settled && newest && message.id === newest.id && message.role === "assistant" && message.kind === "message") {
        controls.push(el("button", { type: "button", disabled: busy, onclick: () => emit("ai:regenerate", { message_id: message.id }) }, "Regenerate"));
      }
      if (settled) {
        controls.push(el("button", { type: "button", disabled: busy, "aria-label": `Edit message ${message.seq}`, onclick: () => edit(message) }, "Edit"));
        controls.push(el("button", {
          type: "button",
          disabled: busy,
          "aria-label": `Delete message ${message.seq}`,
          onclick: () => emit("message:delete", { message_id: message.id }).then((a) => a.ok && render(a.message)),
        }, "Delete"));
        if (newest && message.id !== newest.id) {
          controls.push(el("button", {
            type: "button",
            disabled: busy,
            "aria-label": `Rewind to message ${message.seq}`,
            // Rewinding deletes every later message: asked twice.
            onclick: pressTwice("Delete all after?", () =>
              emit("chat:rewind", { session_id: sessionId, to_seq: message.seq }).then((a) => a.ok && catchUp())),
          }, "Rewind here"));
        }
      }
      tools.replaceChildren(...controls);
    }
  }

  function edit(message) {
    const row = rows.get(message.id);
    editing = message.id;
    const box = el("textarea", { rows: 3, "aria-label": `New text of message ${message.seq}` }, message.content);
    const newestUser = [...rows.values()].map((r) => r.message)
      .filter((m) => m.role === "user" && m.status !== "deleted").sort((a, b) => b.seq - a.seq)[0];
    const done = () => {
      editing = null;
      render(rows.get(message.id).message);
    };
    const save = (regenerate) => emit("message:edit", { message_id: message.id, content: box.value, ...(regenerate ? { regenerate: true } : {}) })
      .then((a) => { if (a.ok) { editing = null; render(a.message); } });
    row.text.replaceChildren(box);
    row.tools.replaceChildren(
      el("button", { type: "button", onclick: () => save(false) }, "Save"),
      newestUser && newestUser.id === message.id ? el("button", { type: "button", onclick: () => save(true) }, "Save and regenerate") : null,
      el("button", { type: "button", class: "quiet", onclick: done }, "Cancel"),
    );
    box.focus();
  }

  // --- streaming ---------------------------------------------------------------------------------

  const stop = el("button", { type: "button", disabled: true, onclick: () => streamId && s.emit("ai:stop", { stream_id: streamId }) }, "Stop");
  const writing = el("p", { class: "writing", "aria-live": "polite" });

  function streaming(id) {
    streamId = id;
    stop.disabled = !id;
    writing.textContent = id ? `${who} is writing…` : "";
    renderTools();
  }

  function chunk(d) {
    const expected = streams.get(d.stream_id);
    if (expected === undefined || d.index < expected) return; // not followed here, or already shown
    streams.set(d.stream_id, d.index + 1);
    const row = rows.get(d.stream_id);
    if (row) row.text.textContent += d.text;
  }

  // After (re)connecting: what changed, the live replies from their start, then the room.
  async function catchUp() {
    const synced = await emit("sync", { session_id: sessionId, after_rev: lastRev });
    if (!synced.ok) return;
    synced.messages.forEach(render);
    for (const stream of synced.streams || []) {
      if (streams.has(stream.stream_id)) continue; // already followed on this connection
      const row = rows.get(stream.stream_id);
      if (row) row.text.textContent = "";
      streams.set(stream.stream_id, 0);
      streaming(stream.stream_id);
      const resumed = await s.timeout(ACK_MS).emitWithAck("ai:resume", { stream_id: stream.stream_id, from_index: 0 });
      if (!resumed.ok) {
        streams.delete(stream.stream_id);
        streaming(null);
      }
    }
  }

  let joining = null;
  function join() {
    joining ||= (async () => {
      await catchUp();
      await emit("chat:join", { session_id: sessionId });
      await catchUp(); // anything stored between the first sync and joining the room
    })().finally(() => (joining = null));
    return joining;
  }

  // --- composer ----------------------------------------------------------------------------------

  const input = el("textarea", { id: "composer", rows: 2, maxlength: 8000 });
  const picker = el("input", { id: "attach", type: "file", multiple: true, class: "visually-hidden" });
  const chips = el("ul", { class: "chips", "aria-label": "Attachments to send" });
  const pending = [];
  picker.addEventListener("change", () => attempt(async () => {
    for (const file of picker.files) {
      if (pending.length >= 4) break;
      say(`Uploading ${file.name}…`);
      const stored = await upload("chat_attachment", file);
      pending.push(stored);
      const chip = el("li", {}, stored.filename, el("button", {
        type: "button",
        class: "quiet",
        "aria-label": `Remove ${stored.filename}`,
        onclick: () => { pending.splice(pending.indexOf(stored), 1); chip.remove(); },
      }, "×"));
      chips.append(chip);
    }
    picker.value = "";
    say("");
  }));
  let typingSent = 0;
  let typingTimer = null;
  input.addEventListener("input", () => {
    if (Date.now() - typingSent > 3000) {
      typingSent = Date.now();
      s.emit("typing", { session_id: sessionId, typing: true });
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { typingSent = 0; s.emit("typing", { session_id: sessionId, typing: false }); }, 4000);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  const form = el("form", {
    class: "composer",
    onsubmit: async (e) => {
      e.preventDefault();
      const content = input.value.trim();
      if (!content && !pending.length) return;
      const sent = pending.splice(0);
      input.value = "";
      chips.replaceChildren();
      clearTimeout(typingTimer);
      typingSent = 0;
      const ack = await emit("message:send", { session_id: sessionId, client_id: crypto.randomUUID(), content, attachments: sent.map((f) => f.id) });
      if (ack.ok) render(ack.message);
      else input.value = content; // nothing was stored: keep the text
    },
  },
  el("label", { for: "composer", class: "visually-hidden" }, "Your message"),
  input, chips,
  el("div", { class: "row" },
    el("button", { type: "submit" }, "Send"), stop,
    el("label", { for: "attach", class: "button quiet" }, "Attach"), picker));

  // --- export ------------------------------------------------------------------------------------

  const format = el("select", { id: "export-format", "aria-label": "Export format" },
    el("option", { value: "pdf" }, "PDF"), el("option", { value: "txt" }, "Text"), el("option", { value: "json" }, "JSON"));
  const bar = el("progress", { max: 1, value: 0, hidden: true, "aria-label": "Export progress" });
  const link = el("a", { hidden: true, class: "button" }, "Download");
  const exportBox = el("div", { class: "row export" }, format,
    el("button", {
      type: "button",
      class: "quiet",
      onclick: () => attempt(async () => {
        link.hidden = true;
        bar.hidden = false;
        bar.value = 0;
        const job = await api("POST", `/chat/sessions/${sessionId}/export`, { format: format.value });
        const stopWatching = onJob(job.id, (p) => {
          bar.value = p.progress;
          if (p.status === "succeeded") {
            stopWatching();
            bar.hidden = true;
            link.href = p.result.url;
            link.download = p.result.filename || `chat.${format.value}`;
            link.hidden = false;
            say("The export is ready.");
          } else if (["failed", "cancelled"].includes(p.status)) {
            stopWatching();
            bar.hidden = true;
            say(`The export ${p.status}: ${p.error || ""}`);
          }
        });
      }),
    }, "Export chat"), bar, link);

  // --- socket events -----------------------------------------------------------------------------

  const typingNote = el("p", { class: "writing", "aria-live": "polite" });
  const mine = (d) => d.session_id === sessionId || d.message?.session_id === sessionId;
  const handlers = {
    connect: join,
    // A new connection is in no room and follows no stream: join() resumes them.
    disconnect: () => streams.clear(),
    "ai:start": (d) => {
      if (d.session_id !== sessionId) return;
      streams.set(d.stream_id, 0);
      render(d.message);
      streaming(d.stream_id);
    },
    "ai:chunk": chunk,
    "ai:done": (d) => {
      if (!mine(d)) return;
      streams.delete(d.stream_id);
      render(d.message);
      if (streamId === d.stream_id) streaming(null);
    },
    "ai:error": (d) => {
      if (!streams.has(d.stream_id)) return;
      streams.delete(d.stream_id);
      say(`The reply failed: ${d.message}`);
      if (streamId === d.stream_id) streaming(null);
    },
    "message:new": (d) => mine(d) && render(d.message),
    "message:updated": (d) => mine(d) && render(d.message),
    typing: (d) => {
      if (d.session_id === sessionId) typingNote.textContent = d.typing ? "Typing on another device…" : "";
    },
    "chat:deleted": (d) => {
      if (d.session_id === sessionId) location.hash = "#/";
    },
  };
  for (const [event, fn] of Object.entries(handlers)) s.on(event, fn);

  const history = await api("GET", `/chat/sessions/${sessionId}/messages?limit=200&before_seq=${chat.last_seq + 1}`);
  history.items.forEach(render);
  if (s.connected) await join();

  app.replaceChildren(
    el("div", { class: "row spread" }, el("h2", {}, chat.title), exportBox),
    list, writing, typingNote, form,
  );
  input.focus();
  return () => {
    for (const [event, fn] of Object.entries(handlers)) s.off(event, fn);
    if (s.connected) s.emit("chat:leave", { session_id: sessionId });
  };
}
