// The web demo in headless Chromium (Playwright): two people chat, the server restarts in the
// middle, a message typed while it is down waits (shown as pending) and arrives once, both
// pages reconnect and nothing is lost. Also the demo's own behaviour: nothing of the app before
// login, a sticky header, follow state kept across a reload, logout.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, statSync, copyFileSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const contexts = [];
// Browser profiles and the screenshot's folder, removed at the end: every run would otherwise
// leave them in /tmp.
const temporary = [];
let server;
after(async () => {
  for (const c of contexts) await c.close();
  for (const t of temporary) rmSync(t, { recursive: true, force: true });
  server?.stop();
});

async function browserAs(username) {
  const profile = mkdtempSync(join(tmpdir(), "pw-"));
  temporary.push(profile);
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
    viewport: { width: 1100, height: 760 },
  });
  contexts.push(ctx);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error(`[${username}] page error:`, e.message));
  await page.goto(`${server.http}/demo/`);
  assert.equal(await page.isVisible("#app"), false, "no chat before login");
  assert.equal(await page.isVisible("#room-input"), false);
  await page.fill("#username", username);
  await page.fill("#password", "password");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector('#state[data-state="open"]');
  assert.equal(await page.isVisible("#login"), false);
  return page;
}

async function say(page, text) {
  await page.fill("#room-input", text);
  await page.click("#room-form button");
}

const roomTexts = (page) => page.$$eval("#room li:not(.pending) p", (ps) => ps.map((p) => p.textContent));
const seesInRoom = (page, text, timeout) =>
  page.waitForFunction(
    (t) => [...document.querySelectorAll("#room li:not(.pending) p")].some((p) => p.textContent === t),
    text,
    { timeout },
  );

test("two people chat, the server restarts, a message typed meanwhile waits and arrives once", async () => {
  server = await startServer();
  const john = await browserAs("johndoe");
  const jane = await browserAs("janedoe");
  assert.equal(await john.$eval("header", (h) => getComputedStyle(h).position), "sticky");
  const emptyText = await john.$eval("#inbox", (l) => getComputedStyle(l, "::before").content);
  assert.match(emptyText, /inbox is empty/);

  await say(jane, "hi john");
  const started = Date.now();
  await seesInRoom(john, "hi john", 1000);
  assert.ok(Date.now() - started < 1000, "seen within a second");
  await say(john, "hello jane");
  await seesInRoom(jane, "hello jane", 1000);

  // Restart the server on the same ports and data; post while the pages are still away.
  const saved = await server.restartable();
  await john.waitForSelector('#state:not([data-state="open"])');
  await jane.waitForSelector('#state:not([data-state="open"])');
  await say(jane, "typed while offline");
  assert.equal(await jane.inputValue("#room-input"), "");
  await jane.waitForSelector("#room li.pending >> text=typed while offline");
  server = await startServer(saved);
  const alice = await server.login("alice");
  const posted = await server.rest("POST", "/groups/lobby/activities", alice, { content: "while you were away" });
  assert.equal(posted.status, 200);
  for (const page of [john, jane]) {
    await page.waitForSelector('#state[data-state="open"]', { timeout: 15000 });
    await seesInRoom(page, "while you were away", 5000);
    await seesInRoom(page, "typed while offline", 5000);
  }
  assert.equal(await jane.$$eval("#room li.pending, #room li.failed", (l) => l.length), 0);
  await say(jane, "back again");
  await seesInRoom(john, "back again", 2000);

  const expected = ["hi john", "hello jane", "while you were away", "typed while offline", "back again"];
  for (const page of [john, jane]) {
    const texts = await roomTexts(page);
    assert.deepEqual([...texts].sort(), [...expected].sort(), "every message once");
  }
  // A page that only received the messages shows them in the server's order.
  const feed = await server.rest("GET", "/groups/lobby/feed?limit=50", alice);
  const order = feed.body.entities.map((a) => a.content).reverse();
  assert.deepEqual(await roomTexts(john), order, "in the server's order");

  await john.click("details.frames summary");
  const shots = mkdtempSync(join(tmpdir(), "shot-"));
  temporary.push(shots);
  const shot = join(shots, "demo.png");
  await john.screenshot({ path: shot });
  assert.ok(statSync(shot).size > 20_000, "the screenshot shows a page");
  if (process.env.GRIDSOCKET_SCREENSHOT) {
    mkdirSync(dirname(process.env.GRIDSOCKET_SCREENSHOT), { recursive: true });
    copyFileSync(shot, process.env.GRIDSOCKET_SCREENSHOT);
  }

  // Following survives a reload; logout goes back to the login form.
  await john.click("button.follow >> text=Follow janedoe");
  await john.waitForSelector('button.follow[aria-pressed="true"] >> text=Following janedoe');
  await john.reload();
  await john.waitForSelector('#state[data-state="open"]');
  await john.waitForSelector('button.follow[aria-pressed="true"] >> text=Following janedoe');
  await john.click("#logout");
  await john.waitForSelector("#login:not([hidden])");
  assert.equal(await john.isVisible("#app"), false);
  assert.equal(await john.textContent("#state"), "closed");
});
