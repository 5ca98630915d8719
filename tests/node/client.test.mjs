// The packed `gridsocket` package under Node, against the real server: requests, errors,
// offline requests and writes applied once, close, tokens, subscriptions across drops.
// Node 20 runs this with --experimental-websocket (scripts/test.sh); server.test.mjs covers
// restarts, the `ws` package and the server's write ids.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { Client, GridsocketError } from "gridsocket";
import { startServer, sleep, until } from "./server.mjs";

let server;
let john;
let jane;

before(async () => {
  server = await startServer();
  john = await server.login("johndoe");
  jane = await server.login("janedoe");
});

after(() => server?.stop());


test("requests resolve to REST bodies and reject with GridsocketError", async () => {
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
  assert.ok(err instanceof GridsocketError);
  assert.ok(err instanceof Error);
  assert.equal(err.name, "GridsocketError");
  assert.equal(err.status, 404);
  assert.equal(err.code, "entity_not_found");
  assert.equal(err.body.error, "entity_not_found");
  const bad = await client.post("/books", "not an object").catch((e) => e);
  assert.equal(bad.status, 400);
  const invalid = await client.get("/books", [1]).catch((e) => e);
  assert.equal(invalid.code, "invalid_argument");
  client.close();
  assert.equal(client.state, "closed");
  const closed = await client.get("/users/me").catch((e) => e);
  assert.equal(closed.code, "closed");
});

test("a request nested deeper than the server reads is answered at once under its id", async () => {
  const client = await Client.connect(server.app, { accessToken: john, requestTimeoutMs: 20_000 });
  let deep = [];
  for (let i = 0; i < 200; i++) deep = [deep];
  const started = Date.now();
  for (const attempt of [client.post("/books", { deep }), client.broadcast("/groups/lobby", deep)]) {
    const err = await attempt.catch((e) => e);
    assert.equal(err.code, "invalid_frame", String(err));
    assert.equal(err.status, 400);
  }
  assert.ok(Date.now() - started < 5000, "answered, not timed out");
  assert.equal((await client.get("/users/me")).entities[0].username, "johndoe");
  client.close();
});

test("options of the wrong type or out of range are refused at once with invalid_argument", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  const refusals = [
    () => client.get("/users/me", undefined, { timeoutMs: -1 }),
    () => client.get("/users/me", undefined, { timeoutMs: 0 }),
    () => client.get("/users/me", undefined, { timeoutMs: "5000" }),
    () => client.get("/users/me", undefined, { timeoutMs: 1e300 }),
    () => client.get("/users/me", undefined, { timeoutMs: NaN }),
    () => client.request({ method: "GET", path: "/users/me", timeoutMs: Infinity }),
    () => client.delete("/books/x", "fast"),
    () => client.broadcast("/groups/lobby", "x", { echo: "yes" }),
    () => client.broadcast("/groups/lobby", "x", { timeoutMs: -5 }),
    () => client.subscribe("/books", { snapshot: "yes" }, () => {}),
    () => client.subscribe("/books", { since: -1 }, () => {}),
    () => client.subscribe("/books", { since: 1.5 }, () => {}),
    () => client.subscribe("/books", { limit: 0 }, () => {}),
    () => client.subscribe("/books", { ql: 5 }, () => {}),
    () => client.subscribe("/books", "snapshot", () => {}),
    () => client.ready({ timeoutMs: -1 }),
    () => Client.connect(server.app, { accessToken: john, requestTimeoutMs: -1 }),
    () => Client.connect(server.app, { accessToken: john, connectTimeoutMs: "10" }),
    () => Client.connect(server.app, { getToken: "token" }),
    () => Client.connect(server.app, { WebSocket: 7 }),
  ];
  for (const attempt of refusals) {
    const err = await attempt().catch((e) => e);
    assert.ok(err instanceof GridsocketError, `${attempt}: ${err}`);
    assert.equal(err.code, "invalid_argument", `${attempt}: ${err}`);
    assert.match(err.message, /(timeoutMs|TimeoutMs|echo|snapshot|since|limit|ql|options|getToken|WebSocket)/);
  }
  const presence = await client.presence("/groups/lobby", {});
  assert.equal((await presence.update({}, { timeoutMs: -1 }).catch((e) => e)).code, "invalid_argument");
  assert.equal((await presence.leave({ timeoutMs: "x" }).catch((e) => e)).code, "invalid_argument");
  assert.equal(presence.active, true, "a refused leave() leaves nothing");
  // Absent options, and good ones, still work.
  await client.get("/users/me", undefined, { timeoutMs: 5000 });
  await client.broadcast("/groups/lobby", "x", { echo: false, timeoutMs: undefined });
  await presence.leave();
  client.close();
});

