// Two interchangeable Socket.IO clients for the load generator, with one small interface:
//   const c = makeClient(kind, url, token); await c.connect(); c.on(event, fn);
//   const ack = await c.call(event, payload, timeoutMs); c.drop(); c.close(); c.connected
// "lite": a minimal Socket.IO v5 / Engine.IO v4 client straight on `ws` (websocket transport only, the
//         default namespace, JSON packets, acks). It speaks the same wire protocol as socket.io-client but
//         costs the generator a fraction of the CPU per received event, so on a 2-core machine more of the
//         machine is left to the server being measured.
// "official": socket.io-client (what React apps use), one Manager per socket (forceNew), no auto-reconnect.

import { io } from "socket.io-client";
import WebSocket from "ws";

class LiteClient {
  constructor(url, token) {
    this.wsUrl = url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
    this.token = token;
    this.handlers = new Map();
    this.pending = new Map();
    this.nextId = 0;
    this.connected = false;
    this.ws = null;
  }

  on(event, fn) {
    this.handlers.set(event, fn);
  }

  connect(timeoutMs = 60000) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.wsUrl, { perMessageDeflate: false });
      this.ws = ws;
      const finish = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          ws.terminate();
          reject(err);
        } else resolve(this);
      };
      const timer = setTimeout(() => finish(new Error("connect timeout")), timeoutMs);
      ws.on("message", (raw) => {
        if (this.ws !== ws) return;
        const data = raw.toString();
        switch (data.charCodeAt(0)) {
          case 48: // "0" engine open → socket.io CONNECT to "/" with the auth payload
            ws.send("40" + JSON.stringify({ token: this.token }));
            break;
          case 50: // "2" ping
            ws.send("3");
            break;
          case 52: // "4" message: a socket.io packet
            this._packet(data, finish);
            break;
          default:
            break;
        }
      });
      ws.on("error", (err) => finish(err));
      ws.on("close", () => {
        if (this.ws !== ws) return; // an earlier connection closing late
        this.connected = false;
        finish(new Error("closed before connect"));
        for (const [, p] of this.pending) p.reject(new Error("disconnected"));
        this.pending.clear();
      });
    });
  }

  _packet(data, finish) {
    const type = data.charCodeAt(1);
    if (type === 50) {
      // "2" EVENT: 42[event, data] (the server never asks these clients for an ack)
      const [event, payload] = JSON.parse(data.slice(2));
      const fn = this.handlers.get(event);
      if (fn) fn(payload);
    } else if (type === 51) {
      // "3" ACK: 43<id>[data]
      const bracket = data.indexOf("[");
      const id = Number(data.slice(2, bracket));
      const p = this.pending.get(id);
      if (p) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.resolve(JSON.parse(data.slice(bracket))[0]);
      }
    } else if (type === 48) {
      // "0" CONNECT accepted
      this.connected = true;
      finish(null);
    } else if (type === 52) {
      // "4" CONNECT_ERROR {message, data}
      const err = JSON.parse(data.slice(2));
      finish(new Error(`connect_error: ${err.message} ${JSON.stringify(err.data ?? null)}`));
    } else if (type === 49) {
      // "1" DISCONNECT by the server
      this.connected = false;
      this.ws.close();
    }
  }

  call(event, payload, timeoutMs) {
    return new Promise((resolve, reject) => {
      if (!this.connected) return reject(new Error("not connected"));
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`ack timeout: ${event}`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send("42" + id + JSON.stringify([event, payload]));
    });
  }

  // The connection goes away without a Socket.IO goodbye, as when a network or a balancer drops it.
  drop() {
    this.connected = false;
    this.ws?.close();
  }

  close() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.connected) this.ws.send("41");
    this.connected = false;
    this.ws?.close();
  }
}

class OfficialClient {
  constructor(url, token) {
    this.socket = io(url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      autoConnect: false,
      timeout: 30000,
      auth: { token },
    });
  }

  get connected() {
    return this.socket.connected;
  }

  on(event, fn) {
    this.socket.on(event, fn);
  }

  connect(timeoutMs = 60000) {
    const s = this.socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error("connect timeout")), timeoutMs);
      const ok = () => done(null);
      const bad = (err) => done(new Error(`connect_error: ${err.message} ${JSON.stringify(err.data ?? null)}`));
      const done = (err) => {
        clearTimeout(timer);
        s.off("connect", ok);
        s.off("connect_error", bad);
        if (err) reject(err);
        else resolve(this);
      };
      s.once("connect", ok);
      s.once("connect_error", bad);
      s.connect();
    });
  }

  call(event, payload, timeoutMs) {
    return this.socket.timeout(timeoutMs).emitWithAck(event, payload);
  }

  drop() {
    this.socket.io.engine?.close();
  }

  close() {
    this.socket.close();
  }
}

export function makeClient(kind, url, token) {
  return kind === "official" ? new OfficialClient(url, token) : new LiteClient(url, token);
}
