// The socket and what the header shows live: quota and credits, the notification bell with its unread
// count, and whether this device is connected. Screens subscribe to job progress through onJob.
import { io } from "/web/vendor/socket.io.esm.min.js";
import { api, current, refresh } from "./api.js";
import { say } from "./dom.js";

let socket = null;
const meterState = {};
const jobWatchers = new Map(); // job id -> callback
let unread = 0;

export function connect() {
  if (socket) return socket;
  // auth as a function: every reconnect sends the newest access token.
  socket = io({ auth: (cb) => cb({ token: current()?.access_token }), transports: ["websocket"] });
  socket.on("connect", () => showLink("online"));
  socket.on("disconnect", () => showLink("offline"));
  socket.on("connect_error", async (err) => {
    showLink("offline");
    if (err.data?.code === "token_expired" && (await refresh())) socket.connect();
    else if (err.data?.code) say(`Not connected: ${err.data.code}`);
  });
  socket.io.on("reconnect_attempt", () => showLink("reconnecting"));
  socket.on("quota", (q) => showMeter({ remaining: q.remaining }));
  socket.on("credits", (c) => showMeter({ credits: c.balance }));
  socket.on("notification", ({ notification }) => {
    setUnread(unread + 1);
    say(`New notification: ${notification.title}`);
    window.dispatchEvent(new CustomEvent("parlor:notification", { detail: notification }));
  });
  socket.on("job:progress", (job) => jobWatchers.get(job.job_id)?.(job));
  socket.on("session:ended", () => say("This session ended: sign in again."));
  return socket;
}

export function disconnect() {
  socket?.disconnect();
  socket = null;
}

export function onJob(jobId, callback) {
  jobWatchers.set(jobId, callback);
  return () => jobWatchers.delete(jobId);
}

function showLink(state) {
  const dot = document.getElementById("link");
  dot.dataset.state = state;
  dot.textContent = { online: "Online", offline: "Offline", reconnecting: "Reconnecting…" }[state];
}

export function showMeter(change) {
  Object.assign(meterState, change);
  const parts = [];
  if (meterState.remaining != null) parts.push(`${meterState.remaining} messages left today`);
  if (meterState.credits != null) parts.push(`${meterState.credits} credits`);
  document.getElementById("meter").textContent = parts.join(" · ");
}

export function setUnread(count) {
  unread = Math.max(0, count);
  const bell = document.getElementById("bell");
  bell.querySelector(".badge").textContent = unread ? String(unread) : "";
  bell.setAttribute("aria-label", unread ? `Notifications, ${unread} unread` : "Notifications");
}

export async function loadHeader() {
  const [usage, count] = await Promise.all([api("GET", "/usage/current"), api("GET", "/notifications/unread-count")]);
  showMeter({ remaining: usage.remaining, credits: usage.credits });
  setUnread(count.count);
}