test("connect is refused with the server's error, or at once without a WebSocket", async () => {
  const err = await Client.connect(server.app, { accessToken: "forged" }).catch((e) => e);
  assert.ok(err instanceof GridsocketError);
  assert.equal(err.status, 401);
  assert.equal(err.code, "auth_bad_access_token");
  const missing = await Client.connect(`${server.ws}/demo/nothing`).catch((e) => e);
  assert.equal(missing.code, "organization_application_not_found");
  // Node 20 without --experimental-websocket has no WebSocket at all.
  const script = `import { Client } from "gridsocket";
    const t = Date.now();
    const e = await Client.connect(${JSON.stringify(server.app)}).catch((e) => e);
    console.log(JSON.stringify({ code: e.code, ms: Date.now() - t }));`;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
    cwd: import.meta.dirname,
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  const result = JSON.parse(out.toString());
  if (typeof WebSocket === "function" && !process.execArgv.includes("--experimental-websocket")) {
    return; // A Node with WebSocket built in (22+): nothing to check.
  }
  assert.equal(result.code, "no_websocket");
  assert.ok(result.ms < 1000, `at once: ${result.ms} ms`);
});

test("an unreachable server: every failed attempt counts, connect gives up with timeout", async () => {
  const started = Date.now();
  const err = await Client.connect("ws://127.0.0.1:9/demo/chatapp", {
    requestTimeoutMs: 1500,
  }).catch((e) => e);
  assert.equal(err.code, "timeout");
  const took = Date.now() - started;
  assert.ok(took >= 1400 && took < 4000, `${took} ms`);
});

test("requests made while reconnecting wait for the connection; ready() says when", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  const states = [];
  client.on("state", (s) => states.push(s));
  await client.ready();
  client.dropConnectionForTesting();
  assert.equal(client.state, "reconnecting");
  const waiting = client.get("/users/me");
  const tooShort = client.get("/users/me", {}, { timeoutMs: 1 });
  assert.equal((await tooShort.catch((e) => e)).code, "timeout");
  await client.ready({ timeoutMs: 5000 });
  assert.equal((await waiting).entities[0].username, "johndoe");
  assert.deepEqual(states.slice(0, 1), ["reconnecting"]);
  assert.ok(states.includes("open"));
  client.close();
  assert.equal((await client.ready().catch((e) => e)).code, "closed");
});

test("writes made offline, or whose answer was lost in a drop, are applied exactly once", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  // Offline: sent once the connection is back.
  client.dropConnectionForTesting();
  const offline = await client.post("/ledger", { tag: "offline" });
  assert.equal(offline.entities[0].tag, "offline");
  // In flight when the socket drops: the server applies it, the answer is lost, the client
  // sends it again with the same write id, and the server answers with the first answer.
  const results = [];
  for (let i = 0; i < 20; i++) {
    const write = client.post("/ledger", { tag: "inflight", i });
    client.dropConnectionForTesting();
    results.push(write);
  }
  const answers = await Promise.all(results);
  assert.deepEqual(answers.map((a) => a.entities[0].i), Array.from({ length: 20 }, (_, i) => i));
  const all = await client.get("/ledger", { limit: 100 });
  const tags = all.entities.map((e) => (e.tag === "offline" ? "offline" : e.i));
  assert.equal(all.count, 21, `each write once: ${JSON.stringify(tags)}`);
  client.close();
});

test("a thousand writes at once all land; a request too large for the server fails alone, at once", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  let reconnects = 0;
  client.on("state", (s) => { if (s === "reconnecting") reconnects++; });
  const all = await Promise.allSettled(
    Array.from({ length: 1000 }, (_, i) => client.post("/floods", { i })),
  );
  const refused = all.filter((r) => r.status === "rejected").map((r) => r.reason.code);
  assert.deepEqual(refused, [], "none refused for being too many");
  const listed = await client.get("/floods", { limit: 1000 });
  assert.equal(listed.count, 1000);
  const started = Date.now();
  const big = client.post("/floods", { s: "x".repeat(1_100_000) }).catch((e) => e);
  const small = client.get("/users/me");
  const err = await big;
  assert.equal(err.code, "frame_too_large");
  assert.ok(Date.now() - started < 1000, "at once");
  assert.equal((await small).entities[0].username, "johndoe");
  assert.equal(reconnects, 0, "the socket stays up");
  client.close();
});

test("close ends every pending request, subscribe() and events() with closed", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  const iterator = client.events("/ledger");
  const pendingNext = iterator.next();
  await sleep(100);
  client.dropConnectionForTesting();
  const request = client.get("/users/me");
  const subscription = client.subscribe("/ledger", () => {});
  client.close();
  for (const p of [request, subscription, pendingNext]) {
    const e = await p.catch((e) => e);
    assert.ok(e instanceof GridsocketError, `${e}`);
    assert.equal(e.code, "closed");
  }
  assert.equal((await client.subscribe("/a", () => {}).catch((e) => e)).code, "closed");
});

