// The app every bundler builds: import the package as an app would, then connect, log in,
// subscribe and receive an event the test pushes. Progress goes to `window.progress`; the test
// reads it. The server's WebSocket URL comes in the page's query string (`?ws=`).
import { Client, GridsocketError } from "gridsocket";

const ws = new URLSearchParams(location.search).get("ws");
const progress = (window.progress = { steps: [] });
const step = (name, detail) => progress.steps.push(detail === undefined ? name : `${name}:${detail}`);

async function main() {
  // Log in over the socket as a guest, then connect as the user (a client stays one user).
  const guest = await Client.connect(ws);
  step("guest", guest.state);
  const login = await guest.post("/token", { grant_type: "password", username: "johndoe", password: "password" });
  guest.close();
  const client = await Client.connect(ws, { accessToken: login.access_token });
  const me = await client.get("/users/me");
  step("user", me.entities?.[0]?.username);
  const missing = await client.get("/nothing-here/really").catch((e) => e);
  step("error", missing instanceof GridsocketError ? missing.code : "not a GridsocketError");
  await client.subscribe("/pushes", (event) => {
    if (event.type === "create") step("event", event.entity.text);
  });
  step("subscribed");
}

main().catch((e) => step("failed", `${e?.code ?? ""} ${e?.message ?? e}`));
