import type { TenantKeyring } from "../crypto/tenant-keyring";
import { KbError } from "../errors";

/**
 * Vectors at rest, sealed (docs/crypto.md "Vectors at rest"). Pure packing plus AES-256-GCM under the tenant's
 * "vectors" subkey of a data key version; no SQL here (src/kb/vector-tables.ts owns the tables).
 *
 * - A **page** holds the int8 copies of up to PAGE_ROWS consecutive index rows (row r lives in page
 *   floor(r / PAGE_ROWS) at slot r % PAGE_ROWS), with their scales and atom ids. Associated data binds
 *   tenant, page number and key version: a page copied to another tenant, renumbered or relabelled with another
 *   version fails to open (ERR_DECRYPT).
 * - An **exact row** holds one atom's float32 vector (the re-rank copy), bound to tenant, atom id and version.
 * - A **cached embedding** (src/kb/embedding-cache.ts) is bound to tenant, model, content hash and version.
 *
 * Sealed format: 12-byte random IV || ciphertext || 16-byte tag.
 * Page plaintext: u32 count || u32 idBytes || count x f32 scale || count x dims int8 || ids (UTF-8, "\n"-joined;
 * atom ids cannot contain "\n", LIMITS.idPattern). Little-endian.
 */
export const PAGE_ROWS = 256;
const IV_BYTES = 12;
const HEADER_BYTES = 8;
/** Stateless; shared (tenant-neutral). */
const UTF8 = new TextEncoder();

export interface PageRows {
  readonly ids: string[];
  readonly scales: Float32Array;
  /** count x dims, row-major. */
  readonly q8: Int8Array;
}

export function packPage(rows: PageRows, dims: number): Uint8Array {
  const count = rows.ids.length;
  if (rows.scales.length !== count || rows.q8.length !== count * dims) throw new RangeError("page rows mismatch");
  const ids = UTF8.encode(rows.ids.join("\n"));
  const out = new Uint8Array(HEADER_BYTES + count * 4 + count * dims + ids.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, count, true);
  view.setUint32(4, ids.byteLength, true);
  for (let i = 0; i < count; i++) view.setFloat32(HEADER_BYTES + i * 4, rows.scales[i] as number, true);
  out.set(new Uint8Array(rows.q8.buffer, rows.q8.byteOffset, rows.q8.byteLength), HEADER_BYTES + count * 4);
  out.set(ids, HEADER_BYTES + count * 4 + count * dims);
  return out;
}

export function unpackPage(bytes: Uint8Array, dims: number): PageRows {
  const corrupt = () => new KbError("ERR_DECRYPT", "vector page is malformed");
  if (bytes.byteLength < HEADER_BYTES) throw corrupt();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(0, true);
  const idBytes = view.getUint32(4, true);
  if (count === 0 || count > PAGE_ROWS || bytes.byteLength !== HEADER_BYTES + count * (4 + dims) + idBytes) {
    throw corrupt();
  }
  const scales = new Float32Array(count);
  for (let i = 0; i < count; i++) scales[i] = view.getFloat32(HEADER_BYTES + i * 4, true);
  const q8Start = HEADER_BYTES + count * 4;
  const q8 = new Int8Array(bytes.buffer, bytes.byteOffset + q8Start, count * dims);
  const ids = new TextDecoder().decode(bytes.subarray(q8Start + count * dims)).split("\n");
  if (ids.length !== count) throw corrupt();
  return { ids, scales, q8 };
}

/** Seals and opens pages and exact rows of one tenant. Keys come from the keyring on every call. */
export class VectorSealer {
  readonly #keyring: TenantKeyring;
  readonly #tenant: string;
  // Keyed by the keyring's subkey buffer, which the keyring drops (and zeroes) when a version is destroyed.
  #keys = new WeakMap<Uint8Array, CryptoKey>();

  constructor(keyring: TenantKeyring, tenant: string) {
    this.#keyring = keyring;
    this.#tenant = tenant;
  }