test("getToken refreshes before the token expires, in band", async () => {
  const reasons = [];
  const getToken = async ({ reason }) => {
    reasons.push(reason);
    return server.login("johndoe", "password", { ttl: 5000 });
  };
  const client = await Client.connect(server.app, { getToken });
  const errors = [];
  client.on("error", (e) => errors.push(e));
  assert.deepEqual(reasons, ["initial"]);
  // A 5 s token: refreshed a second before it expires, without dropping the socket.
  const states = [];
  client.on("state", (s) => states.push(s));
  await until("a refresh", () => reasons.includes("expiring"), 8000);
  await sleep(200);
  assert.deepEqual(states, [], "the socket stayed open");
  assert.deepEqual(errors, []);
  assert.equal((await client.get("/users/me")).entities[0].username, "johndoe");
  client.close();
});

test("getToken is asked again when the server refuses the token, and the user stays the same", async () => {
  const reasons = [];
  const client = await Client.connect(server.app, {
    getToken: async ({ reason }) => {
      reasons.push(reason);
      return server.login("alice");
    },
  });
  const revoked = [];
  await client.subscribe("/ledger2", (e) => revoked.push(e.type === "revoked" && e.reason));
  // Revoking the user's tokens ends its subscriptions and closes the socket (4401): the
  // reconnect is refused, so the client asks getToken for a new token and goes on with it.
  const own = await server.login("alice");
  assert.equal((await server.rest("PUT", "/users/alice/revoketokens", own)).status, 200);
  await until("a refused reconnect", () => reasons.includes("rejected"));
  await client.ready({ timeoutMs: 10_000 });
  assert.deepEqual(revoked, ["token_revoked"]);
  const seen = [];
  await client.subscribe("/ledger2", (e) => seen.push(e.entity.n));
  await server.rest("POST", "/ledger2", await server.login("alice"), { n: 1 });
  await until("an event with the new token", () => seen.length === 1);
  assert.equal((await client.get("/users/me")).entities[0].username, "alice");
  client.close();
});

test("setAccessToken returns a promise, and never switches the user", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  await client.setAccessToken(await server.login("johndoe"));
  // In band, another user's token is refused (403), and not used again.
  const other = await client.setAccessToken(jane).catch((e) => e);
  assert.equal(other.code, "forbidden");
  assert.equal(other.status, 403);
  // Offline, the next connection tries it: greeted as another user, it is dropped.
  client.dropConnectionForTesting();
  const offline = await client.setAccessToken(jane).catch((e) => e);
  assert.equal(offline.code, "user_changed");
  await client.ready({ timeoutMs: 5000 });
  assert.equal((await client.get("/users/me")).entities[0].username, "johndoe");
  assert.equal((await client.setAccessToken("").catch((e) => e)).code, "invalid_argument");
  client.close();
  // A guest stays a guest.
  const guest = await Client.connect(server.app);
  assert.equal((await guest.setAccessToken(john).catch((e) => e)).status, 403);
  guest.dropConnectionForTesting();
  await guest.ready({ timeoutMs: 5000 });
  const me = await guest.get("/users/me").catch((e) => e);
  assert.ok(me instanceof GridsocketError && me.status >= 400, "still a guest");
  guest.close();
});

test("subscriptions resume across drops with every event once and in order", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  const seen = [];
  const sub = await client.subscribe("/notes", {}, (e) => {
    if (e.type === "create") seen.push(e.entity.i);
  });
  assert.equal(sub.path, "/notes");
  // Five rounds of writes; in the last four the connection drops halfway through the round,
  // with events of the round on the wire and more still to be written.
  const TOTAL = 120;
  const ROUNDS = 5;
  const PER_ROUND = TOTAL / ROUNDS;
  let written = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < PER_ROUND; k++) {
      if (round > 0 && k === PER_ROUND / 2) client.dropConnectionForTesting();
      const r = await server.rest("POST", "/notes", jane, { i: written++ });
      assert.equal(r.status, 200);
    }
    await until(`round ${round}`, () => seen.length >= written);
  }
  await sleep(200);
  assert.deepEqual(seen, Array.from({ length: TOTAL }, (_, i) => i));
  assert.ok(sub.lastSeq >= sub.seq + TOTAL);
  sub.unsubscribe();
  client.close();
});

test("events() is an async iterator; snapshot comes with the subscription", async () => {
  const client = await Client.connect(server.app, { accessToken: john });
  await client.post("/cars", [{ name: "a" }, { name: "b" }]);
  const sub = await client.subscribe("/cars", { snapshot: true, limit: 1 }, () => {});
  assert.equal(sub.snapshot.count, 1);
  assert.ok(sub.snapshot.cursor);
  sub.unsubscribe();
  const iter = client.events("/cars", { ql: "select * where fast = true" });
  const writes = (async () => {
    await sleep(100);
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
  await client.subscribe("/users/me/inbox", (e) => inbox.push(e.entity.content));
  await server.rest("POST", "/users/janedoe/activities", jane, { content: "hi john" });
  await until("the activity", () => inbox.length >= 1);
  assert.deepEqual(inbox, ["hi john"]);
  const denied = await client.subscribe("/users/alice/inbox", () => {}).catch((e) => e);
  assert.equal(denied.status, 403);
  assert.equal(denied.code, "forbidden");
  client.close();
});
