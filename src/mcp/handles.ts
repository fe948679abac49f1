import type { Identity } from "../auth/identity";
import { base64url, fromBase64url } from "../util/bytes";

/**
 * Server-minted handles (list cursors, run ids, and the like) for stateless 2026-07-28 clients. A handle is
 * `h2.<iv ‖ AES-256-GCM ciphertext ‖ tag>` (base64url) under the tenant's handle key: it is opaque (tenant, subject,
 * kind, expiry and data are encrypted, so a handle reveals nothing) and authenticated. Tenant, subject and kind are
 * also bound as associated data, so a handle presented by any other caller, or for another kind, does not even
 * decrypt. `open` accepts a handle only for the same tenant, subject and kind, before its expiry; anything else is
 * indistinguishable from garbage (it returns null, callers answer "unknown").
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

const PREFIX = "h2";
const DOMAIN = "tenant-mcp-kb/handle/v2";
const IV_BYTES = 12;
const TAG_BYTES = 16;
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
        return crypto.subtle.importKey("raw", rawKey.subarray(0, 32), "AES-GCM", false, ["encrypt", "decrypt"]);
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
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: this.#aad(kind) },
        this.#keys[0] as CryptoKey,
        new TextEncoder().encode(JSON.stringify(payload)),
      ),
    );
    const bytes = new Uint8Array(IV_BYTES + sealed.byteLength);
    bytes.set(iv);
    bytes.set(sealed, IV_BYTES);
    const handle = `${PREFIX}.${base64url(bytes)}`;
    if (handle.length > MAX_HANDLE_LENGTH) throw new RangeError("handle data too large");
    return handle;
  }

  async open<T>(kind: string, handle: unknown, now = Date.now()): Promise<T | null> {
    if (typeof handle !== "string" || handle.length > MAX_HANDLE_LENGTH) return null;
    const [prefix, body, ...rest] = handle.split(".");
    if (prefix !== PREFIX || !body || rest.length) return null;
    const bytes = fromBase64url(body);
    if (!bytes || bytes.byteLength < IV_BYTES + TAG_BYTES) return null;
    let plaintext: ArrayBuffer | null = null;
    for (const key of this.#keys) {
      try {
        plaintext = await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: bytes.subarray(0, IV_BYTES), additionalData: this.#aad(kind) },
          key,
          bytes.subarray(IV_BYTES),
        );
        break;
      } catch {
        // not this key (or not authentic): try the next live version
      }
    }
    if (plaintext === null) return null;
    let payload: Payload;
    try {
      payload = JSON.parse(new TextDecoder().decode(plaintext)) as Payload;
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

  #aad(kind: string): Uint8Array {
    return new TextEncoder().encode(`${DOMAIN}\0${this.#identity.tenant}\0${this.#identity.subject}\0${kind}`);
  }
}
