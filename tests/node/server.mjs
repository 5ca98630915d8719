// Starts the real `gridsocket` binary with the demo data on free loopback ports.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Starts a server; pass the `dir`, `httpAddr` and `wsAddr` of a stopped one to restart it. */
export async function startServer({ dir, httpAddr = "127.0.0.1:0", wsAddr = "127.0.0.1:0" } = {}) {
  dir ??= mkdtempSync(join(tmpdir(), "gridsocket-node-"));
  const bin = process.env.GRIDSOCKET_BIN ?? join(root, "target", "debug", "gridsocket");
  const child = spawn(bin, ["serve", "--demo", "--http-addr", httpAddr, "--ws-addr", wsAddr, "--data-dir", dir], {
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
  return {
    dir,
    http,
    ws,
    app: `${ws}/demo/chatapp`,
    async login(username, password = "password") {
      const res = await fetch(`${http}/demo/chatapp/token`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ grant_type: "password", username, password }),
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
      return { dir, httpAddr: http.replace("http://", ""), wsAddr: ws.replace("ws://", "") };
    },
    stop() {
      child.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
