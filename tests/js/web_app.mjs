// The web app in a real headless Chromium (Debian's package, driven by playwright-core). Run by
// tests/web/test_web_app.py against a live server: PARLOR_URL=http://127.0.0.1:PORT SHOTS=dir node web_app.mjs
// ONLY=first runs the first check alone (used against `python -m server` on its embedded defaults).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32, deflateSync } from "node:zlib";
import { chromium } from "playwright-core";

const url = process.env.PARLOR_URL;
const shots = process.env.SHOTS;
const origin = new URL(url).origin;
const results = [];
const scratch = mkdtempSync(join(tmpdir(), "parlor-web-"));

// A small RGB PNG made here (no binary fixtures): a diagonal gradient.
function png(width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const rows = [];
  for (let y = 0; y < height; y++) {
    rows.push(0);
    for (let x = 0; x < width; x++) rows.push((x * 255) / width, (y * 255) / height, 128);
  }
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.from(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
const picture = join(scratch, "portrait.png");
writeFileSync(picture, png(320, 240));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 360, height: 740 }, acceptDownloads: true });
const problems = [];
function watch(page) {
  if (process.env.DEBUG) page.on("console", (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  if (process.env.DEBUG) page.on("websocket", (ws) => { console.error(`[ws open] ${ws.url()}`); ws.on("close", () => console.error("[ws close]")); });
  // A failed load is judged by its response below (the console line does not name the URL).
  page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && problems.push(`console: ${m.text()}`));
  // Other tests' public personas share the suite's database; one whose avatar is gone answers 404.
  page.on("response", (r) => {
    if (r.status() >= 400 && !(r.status() === 404 && /\/personas\/[^/]+\/avatar/.test(r.url()))) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("request", (r) => {
    const target = new URL(r.url());
    if (target.origin !== origin && !["data:", "blob:"].includes(target.protocol)) problems.push(`foreign request: ${r.url()}`);
  });
}
context.on("page", watch);

// Every socket goes through this route so that a check can cut it like a dropped network.
let sockets = [];
let cut = false;
await context.routeWebSocket(/\/socket\.io\//, (ws) => {
  // While cut, a connection attempt opens (mocked, no server behind it) and fails a moment later.
  if (cut) return void setTimeout(() => ws.close({ code: 1001, reason: "network down" }).catch(() => {}), 200);
  ws.connectToServer();
  sockets.push(ws);
});

const page = await context.newPage();

async function check(name, fn) {
  await fn();
  results.push(name);
}

const lastReply = () => page.locator(".msg.assistant").last();
async function waitSettled(timeout = 15000) {
  await page.waitForFunction(() => {
    const all = [...document.querySelectorAll(".msg")].filter((m) => !m.hidden);
    return all.length && !all.some((m) => m.dataset.status === "streaming");
  }, null, { timeout });
}
// The conversation as the server holds it, and as the page shows it: [role, status, content] per live message.
async function serverView() {
  return page.evaluate(async () => {
    const s = JSON.parse(localStorage.getItem("parlor.session"));
    const id = location.hash.split("/")[2];
    const r = await fetch(`/api/v1/chat/sessions/${id}/messages?limit=200`, { headers: { Authorization: `Bearer ${s.access_token}` } });
    return (await r.json()).items.filter((m) => m.status !== "deleted").map((m) => [m.role, m.status, m.content]);
  });
}
async function screenView() {
  return page.evaluate(() => [...document.querySelectorAll(".msg")].filter((m) => !m.hidden)
    .map((m) => [m.classList.contains("user") ? "user" : "assistant", m.dataset.status, m.querySelector(".text").textContent]));
}
async function send(text) {
  await page.getByLabel("Your message").fill(text);
  await page.getByRole("button", { name: "Send" }).click();
}
// Nothing overflows at this width, and every visible control has an accessible name.
async function fitsAndNamed(screen) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `${screen}: overflows by ${overflow}px`);
  const unnamed = await page.evaluate(() =>
    [...document.querySelectorAll("button, input, textarea, select, a[href], progress")]
      .filter((e) => e.offsetParent !== null || e.type === "file")
      .filter((e) => !(e.getAttribute("aria-label") || e.textContent.trim() || (e.labels && [...e.labels].map((l) => l.textContent).join("").trim())))
      .map((e) => e.outerHTML.slice(0, 80)));
  assert.deepEqual(unnamed, [], `${screen}: controls without a name`);
  // Playwright's accessibility tree agrees: every button and link has a name.
  const snapshot = await page.locator("body").ariaSnapshot();
  const nameless = snapshot.split("\n").filter((l) => /^\s*- (button|link|textbox|combobox)\s*(\[|$|:)/.test(l));
  assert.deepEqual(nameless, [], `${screen}: nameless in the accessibility tree`);
  if (shots) await page.screenshot({ path: `${shots}/${screen}-360.png`, fullPage: true });
}

try {
  await check("sign up, create a persona with a greeting, and see the reply stream in within 10 s", async () => {
    const opened = Date.now();
    await page.goto(url + "/");
    await page.getByLabel("Email").fill(`web-${Date.now()}@example.com`);
    await page.getByLabel("Password").fill("correct horse battery");
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.getByRole("link", { name: "New persona" }).click();
    await page.getByLabel("Name", { exact: true }).fill("Ada");
    await page.getByLabel("Greeting").fill("Hello {{user}}, I am {{char}}.");
    await page.getByRole("button", { name: "Create persona" }).click();
    await page.getByRole("button", { name: "Chat", exact: true }).click();
    await page.locator(".msg.assistant").first().waitFor();
    assert.match(await page.locator(".msg.assistant .text").first().textContent(), /I am Ada\./);
    await send("Tell me about engines");
    // The reply grows over several frames before it is done.
    const reply = page.locator(".msg.assistant").nth(1);
    await reply.waitFor();
    const seen = new Set();
    for (let i = 0; i < 400; i++) {
      seen.add(await reply.locator(".text").textContent());
      if ((await reply.getAttribute("data-status")) === "complete") break;
      await page.waitForTimeout(25);
    }
    assert.equal(await reply.getAttribute("data-status"), "complete");
    assert.ok(seen.size >= 3, `the reply arrived in ${seen.size} steps`);
    assert.ok(Date.now() - opened < 10000, `took ${Date.now() - opened} ms`);
  });

  if (process.env.ONLY !== "first") {
    await check("stop a reply: it ends stopped, with the text the server kept", async () => {
      await send("Please talk for a long while");
      await page.locator('.msg.assistant[data-status="streaming"]').waitFor();
      await page.waitForTimeout(200);
      await page.getByRole("button", { name: "Stop" }).click();
      await page.locator('.msg.assistant[data-status="stopped"]').waitFor();
      assert.deepEqual(await screenView(), await serverView());
    });

    await check("a reload mid-reply shows the whole reply exactly once", async () => {
      await send("Another question, please");
      await page.locator('.msg.assistant[data-status="streaming"]').waitFor();
      await page.waitForTimeout(150);
      await page.reload();
      await page.locator(".msg").first().waitFor();
      await waitSettled();
      assert.deepEqual(await screenView(), await serverView());
    });

    await check("after a network drop mid-reply it reconnects, syncs and resumes, and ends equal to the server", async () => {
      await send("One more, then the network drops");
      await page.locator('.msg.assistant[data-status="streaming"]').waitFor();
      await page.waitForTimeout(100);
      cut = true;
      for (const ws of sockets.splice(0)) await ws.close({ code: 1001, reason: "network down" });
      await page.locator('#link[data-state="reconnecting"], #link[data-state="offline"]').first().waitFor();
      await page.waitForTimeout(700); // the reply goes on without us
      cut = false;
      // A connection attempt that hangs is given up by socket.io-client after its 20 s connect timeout.
      await page.locator('#link[data-state="online"]').waitFor({ timeout: 40000 });
      await waitSettled();
      assert.deepEqual(await screenView(), await serverView());
    });

    await check("regenerate, then switch between the variants", async () => {
      const first = await lastReply().locator(".text").textContent();
      await lastReply().getByRole("button", { name: "Regenerate" }).click();
      await lastReply().locator(".variant", { hasText: "2/2" }).waitFor({ timeout: 15000 });
      await waitSettled();
      await lastReply().getByRole("button", { name: "Previous variant" }).click();
      await lastReply().locator(".variant", { hasText: "1/2" }).waitFor();
      assert.equal(await lastReply().locator(".text").textContent(), first);
      await lastReply().getByRole("button", { name: "Next variant" }).click();
      await lastReply().locator(".variant", { hasText: "2/2" }).waitFor();
      assert.deepEqual(await screenView(), await serverView());
    });

    await check("edit a message, delete one, rewind, with the keyboard", async () => {
      const user = page.locator(".msg.user").last();
      await user.getByRole("button", { name: /^Edit message/ }).click();
      await user.getByRole("textbox").fill("An edited question");
      await user.getByRole("button", { name: "Save", exact: true }).click();
      await page.locator(".msg.user .text", { hasText: "An edited question" }).waitFor();
      const count = await page.locator(".msg:not([hidden])").count();
      await lastReply().getByRole("button", { name: /^Delete message/ }).click();
      await page.waitForFunction((n) => document.querySelectorAll(".msg:not([hidden])").length === n - 1, count);
      // Rewind to the first reply (the greeting stays): two presses, the second confirms.
      const rewind = page.locator(".msg").nth(2).getByRole("button", { name: /^Rewind to message/ });
      await rewind.click();
      await rewind.click();
      await page.waitForFunction(() => document.querySelectorAll(".msg:not([hidden])").length === 3);
      assert.deepEqual(await screenView(), await serverView());
      // Enter in the composer sends.
      await page.getByLabel("Your message").focus();
      await page.keyboard.type("Sent with the Enter key");
      await page.keyboard.press("Enter");
      await page.locator(".msg.user .text", { hasText: "Sent with the Enter key" }).waitFor();
      await waitSettled();
    });

    await check("an image attachment shows as a thumbnail", async () => {
      await page.locator("#attach").setInputFiles(picture);
      await page.getByRole("button", { name: "Remove portrait.png" }).waitFor();
      await send("What is in this picture?");
      const thumb = page.locator(".msg.user img.thumb").last();
      await thumb.waitFor();
      await page.waitForFunction(() => {
        const img = [...document.querySelectorAll(".msg.user img.thumb")].pop();
        return img && img.complete && img.naturalWidth > 0;
      });
      await waitSettled();
    });

    await check("typing on another device shows here", async () => {
      const other = await context.newPage();
      await other.goto(page.url());
      await other.getByLabel("Your message").waitFor();
      await other.locator('#link[data-state="online"]').waitFor();
      await other.waitForTimeout(300); // its chat:join lands
      await page.getByLabel("Your message").pressSequentially("hel", { delay: 30 });
      await other.getByText("Typing on another device…").waitFor();
      await other.close();
      await page.getByLabel("Your message").fill("");
    });

    await check("export the chat: a progress bar, a download link, and a notification arrives", async () => {
      await fitsAndNamed("chat");
      const unread = Number((await page.locator("#bell .badge").textContent()) || 0);
      await page.getByLabel("Export format").selectOption("txt");
      await page.getByRole("button", { name: "Export chat" }).click();
      const link = page.getByRole("link", { name: "Download" });
      await link.waitFor({ timeout: 20000 });
      const [file] = await Promise.all([page.waitForEvent("download"), link.click()]);
      const text = readFileSync(await file.path(), "utf8");
      assert.match(text, /Sent with the Enter key/);
      await page.getByRole("link", { name: `Notifications, ${unread + 1} unread` }).click();
      await page.locator(".note.unread").first().waitFor();
      await fitsAndNamed("notifications");
      await page.getByRole("button", { name: "Mark all read" }).click();
      await page.getByRole("link", { name: "Notifications", exact: true }).waitFor();
    });

    await check("upload a persona's avatar; it shows in the gallery; export the card and import it", async () => {
      await page.getByRole("link", { name: "Parlor home" }).click();
      await page.getByRole("link", { name: "Edit Ada" }).click();
      await page.getByLabel("Avatar image").setInputFiles(picture);
      await page.getByText("Avatar uploaded").waitFor();
      await page.getByLabel("Visibility").selectOption("public");
      await page.getByRole("button", { name: "Save persona" }).click();
      await page.getByText("Saved Ada.").waitFor();
      await fitsAndNamed("persona");
      const [card] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export card (PNG)" }).click()]);
      const cardPath = join(scratch, card.suggestedFilename());
      await card.saveAs(cardPath);
      await page.getByRole("link", { name: "Parlor home" }).click();
      const loaded = () => page.waitForFunction(() => {
        const img = document.querySelector(".persona img.avatar");
        return img && img.complete && img.naturalWidth > 0;
      });
      await loaded();
      await page.getByRole("button", { name: "Search" }).click();
      await page.getByLabel("Search personas").fill("Ada");
      await page.locator(".persona strong", { hasText: "Ada" }).first().waitFor();
      await loaded();
      await page.getByRole("button", { name: "Mine" }).click();
      await page.getByLabel("Import a Character Card (PNG or JSON)").setInputFiles(cardPath);
      await page.getByText("Imported Ada.").waitFor();
      await page.waitForFunction(() => document.querySelector("img.avatar.big")?.naturalWidth > 0);
      await page.getByRole("link", { name: "Parlor home" }).click();
      await page.waitForFunction(() => document.querySelectorAll(".persona").length === 2);
      await fitsAndNamed("home");
    });

    await check("settings: display name and time zone are kept", async () => {
      await page.getByRole("link", { name: "Settings" }).click();
      await page.getByLabel("Display name").fill("Ada's friend");
      await page.getByLabel(/^Time zone/).selectOption("Asia/Tokyo");
      await page.getByRole("button", { name: "Save settings" }).click();
      await page.getByText("Settings saved.").waitFor();
      await page.reload();
      assert.equal(await page.getByLabel("Display name").inputValue(), "Ada's friend");
      assert.equal(await page.getByLabel(/^Time zone/).inputValue(), "Asia/Tokyo");
      await fitsAndNamed("settings");
    });

    await check("desktop width: screenshots at 1280 px", async () => {
      await page.setViewportSize({ width: 1280, height: 800 });
      await page.getByRole("link", { name: "Parlor home" }).click();
      await page.locator(".persona").first().waitFor();
      if (shots) await page.screenshot({ path: `${shots}/home-1280.png` });
      await page.getByRole("list", { name: "My chats" }).getByRole("link").first().click();
      await page.locator(".msg").first().waitFor();
      if (shots) await page.screenshot({ path: `${shots}/chat-1280.png` });
    });
  }

  assert.deepEqual(problems, []);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: true, checks: results }));
