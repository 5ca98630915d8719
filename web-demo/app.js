// The gridsocket chat demo: everything goes through the public `gridsocket` package API.
import { Client } from "./pkg/index.js";

const $ = (id) => document.getElementById(id);
const config = await (await fetch("config.json")).json();
const api = `/${config.org}/${config.app}`;
const SESSION = "gridsocket-demo";
// Offline, a message waits this long for the connection before it counts as not sent.
const SEND_TIMEOUT_MS = 5 * 60 * 1000;
let client;

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

  // Snapshot and subscribe in one step: nothing is missed between loading and listening.
  const room = await client.subscribe("/groups/lobby/feed", { snapshot: true, limit: 50 }, (e) => {
    if (e.type === "create") show($("room"), e.entity);
  });
  [...(room.snapshot?.entities ?? [])].reverse().forEach((a) => show($("room"), a));
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
  sessionStorage.removeItem(SESSION);
  for (const id of ["room", "inbox", "people", "frames"]) $(id).replaceChildren();
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
