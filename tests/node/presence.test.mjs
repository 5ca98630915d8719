// Presence and broadcast through the packed `gridsocket` package, against the real server:
// two people see each other join, change and leave; broadcasts reach subscriptions and
// presences, and past the server's rate they are refused with a clear error; a reconnect
// keeps each copy equal to the server's (GET {path}/presence).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client, GridsocketError } from "gridsocket";
import { startServer, sleep, until } from "./server.mjs";

let server;
const tokens = {};

before(async () => {
  server = await startServer();
  for (const name of ["johndoe", "janedoe", "alice", "bob"]) tokens[name] = await server.login(name);
});

after(() => server?.stop());


const connect = (name, options = {}) =>
  Client.connect(server.app, { accessToken: tokens[name], ...options });

/**
 * A WebSocket whose new connections can be held off (they are refused, as by a server that is
 * down), so that a client stays away while others change things.
 */
function gate() {
  const g = {
    closed: false,
    WebSocket: class extends WebSocket {
      constructor(url) {
        super(g.closed ? "ws://127.0.0.1:9/" : url);
      }
    },
  };
  return g;
}

/** A presence's copy as plain data: username → connection states, sorted. */
function who(state) {
  return Object.fromEntries(
    [...state.values()]
      .map((u) => [u.username, u.connections.map((c) => c.state)])
      .sort(([a], [b]) => a.localeCompare(b)),
  );
}

/** What the server says is present on `path`. */
async function serverWho(path) {
  const r = await server.rest("GET", `${path}/presence`, tokens.alice);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return who(new Map(r.body.users.map((u) => [u.uuid, u])));
}

/** Records every event of a presence handle, as `type:username`. */
function record(presence) {
  const seen = [];
  for (const type of ["join", "leave", "update"]) {
    presence.on(type, (e) => seen.push(`${e.type}:${e.user.username}`));
  }
  presence.on("sync", (e) => seen.push(`sync:${e.reason}`));
  presence.on("ended", (e) => seen.push(`ended:${e.error.code}`));
  return seen;
}

test("two people see each other join, change their state and leave", async () => {
  const john = await connect("johndoe");
  const jane = await connect("janedoe");
  const lobbyJohn = await john.presence("/Groups/Lobby/", { status: "here" });
  assert.equal(lobbyJohn.path, "/groups/lobby", "the presence's name");
  assert.deepEqual(who(lobbyJohn.state), { johndoe: [{ status: "here" }] });
  assert.deepEqual(lobbyJohn.myState, { status: "here" });
  assert.equal(lobbyJohn.active, true);
  const johnSaw = record(lobbyJohn);
  const joins = [];
  lobbyJohn.on("join", (e) => joins.push(e));

  const lobbyJane = await jane.presence("/groups/lobby", { status: "here" });
  assert.deepEqual(who(lobbyJane.state), { janedoe: [{ status: "here" }], johndoe: [{ status: "here" }] });
  await until("john sees jane", () => lobbyJohn.state.size === 2);
  assert.deepEqual(johnSaw, ["join:janedoe"]);
  assert.equal(joins[0].path, "/groups/lobby");
  assert.deepEqual(joins[0].connections, [{ state: { status: "here" } }]);
  assert.equal(typeof joins[0].user.uuid, "string");

  // jane changes her state: john hears an update, jane's own copy has it once answered.
  const before = lobbyJohn.state;
  await lobbyJane.update({ status: "away" });
  assert.deepEqual(who(lobbyJane.state).janedoe, [{ status: "away" }]);
  assert.deepEqual(lobbyJane.myState, { status: "away" });
  await until("john sees jane away", () => johnSaw.length === 2);
  assert.deepEqual(johnSaw, ["join:janedoe", "update:janedoe"]);
  assert.deepEqual(who(lobbyJohn.state).janedoe, [{ status: "away" }]);
  assert.notEqual(lobbyJohn.state, before, "a new Map on every change");
  assert.deepEqual(who(lobbyJohn.state), await serverWho("/groups/lobby"));

  // A second tab of jane's is the same user, with two connections.
  const tab = await connect("janedoe");
  const lobbyTab = await tab.presence("/groups/lobby", { status: "tab" });
  assert.deepEqual(who(lobbyTab.state).janedoe, [{ status: "away" }, { status: "tab" }]);
  await until("john sees the second tab", () => johnSaw.length === 3);
  tab.close();
  await until("the tab's close", () => johnSaw.length === 4);
  assert.deepEqual(johnSaw.slice(2), ["update:janedoe", "update:janedoe"]);

  // jane leaves: john hears it; jane's copy is empty and hears nothing more.
  const janeSaw = record(lobbyJane);
  await lobbyJane.leave();
  assert.equal(lobbyJane.active, false);
  assert.equal(lobbyJane.state.size, 0);
  await until("john sees jane leave", () => johnSaw.length === 5);
  assert.equal(johnSaw[4], "leave:janedoe");
  assert.deepEqual(who(lobbyJohn.state), { johndoe: [{ status: "here" }] });
  await lobbyJohn.update({ status: "busy" });
  await sleep(200);
  assert.deepEqual(janeSaw, [], "a left presence hears nothing");
  const late = await lobbyJane.update({ status: "back" }).catch((e) => e);
  assert.ok(late instanceof GridsocketError);
  assert.equal(late.code, "not_present");
  // It can be joined again.
  const again = await jane.presence("/groups/lobby", {});
  assert.equal(again.state.size, 2);
  john.close();
  jane.close();
});

