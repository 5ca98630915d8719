// Starts the real `gridsocket` binary with the demo data on free loopback ports.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Starts a server; pass the `dir`, `httpAddr` and `wsAddr` of a stopped one to restart it, and
 * `store` (a PostgreSQL URL) for a node of a shared store.
 */
export async function startServer({ dir, httpAddr = "127.0.0.1:0", wsAddr = "127.0.0.1:0", store } = {}) {
  dir ??= mkdtempSync(join(tmpdir(), "gridsocket-node-"));
  const bin = process.env.GRIDSOCKET_BIN ?? join(root, "target", "debug", "gridsocket");
  const args = ["serve", "--demo", "--http-addr", httpAddr, "--ws-addr", wsAddr, "--data-dir", dir];
  if (store) args.push("--store", store);
  const child = spawn(bin, args, {
    stdio: ["ignore", "pipe", "inherit"],
    cwd: root,
    env: { ...process.env, RUST_LOG: "warn" },
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const lines = createInterface({ input: child.stdout });
  let http, ws;
  for await (const line of lines) {
    const m = line.trim().match(/^(REST|WebSocket)\s+(\S+)/);
    if (m && m[1] === "REST") http = m[2];
    if (m && m[1] === "WebSocket") ws = m[2];
    if (http && ws) break;
  }
  lines.on("line", () => {});
  if (!http || !ws) throw new Error("the server did not start");
  return {
    dir,
    http,
    ws,
    app: `${ws}/demo/chatapp`,
    async login(username, password = "password", extra = {}) {
      const res = await fetch(`${http}/demo/chatapp/token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ grant_type: "password", username, password, ...extra }),
      });
      const body = await res.json();
      if (!res.ok) throw new Error(`login failed: ${JSON.stringify(body)}`);
      return body.access_token;
    },
    async rest(method, path, token, body) {
      const res = await fetch(`${http}/demo/chatapp${path}`, {
        method,
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    },
    /** Stops gracefully (sockets get 1012) and keeps the data for a restart. */
    async restartable() {
      child.kill("SIGTERM");
      await exited;
      return this.addresses();
    },
    /** Kills the process outright (no close frames) and keeps the data for a restart. */
    async kill() {
      child.kill("SIGKILL");
      await exited;
      return this.addresses();
    },
    addresses() {
      return { dir, store, httpAddr: http.replace("http://", ""), wsAddr: ws.replace("ws://", "") };
    },
    stop() {
      child.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A fresh schema in the local test PostgreSQL (127.0.0.1:5432, db `test`), as a store URL; null
 * when there is no `psql` or no server (the caller skips, unless CI=true).
 */
export function postgresSchema() {
  const schema = `gs_js_${process.pid}_${Date.now()}`;
  const url = process.env.GRIDSOCKET_TEST_POSTGRES ?? "postgres://127.0.0.1:5432/test";
  try {
    execFileSync("psql", [url, "-qc", `CREATE SCHEMA ${schema}`], { stdio: "pipe" });
  } catch (e) {
    if (process.env.CI === "true") throw e;
    return null;
  }
  return {
    url: `${url}?options=-csearch_path%3D${schema}`,
    drop() {
      try {
        execFileSync("psql", [url, "-qc", `DROP SCHEMA ${schema} CASCADE`], { stdio: "pipe" });
      } catch {
        // Left for the next cleanup.
      }
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check()` holds, failing after `ms` with `what` in the message. */
export async function until(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(10);
  }
}
