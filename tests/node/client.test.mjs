// The built `gridsocket` package under Node, against the real server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client } from "../../wasm-client/pkg/index.js";
import { startServer } from "./server.mjs";

let server;
let john;
let jane;

before(async () => {
  server = await startServer();
  john = await server.login("johndoe");
  jane = await server.login("janedoe");
});

after(() => server?.stop());

test("requests resolve to REST bodies and reject with real errors", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  assert.equal(client.state, "open");
  const me = await client.get("/users/me");
  assert.equal(me.entities[0].username, "johndoe");
  const posted = await client.post("/books", { name: "dune", price: 9 });
  assert.equal(posted.entities[0].name, "dune");
  const cheap = await client.get("/books", { ql: "select * where price < 10" });
  assert.equal(cheap.count, 1);
  const updated = await client.put("/books/dune", { price: 11 });
  assert.equal(updated.entities[0].price, 11);
  const same = await client.request({ method: "get", path: "/books/dune" });
  assert.equal(same.entities[0].price, 11);
  await client.delete("/books/dune");
  const err = await client.get("/books/dune").catch((e) => e);
  assert.ok(err instanceof Error);
  assert.equal(err.name, "GridsocketError");
  assert.equal(err.status, 404);
  assert.equal(err.code, "entity_not_found");
  const bad = await client.post("/books", "not an object").catch((e) => e);
  assert.equal(bad.status, 400);
  client.close();
  assert.equal(client.state, "closed");
  const closed = await client.get("/users/me").catch((e) => e);
  assert.equal(closed.code, "closed");
});

test("a bad token is refused at connect", async () => {
  const err = await Client.connect(server.app, { accessToken: "forged" }).catch((e) => e);
  assert.ok(err instanceof Error);
  assert.equal(err.status, 401);
  assert.equal(err.code, "auth_bad_access_token");
});

test("requests in flight reject when the connection drops, and the client reconnects", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  const states = [];
  client.on("state", (s) => states.push(s));
  const pending = client.get("/users/me");
  client.dropConnectionForTesting();
  const err = await pending.catch((e) => e);
  assert.equal(err.code, "disconnected");
  assert.equal(err.status, 0);
  while (client.state !== "open") await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(states.slice(0, 1), ["reconnecting"]);
  assert.ok(states.includes("open"));
  assert.equal((await client.get("/users/me")).entities[0].username, "johndoe");
  client.close();
});

test("subscriptions resume across drops with every event once and in order", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  const seen = [];
  const sub = await client.subscribe("/notes", {}, (e) => {
    if (e.type === "create") seen.push(e.entity.i);
  });
  assert.equal(sub.path, "/notes");
  // Five rounds of writes; in the last four the connection drops halfway through the round,
  // with events of the round on the wire and more still to be written. Each round waits until
  // the client has seen everything written so far, so every drop lands mid-stream.
  const TOTAL = 120;
  const ROUNDS = 5;
  const PER_ROUND = TOTAL / ROUNDS;
  let written = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < PER_ROUND; k++) {
      if (round > 0 && k === PER_ROUND / 2) {
        client.dropConnectionForTesting();
      }
      const r = await server.rest("POST", "/notes", jane, { i: written++ });
      assert.equal(r.status, 200);
    }
    const deadline = Date.now() + 10_000;
    while (seen.length < written) {
      assert.ok(Date.now() < deadline, `round ${round}: saw ${seen.length} of ${written} events`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(seen, Array.from({ length: TOTAL }, (_, i) => i));
  assert.ok(sub.lastSeq >= sub.seq + TOTAL);
  sub.unsubscribe();
  client.close();
});

test("events() is an async iterator; snapshot comes with the subscription", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  await client.post("/cars", [{ name: "a" }, { name: "b" }]);
  const sub = await client.subscribe("/cars", { snapshot: true }, () => {});
  assert.equal(sub.snapshot.count, 2);
  sub.unsubscribe();
  const iter = client.events("/cars", { ql: "select * where fast = true" });
  const writes = (async () => {
    await new Promise((r) => setTimeout(r, 100));
    await server.rest("POST", "/cars", jane, { name: "slow", fast: false });
    await server.rest("POST", "/cars", jane, { name: "zoom", fast: true });
    await server.rest("PUT", "/cars/zoom", jane, { fast: false });
  })();
  const got = [];
  for await (const e of iter) {
    got.push(`${e.type}:${e.entity.name}`);
    if (got.length === 2) break;
  }
  await writes;
  assert.deepEqual(got, ["create:zoom", "leave:zoom"]);
  client.close();
});

test("feeds: following delivers activities; a foreign inbox is refused", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  await client.post("/users/johndoe/following/users/janedoe", {});
  const inbox = [];
  await client.subscribe("/users/me/inbox", {}, (e) => inbox.push(e.entity.content));
  await server.rest("POST", "/users/janedoe/activities", jane, { content: "hi john" });
  while (inbox.length < 1) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(inbox, ["hi john"]);
  const denied = await client.subscribe("/users/alice/inbox", {}, () => {}).catch((e) => e);
  assert.equal(denied.status, 403);
  client.close();
});