test("joins are refused with clear errors", async () => {
  const john = await connect("johndoe");
  const big = await john.presence("/groups/lobby", { note: "x".repeat(1100) }).catch((e) => e);
  assert.ok(big instanceof GridsocketError);
  assert.equal(big.code, "state_too_large");
  assert.equal(big.status, 413);
  const twice = await john.presence("/groups/lobby", {});
  const double = await john.presence("/GROUPS/lobby", {}).catch((e) => e);
  assert.equal(double.code, "already_present");
  const badState = await john.presence("/groups/lobby", [1]).catch((e) => e);
  assert.equal(badState.code, "invalid_argument");
  await assert.rejects(twice.update("x"), { code: "invalid_argument" });
  // A refused state fails its own call; the presence goes on with the state the server has.
  await twice.update({ n: 1 });
  const tooBig = await twice.update({ note: "x".repeat(1100) }).catch((e) => e);
  assert.equal(tooBig.code, "state_too_large");
  assert.deepEqual(twice.myState, { n: 1 });
  john.dropConnectionForTesting();
  await john.ready({ timeoutMs: 10_000 });
  await until("the rejoin", async () => (await serverWho("/groups/lobby")).johndoe !== undefined);
  assert.deepEqual((await serverWho("/groups/lobby")).johndoe, [{ n: 1 }]);
  const foreign = await john.presence("/users/janedoe/feed", {}).catch((e) => e);
  assert.equal(foreign.code, "forbidden");
  assert.equal(foreign.status, 403);
  // Closing ends the presence: its copy empties and it says why.
  const seen = record(twice);
  john.close();
  assert.equal(twice.active, false);
  assert.deepEqual(seen, ["ended:closed"]);
  assert.equal(twice.state.size, 0);
  assert.equal((await john.presence("/groups/lobby").catch((e) => e)).code, "closed");
});

test("every spelling of a path is one presence; paths that can have none are refused", async () => {
  const john = await connect("johndoe");
  const jane = await connect("janedoe");
  const mine = await john.presence("/users/janedoe", { n: 1 });
  assert.equal(mine.path, "/users/janedoe");
  const hers = await jane.presence("/user/%4Aanedoe/", { n: 2 });
  assert.equal(hers.path, "/users/janedoe");
  await until("john sees jane", () => mine.state.size === 2);
  const got = [];
  mine.on("broadcast", (e) => got.push(e));
  assert.deepEqual(await jane.broadcast("/USER/%6aanedoe", "hi"), { path: "/users/janedoe", delivered: 1 });
  await until("the broadcast", () => got.length === 1);
  assert.equal(got[0].path, "/users/janedoe");
  for (const path of ["/", "/groups/lobby/presence", "/users/johndoe/following/janedoe"]) {
    const refused = await john.presence(path, {}).catch((e) => e);
    assert.equal(refused.code, "illegal_argument", `${path}: ${refused}`);
    assert.equal(refused.status, 400);
    assert.match(refused.message, /presence/);
    const bad = await john.broadcast(path, "x").catch((e) => e);
    assert.equal(bad.code, "illegal_argument", `${path}: ${bad}`);
  }
  // A query string is no part of a path, for any method.
  for (const attempt of [
    john.presence("/groups/lobby?x=1", {}),
    john.broadcast("/groups/lobby?x=1", "x"),
    john.subscribe("/groups/lobby?x=1", () => {}),
    john.get("/groups/lobby?x=1"),
  ]) {
    const e = await attempt.catch((e) => e);
    assert.equal(e.code, "invalid_frame", String(e));
    assert.equal(e.body.field, "path");
  }
  for (const c of [john, jane]) c.close();
});

test("broadcasting needs its own grant: a guest's sign-up is not one, a user's group is", async () => {
  const guest = await Client.connect(server.app);
  const refused = await guest.broadcast("/users", { hi: 1 }).catch((e) => e);
  assert.equal(refused.code, "unauthorized");
  assert.equal(refused.status, 401);
  assert.match(refused.message, /\/users\/broadcast/);
  const john = await connect("johndoe");
  assert.equal((await john.broadcast("/groups/lobby", { typing: true })).path, "/groups/lobby");
  for (const c of [guest, john]) c.close();
});

