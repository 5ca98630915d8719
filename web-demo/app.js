// The gridsocket chat demo: everything goes through the public `gridsocket` package API.
import { Client } from "./pkg/index.js";

const $ = (id) => document.getElementById(id);
const config = await (await fetch("config.json")).json();
const api = `/${config.org}/${config.app}`;
const SESSION = "gridsocket-demo";
// Offline, a message waits this long for the connection before it counts as not sent.
const SEND_TIMEOUT_MS = 5 * 60 * 1000;
// The lobby: its feed is the chat, its presence the online list, its broadcasts "typing".
const ROOM = "/groups/lobby";
const query = new URLSearchParams(location.search);
// A tab with no input for this long (hidden tabs get none) shows as away; `?away=SECONDS`
// changes it (the tests shorten it).
const AWAY_AFTER_MS = (Number(query.get("away")) || 60) * 1000;
// While typing, at most one "typing" broadcast goes out per this long; the others show
// "… is typing" until this long after the last one (or the message) came.
const TYPING_EVERY_MS = 2000;
const TYPING_SHOWN_MS = 4000;
let client;
let presence;
let me;

async function token(username, password) {
  const res = await fetch(`${api}/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ grant_type: "password", username, password }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error_description ?? "login failed");
  return body.access_token;
}

function stamp(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function item(who, text, when) {
  const li = document.createElement("li");
  li.innerHTML = "<b></b> <time></time><p></p>";
  li.querySelector("b").textContent = who;
  li.querySelector("p").textContent = text;
  const t = li.querySelector("time");
  t.dateTime = new Date(when).toISOString();
  t.textContent = stamp(when);
  return li;
}

function render(activity) {
  const who = activity.actor?.displayName ?? activity.actor?.username ?? "someone";
  const li = item(who, activity.content ?? "", activity.published ?? activity.created);
  li.dataset.uuid = activity.uuid;
  return li;
}

/** Adds an activity once (by uuid); `newestFirst` lists show the newest at the top. */
function show(list, activity, newestFirst = false) {
  if (list.querySelector(`[data-uuid="${activity.uuid}"]`)) return;
  place(list, render(activity), newestFirst);
}

function place(list, li, newestFirst) {
  if (newestFirst) {
    list.prepend(li);
    list.scrollTop = 0;
  } else {
    list.append(li);
    list.scrollTop = list.scrollHeight;
  }
}

function logFrame({ direction, text }) {
  const li = document.createElement("li");
  li.className = direction;
  li.textContent = `${direction === "out" ? "→" : "←"} ${text}`;
  $("frames").prepend(li);
  while ($("frames").children.length > 200) $("frames").lastChild.remove();
}

/** The online list: everyone present in the lobby, away when all their tabs are. */
function renderOnline() {
  const users = [...(presence?.state.values() ?? [])].sort((a, b) => a.username.localeCompare(b.username));
  $("online").replaceChildren(
    ...users.map((u) => {
      const away = u.connections.every((c) => c.state.status === "away");
      const li = document.createElement("li");
      li.dataset.username = u.username;
      li.dataset.status = away ? "away" : "online";
      li.title = away ? "away" : "online";
      li.textContent = u.username === me ? `${u.username} (you)` : u.username;
      return li;
    }),
  );
  $("online-count").textContent = users.length ? String(users.length) : "";
}

/** Who is typing, by username, each with the timer that hides them. */
const typers = new Map();

function renderTyping() {
  const names = [...typers.keys()].sort();
  $("typing").textContent =
    names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` :
    names.length === 2 ? `${names[0]} and ${names[1]} are typing…` :
    `${names.length} people are typing…`;
}

function typing(username, on) {
  clearTimeout(typers.get(username));
  if (on) typers.set(username, setTimeout(() => typing(username, false), TYPING_SHOWN_MS));
  else typers.delete(username);
  renderTyping();
}

let typingSentAt = 0;

/** Tells the lobby this tab is typing, at most once per TYPING_EVERY_MS. */
function sendTyping(on) {
  if (!client || !presence) return;
  const now = Date.now();
  if (on && now - typingSentAt < TYPING_EVERY_MS) return;
  if (!on && now - typingSentAt >= TYPING_SHOWN_MS) return; // nobody shows it any more
  typingSentAt = on ? now : 0;
  // Ephemeral: one lost while offline or past the server's rate is no loss.
  client.broadcast(ROOM, { typing: on }).catch(() => {});
}

/** This tab is away after AWAY_AFTER_MS without input; any input makes it online again. */
const activity = { last: Date.now(), status: "online", timer: null };

function setStatus(status) {
  if (activity.status === status) return;
  activity.status = status;
  $("me").dataset.status = status;
  presence?.update({ status }).catch(() => {}); // a left presence (logged out) has no state
}

function checkAway() {
  const idle = Date.now() - activity.last;
  if (idle >= AWAY_AFTER_MS) {
    activity.timer = null;
    setStatus("away");
  } else {
    activity.timer = setTimeout(checkAway, AWAY_AFTER_MS - idle);
  }
}

function active() {
  if (document.visibilityState === "hidden") return;
  activity.last = Date.now();
  setStatus("online");
  activity.timer ??= setTimeout(checkAway, AWAY_AFTER_MS);
}
for (const type of ["keydown", "pointerdown", "pointermove", "wheel", "focus"]) {
  window.addEventListener(type, active, { passive: true });
}
document.addEventListener("visibilitychange", active);

function setState(s) {
  $("state").dataset.state = s;
  $("state").textContent = s;
}

async function start(username, accessToken) {
  client = await Client.connect(`${config.ws}${api}`, { accessToken });
  sessionStorage.setItem(SESSION, JSON.stringify({ username, accessToken }));
  setState(client.state);
  client.on("state", setState);
  client.on("frame", logFrame);
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("me").textContent = `as ${username}`;
  me = username;

  // Snapshot and subscribe in one step: nothing is missed between loading and listening.
  const room = await client.subscribe("/groups/lobby/feed", { snapshot: true, limit: 50 }, (e) => {
    if (e.type !== "create") return;
    show($("room"), e.entity);
    const who = e.entity.actor?.username;
    if (who && typers.has(who)) typing(who, false); // the message they were typing came
  });
  [...(room.snapshot?.entities ?? [])].reverse().forEach((a) => show($("room"), a));
  // Presence survives reconnects by itself: the list follows its events.
  try {
    presence = await client.presence(ROOM, { status: activity.status });
    for (const type of ["join", "leave", "update", "sync", "ended"]) presence.on(type, renderOnline);
    presence.on("leave", (e) => typers.has(e.user.username) && typing(e.user.username, false));
    presence.on("broadcast", (e) => {
      // Another tab of mine typing is not news.
      if (e.from.username !== me && typeof e.body?.typing === "boolean") typing(e.from.username, e.body.typing);
    });
    renderOnline();
  } catch (err) {
    $("online").dataset.error = `online list unavailable: ${err.message}`;
  }
  activity.timer ??= setTimeout(checkAway, AWAY_AFTER_MS);
  const inbox = await client.subscribe("/users/me/feed", { snapshot: true, limit: 20 }, (e) => {
    if (e.type === "create") show($("inbox"), e.entity, true);
  });
  [...(inbox.snapshot?.entities ?? [])].reverse().forEach((a) => show($("inbox"), a, true));

  const [people, following] = await Promise.all([
    client.get("/users", { limit: 20 }),
    client.get("/users/me/following", { limit: 100 }),
  ]);
  const followed = new Set((following.entities ?? []).map((u) => u.username));
  for (const u of people.entities ?? []) {
    if (u.username === username) continue;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "follow";
    const render = () => {
      const on = followed.has(u.username);
      b.textContent = on ? `Following ${u.username}` : `Follow ${u.username}`;
      b.setAttribute("aria-pressed", String(on));
    };
    render();
    b.onclick = async () => {
      b.disabled = true;
      const path = `/users/me/following/users/${u.username}`;
      try {
        if (followed.has(u.username)) {
          await client.delete(path);
          followed.delete(u.username);
        } else {
          await client.post(path, {});
          followed.add(u.username);
        }
      } finally {
        b.disabled = false;
        render();
      }
    };
    $("people").append(b);
  }
}

/**
 * A composer: the message shows at once as pending (it waits for the connection if it is
 * down), becomes a normal message once the server has it, and is never dropped: if it cannot
 * be sent it stays, marked, with a way to send it again.
 */
function composer(form, input, list, path, newestFirst) {
  $(form).addEventListener("submit", (e) => {
    e.preventDefault();
    const content = $(input).value.trim();
    if (!content || !client) return;
    $(input).value = "";
    if (input === "room-input") sendTyping(false);
    const li = item("me", content, Date.now());
    const send = async () => {
      li.className = "pending";
      li.title = "sending…";
      try {
        const res = await client.post(path, { content, verb: "post" }, { timeoutMs: SEND_TIMEOUT_MS });
        const activity = res.entities?.[0];
        if (!activity || $(list).querySelector(`[data-uuid="${activity.uuid}"]`)) {
          li.remove(); // the live event came first
        } else {
          li.replaceWith(render(activity));
        }
      } catch (err) {
        li.className = "failed";
        li.title = `not sent (${err.code}): click to send again`;
        li.onclick = () => {
          li.onclick = null;
          send();
        };
      }
    };
    place($(list), li, newestFirst);
    send();
  });
}
composer("room-form", "room-input", "room", "/groups/lobby/activities", false);
$("room-input").addEventListener("input", () => sendTyping($("room-input").value !== ""));
composer("followers-form", "followers-input", "inbox", "/users/me/activities", true);

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    const username = $("username").value;
    await start(username, await token(username, $("password").value));
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("signup").addEventListener("click", async () => {
  const username = $("username").value;
  const password = $("password").value;
  const res = await fetch(`${api}/users`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = await res.json();
  if (!res.ok) {
    $("login-error").textContent = body.error_description;
    return;
  }
  try {
    await start(username, await token(username, password));
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

$("logout").addEventListener("click", () => {
  client?.close();
  client = undefined;
  presence = undefined;
  for (const who of [...typers.keys()]) typing(who, false);
  typingSentAt = 0;
  sessionStorage.removeItem(SESSION);
  for (const id of ["room", "inbox", "people", "frames"]) $(id).replaceChildren();
  renderOnline();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  setState("closed");
});

// Still logged in from before a reload (this tab only).
const saved = JSON.parse(sessionStorage.getItem(SESSION) ?? "null");
if (saved) {
  start(saved.username, saved.accessToken).catch(() => sessionStorage.removeItem(SESSION));
}
