import type { TenantKeyring } from "../crypto/tenant-keyring";
import { KbError } from "../errors";
import { hex } from "../util/bytes";

/**
 * Atom text and metadata at rest: AES-256-GCM under the tenant's "atoms" subkey of a data key version, with the
 * tenant, atom id and key version as associated data (a sealed row moved to another atom, tenant or version fails
 * to open). Format: 12-byte IV || ciphertext || tag.
 *
 * Filterable values (tags, source) and the content hash are stored as blind tokens: HMAC-SHA-256 under the
 * tenant's "blind-index" subkey of the same version. Equal values give equal tokens inside one tenant and key
 * version, which is what filtering needs; nothing readable is stored. Vectors are sealed on their own
 * (src/kb/vector-pages.ts, docs/crypto.md).
 */
export interface AtomFields {
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly text: string;
  /** Why this atom's text should be treated as untrusted (src/extract/injection-flags.ts); empty when none. */
  readonly flags?: string[];
  /** Where the atom came from, for atoms written by an extraction run. */
  readonly provenance?: Provenance | null;
}

export interface Provenance {
  readonly document: string;
  readonly run: string;
  readonly contentHash: string;
  readonly extractor: string;
  readonly position: number;
}

export type TokenKind = "tag" | "source" | "content";

const IV_BYTES = 12;
/** Tag and source tokens kept per key version (values repeat across atoms; content tokens do not, and are not kept). */
const TOKEN_CACHE_ENTRIES = 4_096;
/** Stateless; shared (tenant-neutral). */
const UTF8 = new TextEncoder();

export class AtomCipher {
  readonly #keyring: TenantKeyring;
  readonly #tenant: string;
  // Keyed by the keyring's subkey buffer, and every use asks the keyring first: once the keyring destroys a version
  // (and drops its subkeys), nothing cached here can still open or tokenise data under that version.
  #aead = new WeakMap<Uint8Array, CryptoKey>();
  #mac = new WeakMap<Uint8Array, CryptoKey>();
  /** Same keying as #mac: a destroyed version's subkey leaves, and its tokens with it. */
  #tokens = new WeakMap<Uint8Array, Map<string, string>>();

  constructor(keyring: TenantKeyring, tenant: string) {
    this.#keyring = keyring;
    this.#tenant = tenant;
  }

  async currentVersion(): Promise<number> {
    return (await this.#keyring.current()).version;
  }

  async seal(atomId: string, version: number, fields: AtomFields): Promise<Uint8Array> {
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const plaintext = UTF8.encode(JSON.stringify(fields));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: this.#aad(atomId, version) },
        await this.#aeadKey(version),
        plaintext,
      ),
    );
    const out = new Uint8Array(IV_BYTES + sealed.byteLength);
    out.set(iv);
    out.set(sealed, IV_BYTES);
    return out;
  }

  async open(atomId: string, version: number, sealed: Uint8Array): Promise<AtomFields> {
    let plaintext: ArrayBuffer;
    try {
      plaintext = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: sealed.subarray(0, IV_BYTES), additionalData: this.#aad(atomId, version) },
        await this.#aeadKey(version),
        sealed.subarray(IV_BYTES),
      );
    } catch {
      throw new KbError("ERR_DECRYPT", "decryption failed");
    }
    return JSON.parse(new TextDecoder().decode(plaintext)) as AtomFields;
  }

  async token(version: number, kind: TokenKind, value: string): Promise<string> {
    const raw = await this.#keyring.subkey(version, "blind-index"); // ERR_KEY_UNAVAILABLE once destroyed
    const input = `${kind}\0${value}`;
    const cache = kind === "content" ? null : this.#tokenCache(raw);
    const cached = cache?.get(input);
    if (cached !== undefined) return cached;
    const mac = await crypto.subtle.sign("HMAC", await this.#macKey(raw), UTF8.encode(input));
    const token = hex(new Uint8Array(mac, 0, 24));
    if (cache) {
      if (cache.size >= TOKEN_CACHE_ENTRIES) cache.clear();
      cache.set(input, token);
    }
    return token;
  }

  #aad(atomId: string, version: number): Uint8Array {
    return UTF8.encode(`tenant-mcp-kb/atom/v1\0${this.#tenant}\0${atomId}\0${version}`);
  }

  async #aeadKey(version: number): Promise<CryptoKey> {
    const raw = await this.#keyring.subkey(version, "atoms"); // ERR_KEY_UNAVAILABLE once the version is destroyed
    let key = this.#aead.get(raw);
    if (!key) {
      key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
      this.#aead.set(raw, key);
    }
    return key;
  }

  #tokenCache(raw: Uint8Array): Map<string, string> {
    let cache = this.#tokens.get(raw);
    if (!cache) {
      cache = new Map();
      this.#tokens.set(raw, cache);
    }
    return cache;
  }

  async #macKey(raw: Uint8Array): Promise<CryptoKey> {
    let key = this.#mac.get(raw);
    if (!key) {
      key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      this.#mac.set(raw, key);
    }
    return key;
  }

  /**
   * Drops every imported key and kept token (destroyed versions are already unusable: see #aeadKey); the shred
   * and a rotation that destroyed a version call it, so no tag or source value stays in memory as a cache key.
   */
  forget(): void {
    this.#aead = new WeakMap();
    this.#mac = new WeakMap();
    this.#tokens = new WeakMap();
  }
}
