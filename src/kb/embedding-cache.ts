import { createHash } from "node:crypto";
import type { Embedder } from "./embedder";

/**
 * Per-tenant embedding cache, keyed (tenant, model, SHA-256 of the text). It lives in the tenant object's own
 * SQLite, so no cache is shared between tenants, and it is purged with the tenant. Misses are returned as rows to
 * insert, so the caller can write them in the same transaction as the atoms (nothing is written for a refused batch).
 */
export interface PendingCacheRow {
  readonly hash: string;
  readonly vector: Float32Array;
}

export function contentHash(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

export class EmbeddingCache {
  readonly #sql: SqlStorage;
  readonly #tenant: string;

  constructor(sql: SqlStorage, tenant: string) {
    this.#sql = sql;
    this.#tenant = tenant;
  }

  async embed(
    embedder: Embedder,
    texts: readonly string[],
  ): Promise<{ vectors: Float32Array[]; misses: PendingCacheRow[] }> {
    if (!embedder.cacheable) return { vectors: await embedder.embed(texts), misses: [] };
    const hashes = texts.map(contentHash);
    const vectors: (Float32Array | undefined)[] = hashes.map((hash) => this.#get(embedder.model, hash));
    const missing = [...new Set(hashes.filter((_, i) => vectors[i] === undefined))];
    const misses: PendingCacheRow[] = [];
    if (missing.length) {
      const fresh = await embedder.embed(missing.map((hash) => texts[hashes.indexOf(hash)] as string));
      const byHash = new Map(missing.map((hash, i) => [hash, fresh[i] as Float32Array]));
      for (let i = 0; i < vectors.length; i++) vectors[i] ??= byHash.get(hashes[i] as string);
      for (const [hash, vector] of byHash) misses.push({ hash, vector });
    }
    return { vectors: vectors as Float32Array[], misses };
  }

  /** Synchronous; call inside the caller's transaction. */
  write(model: string, rows: readonly PendingCacheRow[], now: number): void {
    for (const row of rows) {
      this.#sql.exec(
        `INSERT INTO embedding_cache (tenant, model, content_hash, vector, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant, model, content_hash) DO NOTHING`,
        this.#tenant,
        model,
        row.hash,
        new Uint8Array(row.vector.buffer, row.vector.byteOffset, row.vector.byteLength),
        now,
      );
    }
  }

  count(): number {
    return this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM embedding_cache WHERE tenant = ?`, this.#tenant)
      .one().n;
  }

  #get(model: string, hash: string): Float32Array | undefined {
    const row = this.#sql
      .exec<{ vector: ArrayBuffer }>(
        `SELECT vector FROM embedding_cache WHERE tenant = ? AND model = ? AND content_hash = ?`,
        this.#tenant,
        model,
        hash,
      )
      .toArray()[0];
    return row ? new Float32Array(row.vector) : undefined;
  }
}
