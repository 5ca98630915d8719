// The web demo in headless Chromium (Playwright): two people chat, the server restarts in the
// middle, both pages reconnect and nothing is lost.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, statSync, copyFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const contexts = [];
let server;
after(async () => {
  for (const c of contexts) await c.close();
  server?.stop();
});

async function browserAs(username) {
  const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "pw-")), {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
    viewport: { width: 1100, height: 760 },
  });
  contexts.push(ctx);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error(`[${username}] page error:`, e.message));
  await page.goto(`${server.http}/demo/`);
  await page.fill("#username", username);
  await page.fill("#password", "password");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector('#state[data-state="open"]');
  return page;
}

async function say(page, text) {
  await page.fill("#room-input", text);
  await page.click("#room-form button");
}

const roomTexts = (page) => page.$$eval("#room li p", (ps) => ps.map((p) => p.textContent));

test("two people chat, the server restarts, both pages keep working and nothing is lost", async () => {
  server = await startServer();
  const john = await browserAs("johndoe");
  const jane = await browserAs("janedoe");

  await say(jane, "hi john");
  const started = Date.now();
  await john.waitForFunction(() => [...document.querySelectorAll("#room li p")].some((p) => p.textContent === "hi john"), null, { timeout: 1000 });
  assert.ok(Date.now() - started < 1000, "seen within a second");
  await say(john, "hello jane");
  await jane.waitForFunction(() => [...document.querySelectorAll("#room li p")].some((p) => p.textContent === "hello jane"), null, { timeout: 1000 });

  // Restart the server on the same ports and data; post while the pages are still away.
  const saved = await server.restartable();
  await john.waitForSelector('#state:not([data-state="open"])');
  server = await startServer(saved);
  const alice = await server.login("alice");
  const posted = await server.rest("POST", "/groups/lobby/activities", alice, { content: "while you were away" });
  assert.equal(posted.status, 200);
  for (const page of [john, jane]) {
    await page.waitForSelector('#state[data-state="open"]', { timeout: 15000 });
    await page.waitForFunction(() => [...document.querySelectorAll("#room li p")].some((p) => p.textContent === "while you were away"), null, { timeout: 5000 });
  }
  await say(jane, "back again");
  await john.waitForFunction(() => [...document.querySelectorAll("#room li p")].some((p) => p.textContent === "back again"), null, { timeout: 2000 });

  for (const page of [john, jane]) {
    const texts = await roomTexts(page);
    assert.deepEqual(texts, ["hi john", "hello jane", "while you were away", "back again"], "every message once, in order");
  }

  await john.click("details.frames summary");
  const shot = join(mkdtempSync(join(tmpdir(), "shot-")), "demo.png");
  await john.screenshot({ path: shot });
  assert.ok(statSync(shot).size > 20_000, "the screenshot shows a page");
  if (process.env.GRIDSOCKET_SCREENSHOT) {
    mkdirSync(dirname(process.env.GRIDSOCKET_SCREENSHOT), { recursive: true });
    copyFileSync(shot, process.env.GRIDSOCKET_SCREENSHOT);
  }
});
