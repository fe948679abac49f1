import { KbError } from "../errors";
import type { MasterKeys } from "./master-keys";

/**
 * Wrapping of tenant data keys: AES-256-GCM under the epoch's key-encryption key, with the tenant id, the key
 * version and the epoch bound as associated data. A wrapped key copied to another tenant's records, relabelled
 * with another version, or moved to another epoch fails to unwrap. Format: 12-byte random IV || ciphertext || tag.
 */
export interface WrappedKey {
  readonly tenant: string;
  readonly version: number;
  readonly epoch: string;
  readonly wrapped: Uint8Array;
}

const IV_BYTES = 12;

/**
 * Key domains (issue 11 item 6). The domain label leads the associated data, so a key wrapped in one domain never
 * unwraps in another whatever the owner field says: a tenant id (any value, reserved or not) can only ever produce
 * "data-key" associated data, and the registry's signing keys are wrapped as "signing-key". A tenant's local
 * embedder key is wrapped as "embedder-key" (owner = the tenant, version 1: it never rotates). Before, signing keys
 * were data keys of the pseudo-tenant "platform-signing"; signing-keys.ts still reads that format once and rewraps.
 */
export type KeyDomain = "data-key" | "signing-key" | "embedder-key";

function associatedData(domain: KeyDomain, owner: string, version: number, epoch: string): Uint8Array {
  return new TextEncoder().encode(`tenant-mcp-kb/${domain}/v1\0${owner}\0${version}\0${epoch}`);
}

/** Wraps a tenant data key (domain "data-key", owner = the tenant id). */
export function wrapKey(
  master: MasterKeys,
  tenant: string,
  version: number,
  key: Uint8Array,
  epoch = master.current,
): Promise<WrappedKey> {
  return wrapKeyIn("data-key", master, tenant, version, key, epoch);
}

/** Unwraps a tenant data key (domain "data-key"). */
export function unwrapKey(master: MasterKeys, record: WrappedKey): Promise<Uint8Array> {
  return unwrapKeyIn("data-key", master, record);
}

export async function wrapKeyIn(
  domain: KeyDomain,
  master: MasterKeys,
  tenant: string,
  version: number,
  key: Uint8Array,
  epoch = master.current,
): Promise<WrappedKey> {
  if (key.byteLength !== 32) throw new RangeError("data keys are 256 bits");
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: associatedData(domain, tenant, version, epoch) },
      await master.kek(epoch),
      key,
    ),
  );
  const wrapped = new Uint8Array(IV_BYTES + sealed.byteLength);
  wrapped.set(iv);
  wrapped.set(sealed, IV_BYTES);
  return { tenant, version, epoch, wrapped };
}

export async function unwrapKeyIn(domain: KeyDomain, master: MasterKeys, record: WrappedKey): Promise<Uint8Array> {
  if (!master.has(record.epoch)) throw new KbError("ERR_KEY_UNAVAILABLE", "key unavailable");
  if (record.wrapped.byteLength !== IV_BYTES + 32 + 16) throw new KbError("ERR_DECRYPT", "decryption failed");
  try {
    const key = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: record.wrapped.subarray(0, IV_BYTES),
        additionalData: associatedData(domain, record.tenant, record.version, record.epoch),
      },
      await master.kek(record.epoch),
      record.wrapped.subarray(IV_BYTES),
    );
    return new Uint8Array(key);
  } catch {
    throw new KbError("ERR_DECRYPT", "decryption failed");
  }
}
