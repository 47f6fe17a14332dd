// The socket contract of docs/events.md, exercised with the official JavaScript client (the one React
// apps use). Run by tests/realtime/test_js_contract.py against a live server:
//   PARLOR_URL=http://127.0.0.1:PORT TOKEN=... SESSION_ID=... node contract.mjs
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { io } from "socket.io-client";

const url = process.env.PARLOR_URL;
const token = process.env.TOKEN;
const sessionId = process.env.SESSION_ID;
const results = [];

function connect(auth, transports = ["websocket"]) {
  const socket = io(url, { auth, transports, reconnection: false, forceNew: true, timeout: 5000 });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (err) => {
      socket.close();
      reject(err);
    });
  });
}

function nextEvent(socket, name, ms = 5000, matches = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${name} within ${ms} ms`)), ms);
    const listener = (data) => {
      if (!matches(data)) return;
      clearTimeout(timer);
      socket.off(name, listener);
      resolve(data);
    };
    socket.on(name, listener);
  });
}

async function check(name, fn) {
  await fn();
  results.push(name);
}

await check("refused without a token, with a readable reason", async () => {
  await assert.rejects(connect({}), (err) => {
    assert.match(err.message, /token/);
    assert.equal(err.data.code, "unauthorized");
    return true;
  });
});

await check("refused with a forged token", async () => {
  await assert.rejects(connect({ token: "forged.token.value" }), (err) => {
    assert.equal(err.data.code, "invalid_token");
    return true;
  });
});

const socket = await connect({ token });
results.push("connects with a valid token");

await check("chat:join acks ok with the session", async () => {
  const ack = await socket.timeout(5000).emitWithAck("chat:join", { session_id: sessionId });
  assert.equal(ack.ok, true);
  assert.equal(ack.session.id, sessionId);
});

const clientId = randomUUID();
let sent;
await check("message:send acks after commit and message:new arrives once", async () => {
  const arrivals = [];
  socket.on("message:new", (data) => arrivals.push(data));
  const ack = await socket.timeout(5000).emitWithAck("message:send", {
    session_id: sessionId,
    client_id: clientId,
    content: "hello from socket.io-client",
  });
  assert.equal(ack.ok, true);
  assert.equal(ack.duplicate, false);
  sent = ack.message;
  assert.equal(sent.role, "user");
  assert.equal(sent.content, "hello from socket.io-client");
  assert.equal(sent.client_id, clientId);
  assert.equal(typeof sent.seq, "number");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(arrivals.length, 1);
  assert.deepEqual(arrivals[0].message, sent);
  socket.off("message:new");
});

await check("a repeated client_id returns the same message", async () => {
  const ack = await socket.timeout(5000).emitWithAck("message:send", {
    session_id: sessionId,
    client_id: clientId,
    content: "hello from socket.io-client",
  });
  assert.equal(ack.duplicate, true);
  assert.equal(ack.message.id, sent.id);
  assert.equal(ack.message.seq, sent.seq);
});

await check("sync returns what came after a seq", async () => {
  const ack = await socket.timeout(5000).emitWithAck("sync", { session_id: sessionId, after_seq: sent.seq - 1 });
  assert.equal(ack.ok, true);
  // The user's message first; the persona's AI reply (seq after it) may follow.
  assert.equal(ack.messages[0].id, sent.id);
  assert.ok(ack.messages.slice(1).every((m) => m.role === "assistant" && m.seq > sent.seq));
  assert.equal(ack.has_more, false);
  assert.ok(ack.last_seq >= sent.seq);
  assert.ok(Array.isArray(ack.streams));
});

await check("bad payloads and unknown events get error acks", async () => {
  const bad = await socket.timeout(5000).emitWithAck("message:send", { session_id: sessionId });
  assert.equal(bad.ok, false);
  assert.equal(bad.error.code, "invalid");
  const unknown = await socket.timeout(5000).emitWithAck("no:such:event", {});
  assert.deepEqual(unknown, { ok: false, error: { code: "unknown_event", message: "unknown event 'no:such:event'" } });
});

await check("an AI reply streams as ai:start, ai:chunk (gap-free indexes) and ai:done", async () => {
  const chunks = [];
  const clientId = randomUUID();
  // Earlier messages' replies may still be running: wait for the one that answers this message.
  const start = nextEvent(socket, "ai:start", 10000, (d) => d.reply_to === replyTo.id);
  const done = nextEvent(socket, "ai:done", 10000, (d) => d.message.reply_to === replyTo.id);
  socket.on("ai:chunk", (data) => chunks.push(data));
  const replyTo = {};
  const ack = await socket.timeout(5000).emitWithAck("message:send", {
    session_id: sessionId,
    client_id: clientId,
    content: "stream to me",
  });
  assert.equal(ack.ok, true);
  replyTo.id = ack.message.id;
  const started = await start;
  assert.equal(started.session_id, sessionId);
  assert.equal(started.reply_to, ack.message.id);
  assert.equal(started.message.status, "streaming");
  const finished = await done;
  await new Promise((r) => setTimeout(r, 200));
  socket.off("ai:chunk");
  const mine = chunks.filter((c) => c.stream_id === started.stream_id);
  assert.deepEqual(mine.map((c) => c.index), [...mine.keys()]);
  assert.equal(finished.stream_id, started.stream_id);
  assert.equal(finished.message.status, "complete");
  assert.equal(mine.map((c) => c.text).join(""), finished.message.content);
  assert.ok(finished.usage.total_tokens > 0);
});

await check("a second device receives message:new (multi-device)", async () => {
  const other = await connect({ token }, ["polling", "websocket"]);
  const arrival = nextEvent(other, "message:new");
  const ack = await socket.timeout(5000).emitWithAck("message:send", {
    session_id: sessionId,
    client_id: randomUUID(),
    content: "to every device",
  });
  const data = await arrival;
  assert.equal(data.message.id, ack.message.id);
  other.close();
});

await check("message:edit, message:delete and sync by rev: every change once, tombstones included", async () => {
  const start = await socket.timeout(5000).emitWithAck("sync", { session_id: sessionId, after_seq: 0 });
  const lastRev = start.last_rev;
  const updates = [];
  socket.on("message:updated", (data) => updates.push(data.message));
  const edited = await socket.timeout(5000).emitWithAck("message:edit", { message_id: sent.id, content: "edited" });
  assert.equal(edited.ok, true);
  assert.equal(edited.message.content, "edited");
  assert.ok(edited.message.edited_at);
  assert.ok(edited.message.rev > lastRev);
  const deleted = await socket.timeout(5000).emitWithAck("message:delete", { message_id: sent.id });
  assert.equal(deleted.message.status, "deleted");
  assert.equal(deleted.message.content, "");
  assert.equal(deleted.message.seq, sent.seq);
  const synced = await socket.timeout(5000).emitWithAck("sync", { session_id: sessionId, after_rev: lastRev });
  assert.equal(synced.ok, true);
  // A reply of an earlier message may have ended meanwhile (its end raises a rev too).
  assert.deepEqual(synced.messages.filter((m) => m.id === sent.id), [deleted.message]);
  assert.ok(synced.messages.every((m) => m.rev > lastRev));
  assert.ok(synced.last_rev >= deleted.message.rev);
  await new Promise((r) => setTimeout(r, 300));
  socket.off("message:updated");
  assert.deepEqual(updates.filter((m) => m.id === sent.id), [edited.message, deleted.message]);
  const stranger = await socket.timeout(5000).emitWithAck("message:edit", { message_id: randomUUID(), content: "x" });
  assert.equal(stranger.error.code, "not_found");
});

await check("ai:regenerate streams a new variant of the newest reply; message:select picks one", async () => {
  let newest;
  for (let i = 0; i < 100; i++) {
    const all = await socket.timeout(5000).emitWithAck("sync", { session_id: sessionId, after_seq: 0 });
    newest = all.messages.filter((m) => m.status !== "deleted").at(-1);
    if (newest.role === "assistant" && newest.status === "complete") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const start = nextEvent(socket, "ai:start", 10000, (d) => d.message_id === newest.id);
  const done = nextEvent(socket, "ai:done", 10000, (d) => d.message.id === newest.id);
  const ack = await socket.timeout(5000).emitWithAck("ai:regenerate", { message_id: newest.id });
  assert.equal(ack.ok, true);
  assert.equal(ack.message.status, "streaming");
  const started = await start;
  assert.equal(started.variant, 1);
  const finished = await done;
  assert.equal(finished.message.variants.length, 2);
  assert.equal(finished.message.variant, 1);
  assert.equal(finished.message.variants[0].content, newest.content);
  const picked = await socket.timeout(5000).emitWithAck("message:select", { message_id: newest.id, variant: 0 });
  assert.equal(picked.ok, true);
  assert.equal(picked.message.content, newest.content);
  assert.ok(picked.message.rev > finished.message.rev);
});

socket.close();
console.log(JSON.stringify({ ok: true, checks: results }));
