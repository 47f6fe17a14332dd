// Load generator for bench/: drives one scenario against one server (or several nodes of one), with the
// official socket.io-client (websocket transport only), and reports JSON lines on stdout:
//   {"type":"mark","name":...,"data":{...}}  then waits for one line on stdin (the orchestrator samples
//                                             the server's RSS / CPU at that point and answers "ok")
//   {"type":"result","data":{...}}           the scenario's figures, last line
// Usage: node loadgen.mjs CONFIG.json   (written by bench/scenarios.py)
// Every loop is bounded by a count and a deadline; nothing here waits forever.

import { randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { makeClient } from "./clients.mjs";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const P = config.params;
const CONTENT = config.content;
const ACK_TIMEOUT_MS = P.ack_timeout_ms ?? 30000;
const CLIENT = config.client ?? "lite";

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function log(msg) {
  process.stderr.write(`[loadgen ${config.scenario}] ${msg}\n`);
}

// Tell the orchestrator where we are and wait for it to sample the server (bounded: it always answers).
async function mark(name, data = {}) {
  emit({ type: "mark", name, data });
  const line = await stdinLines.next();
  if (line.done) throw new Error("orchestrator went away");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();

class CpuMeter {
  start() {
    this.t0 = now();
    this.c0 = process.cpuUsage();
  }
  // Percent of one core used by this process since start().
  stop() {
    const c = process.cpuUsage(this.c0);
    const wallMs = now() - this.t0;
    return wallMs > 0 ? ((c.user + c.system) / 1000 / wallMs) * 100 : 0;
  }
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function summary(latencies) {
  const sorted = Float64Array.from(latencies).sort();
  return {
    count: sorted.length,
    p50_ms: percentile(sorted, 50),
    p99_ms: percentile(sorted, 99),
    max_ms: sorted.length ? sorted[sorted.length - 1] : null,
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// One client = one websocket connection, never reconnecting by itself.
async function connect(url, token) {
  const client = makeClient(CLIENT, url, token);
  await client.connect(60000);
  return client;
}

// Run fn over items with at most `limit` in flight.
async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function call(client, event, payload) {
  const ack = await client.call(event, payload, ACK_TIMEOUT_MS);
  if (!ack || ack.ok !== true) throw new Error(`${event} refused: ${JSON.stringify(ack)}`);
  return ack;
}

const urlFor = (i) => config.urls[i % config.urls.length];

function closeAll(sockets) {
  for (const s of sockets) if (s) s.close();
}

// ---- 1. idle sockets: memory per connected, authenticated socket -----------------------------------

async function idle() {
  const n = P.sockets;
  const users = config.users;
  // Warm-up: the first connections pay for imports and caches; the baseline is taken after them.
  const warm = await pool(
    Array.from({ length: P.warmup }, (_, i) => i),
    P.connect_concurrency,
    (i) => connect(urlFor(i), users[i % users.length].token),
  );
  closeAll(warm);
  await sleep(1000);
  await mark("baseline");
  await mark("start");
  const sockets = [];
  let failed = 0;
  const cpu = new CpuMeter();
  cpu.start();
  const t0 = now();
  await pool(
    Array.from({ length: n }, (_, i) => i),
    P.connect_concurrency,
    async (i) => {
      try {
        sockets.push(await connect(urlFor(i), users[i % users.length].token));
      } catch (err) {
        failed++;
        if (failed <= 3) log(String(err));
      }
    },
  );
  const connectSeconds = (now() - t0) / 1000;
  const loadgenCpu = cpu.stop();
  await mark("end");
  const connected = sockets.filter((s) => s.connected).length;
  await mark("loaded", { connected });
  closeAll(sockets);
  return {
    connected,
    failed,
    connect_seconds: connectSeconds,
    connects_per_s: connected / connectSeconds,
    loadgen_cpu_pct: loadgenCpu,
  };
}

// ---- 2. fan-out: one sender, a room of R receivers ---------------------------------------------------

async function fanout() {
  const room = P.receivers;
  const user = config.users[0];
  const sid = user.session_id;
  const receivers = await pool(
    Array.from({ length: room }, (_, i) => i),
    P.connect_concurrency,
    async (i) => {
      const s = await connect(urlFor(i), user.token);
      await call(s, "chat:join", { session_id: sid });
      return s;
    },
  );
  const sender = await connect(config.urls[0], user.token);

  const sentAt = new Map(); // client_id -> send time
  const counts = new Map(); // client_id -> deliveries to receivers
  const waiters = new Map(); // client_id -> resolve when every receiver has it
  let latencies = [];
  let deliveries = 0;
  let lastDelivery = 0;
  let duplicates = 0;
  let measuring = false;
  const seen = receivers.map(() => new Set());
  receivers.forEach((s, idx) => {
    s.on("message:new", ({ message }) => {
      const t = now();
      const cid = message.client_id;
      const t0 = sentAt.get(cid);
      if (t0 === undefined) return;
      if (seen[idx].has(cid)) {
        duplicates++;
        return;
      }
      seen[idx].add(cid);
      if (measuring) {
        latencies.push(t - t0);
        deliveries++;
        lastDelivery = t;
      }
      const c = (counts.get(cid) ?? 0) + 1;
      counts.set(cid, c);
      if (c === room) waiters.get(cid)?.();
    });
  });

  let errors = 0;
  let sent = 0;
  async function sendOne() {
    const cid = randomUUID();
    const done = new Promise((resolve) => waiters.set(cid, resolve));
    sentAt.set(cid, now());
    sent++;
    try {
      await call(sender, "message:send", { session_id: sid, client_id: cid, content: CONTENT });
      await withTimeout(done, P.drain_ms, "fan-out delivery");
    } catch (err) {
      errors++;
      if (errors <= 3) log(String(err));
    }
    waiters.delete(cid);
  }
  async function run(count, seconds) {
    const deadline = now() + seconds * 1000;
    let issued = 0;
    async function worker() {
      while (issued < count && now() < deadline) {
        issued++;
        await sendOne();
      }
    }
    await Promise.all(Array.from({ length: P.window }, worker));
  }

  await run(P.warmup_messages, 30);
  for (const s of seen) s.clear();
  latencies = [];
  sent = 0;
  errors = 0;
  await mark("start");
  const cpu = new CpuMeter();
  cpu.start();
  measuring = true;
  const t0 = now();
  await run(P.messages, P.seconds);
  measuring = false;
  const loadgenCpu = cpu.stop();
  await mark("end");
  const elapsed = (lastDelivery - t0) / 1000;
  const expected = sent * room;
  closeAll([...receivers, sender]);
  return {
    receivers: room,
    messages: sent,
    deliveries,
    expected_deliveries: expected,
    missing_deliveries: expected - deliveries,
    duplicate_deliveries: duplicates,
    errors,
    seconds: elapsed,
    deliveries_per_s: elapsed > 0 ? deliveries / elapsed : 0,
    latency: summary(latencies),
    loadgen_cpu_pct: loadgenCpu,
  };
}

// ---- 3. durable chat: C clients, each sends, waits for its ack, sends the next ----------------------

async function durable() {
  const users = config.users.slice(0, P.clients);
  if (users.length < P.clients) throw new Error(`need ${P.clients} users, have ${users.length}`);
  const clients = await pool(users, P.connect_concurrency, async (u, i) => {
    const s = await connect(urlFor(i), u.token);
    await call(s, "chat:join", { session_id: u.session_id });
    let echoes = 0;
    s.on("message:new", () => echoes++);
    return { s, u, echoes: () => echoes };
  });
  const acked = [];
  let latencies = [];
  let errors = 0;
  let measuring = false;
  async function client(c, count, deadline) {
    for (let i = 0; i < count && now() < deadline; i++) {
      const cid = randomUUID();
      const t = now();
      try {
        const ack = await call(c.s, "message:send", { session_id: c.u.session_id, client_id: cid, content: CONTENT });
        if (measuring) {
          latencies.push(now() - t);
          acked.push([c.u.session_id, cid, ack.message.seq]);
        }
      } catch (err) {
        errors++;
        if (errors <= 3) log(String(err));
      }
    }
  }
  // Warm-up: one message per client, not counted.
  const warmDeadline = now() + 30000;
  await Promise.all(clients.map((c) => client(c, 1, warmDeadline)));
  latencies = [];
  errors = 0;
  await mark("start");
  const cpu = new CpuMeter();
  cpu.start();
  measuring = true;
  const t0 = now();
  const deadline = t0 + P.seconds * 1000;
  await Promise.all(clients.map((c) => client(c, P.messages_per_client, deadline)));
  const t1 = now();
  measuring = false;
  const loadgenCpu = cpu.stop();
  await mark("end");
  if (config.acked_path) writeFileSync(config.acked_path, JSON.stringify(acked));
  closeAll(clients.map((c) => c.s));
  const elapsed = (t1 - t0) / 1000;
  return {
    clients: clients.length,
    acks: acked.length,
    errors,
    seconds: elapsed,
    acks_per_s: acked.length / elapsed,
    latency: summary(latencies),
    loadgen_cpu_pct: loadgenCpu,
  };
}

// ---- 4. reconnect storm: R readers dropped at once reconnect, join and sync -------------------------

async function storm() {
  const perUser = P.readers_per_user;
  const users = config.users.slice(0, P.users);
  if (users.length < P.users) throw new Error(`need ${P.users} users, have ${users.length}`);
  const finalSeq = new Map(); // session_id -> highest seq acked to a writer
  const readers = [];
  users.forEach((u, ui) => {
    for (let k = 0; k < perUser; k++) readers.push({ u, idx: ui * perUser + k, seqs: new Set(), max: 0, base: 0, synced: false });
  });
  function record(r, message) {
    if (message.session_id !== r.u.session_id) return;
    r.seqs.add(message.seq);
    if (message.seq > r.max) r.max = message.seq;
  }
  function isCurrent(r) {
    const last = finalSeq.get(r.u.session_id) ?? 0;
    for (let q = r.base + 1; q <= last; q++) if (!r.seqs.has(q)) return false;
    return true;
  }
  // Readers: connect, join, track every seq they hold.
  await pool(readers, P.connect_concurrency, async (r) => {
    const s = makeClient(CLIENT, urlFor(r.idx), r.u.token);
    r.s = s;
    s.on("message:new", ({ message }) => record(r, message));
    await s.connect(60000);
    const ack = await call(s, "chat:join", { session_id: r.u.session_id });
    // Messages from earlier scenarios are history this reader is not asked to hold.
    r.base = ack.session.last_seq;
    r.max = r.base;
  });
  const writers = await pool(users, P.connect_concurrency, async (u, i) => {
    const s = await connect(urlFor(i), u.token);
    return { s, u };
  });
  let writeErrors = 0;
  const writeLog = [];
  let phase = "initial";
  async function write(w, count) {
    for (let i = 0; i < count; i++) {
      try {
        const ack = await call(w.s, "message:send", {
          session_id: w.u.session_id,
          client_id: randomUUID(),
          content: CONTENT,
        });
        const seq = ack.message.seq;
        writeLog.push([w.u.session_id, seq, ack.message.client_id, phase]);
        if (seq > (finalSeq.get(w.u.session_id) ?? 0)) finalSeq.set(w.u.session_id, seq);
      } catch (err) {
        writeErrors++;
        if (writeErrors <= 3) log(String(err));
      }
    }
  }
  // Every session gets a first message while everyone is online; readers are current before the drop.
  await Promise.all(writers.map((w) => write(w, 1)));
  const settleDeadline = now() + 30000;
  while (now() < settleDeadline && !readers.every(isCurrent)) await sleep(50);

  // Drop: every reader's websocket closes at once (as when a network or a balancer drops them).
  for (const r of readers) r.s.drop();
  await sleep(500);
  // While they are away, the writers keep writing.
  phase = "away";
  await Promise.all(writers.map((w) => write(w, P.messages_while_away)));
  phase = "storm";

  let syncCalls = 0;
  let syncErrors = 0;
  let currentAt = new Array(readers.length).fill(null);
  await mark("start");
  const cpu = new CpuMeter();
  cpu.start();
  const t0 = now();
  // Storm: all readers reconnect at the same moment; each joins its chat and syncs from the last seq it
  // holds (paging while has_more), while the writers go on writing.
  const reconnects = readers.map(async (r, i) => {
    try {
      await r.s.connect(P.seconds * 1000);
      await call(r.s, "chat:join", { session_id: r.u.session_id });
      // Sync from the last seq held without a gap before it: a live message:new that arrived after the
      // join may be newer than messages still missing.
      let after = r.base;
      while (r.seqs.has(after + 1)) after++;
      for (let page = 0; page < 100; page++) {
        syncCalls++;
        const ack = await call(r.s, "sync", { session_id: r.u.session_id, after_seq: after });
        for (const m of ack.messages) record(r, m);
        if (!ack.has_more || !ack.messages.length) break;
        after = ack.messages[ack.messages.length - 1].seq;
      }
      r.synced = true;
    } catch (err) {
      syncErrors++;
      if (syncErrors <= 3) log(String(err));
    }
    if (currentAt[i] === null && isCurrent(r)) currentAt[i] = now();
  });
  const writing = Promise.all(writers.map((w) => write(w, P.messages_during_storm)));
  await Promise.all([...reconnects, writing]);
  // Live events may still be arriving for messages written during the storm: poll until everyone is
  // current or the deadline passes.
  const deadline = t0 + P.seconds * 1000;
  for (;;) {
    const t = now();
    readers.forEach((r, i) => {
      if (currentAt[i] === null && isCurrent(r)) currentAt[i] = t;
    });
    if (currentAt.every((x) => x !== null) || t > deadline) break;
    await sleep(20);
  }
  const loadgenCpu = cpu.stop();
  await mark("end");
  // Lost: missing from a reader that did reconnect and sync. A reader that never got back in is
  // counted apart (its messages are not lost, it just has not fetched them).
  let lost = 0;
  let expected = 0;
  let notBack = 0;
  for (const r of readers) {
    if (!r.synced) {
      notBack++;
      continue;
    }
    const last = finalSeq.get(r.u.session_id) ?? 0;
    expected += Math.max(0, last - r.base);
    for (let q = r.base + 1; q <= last; q++) if (!r.seqs.has(q)) lost++;
  }
  const done = currentAt.filter((x) => x !== null);
  // The first few readers that are not current, for diagnosis.
  const notCurrent = readers.filter((r) => !isCurrent(r));
  let history = null;
  if (notCurrent.length && process.env.BENCH_DEBUG) {
    const r = notCurrent[0];
    try {
      const ack = await call(r.s, "sync", { session_id: r.u.session_id, after_seq: r.base });
      history = {
        session_id: r.u.session_id,
        held: [...r.seqs].sort((a, b) => a - b),
        server: ack.messages.map((m) => [m.seq, m.client_id, m.created_at]),
        written: writeLog.filter((x) => x[0] === r.u.session_id),
      };
    } catch (err) {
      history = String(err);
    }
  }
  const incomplete = notCurrent
    .slice(0, 5)
    .map((r) => {
      const last = finalSeq.get(r.u.session_id) ?? 0;
      const missing = [];
      for (let q = r.base + 1; q <= last && missing.length < 10; q++) if (!r.seqs.has(q)) missing.push(q);
      return { session_id: r.u.session_id, base: r.base, max: r.max, last, missing, connected: r.s.connected };
    });
  closeAll([...readers.map((r) => r.s), ...writers.map((w) => w.s)]);
  return {
    readers: readers.length,
    writers: writers.length,
    messages_expected_per_reader_total: expected,
    current: done.length,
    seconds_until_all_current: done.length === readers.length ? (Math.max(...done) - t0) / 1000 : null,
    seconds_until_half_current: done.length ? (done.sort((a, b) => a - b)[Math.floor(done.length / 2)] - t0) / 1000 : null,
    messages_lost: lost,
    readers_not_back: notBack,
    incomplete,
    history,
    sync_calls: syncCalls,
    errors: syncErrors + writeErrors,
    loadgen_cpu_pct: loadgenCpu,
  };
}

const scenarios = { idle, fanout, durable, storm };

async function main() {
  const fn = scenarios[config.scenario];
  if (!fn) throw new Error(`unknown scenario ${config.scenario}`);
  const data = await fn();
  emit({ type: "result", data });
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`[loadgen] failed: ${err.stack || err}\n`);
    emit({ type: "error", message: String(err) });
    process.exit(1);
  },
);
