// The web demo's presence in headless Chromium (Playwright), three people in the lobby: all
// see each other online, one types and the other two see "… is typing" (with at most one
// typing broadcast per two seconds going out), one goes away after the inactivity the page
// was told (`?away=SECONDS`) and comes back, and one tab is killed without a goodbye: the
// others see that user leave at once (a closed socket leaves every presence at once).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const contexts = [];
// Browser profiles, removed with their contexts: every run would otherwise leave them in /tmp.
const profiles = [];
const pageErrors = [];
let server;
after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  for (const p of profiles) rmSync(p, { recursive: true, force: true });
  server?.stop();
});

async function browserAs(username, query = "") {
  const profile = mkdtempSync(join(tmpdir(), "pw-"));
  profiles.push(profile);
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
    viewport: { width: 1100, height: 760 },
  });
  contexts.push(ctx);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => pageErrors.push(`[${username}] ${e.message}`));
  await page.goto(`${server.http}/demo/${query}`);
  await page.fill("#username", username);
  await page.fill("#password", "password");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector('#state[data-state="open"]');
  return { page, ctx, username };
}

const online = (page, username, status) =>
  page.waitForSelector(`#online li[data-username="${username}"]${status ? `[data-status="${status}"]` : ""}`, {
    timeout: 5000,
  });

const typingText = (page) => page.textContent("#typing");

/** The BROADCAST frames a page sent, from its raw frames panel. */
const broadcastsSent = (page) =>
  page.$$eval("#frames li.out", (lis) => lis.filter((li) => li.textContent.includes('"BROADCAST"')).length);

test("three people: online together, typing, away and back, a killed tab leaves at once", async () => {
  server = await startServer();
  const john = await browserAs("johndoe");
  const jane = await browserAs("janedoe");
  // alice's tab counts as away after 2 s without input.
  const alice = await browserAs("alice", "?away=2");
  const everyone = [john, jane, alice];

  // Everyone sees everyone, themselves included.
  for (const viewer of everyone) {
    for (const person of everyone) await online(viewer.page, person.username);
  }
  for (const viewer of everyone) {
    await online(viewer.page, "johndoe", "online");
    await online(viewer.page, "janedoe", "online");
    assert.equal(await viewer.page.$$eval("#online li", (l) => l.length), 3);
  }
  assert.match(await john.page.textContent('#online li[data-username="johndoe"]'), /\(you\)/);

  // john types for 2.5 s: jane and alice see it within a second; two typing broadcasts went
  // out (one per 2 s), not one per key.
  const started = Date.now();
  const typed = john.page.type("#room-input", "hello everybody, how are", { delay: 100 });
  for (const viewer of [jane, alice]) {
    await viewer.page.waitForFunction(
      () => document.querySelector("#typing").textContent === "johndoe is typing…",
      null,
      { timeout: 1000 },
    );
  }
  assert.ok(Date.now() - started < 1500, "seen while typing");
  assert.equal(await typingText(john.page), "", "nobody else is typing");
  await typed;
  assert.equal(await broadcastsSent(john.page), 2, "at most one typing broadcast per 2 s");
  // Without more typing the indicator goes after a few seconds.
  await jane.page.waitForFunction(() => document.querySelector("#typing").textContent === "", null, {
    timeout: 6000,
  });
  // Typing again and sending hides it at once, and the message arrives.
  await john.page.type("#room-input", " you?");
  await jane.page.waitForFunction(() => document.querySelector("#typing").textContent !== "", null, {
    timeout: 1000,
  });
  await john.page.click("#room-form button");
  for (const viewer of [jane, alice]) {
    await viewer.page.waitForSelector("#room li:not(.pending) >> text=hello everybody, how are you?", {
      timeout: 2000,
    });
    assert.equal(await typingText(viewer.page), "");
  }

  // alice has been idle for more than 2 s: the others see her away; she moves and is back.
  for (const viewer of [john, jane]) await online(viewer.page, "alice", "away");
  await online(alice.page, "alice", "away");
  await alice.page.mouse.move(200, 200);
  await alice.page.mouse.move(300, 250);
  for (const viewer of [john, jane]) await online(viewer.page, "alice", "online");

  // jane's tab is killed: no goodbye, its socket just goes. The others see her leave at once.
  const killed = Date.now();
  await jane.ctx.close();
  for (const viewer of [john, alice]) {
    await viewer.page.waitForFunction(
      () => !document.querySelector('#online li[data-username="janedoe"]'),
      null,
      { timeout: 3000 },
    );
    assert.equal(await viewer.page.$$eval("#online li", (l) => l.length), 2);
  }
  assert.ok(Date.now() - killed < 3000, `gone within ${Date.now() - killed} ms`);
  // And the server agrees.
  const token = await server.login("bob");
  const present = await server.rest("GET", "/groups/lobby/presence", token);
  assert.deepEqual(present.body.users.map((u) => u.username).sort(), ["alice", "johndoe"]);
  assert.deepEqual(pageErrors, []);
});
