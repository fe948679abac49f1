import type { Identity } from "../auth/identity";
import { base64url, fromBase64url } from "../util/bytes";

/**
 * Server-minted handles (list cursors, run ids, and the like) for stateless 2026-07-28 clients. A handle is
 * `h1.<payload>.<mac>`: the payload names tenant, subject, kind and expiry, and an HMAC-SHA256 under the tenant's
 * own handle key covers it. `open` accepts a handle only for the same tenant, the same subject and the same kind,
 * before its expiry; anything else is indistinguishable from garbage (it returns null, callers answer "unknown").
 */
export interface HandleClaims<T> {
  readonly kind: string;
  readonly data: T;
}

interface Payload {
  readonly t: string;
  readonly s: string;
  readonly k: string;
  readonly e: number;
  readonly d: unknown;
}

const PREFIX = "h1";
const DOMAIN = new TextEncoder().encode("tenant-mcp-kb/handle/v1\0");
const MAX_HANDLE_LENGTH = 4096;

export class HandleCodec {
  /** The minting key first, then the other keys a handle may have been minted under (older live key versions). */
  readonly #keys: readonly CryptoKey[];
  readonly #identity: Identity;

  private constructor(keys: readonly CryptoKey[], identity: Identity) {
    this.#keys = keys;
    this.#identity = identity;
  }

  /**
   * `rawKeys`: the handle key of the current data key version first, then those of the other live versions. A
   * handle minted under any of them opens (a key rotation does not break outstanding handles); once a version is
   * destroyed its key is no longer passed, and its handles are refused like garbage.
   */
  static async create(rawKeys: Uint8Array | readonly Uint8Array[], identity: Identity): Promise<HandleCodec> {
    const list = rawKeys instanceof Uint8Array ? [rawKeys] : rawKeys;
    if (list.length === 0) throw new RangeError("at least one handle key is needed");
    const keys = await Promise.all(
      list.map((rawKey) => {
        if (rawKey.byteLength < 32) throw new RangeError("handle key must be at least 256 bits");
        return crypto.subtle.importKey("raw", rawKey, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
      }),
    );
    return new HandleCodec(keys, identity);
  }

  async mint<T>(kind: string, data: T, ttlSeconds: number, now = Date.now()): Promise<string> {
    const payload: Payload = {
      t: this.#identity.tenant,
      s: this.#identity.subject,
      k: kind,
      e: Math.floor(now / 1000) + ttlSeconds,
      d: data,
    };
    const body = base64url(new TextEncoder().encode(JSON.stringify(payload)));
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", this.#keys[0] as CryptoKey, macInput(body)));
    const handle = `${PREFIX}.${body}.${base64url(mac)}`;
    if (handle.length > MAX_HANDLE_LENGTH) throw new RangeError("handle data too large");
    return handle;
  }

  async open<T>(kind: string, handle: unknown, now = Date.now()): Promise<T | null> {
    if (typeof handle !== "string" || handle.length > MAX_HANDLE_LENGTH) return null;
    const [prefix, body, macText, ...rest] = handle.split(".");
    if (prefix !== PREFIX || !body || !macText || rest.length) return null;
    const mac = fromBase64url(macText);
    if (!mac) return null;
    // crypto.subtle.verify compares in constant time.
    let verified = false;
    for (const key of this.#keys) {
      if (await crypto.subtle.verify("HMAC", key, mac, macInput(body))) {
        verified = true;
        break;
      }
    }
    if (!verified) return null;
    const bytes = fromBase64url(body);
    if (!bytes) return null;
    let payload: Payload;
    try {
      payload = JSON.parse(new TextDecoder().decode(bytes)) as Payload;
    } catch {
      return null;
    }
    if (
      typeof payload !== "object" ||
      payload === null ||
      payload.t !== this.#identity.tenant ||
      payload.s !== this.#identity.subject ||
      payload.k !== kind ||
      typeof payload.e !== "number" ||
      payload.e * 1000 <= now
    ) {
      return null;
    }
    return payload.d as T;
  }
}

function macInput(body: string): Uint8Array {
  const text = new TextEncoder().encode(body);
  const out = new Uint8Array(DOMAIN.length + text.length);
  out.set(DOMAIN);
  out.set(text, DOMAIN.length);
  return out;
}