  get tenant(): string {
    return this.#tenant;
  }

  async currentVersion(): Promise<number> {
    return (await this.#keyring.current()).version;
  }

  /** Whether the tenant has no data key at all (shredded, or never written): nothing sealed can be opened. */
  keysDestroyed(): boolean {
    return this.#keyring.list().length === 0;
  }

  sealPage(page: number, version: number, plaintext: Uint8Array): Promise<Uint8Array> {
    return this.#seal(version, this.#pageAad(page, version), plaintext);
  }

  openPage(page: number, version: number, sealed: Uint8Array): Promise<Uint8Array> {
    return this.#open(version, this.#pageAad(page, version), sealed);
  }

  async sealExact(atomId: string, version: number, vector: Float32Array): Promise<Uint8Array> {
    return (await this.sealExactAll(version, [{ id: atomId, vector }]))[0] as Uint8Array;
  }

  /** Exact rows of a batch, under one key lookup; results in the order given. */
  async sealExactAll(
    version: number,
    rows: readonly { readonly id: string; readonly vector: Float32Array }[],
  ): Promise<Uint8Array[]> {
    const key = await this.#key(version);
    return Promise.all(
      rows.map(({ id, vector }) =>
        sealWith(key, this.#exactAad(id, version), new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength)),
      ),
    );
  }

  async openExact(atomId: string, version: number, sealed: Uint8Array): Promise<Float32Array> {
    const bytes = await this.#open(version, this.#exactAad(atomId, version), sealed);
    if (bytes.byteLength % 4 !== 0) throw new KbError("ERR_DECRYPT", "decryption failed");
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }

  sealCached(model: string, hash: string, version: number, vector: Float32Array): Promise<Uint8Array> {
    const bytes = new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength);
    return this.#seal(version, this.#cachedAad(model, hash, version), bytes);
  }

  async openCached(model: string, hash: string, version: number, sealed: Uint8Array): Promise<Float32Array> {
    const bytes = await this.#open(version, this.#cachedAad(model, hash, version), sealed);
    if (bytes.byteLength % 4 !== 0) throw new KbError("ERR_DECRYPT", "decryption failed");
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }

  #cachedAad(model: string, hash: string, version: number): Uint8Array {
    return UTF8.encode(`tenant-mcp-kb/cached-embedding/v1\0${this.#tenant}\0${model}\0${hash}\0${version}`);
  }

  #pageAad(page: number, version: number): Uint8Array {
    return UTF8.encode(`tenant-mcp-kb/vector-page/v1\0${this.#tenant}\0${page}\0${version}`);
  }

  #exactAad(atomId: string, version: number): Uint8Array {
    return UTF8.encode(`tenant-mcp-kb/vector-row/v1\0${this.#tenant}\0${atomId}\0${version}`);
  }

  async #seal(version: number, additionalData: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    return sealWith(await this.#key(version), additionalData, plaintext);
  }

  async #open(version: number, additionalData: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
    const key = await this.#key(version); // ERR_KEY_UNAVAILABLE once the version is destroyed
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: sealed.subarray(0, IV_BYTES), additionalData },
          key,
          sealed.subarray(IV_BYTES),
        ),
      );
    } catch {
      throw new KbError("ERR_DECRYPT", "decryption failed");
    }
  }

  async #key(version: number): Promise<CryptoKey> {
    const raw = await this.#keyring.subkey(version, "vectors");
    let key = this.#keys.get(raw);
    if (!key) {
      key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
      this.#keys.set(raw, key);
    }
    return key;
  }
}

/** 12-byte random IV || AES-256-GCM ciphertext || tag. */
async function sealWith(key: CryptoKey, additionalData: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData }, key, plaintext));
  const out = new Uint8Array(IV_BYTES + sealed.byteLength);
  out.set(iv);
  out.set(sealed, IV_BYTES);
  return out;
}
