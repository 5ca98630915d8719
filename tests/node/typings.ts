// Compiled with `tsc --noEmit --strict` (typings.test.mjs): the packed package's typings as an
// app uses them. Lines marked @ts-expect-error must stay errors: the typings are that strict.
import WS from "ws";
import {
  Client,
  GridsocketError,
  Presence,
  Subscription,
  type ApiResponse,
  type BroadcastEvent,
  type BroadcastResult,
  type PresenceChangeEvent,
  type PresenceUser,
  type ConnectionState,
  type Entity,
  type GridsocketErrorCode,
  type SubscriptionEvent,
} from "gridsocket";

interface Book {
  title: string;
  price: number;
}

export async function app(token: string): Promise<void> {
  const client: Client = await Client.connect("ws://localhost:8088/demo/chatapp", {
    accessToken: token,
    requestTimeoutMs: 10_000,
    connectTimeoutMs: 5_000,
  });
  // Node without a global WebSocket: the ws package.
  const viaWs = await Client.connect("ws://localhost:8088/demo/chatapp", { WebSocket: WS });
  viaWs.close();
  const refreshing = await Client.connect("ws://localhost:8088/demo/chatapp", {
    getToken: async ({ reason }) => (reason === "initial" ? token : `${token}-again`),
  });
  refreshing.close();

  const state: ConnectionState = client.state;
  await client.ready({ timeoutMs: 1000 });

  // Generic entities.
  const books: ApiResponse<Book> = await client.get<Book>("/books", { ql: "select * where price < 10", limit: 5 });
  const first: Entity<Book> | undefined = books.entities?.[0];
  const price: number | undefined = first?.price;
  const uuid: string | undefined = first?.uuid;
  await client.post<Book>("/books", { title: "Dune", price: 9 }, { timeoutMs: 500 });
  await client.put(`/books/${uuid}`, { price: 10 });
  await client.delete("/books/dune");
  await client.request<Book>({ method: "DELETE", path: "/books/dune", timeoutMs: 100 });
  const untyped = await client.get("/users/me");
  const username = untyped.entities?.[0]?.username; // a JsonValue
  // @ts-expect-error: a JsonValue is not a string without a check
  const notChecked: string = untyped.entities?.[0]?.username;

  // Subscriptions, typed events, every option the server takes.
  const sub: Subscription<Book> = await client.subscribe<Book>(
    "/books",
    { ql: "select * where price < 10", since: 3, snapshot: true, limit: 20, cursor: "c" },
    (e: SubscriptionEvent<Book>) => {
      if (e.type === "revoked") console.log(e.reason);
      else if (e.type === "resync") console.log("refetch", e.path);
      else console.log(e.seq, e.entity.title.toUpperCase(), e.entity.modified);
    },
  );
  const last: number | undefined = sub.lastSeq;
  const snapshotTitle: string | undefined = sub.snapshot?.entities?.[0]?.title;
  sub.unsubscribe();
  await client.subscribe("/queues/jobs", { consumer: "workers", timeout: 5000 }, () => {});
  await client.subscribe<Book>("/books", (e) => e.type === "create" && console.log(e.entity.price));
  // @ts-expect-error: not an option of the server
  await client.subscribe("/books", { qll: "typo" }, () => {});
  for await (const e of client.events<Book>("/books", { ql: "select *" })) {
    if (e.type === "create") console.log(e.entity.title);
    break;
  }

  // Presence: typed states, typed events, a handle that updates and leaves.
  interface Status {
    status: "online" | "away";
  }
  const lobby: Presence<Status> = await client.presence<Status>("/groups/lobby", { status: "online" });
  const path: string = lobby.path;
  for (const user of lobby.state.values()) {
    const u: PresenceUser<Status> = user;
    const away: boolean = u.connections.every((c) => c.state.status === "away");
    console.log(u.uuid, u.username, away);
  }
  const mine: Status = lobby.myState;
  const active: boolean = lobby.active;
  const offJoin: () => void = lobby.on("join", (e) => {
    const joined: "join" = e.type;
    console.log(joined, e.user.username, e.connections[0]?.state.status);
  });
  lobby.on("leave", (e: PresenceChangeEvent<Status, "leave">) => console.log(e.user.uuid, e.connections.length));
  lobby.on("update", (e) => console.log(e.path, e.connections.map((c) => c.state.status)));
  lobby.on("sync", (e) => {
    const reason: "join" | "reconnect" | "resync" = e.reason;
    console.log(reason, e.users.length);
  });
  lobby.on("ended", (e) => console.log(e.error.code));
  lobby.on<{ typing: boolean }>("broadcast", (e) => console.log(e.from.username, e.body.typing));
  offJoin();
  await lobby.update({ status: "away" }, { timeoutMs: 1000 });
  // @ts-expect-error: not a state of this presence
  await lobby.update({ status: "gone" });
  // @ts-expect-error: no such presence event
  lobby.on("joined", () => {});
  // @ts-expect-error: a state is an object
  await client.presence("/groups/lobby", "here");
  await lobby.leave();
  const untypedPresence: Presence = await client.presence("/books/dune");
  console.log(untypedPresence.state.size);

  // Broadcasts: any JSON body (or a typed one), echo, typed results and events.
  const sent: BroadcastResult = await client.broadcast("/groups/lobby", { typing: true }, { echo: true, timeoutMs: 500 });
  const delivered: number = sent.delivered;
  await client.broadcast<string>("/groups/lobby", "hello");
  // @ts-expect-error: not an option of broadcast
  await client.broadcast("/groups/lobby", 1, { echoo: true });
  const offBroadcast = client.on("broadcast", (e: BroadcastEvent) => {
    const sender: string = e.from.uuid;
    console.log(sender, e.path, e.body);
  });
  offBroadcast();
  sub.on<{ cursor: number[] }>("broadcast", (e) => console.log(e.body.cursor.length));
  // @ts-expect-error: a subscription's only event is broadcast
  sub.on("create", () => {});

  // Listeners: one overload per event, typed payloads.
  const offState: () => void = client.on("state", (s: ConnectionState) => console.log(s));
  client.on("error", (e: GridsocketError) => console.log(e.code, e.status));
  client.on("auth", ({ reason }) => console.log(reason === "expiring"));
  client.on("frame", ({ direction, text }) => console.log(direction, text.length));
  // @ts-expect-error: no such event
  client.on("open", () => {});
  offState();

  // Tokens: a promise that rejects on refusal.
  await client.setAccessToken("new").catch((e: unknown) => {
    if (e instanceof GridsocketError && e.code === "forbidden") console.log("another user's token");
  });

  // Errors: a real class, a union of codes.
  try {
    await client.get("/books/none");
  } catch (err) {
    if (err instanceof GridsocketError) {
      const code: GridsocketErrorCode = err.code;
      const status: number = err.status;
      console.log(code, status, err.body?.error_description, err.message);
      // @ts-expect-error: not a code the package raises
      if (err.code === "not_a_code") console.log();
    }
  }
  console.log(state, price, username, notChecked, last, snapshotTitle, path, mine, active, delivered);
  client.close();
}
