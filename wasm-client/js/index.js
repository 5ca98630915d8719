// The gridsocket package: the wasm client, loaded the same way in browsers and in Node.
import init, { initSync, Client, Subscription } from "./web/gridsocket.js";

const WASM = new URL("./web/gridsocket_bg.wasm", import.meta.url);
let loading;

/** Loads the WebAssembly module once; every entry point awaits it. */
function load() {
  if (!loading) {
    loading = (async () => {
      if (typeof process !== "undefined" && process.versions && process.versions.node) {
        const { readFile } = await import("node:fs/promises");
        initSync({ module: await readFile(WASM) });
      } else {
        await init({ module_or_path: WASM });
      }
    })();
  }
  return loading;
}

const connect = Client.connect;
Client.connect = async function (url, options) {
  await load();
  return connect.call(Client, url, options);
};

/** Most events an `events()` iterator holds for a slow reader before it says `resync`. */
const MAX_BUFFERED = 10000;

Client.prototype.events = function (path, options) {
  const queue = [];
  let wake = null;
  const started = this.subscribe(path, options ?? {}, (event) => {
    if (queue.length >= MAX_BUFFERED) {
      // The reader fell too far behind: drop what is buffered and tell it to refetch.
      queue.length = 0;
      queue.push({ type: "resync", path });
    } else {
      queue.push(event);
    }
    if (wake) {
      const w = wake;
      wake = null;
      w();
    }
  });
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      await started;
      while (queue.length === 0) {
        await new Promise((resolve) => (wake = resolve));
      }
      return { value: queue.shift(), done: false };
    },
    async return() {
      (await started).unsubscribe();
      return { value: undefined, done: true };
    },
  };
};

export { Client, Subscription, load as ready };
