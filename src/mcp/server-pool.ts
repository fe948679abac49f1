import type { PreparedMcpServer } from "./server-factory";

/** Idle prepared servers kept per shape, and shapes kept per tenant object (least recently used dropped). */
const MAX_IDLE_PER_SHAPE = 16;
const MAX_SHAPES = 32;

/**
 * Prepared MCP servers of one tenant object (held by the object, for its lifetime: nothing here is module-level,
 * and an evicted object simply prepares new ones). A server is checked out for one request, bound to that
 * request's scope, and comes back when the SDK closes the exchange (the server's `onclose`, after the response
 * was produced or the stream ended); a server never closed is simply not reused. An idle server is unbound, so it
 * holds no request's identity.
 *
 * Every server is prepared under one generation, the tenant's live key versions: its request-state codecs hold
 * those keys. When the generation changes (a rotation created or destroyed a version), or on `clear()` (offboarding),
 * every idle server is dropped and servers still in flight are not taken back, so no server outlives the keys it
 * was built with by more than the request it is serving.
 */
export class ServerPool {
  readonly #idle = new Map<string, PreparedMcpServer[]>();
  #generation: string | null = null;

  /** An idle server for `shape` under `generation`, or a new one from `prepare`; released on the SDK's close. */
  take(shape: string, generation: string, prepare: () => PreparedMcpServer): PreparedMcpServer {
    if (generation !== this.#generation) {
      this.clear();
      this.#generation = generation;
    }
    const idle = this.#idle.get(shape);
    const reused = idle?.pop();
    if (idle) {
      // Most recently used shape last: Map iteration order is the eviction order.
      this.#idle.delete(shape);
      this.#idle.set(shape, idle);
    }
    if (reused) return reused;
    const prepared = prepare();
    const inner = prepared.server.server;
    const previous = inner.onclose;
    inner.onclose = () => {
      previous?.();
      this.#release(prepared, shape, generation);
    };
    return prepared;
  }

  /** Drops every idle server (offboarding; a key generation change). */
  clear(): void {
    this.#idle.clear();
    this.#generation = null;
  }

  #release(prepared: PreparedMcpServer, shape: string, generation: string): void {
    prepared.unbind();
    if (generation !== this.#generation || prepared.server.server.transport !== undefined) return;
    let idle = this.#idle.get(shape);
    if (!idle) {
      if (this.#idle.size >= MAX_SHAPES) {
        const oldest = this.#idle.keys().next().value;
        if (oldest !== undefined) this.#idle.delete(oldest);
      }
      idle = [];
      this.#idle.set(shape, idle);
    }
    if (idle.length < MAX_IDLE_PER_SHAPE && !idle.includes(prepared)) idle.push(prepared);
  }
}
