// The package across real server failures: a Node client (Node's own WebSocket, and the `ws`
// package passed in) while its server is killed and restarted; and the server's side of writes
// sent again (`write_id`), on SQLite and across two nodes of one PostgreSQL store.
import { test } from "node:test";
import assert from "node:assert/strict";
import WS from "ws";
import { Client } from "gridsocket";
import { startServer, postgresSchema, sleep, until as untilWithin } from "./server.mjs";

// These waits span server restarts: 15 s.
const until = (what, check) => untilWithin(what, check, 15_000);

const transports = [["the ws package", WS]];
if (typeof WebSocket === "function") transports.unshift(["Node's WebSocket", WebSocket]);

for (const [name, WebSocketImpl] of transports) {
  test(`${name}: the server is killed and restarted; the client resumes, nothing lost or doubled`, async () => {
    let server = await startServer();
    try {
      const john = await server.login("johndoe");
      const client = await Client.connect(server.app, {
        accessToken: john,
        WebSocket: WebSocketImpl,
        requestTimeoutMs: 20_000,
      });
      const seen = [];
      await client.subscribe("/logs", (e) => seen.push(e.entity.n));
      await client.post("/logs", { n: 1 });
      await until("the first event", () => seen.length === 1);
      const states = [];
      client.on("state", (s) => states.push(s));
      const saved = await server.kill();
      await until("the drop", () => client.state !== "open");
      // Made while the server is down: waits, then is applied once.
      const offline = client.post("/logs", { n: 2 });
      await sleep(300); // a few failed attempts (refused connections)
      server = await startServer(saved);
      const jane = await server.login("janedoe");
      await server.rest("POST", "/logs", jane, { n: 3 });
      assert.equal((await offline).entities[0].n, 2);
      await until("every event", () => seen.length >= 3);
      await sleep(200);
      assert.deepEqual([...seen].sort(), [1, 2, 3], "each event once");
      const all = await client.get("/logs");
      assert.equal(all.count, 3);
      assert.ok(states.includes("reconnecting") && states.at(-1) === "open", states.join());
      client.close();
    } finally {
      server.stop();
    }
  });
}

/** A raw socket speaking the protocol, for the server's side of write ids. */
async function rawSocket(url) {
  const ws = new WS(url);
  const frames = [];
  const waiting = [];
  ws.on("message", (data) => {
    const frame = JSON.parse(data.toString());
    const i = waiting.findIndex((w) => w.id === frame.id);
    if (i >= 0) waiting.splice(i, 1)[0].resolve(frame);
    else frames.push(frame);
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  let next = 1;
  return {
    send(frame) {
      const id = next++;
      ws.send(JSON.stringify({ id, ...frame }));
      return new Promise((resolve) => waiting.push({ id, resolve }));
    },
    close: () => ws.close(),
  };
}

async function checkWriteIds(nodeA, nodeB) {
  const john = await nodeA.login("johndoe");
  const a = await rawSocket(`${nodeA.app}?access_token=${john}`);
  const b = await rawSocket(`${nodeB.app}?access_token=${john}`);
  const write = { method: "POST", path: "/orders", body: { item: "tea" }, write_id: `w-${Date.now()}` };
  const first = await a.send(write);
  assert.equal(first.status, 200);
  // The same write again, on another socket (of another node): answered, not applied.
  const again = await b.send(write);
  assert.deepEqual(again.body, first.body, "the first answer, byte for byte");
  const list = await b.send({ method: "GET", path: "/orders" });
  assert.equal(list.body.count, 1);
  // The id with another write, or from another user: refused.
  const other = await a.send({ ...write, path: "/others" });
  assert.equal(other.status, 409);
  assert.equal(other.body.error, "write_id_conflict");
  const jane = await nodeB.login("janedoe");
  const c = await rawSocket(`${nodeB.app}?access_token=${jane}`);
  assert.equal((await c.send(write)).body.error, "write_id_conflict");
  // A failed write is not remembered as done: sent again, it runs again.
  const bad = { method: "PUT", path: "/users/nobody-here", body: 1, write_id: `bad-${Date.now()}` };
  const failed = await a.send(bad);
  assert.equal(failed.status, 400);
  assert.deepEqual((await b.send(bad)).body, failed.body);
  const tooLong = await a.send({ ...write, write_id: "x".repeat(129) });
  assert.equal(tooLong.body.error, "invalid_frame");
  for (const s of [a, b, c]) s.close();
}

test("write ids: a repeat is answered with the first answer, not applied again (SQLite)", async () => {
  const server = await startServer();
  try {
    await checkWriteIds(server, server);
  } finally {
    server.stop();
  }
});

test("write ids hold across two nodes of one PostgreSQL store", async (t) => {
  const schema = postgresSchema();
  if (!schema) return t.skip("no PostgreSQL (psql) here");
  const nodeA = await startServer({ store: schema.url });
  const nodeB = await startServer({ store: schema.url });
  try {
    await checkWriteIds(nodeA, nodeB);
  } finally {
    nodeA.stop();
    nodeB.stop();
    schema.drop();
  }
});
