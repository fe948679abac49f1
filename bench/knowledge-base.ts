/**
 * The benchmark's knowledge base, wired the way the tenant object wires its own (TenantContext in
 * src/tenant/tenant-context.ts, with local placement and the local embedder): LocalVectorIndex over the object's
 * SQLite, LocalHashEmbedder keyed under the tenant's embedder key (local-keyed-v2, as every new tenant gets it),
 * EmbeddingCache, transactionSync, and the atom cipher (TenantKeyring under the master
 * keys from the environment, as vitest.config.ts configures them). TenantContext keeps its index private, and the
 * bench must call the index directly, so the wiring is repeated here, in one place.
 */
import { MasterKeys } from "../src/crypto/master-keys";
import { TenantKeyring } from "../src/crypto/tenant-keyring";
import { AtomCipher } from "../src/kb/atom-cipher";
import { LOCAL_DIMENSIONS, LocalHashEmbedder } from "../src/kb/embedder";
import { resolveHashMode } from "../src/kb/embedder-key";
import { EmbeddingCache } from "../src/kb/embedding-cache";
import { KnowledgeBase } from "../src/kb/knowledge-base";
import { LIMITS } from "../src/kb/limits";
import { LocalVectorIndex } from "../src/kb/local-index";
import { VectorSealer } from "../src/kb/vector-pages";

export interface BenchKnowledgeBase {
  readonly kb: KnowledgeBase;
  readonly index: LocalVectorIndex;
  readonly sealer: VectorSealer;
  /** The tenant's keyed local embedder (queries for the index-level measures must be embedded with it). */
  readonly embedder: LocalHashEmbedder;
}

/** The tenant's keyed local embedder, as TenantContext builds it (the key is created on first use, then reused). */
export function benchEmbedder(sql: SqlStorage, tenant: string, keyring: TenantKeyring): LocalHashEmbedder {
  return new LocalHashEmbedder(() => resolveHashMode(sql, tenant, keyring, LOCAL_DIMENSIONS));
}

/** The same embedder over a fresh keyring (after eviction). */
export function benchEmbedderFor(sql: SqlStorage, tenant: string, env: object): LocalHashEmbedder {
  return benchEmbedder(sql, tenant, new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env)));
}

/** The index's sealer for `tenant` (its keyring over the object's SQLite, master keys from the environment). */
export function benchSealer(sql: SqlStorage, tenant: string, env: object): VectorSealer {
  return new VectorSealer(new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env)), tenant);
}

export function benchKnowledgeBase(state: DurableObjectState, tenant: string, env: object): BenchKnowledgeBase {
  const sql = state.storage.sql;
  const keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
  const embedder = benchEmbedder(sql, tenant, keyring);
  const sealer = new VectorSealer(keyring, tenant);
  const index = new LocalVectorIndex(sql, tenant, embedder.dimensions, sealer);
  const kb = new KnowledgeBase({
    sql,
    transaction: (fn) => state.storage.transactionSync(fn),
    tenant,
    store: index,
    embedder,
    cache: new EmbeddingCache(sql, tenant, sealer),
    cipher: new AtomCipher(keyring, tenant),
    maxAtoms: LIMITS.localAtomsPerTenant,
  });
  return { kb, index, sealer, embedder };
}
