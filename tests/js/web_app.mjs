// The web app in a real headless Chromium (Debian's package, driven by playwright-core). Run by
// tests/web/test_web_app.py against a live server: PARLOR_URL=http://127.0.0.1:PORT SHOTS=dir node web_app.mjs
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const url = process.env.PARLOR_URL;
const shots = process.env.SHOTS;
const origin = new URL(url).origin;
const results = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 360, height: 740 } });
const page = await context.newPage();
const problems = [];
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("request", (r) => {
  const target = new URL(r.url());
  if (target.origin !== origin && !["data:", "blob:"].includes(target.protocol)) problems.push(`foreign request: ${r.url()}`);
});

async function check(name, fn) {
  await fn();
  results.push(name);
}

try {
  await check("sign up, create a persona with a greeting, and see the reply stream in", async () => {
    const opened = Date.now();
    await page.goto(url + "/");
    await page.getByLabel("Email").fill(`web-${Date.now()}@example.com`);
    await page.getByLabel("Password").fill("correct horse battery");
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.getByLabel("Name", { exact: true }).fill("Ada");
    await page.getByLabel("Greeting").fill("Hello {{user}}, I am {{char}}.");
    await page.getByRole("button", { name: "Create persona" }).click();
    await page.getByRole("button", { name: "Chat with Ada" }).click();
    await page.locator(".msg.assistant").first().waitFor();
    assert.match(await page.locator(".msg.assistant .text").first().textContent(), /I am Ada\./);
    await page.getByLabel("Your message").fill("Tell me about engines");
    await page.getByRole("button", { name: "Send" }).click();
    // The reply grows over several frames before it is done.
    const reply = page.locator(".msg.assistant").nth(1);
    await reply.waitFor();
    const seen = new Set();
    for (let i = 0; i < 200; i++) {
      seen.add(await reply.locator(".text").textContent());
      if ((await reply.getAttribute("data-status")) === "complete") break;
      await page.waitForTimeout(25);
    }
    assert.equal(await reply.getAttribute("data-status"), "complete");
    assert.ok(seen.size >= 3, `the reply arrived in ${seen.size} steps`);
    assert.ok(Date.now() - opened < 10000, `took ${Date.now() - opened} ms`);
    if (shots) await page.screenshot({ path: `${shots}/chat-360.png`, fullPage: true });
  });

  await check("a reload mid-reply shows the whole reply exactly once", async () => {
    await page.getByLabel("Your message").fill("Another question, please");
    await page.getByRole("button", { name: "Send" }).click();
    const streaming = page.locator('.msg.assistant[data-status="streaming"]');
    await streaming.waitFor();
    await page.waitForTimeout(150);
    await page.reload();
    const last = page.locator(".msg.assistant").last();
    await page.waitForFunction(() => {
      const all = document.querySelectorAll(".msg.assistant");
      return all.length && all[all.length - 1].dataset.status === "complete";
    }, null, { timeout: 15000 });
    const text = await last.locator(".text").textContent();
    const stored = await page.evaluate(async () => {
      const s = JSON.parse(localStorage.getItem("parlor.session"));
      const id = location.hash.split("/")[2];
      const r = await fetch(`/api/v1/chat/sessions/${id}/messages?limit=200`, { headers: { Authorization: `Bearer ${s.access_token}` } });
      const items = (await r.json()).items;
      return items[items.length - 1].content;
    });
    assert.equal(text, stored);
  });

  await check("regenerate, then switch between the variants", async () => {
    const last = page.locator(".msg.assistant").last();
    const first = await last.locator(".text").textContent();
    await last.getByRole("button", { name: "Regenerate" }).click();
    await last.locator(".variant", { hasText: "2/2" }).waitFor({ timeout: 15000 });
    await page.waitForFunction(() => {
      const all = document.querySelectorAll(".msg.assistant");
      return all[all.length - 1].dataset.status === "complete";
    });
    await last.getByRole("button", { name: "Previous variant" }).click();
    await last.locator(".variant", { hasText: "1/2" }).waitFor();
    assert.equal(await last.locator(".text").textContent(), first);
    await last.getByRole("button", { name: "Next variant" }).click();
    await last.locator(".variant", { hasText: "2/2" }).waitFor();
  });

  await check("at 360 px nothing overflows and every control has a name", async () => {
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `overflows by ${overflow}px`);
    const unnamed = await page.evaluate(() =>
      [...document.querySelectorAll("button, input, textarea, a[href], select")]
        .filter((e) => !e.hidden && e.offsetParent !== null)
        .filter((e) => {
          const label = e.getAttribute("aria-label") || e.textContent.trim() || (e.labels && [...e.labels].map((l) => l.textContent).join(""));
          return !label;
        })
        .map((e) => e.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unnamed, []);
    await page.setViewportSize({ width: 1280, height: 800 });
    if (shots) await page.screenshot({ path: `${shots}/chat-1280.png` });
  });

  assert.deepEqual(problems, []);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: true, checks: results }));
