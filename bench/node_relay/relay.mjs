// Comparator for bench/: a bare Node socket.io relay speaking Parlor's chat events (docs/events.md) with
// the same acks and rooms, but no token check beyond "present", no database: messages live in memory.
// Env: HOST, PORT, REDIS_URL (optional: @socket.io/redis-adapter for several processes), REDIS_PREFIX.

import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { Server } from "socket.io";

const host = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 8090);
const SYNC_PAGE = 500;

const httpServer = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});
// Same limits as Parlor's python-socketio server: websocket frames uncompressed, 2 MB payload cap.
const io = new Server(httpServer, {
  cors: { origin: "*" },
  maxHttpBufferSize: 2_000_000,
  perMessageDeflate: false,
});

if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub, { key: `${process.env.REDIS_PREFIX ?? "relay"}:socket.io` }));
}

// session_id -> {last_seq, messages: [], byClient: Map}. One process's memory; with several processes
// each keeps its own (the bench points every sender of a session at one process).
const sessions = new Map();
function session(id) {
  let s = sessions.get(id);
  if (!s) {
    const t = new Date().toISOString();
    s = { id, last_seq: 0, messages: [], byClient: new Map(), created_at: t };
    sessions.set(id, s);
  }
  return s;
}
const publicSession = (s) => ({
  id: s.id,
  persona_id: null,
  title: "bench",
  pinned: false,
  last_seq: s.last_seq,
  created_at: s.created_at,
  updated_at: s.created_at,
});
const ok = (fields = {}) => ({ ok: true, ...fields });
const invalid = (message) => ({ ok: false, error: { code: "invalid", message } });
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (typeof token !== "string" || !token) {
    const err = new Error("missing access token: connect with auth {token}");
    err.data = { code: "unauthorized" };
    return next(err);
  }
  socket.data.userId = token; // any token is accepted; it names the user
  socket.data.chats = new Set();
  next();
});

io.on("connection", (socket) => {
  const userRoom = `user:${socket.data.userId}`;
  socket.join(userRoom);

  socket.on("chat:join", (data, ack) => {
    if (typeof ack !== "function") return;
    if (!isObj(data) || typeof data.session_id !== "string") return ack(invalid("session_id: required"));
    socket.join(`chat:${data.session_id}`);
    socket.data.chats.add(data.session_id);
    ack(ok({ session: publicSession(session(data.session_id)) }));
  });

  socket.on("chat:leave", (data, ack) => {
    if (typeof ack !== "function") return;
    if (!isObj(data) || typeof data.session_id !== "string") return ack(invalid("session_id: required"));
    socket.leave(`chat:${data.session_id}`);
    socket.data.chats.delete(data.session_id);
    ack(ok());
  });

  socket.on("message:send", (data, ack) => {
    if (typeof ack !== "function") return;
    if (!isObj(data) || typeof data.session_id !== "string" || typeof data.client_id !== "string")
      return ack(invalid("session_id, client_id: required"));
    if (typeof data.content !== "string" || !data.content.trim()) return ack(invalid("content: required"));
    const s = session(data.session_id);
    const existing = s.byClient.get(data.client_id);
    if (existing) return ack(ok({ message: existing, duplicate: true }));
    const message = {
      id: randomUUID(),
      session_id: s.id,
      seq: ++s.last_seq,
      role: "user",
      content: data.content,
      status: "complete",
      client_id: data.client_id,
      reply_to: null,
      usage: null,
      attachments: [],
      created_at: new Date().toISOString(),
    };
    s.messages.push(message);
    s.byClient.set(data.client_id, message);
    // Once to each socket of the user and each socket in the chat room (socket.io dedupes rooms).
    io.to([userRoom, `chat:${s.id}`]).emit("message:new", { message });
    ack(ok({ message, duplicate: false }));
  });

  socket.on("sync", (data, ack) => {
    if (typeof ack !== "function") return;
    if (!isObj(data) || typeof data.session_id !== "string" || !Number.isInteger(data.after_seq))
      return ack(invalid("session_id, after_seq: required"));
    const s = session(data.session_id);
    // seq n is at index n-1: the page is a slice.
    const rows = s.messages.slice(data.after_seq, data.after_seq + SYNC_PAGE + 1);
    ack(
      ok({
        messages: rows.slice(0, SYNC_PAGE),
        has_more: rows.length > SYNC_PAGE,
        last_seq: s.last_seq,
        streams: [],
      }),
    );
  });

  socket.on("typing", (data, ack) => {
    if (typeof ack !== "function") return;
    if (!isObj(data) || typeof data.session_id !== "string") return ack(invalid("session_id: required"));
    socket.to(`chat:${data.session_id}`).emit("typing", {
      session_id: data.session_id,
      user_id: socket.data.userId,
      typing: !!data.typing,
    });
    ack(ok());
  });
});

httpServer.listen({ host, port, backlog: 511 }, () => {
  process.stderr.write(`node relay listening on ${host}:${port}\n`);
});

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  });
}
