// The gridsocket chat demo: everything goes through the public `gridsocket` package API.
import { Client } from "./pkg/index.js";

const $ = (id) => document.getElementById(id);
const config = await (await fetch("config.json")).json();
const api = `/${config.org}/${config.app}`;
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

function show(list, activity, newestFirst = false) {
  const li = document.createElement("li");
  const who = activity.actor?.displayName ?? activity.actor?.username ?? "someone";
  const when = new Date(activity.published ?? activity.created).toLocaleTimeString();
  li.innerHTML = `<b></b> <time>${when}</time><p></p>`;
  li.querySelector("b").textContent = who;
  li.querySelector("p").textContent = activity.content ?? "";
  li.dataset.uuid = activity.uuid;
  if (list.querySelector(`[data-uuid="${activity.uuid}"]`)) return;
  newestFirst ? list.prepend(li) : list.append(li);
  list.scrollTop = list.scrollHeight;
}

function logFrame({ direction, text }) {
  const li = document.createElement("li");
  li.className = direction;
  li.textContent = `${direction === "out" ? "→" : "←"} ${text}`;
  $("frames").prepend(li);
  while ($("frames").children.length > 200) $("frames").lastChild.remove();
}

async function start(username, password) {
  const accessToken = await token(username, password);
  client = await Client.connect(`${config.ws}${api}`, { accessToken });
  const state = (s) => {
    $("state").dataset.state = s;
    $("state").textContent = s;
  };
  state(client.state);
  client.on("state", state);
  client.on("frame", logFrame);
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = `as ${username}`;

  // Snapshot and subscribe in one step: nothing is missed between loading and listening.
  const room = await client.subscribe("/groups/lobby/feed", { snapshot: true, limit: 50 }, (e) => {
    if (e.type === "create") show($("room"), e.entity);
  });
  [...(room.snapshot?.entities ?? [])].reverse().forEach((a) => show($("room"), a));
  const inbox = await client.subscribe("/users/me/feed", { snapshot: true, limit: 20 }, (e) => {
    if (e.type === "create") show($("inbox"), e.entity, true);
  });
  (inbox.snapshot?.entities ?? []).forEach((a) => show($("inbox"), a));

  const people = await client.get("/users", { limit: 20 });
  for (const u of people.entities ?? []) {
    if (u.username === username) continue;
    const b = document.createElement("button");
    b.className = "follow";
    b.textContent = `Follow ${u.username}`;
    b.onclick = async () => {
      await client.post(`/users/me/following/users/${u.username}`, {});
      b.textContent = `Following ${u.username}`;
      b.disabled = true;
    };
    $("people").append(b);
  }
}

function composer(form, input, path) {
  $(form).addEventListener("submit", async (e) => {
    e.preventDefault();
    const content = $(input).value.trim();
    if (!content) return;
    $(input).value = "";
    await client.post(path, { content, verb: "post" });
  });
}
composer("room-form", "room-input", "/groups/lobby/activities");
composer("followers-form", "followers-input", "/users/me/activities");

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    await start($("username").value, $("password").value);
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
  // New users join the lobby through the demo's admin-free path: the room is open to all.
  await start(username, password).catch((err) => ($("login-error").textContent = err.message));
});
