import { QuotaError } from "../errors";

/**
 * Per-tenant quotas, so that one tenant cannot exhaust what tenants share (the isolate, the object's CPU, R2,
 * the extraction pool). Everything here lives in the tenant's own object; nothing is module-level.
 *
 * Request rate: a token bucket per tenant and one per subject, in the tenant object's memory. Every request of a
 * tenant passes through its one object, so the bucket is exact without any coordination (Cloudflare's Rate
 * Limiting binding counts per location and eventually, and would sit before the object); the cost is that the
 * buckets start full again after the object is evicted, which happens only when the tenant is idle.
 *
 * Stored quantities (documents and their bytes, live sessions, queued and running extraction runs) are checked
 * against the tenant's own rows before anything is written, so a refused call writes nothing.
 */
export interface QuotaLimits {
  readonly documents: number;
  readonly documentBytes: number;
  readonly runsQueued: number;
  readonly sessions: number;
  readonly exchangedTokens: number;
  readonly requestsPerMinute: number;
  readonly subjectRequestsPerMinute: number;
}

export const DEFAULT_QUOTAS: QuotaLimits = {
  documents: 10_000,
  documentBytes: 10 * 1024 ** 3,
  runsQueued: 20,
  sessions: 256,
  exchangedTokens: 256,
  requestsPerMinute: 6000,
  subjectRequestsPerMinute: 3000,
};

/** Subjects whose buckets are kept (least recently used beyond it are dropped: they refill to full anyway). */
const MAX_SUBJECT_BUCKETS = 1024;

export class TokenBucket {
  readonly #capacity: number;
  readonly #perMs: number;
  #tokens: number;
  #at: number;

  constructor(perMinute: number, now = Date.now()) {
    this.#capacity = perMinute;
    this.#perMs = perMinute / 60_000;
    this.#tokens = perMinute;
    this.#at = now;
  }

  /** Takes one token, or returns the seconds until one is available. */
  take(now = Date.now()): number | null {
    this.#tokens = Math.min(this.#capacity, this.#tokens + (now - this.#at) * this.#perMs);
    this.#at = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return null;
    }
    return Math.max(1, Math.ceil((1 - this.#tokens) / this.#perMs / 1000));
  }
}

export class RequestRate {
  readonly #limits: QuotaLimits;
  #tenant: TokenBucket | null = null;
  readonly #subjects = new Map<string, TokenBucket>();

  constructor(limits: QuotaLimits) {
    this.#limits = limits;
  }

  /** Admits one request of `subject`, or throws 429 ERR_RATE_LIMITED with the seconds to wait. */
  admit(subject: string, now = Date.now()): void {
    let bucket = this.#subjects.get(subject);
    if (bucket) this.#subjects.delete(subject);
    bucket ??= new TokenBucket(this.#limits.subjectRequestsPerMinute, now);
    this.#subjects.set(subject, bucket);
    if (this.#subjects.size > MAX_SUBJECT_BUCKETS) {
      const oldest = this.#subjects.keys().next().value;
      if (oldest !== undefined) this.#subjects.delete(oldest);
    }
    this.#tenant ??= new TokenBucket(this.#limits.requestsPerMinute, now);
    const wait = bucket.take(now) ?? this.#tenant.take(now);
    if (wait !== null) throw new QuotaError("ERR_RATE_LIMITED", "too many requests for this tenant", wait);
  }
}

/** Throws 429 ERR_QUOTA (nothing written) unless `used + adding` stays within `limit`. */
export function checkQuota(what: string, used: number, adding: number, limit: number, retryAfterS = 60): void {
  if (used + adding > limit) {
    throw new QuotaError("ERR_QUOTA", `this tenant's ${what} quota (${limit}) is used up`, retryAfterS);
  }
}
