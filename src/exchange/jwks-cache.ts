/**
 * Edge caching of the public JWKS of exchanged tokens (issue 11 item 12). /.well-known/jwks.json is unauthenticated
 * and answered by the registry singleton, so without a cache a flood of requests would all reach that one object.
 * Two layers, both tenant-neutral (the JWKS is the platform's public signing keys, identical for every caller and
 * every tenant, chosen by no request):
 *   1. this per-isolate memo: one registry call per isolate per JWKS_ISOLATE_TTL_MS, concurrent misses share it;
 *   2. the Workers Cache API (caches.default) in the route, keyed by the canonical URL (query ignored), for
 *      JWKS_MAX_AGE_S, shared by the isolates of a location.
 * After a signing-key rotation the admin route clears both in its own isolate and location; elsewhere the old set
 * can be served for at most JWKS_MAX_AGE_S (documented in docs/auth.md).
 */
export const JWKS_MAX_AGE_S = 300;
export const JWKS_ISOLATE_TTL_MS = 60_000;

export type JwksBody = { keys: unknown[] };

export class JwksMemo {
  readonly #ttlMs: number;
  readonly #now: () => number;
  #entry: { at: number; value: Promise<JwksBody> } | null = null;

  constructor(ttlMs = JWKS_ISOLATE_TTL_MS, now: () => number = Date.now) {
    this.#ttlMs = ttlMs;
    this.#now = now;
  }

  /** The cached set, or the loader's (one load for all concurrent callers; a failed load is not kept). */
  get(load: () => Promise<JwksBody>): Promise<JwksBody> {
    const now = this.#now();
    if (this.#entry && now - this.#entry.at < this.#ttlMs) return this.#entry.value;
    const value = load();
    const entry = { at: now, value };
    this.#entry = entry;
    value.catch(() => {
      if (this.#entry === entry) this.#entry = null;
    });
    return value;
  }

  clear(): void {
    this.#entry = null;
  }
}

/** The one memo of this isolate. Tenant-neutral: it holds public platform keys only. */
export const jwksMemo = new JwksMemo();

/** Cache API key: the canonical URL of the JWKS (a query string cannot create new cache entries). */
export function jwksCacheKey(requestUrl: string): Request {
  return new Request(`${new URL(requestUrl).origin}/.well-known/jwks.json`);
}
