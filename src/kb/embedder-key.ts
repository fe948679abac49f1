import type { TenantKeyring } from "../crypto/tenant-keyring";
import { KbError } from "../errors";
import type { HashMode } from "./embedder";
import { KeyedFeatureHasher } from "./keyed-features";
import { sipKey } from "./keyed-hash";

/**
 * Which hash one tenant's local embedder uses, resolved once per embedder instance (one tenant object lifetime),
 * so that queries and stored vectors are always embedded alike:
 *   - the tenant has an embedder key: keyed (local-keyed-v2);
 *   - it has none and no atom: the key is created now (keyed), and any legacy mark is dropped;
 *   - it has none but atoms (their vectors were made with the public hash before keyed hashing existed): unkeyed
 *     (local-hash-v1), marked in tenant_meta `embedder_hash` for the admin status. Such a tenant moves to the keyed
 *     hash in the first object instance that starts with no atom (docs/crypto.md, "The local embedder").
 * Once an embedder key exists the tenant is keyed for good.
 * The two SipHash keys are HKDF-derived from the 256-bit embedder key, bound to the tenant.
 */
export const UNKEYED_FLAG = "unkeyed-v1";

export async function resolveHashMode(
  sql: SqlStorage,
  tenant: string,
  keyring: TenantKeyring,
  dimensions: number,
): Promise<HashMode> {
  if (keyring.shredded()) throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
  let key = await keyring.embedderKey();
  if (!key) {
    const hasAtoms = sql.exec(`SELECT 1 FROM atoms WHERE tenant = ? LIMIT 1`, tenant).toArray().length > 0;
    if (hasAtoms) {
      sql.exec(
        `INSERT INTO tenant_meta (key, value) VALUES ('embedder_hash', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
        UNKEYED_FLAG,
      );
      return { kind: "unkeyed" };
    }
    key = await keyring.createEmbedderKey();
    sql.exec(`DELETE FROM tenant_meta WHERE key = 'embedder_hash'`);
  }
  return { kind: "keyed", hasher: new KeyedFeatureHasher(await deriveSipKeys(key, tenant), dimensions) };
}

/** For the admin status: keyed (with the key's epoch), unkeyed-v1 (a legacy tenant), or none yet. */
export type EmbedderKeyStatus = { hash: "keyed"; epoch: string; createdAt: string } | { hash: "unkeyed-v1" | "none" };

export function embedderKeyStatus(keyring: TenantKeyring, sql: SqlStorage): EmbedderKeyStatus {
  const info = keyring.embedderKeyInfo();
  if (info) return { hash: "keyed", epoch: info.epoch, createdAt: new Date(info.createdAt).toISOString() };
  return { hash: embedderFlag(sql) === UNKEYED_FLAG ? "unkeyed-v1" : "none" };
}

/** `embedder_hash` of tenant_meta: UNKEYED_FLAG for a legacy tenant, else null. */
export function embedderFlag(sql: SqlStorage): string | null {
  return (
    sql.exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'embedder_hash'`).toArray()[0]?.value ?? null
  );
}

async function deriveSipKeys(key: Uint8Array, tenant: string) {
  const ikm = await crypto.subtle.importKey("raw", key, "HKDF", false, ["deriveBits"]);
  const bits = new Uint8Array(
    await crypto.subtle.deriveBits(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new TextEncoder().encode("tenant-mcp-kb/embedder/v1"),
        info: new TextEncoder().encode(tenant),
      },
      ikm,
      256,
    ),
  );
  const keys = { features: sipKey(bits.subarray(0, 16)), pairs: sipKey(bits.subarray(16, 32)) };
  bits.fill(0);
  return keys;
}
