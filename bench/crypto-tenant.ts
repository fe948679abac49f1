/**
 * Tenants for the offboarding part of the crypto benchmark: a tenant object filled with data key versions,
 * sessions, atoms (KnowledgeBase.add, wired as in bench/knowledge-base.ts) and encrypted documents in R2
 * (EncryptedBlobs.put, the production upload path minus HTTP), all written inside the tenant's own object.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { EncryptedBlobs } from "../src/blob/encrypted-blobs";
import { MasterKeys } from "../src/crypto/master-keys";
import { TenantKeyring } from "../src/crypto/tenant-keyring";
import type { AtomInput } from "../src/kb/knowledge-base";
import type { Corpus } from "./corpus";
import { KiB, now, pseudoRandom } from "./crypto-measure";
import { benchKnowledgeBase } from "./knowledge-base";

export interface TenantShape {
  readonly keyVersions: number;
  readonly sessions: number;
  readonly atoms: number;
  readonly documents: number;
}

export interface SeedReport {
  readonly keyVersions: number;
  readonly sessions: number;
  readonly atoms: number;
  readonly vectors: number;
  readonly cacheRows: number;
  readonly documents: number;
  readonly r2Objects: number;
  readonly documentBytes: number;
  readonly atomsAddMs: number;
  readonly documentsPutMs: number;
}

export function tenantStub(tenant: string): DurableObjectStub<import("../src/tenant/tenant-server").TenantServer> {
  return env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
}

/** Size of document `i`: 1 KiB to 63 KiB, spread deterministically (mean about 32 KiB). */
export function documentSize(i: number): number {
  return (1 + ((i * 37) % 63)) * KiB;
}

function count(sql: SqlStorage, table: string, tenant: string): number {
  return sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE tenant = ?`, tenant).one().n;
}

export async function seedTenant(tenant: string, shape: TenantShape, corpus: Corpus): Promise<SeedReport> {
  return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
    const sql = state.storage.sql;
    // The object remembers the first tenant it served (TenantServer#bindTenant); admin calls refuse an object that
    // never served one. A seeded tenant has "served" (it has data), so bind it the same way.
    sql.exec(`INSERT INTO tenant_meta (key, value) VALUES ('tenant', ?) ON CONFLICT (key) DO NOTHING`, tenant);
    const keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
    await keyring.current();
    for (let v = 1; v < shape.keyVersions; v++) await keyring.rotate();

    const started = Date.now();
    for (let i = 0; i < shape.sessions; i++) {
      const hash = Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0"));
      sql.exec(
        `INSERT INTO mcp_sessions (tenant, subject, session_hash, protocol_version, created_at, last_seen_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
        tenant,
        `user-${i % 25}`,
        hash.join(""),
        "2025-11-25",
        started,
        started,
      );
    }

    let atomsAddMs = 0;
    if (shape.atoms > 0) {
      const { kb } = benchKnowledgeBase(state, tenant, env);
      for (let first = 0; first < shape.atoms; first += 100) {
        const inputs: AtomInput[] = [];
        for (let i = first; i < Math.min(shape.atoms, first + 100); i++) {
          const { text, topic } = corpus.atom(i);
          inputs.push({ id: `a${i}`, text, tags: [`topic-${topic}`], source: `bench/${topic % 16}` });
        }
        const t0 = now();
        await kb.add(inputs);
        atomsAddMs += now() - t0;
      }
    }

    let documentsPutMs = 0;
    let documentBytes = 0;
    if (shape.documents > 0) {
      const blobs = new EncryptedBlobs(env.DOCS, tenant, keyring, sql, (fn) => state.storage.transactionSync(fn));
      for (let i = 0; i < shape.documents; i++) {
        const bytes = pseudoRandom(new Uint8Array(documentSize(i)), 1000 + i);
        const t0 = now();
        await blobs.put(`doc-${i}`, bytes, bytes.byteLength, "application/octet-stream");
        documentsPutMs += now() - t0;
        documentBytes += bytes.byteLength;
      }
    }
    const listed = await env.DOCS.list({ prefix: `t/${tenant}/`, limit: 1000 });
    return {
      keyVersions: count(sql, "tenant_keys", tenant),
      sessions: count(sql, "mcp_sessions", tenant),
      atoms: count(sql, "atoms", tenant),
      vectors: count(sql, "vector_rows", tenant),
      cacheRows: count(sql, "embedding_cache", tenant),
      documents: count(sql, "documents", tenant),
      r2Objects: listed.objects.length,
      documentBytes,
      atomsAddMs: Math.round(atomsAddMs),
      documentsPutMs: Math.round(documentsPutMs),
    };
  });
}

/** What is left of a tenant (keys, sessions, atoms, vectors, documents, R2 objects). */
export async function remaining(tenant: string): Promise<Record<string, number>> {
  return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
    const sql = state.storage.sql;
    const listed = await env.DOCS.list({ prefix: `t/${tenant}/`, limit: 1000 });
    return {
      keys: count(sql, "tenant_keys", tenant),
      sessions: count(sql, "mcp_sessions", tenant),
      atoms: count(sql, "atoms", tenant),
      vectors: count(sql, "vector_rows", tenant),
      documents: count(sql, "documents", tenant),
      cacheRows: count(sql, "embedding_cache", tenant),
      r2Objects: listed.objects.length,
    };
  });
}
