export * from "./web/gridsocket.js";
import type { SubscribeOptions, SubscriptionEvent } from "./web/gridsocket.js";

declare module "./web/gridsocket.js" {
  interface Client {
    /**
     * The events of a subscription as an async iterator; `break` (or `return()`) unsubscribes.
     *
     * @example
     * ```ts
     * for await (const event of client.events("/users/me/feed")) console.log(event.type);
     * ```
     */
    events(path: string, options?: SubscribeOptions): AsyncIterableIterator<SubscriptionEvent>;
  }
}

/** Resolves once the WebAssembly module is loaded ({@link Client.connect} waits for it). */
export function ready(): Promise<void>;