test("broadcasts reach subscriptions and presences of their path, with echo on request", async () => {
  const john = await connect("johndoe");
  const jane = await connect("janedoe");
  const alice = await connect("alice");
  const sub = await john.subscribe("/chats", () => {});
  const viaSub = [];
  sub.on("broadcast", (e) => viaSub.push(e));
  const lobby = await alice.presence("/chats", {});
  const viaPresence = [];
  lobby.on("broadcast", (e) => viaPresence.push(e));
  const viaClient = [];
  alice.on("broadcast", (e) => viaClient.push(e.body));

  const result = await jane.broadcast("/Chats", { typing: true });
  assert.deepEqual(result, { path: "/chats", delivered: 2 });
  await until("both get it", () => viaSub.length === 1 && viaPresence.length === 1);
  for (const e of [viaSub[0], viaPresence[0]]) {
    assert.equal(e.type, "broadcast");
    assert.equal(e.path, "/chats");
    assert.equal(e.from.username, "janedoe");
    assert.equal(typeof e.from.uuid, "string");
    assert.deepEqual(e.body, { typing: true });
  }
  assert.deepEqual(viaClient, [{ typing: true }]);

  // The sender gets its own only when it asks, whether it watches the path or not.
  const janeGot = [];
  jane.on("broadcast", (e) => janeGot.push(e.body));
  assert.equal((await jane.broadcast("/chats", "quiet")).delivered, 2);
  assert.equal((await jane.broadcast("/chats", "echo", { echo: true })).delivered, 3);
  await until("the echo", () => janeGot.length === 1);
  assert.deepEqual(janeGot, ["echo"]);
  await until("the others", () => viaClient.length === 3);
  assert.deepEqual(viaClient, [{ typing: true }, "quiet", "echo"]);

  const empty = await jane.broadcast("/chats", null).catch((e) => e);
  assert.equal(empty.code, "invalid_argument");
  // Nothing that is null in JSON (NaN) or has no JSON at all (a function) goes out.
  for (const body of [NaN, () => 1]) {
    const bad = await jane.broadcast("/chats", body).catch((e) => e);
    assert.equal(bad.code, "invalid_argument", String(bad));
  }
  const tooLarge = await jane.broadcast("/chats", "y".repeat(9000)).catch((e) => e);
  assert.equal(tooLarge.code, "broadcast_too_large");
  assert.equal(tooLarge.status, 413);
  const forbidden = await jane.broadcast("/users/johndoe", { hi: 1 }).catch((e) => e);
  assert.equal(forbidden.code, "forbidden");
  // Offline, a broadcast is not held: it fails at once.
  jane.dropConnectionForTesting();
  const started = Date.now();
  const offline = await jane.broadcast("/chats", "late").catch((e) => e);
  assert.equal(offline.code, "disconnected");
  assert.ok(Date.now() - started < 500, "at once");
  await jane.ready({ timeoutMs: 5000 });
  await sleep(200);
  assert.ok(!viaClient.includes("late"), "never sent later");
  for (const c of [john, jane, alice]) c.close();
});

test("past the server's broadcast rate, the extra ones are refused with rate_limited", async () => {
  const jane = await connect("janedoe");
  const john = await connect("johndoe");
  const lobby = await john.presence("/typing", {});
  const got = [];
  lobby.on("broadcast", (e) => got.push(e.body.n));
  // 20 a second with a burst of one second's worth (the server's default): 60 at once.
  const results = await Promise.allSettled(
    Array.from({ length: 60 }, (_, n) => jane.broadcast("/typing", { n })),
  );
  const sent = results.flatMap((r, n) => (r.status === "fulfilled" ? [n] : []));
  const refused = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  assert.ok(sent.length >= 20 && sent.length < 60, `${sent.length} delivered`);
  assert.equal(refused.length, 60 - sent.length);
  for (const e of refused) {
    assert.ok(e instanceof GridsocketError);
    assert.equal(e.code, "rate_limited");
    assert.equal(e.status, 429);
    assert.match(e.message, /broadcasts per second/);
  }
  await until("every accepted one arrives", () => got.length === sent.length);
  assert.deepEqual(got, sent, "exactly the accepted ones, in the order sent");
  // The socket carries on, and a second later broadcasts go through again.
  await sleep(1100);
  assert.equal((await jane.broadcast("/typing", { n: 99 })).delivered, 1);
  jane.close();
  john.close();
});

