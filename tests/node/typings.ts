// Compiled with `tsc --noEmit --strict`: the package's typings as an app uses them.
import { Client, type ApiResponse, type SubscriptionEvent, type GridsocketError } from "../../wasm-client/pkg/index.js";

async function app(token: string): Promise<void> {
  const client: Client = await Client.connect("ws://localhost:8088/demo/chatapp", { accessToken: token });
  const me: ApiResponse = await client.get("/users/me", { limit: 1 });
  const name: string | undefined = me.entities?.[0]?.username;
  const created = await client.post("/books", { name: "dune" });
  const uuid: string | undefined = created.entities?.[0]?.uuid;
  await client.put(`/books/${uuid}`, { price: 9 });
  await client.request({ method: "DELETE", path: "/books/dune" });
  const sub = await client.subscribe("/books", { ql: "select * where price < 10", since: 3 }, (e: SubscriptionEvent) => {
    if (e.type === "revoked") console.log(e.reason);
    else if (e.type !== "resync") console.log(e.seq, e.entity.uuid);
  });
  const last: number | undefined = sub.lastSeq;
  sub.unsubscribe();
  for await (const e of client.events("/users/me/feed")) {
    console.log(e.type);
    break;
  }
  const off: () => void = client.on("state", (s) => console.log(s));
  off();
  client.setAccessToken("new");
  try {
    await client.delete("/books/none");
  } catch (err) {
    const e = err as GridsocketError;
    console.log(e.status, e.code, name, last);
  }
  client.close();
}
void app;
