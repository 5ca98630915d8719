// Builds app/ from the packed gridsocket package (installed into node_modules from its tarball
// by tests/node/install-package.sh) with each bundler, with no configuration beyond the entry
// and output, serves each result, and drives it in headless Chromium against the real server:
// connect, log in, subscribe, receive a pushed event.
//
//   node --test tests/bundlers/run.mjs      (the server binary: target/debug/gridsocket)
//
// Bundlers: Vite (dev server, and `vite build`), esbuild (`--bundle`, its default iife
// format), webpack 5 (production mode) and none at all (a plain <script type="module"> page
// next to a copy of the package). Any warning a bundler prints fails the test (such as Vite's
// "node:fs/promises has been externalized").
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, extname, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";
import * as esbuild from "esbuild";
import webpack from "webpack";
import * as vite from "vite";
import { startServer } from "../node/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const app = join(here, "app");
const pkg = join(here, "node_modules", "gridsocket");
const work = mkdtempSync(join(tmpdir(), "gridsocket-bundlers-"));
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let server;
let browser;
const cleanups = [];

before(async () => {
  assert.ok(existsSync(join(pkg, "package.json")), "install the package first: tests/node/install-package.sh tests/bundlers");
  server = await startServer();
  browser = await chromium.launchPersistentContext(join(work, "browser-profile"), {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
  });
});

after(async () => {
  for (const c of cleanups) await c();
  await browser?.close();
  server?.stop();
  rmSync(work, { recursive: true, force: true });
});

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css" };

/** Serves a folder as a static site on a free port; returns its URL. */
async function serve(dir) {
  const http = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const file = join(dir, path.endsWith("/") ? `${path}index.html` : path);
    if (!file.startsWith(dir) || !existsSync(file)) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => {
    http.closeAllConnections();
    return new Promise((resolve) => http.close(resolve));
  });
  return `http://127.0.0.1:${http.address().port}/`;
}

/** An index.html that loads `script` (a classic script unless `module`). */
function page(dir, script, module = false) {
  const tag = module ? `<script type="module" src="${script}"></script>` : `<script defer src="${script}"></script>`;
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><body>${tag}`);
}

/** Opens the built app, then checks each step of its run and pushes it an event. */
async function drive(url, name) {
  const tab = await browser.newPage();
  const errors = [];
  tab.on("pageerror", (e) => errors.push(e.message));
  tab.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  try {
    await tab.goto(`${url}?ws=${encodeURIComponent(server.app)}`);
    const steps = () => tab.evaluate(() => window.progress?.steps ?? []);
    await tab.waitForFunction(
      () => window.progress?.steps.some((s) => s === "subscribed" || s.startsWith("failed")),
      null,
      { timeout: 20_000 },
    ).catch(() => {});
    assert.deepEqual(await steps(), ["guest:open", "user:johndoe", "error:entity_not_found", "subscribed"], name);
    const jane = await server.login("janedoe");
    const text = `pushed to ${name}`;
    assert.equal((await server.rest("POST", "/pushes", jane, { text })).status, 200);
    await tab.waitForFunction((t) => window.progress.steps.includes(`event:${t}`), text, { timeout: 5000 });
    assert.deepEqual(errors, [], `${name}: no errors in the page`);
  } finally {
    await tab.close();
  }
}

test("Vite, production build (vite build), served as static files", async () => {
  const out = join(work, "vite");
  const warnings = [];
  const logger = vite.createLogger("warn");
  const warn = logger.warn;
  logger.warn = (msg, opts) => {
    warnings.push(msg);
    warn(msg, opts);
  };
  await vite.build({
    root: app,
    logLevel: "warn",
    customLogger: logger,
    configFile: false,
    build: { outDir: out, emptyOutDir: true },
  });
  assert.deepEqual(warnings, [], "vite build prints no warning");
  await drive(await serve(out), "vite build");
});

test("Vite, dev server", async () => {
  const warnings = [];
  const logger = vite.createLogger("warn");
  logger.warn = (msg) => warnings.push(msg);
  const dev = await vite.createServer({
    root: app,
    configFile: false,
    logLevel: "warn",
    customLogger: logger,
    cacheDir: join(work, "vite-cache"),
    server: { host: "127.0.0.1", port: 0, strictPort: false, hmr: false },
  });
  await dev.listen();
  cleanups.push(() => dev.close());
  const url = dev.resolvedUrls.local[0];
  await drive(url, "vite dev");
  assert.deepEqual(warnings, [], "the dev server prints no warning");
});

test("esbuild --bundle (iife), and the size an app pays", async () => {
  const out = join(work, "esbuild");
  mkdirSync(out, { recursive: true });
  const result = await esbuild.build({
    entryPoints: [join(app, "main.js")],
    bundle: true,
    outfile: join(out, "main.js"),
    logLevel: "silent",
  });
  assert.deepEqual(result.warnings, [], "esbuild prints no warning");
  page(out, "main.js");
  await drive(await serve(out), "esbuild");

  // What the package adds to an app, minified by the app's bundler, gzipped.
  const min = await esbuild.build({
    stdin: { contents: 'import { Client } from "gridsocket"; globalThis.Client = Client;', resolveDir: here },
    bundle: true,
    minify: true,
    format: "esm",
    write: false,
  });
  const gz = gzipSync(min.outputFiles[0].contents, { level: 9 }).length;
  console.log(`# the package in a minified app bundle: ${min.outputFiles[0].contents.length} B, ${gz} B gzipped`);
  assert.ok(gz <= 60 * 1024, `at most 60 KiB gzipped in an app: ${gz} B`);
  // And as shipped (unminified, comments and all): everything a page loads.
  const shipped = ["index.js", "gridsocket.js", "wasm.js"].map((f) => readFileSync(join(pkg, f)));
  const all = gzipSync(Buffer.concat(shipped), { level: 9 }).length;
  console.log(`# the package as shipped, all that loads: ${all} B gzipped`);
  assert.ok(all <= 60 * 1024, `at most 60 KiB gzipped as shipped: ${all} B`);
});

test("webpack 5, production mode", async () => {
  const out = join(work, "webpack");
  const stats = await new Promise((resolve, reject) =>
    webpack(
      {
        mode: "production",
        context: app,
        entry: "./main.js",
        output: { path: out, filename: "main.js" },
        infrastructureLogging: { level: "error" },
      },
      (err, s) => (err ? reject(err) : resolve(s)),
    ),
  );
  const info = stats.toJson({ all: false, errors: true, warnings: true });
  assert.deepEqual(info.errors, [], "webpack builds without errors");
  assert.deepEqual(info.warnings, [], "webpack prints no warning");
  page(out, "main.js");
  await drive(await serve(out), "webpack");
});

test("no bundler: a plain <script type=module> next to the package's files", async () => {
  const out = join(work, "plain");
  cpSync(pkg, join(out, "gridsocket"), { recursive: true });
  const main = readFileSync(join(app, "main.js"), "utf8").replace('from "gridsocket"', 'from "./gridsocket/index.js"');
  writeFileSync(join(out, "main.js"), main);
  page(out, "main.js", true);
  await drive(await serve(out), "plain");
});