test("a reconnect rejoins with the last state and keeps the copy equal to the server's", async () => {
  const network = gate();
  const john = await connect("johndoe", { WebSocket: network.WebSocket });
  const jane = await connect("janedoe");
  const alice = await connect("alice");
  const lobbyJohn = await john.presence("/groups/lobby", { n: 0 });
  const lobbyJane = await jane.presence("/groups/lobby", {});
  const lobbyAlice = await alice.presence("/groups/lobby", {});
  await until("john sees both", () => lobbyJohn.state.size === 3);
  const johnSaw = record(lobbyJohn);
  const janeSaw = record(lobbyJane);

  // john's socket drops; meanwhile jane changes, alice leaves, bob arrives, and john changes
  // his own state offline (it goes with the rejoin).
  network.closed = true;
  john.dropConnectionForTesting();
  await until("jane sees john go", () => janeSaw.includes("leave:johndoe"));
  await lobbyJane.update({ typing: true });
  await lobbyAlice.leave();
  const bob = await connect("bob");
  await bob.presence("/groups/lobby", { new: true });
  const offlineUpdate = lobbyJohn.update({ n: 1 });
  assert.notEqual(john.state, "open");
  network.closed = false;
  await john.ready({ timeoutMs: 10_000 });
  await offlineUpdate;
  await until("john's sync", () => johnSaw.some((e) => e.startsWith("sync")));
  assert.equal(johnSaw.at(-1), "sync:reconnect");
  assert.deepEqual(
    johnSaw.slice(0, -1).sort(),
    ["join:bob", "leave:alice", "update:janedoe", "update:johndoe"],
    "what changed while away, as changes",
  );
  assert.deepEqual(who(lobbyJohn.state), await serverWho("/groups/lobby"));
  assert.deepEqual(who(lobbyJohn.state).johndoe, [{ n: 1 }]);
  // jane saw john come back with his new state, and her copy agrees too.
  await until("jane sees john back", () => janeSaw.includes("join:johndoe"));
  assert.deepEqual(who(lobbyJane.state), await serverWho("/groups/lobby"));

  // Several drops in a row, with changes in between: still equal, and john present once.
  for (let round = 0; round < 3; round++) {
    network.closed = true;
    john.dropConnectionForTesting();
    await lobbyJane.update({ round });
    network.closed = false;
    await john.ready({ timeoutMs: 10_000 });
    await until(`sync ${round}`, () => johnSaw.filter((e) => e === "sync:reconnect").length === round + 2);
  }
  assert.deepEqual(who(lobbyJohn.state), await serverWho("/groups/lobby"));
  assert.deepEqual(who(lobbyJohn.state).janedoe, [{ round: 2 }]);
  for (const c of [john, jane, alice, bob]) c.close();
});

test("losing read access ends a presence with forbidden, and the others see a leave", async () => {
  const res = await fetch(`${server.http}/management/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ grant_type: "password", username: "demo", password: "demo-admin" }),
  });
  assert.equal(res.status, 200);
  const admin = (await res.json()).access_token;
  const permission = "get,put,post,delete:/**";
  const watcher = await Client.connect(server.app, { accessToken: admin });
  const john = await connect("johndoe");
  const errors = [];
  john.on("error", (e) => errors.push(e));
  const lobbyAdmin = await watcher.presence("/groups/lobby", {});
  const adminSaw = record(lobbyAdmin);
  const lobbyJohn = await john.presence("/groups/lobby", { status: "here" });
  const ended = new Promise((resolve) => lobbyJohn.on("ended", resolve));
  await until("the admin sees john", () => adminSaw.includes("join:johndoe"));
  const r = await server.rest("DELETE", `/roles/default/permissions?permission=${permission}`, admin);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  try {
    const e = await ended;
    assert.equal(e.type, "ended");
    assert.equal(e.path, "/groups/lobby");
    assert.ok(e.error instanceof GridsocketError);
    assert.equal(e.error.code, "forbidden");
    assert.equal(e.error.status, 403);
    assert.equal(lobbyJohn.active, false);
    assert.equal(lobbyJohn.state.size, 0);
    await until("the admin sees john leave", () => adminSaw.includes("leave:johndoe"));
    const listed = await server.rest("GET", "/groups/lobby/presence", admin);
    assert.deepEqual(listed.body.users.map((u) => u.username), ["demo"]);
    assert.deepEqual(errors, [], "the presence says it ended; the client has no error to add");
    await assert.rejects(lobbyJohn.update({}), { code: "not_present" });
    await assert.rejects(john.presence("/groups/lobby", {}), { code: "forbidden" });
  } finally {
    const back = await server.rest("POST", "/roles/default/permissions", admin, { permission });
    assert.equal(back.status, 200, JSON.stringify(back.body));
  }
  // With the grant back, he may join again.
  const again = await john.presence("/groups/lobby", {});
  assert.equal(again.active, true);
  john.close();
  watcher.close();
});
