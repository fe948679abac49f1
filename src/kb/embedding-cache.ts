import { createHash } from "node:crypto";
import type { Embedder } from "./embedder";
import type { VectorSealer } from "./vector-pages";

/**
 * Per-tenant embedding cache, keyed (tenant, model, SHA-256 of the text). It lives in the tenant object's own
 * SQLite, so no cache is shared between tenants, and it is purged with the tenant. Misses are returned as rows to
 * insert, so the caller can write them in the same transaction as the atoms (nothing is written for a refused batch).
 *
 * At rest each cached vector is sealed (AES-256-GCM under the tenant's "vectors" subkey of a data key version,
 * associated data = tenant, model, content hash, version; src/kb/vector-pages.ts): a learned embedding can be
 * inverted by a trained model, so it is never stored in the clear. A row that does not open is a miss.
 */
export interface PendingCacheRow {
  readonly hash: string;
  readonly vector: Float32Array;
  /** Sealed in `embed` (async), written by `write` inside the caller's transaction. */
  readonly version: number;
  readonly sealed: Uint8Array;
}

/**
 * Lookups of this object instance (in memory: they restart at zero when the object is evicted). The instance serves
 * one tenant, so these are that tenant's counts and nobody else's; `uncached` counts texts embedded by an embedder
 * whose results are not cached.
 */
export interface EmbeddingCacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly uncached: number;
}

export function contentHash(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

export class EmbeddingCache {
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  readonly #sealer: VectorSealer;
  #hits = 0;
  #misses = 0;
  #uncached = 0;

  constructor(sql: SqlStorage, tenant: string, sealer: VectorSealer) {
    if (sealer.tenant !== tenant) throw new RangeError("vector sealer belongs to another tenant");
    this.#sql = sql;
    this.#tenant = tenant;
    this.#sealer = sealer;
  }

  async embed(
    embedder: Embedder,
    texts: readonly string[],
  ): Promise<{ vectors: Float32Array[]; misses: PendingCacheRow[] }> {
    if (!embedder.cacheable) {
      this.#uncached += texts.length;
      return { vectors: await embedder.embed(texts), misses: [] };
    }
    const hashes = texts.map(contentHash);
    const vectors: (Float32Array | undefined)[] = await Promise.all(
      hashes.map((hash) => this.#get(embedder.model, hash)),
    );
    const found = vectors.filter((vector) => vector !== undefined).length;
    this.#hits += found;
    this.#misses += texts.length - found;
    const missing = [...new Set(hashes.filter((_, i) => vectors[i] === undefined))];
    const misses: PendingCacheRow[] = [];
    if (missing.length) {
      const fresh = await embedder.embed(missing.map((hash) => texts[hashes.indexOf(hash)] as string));
      const byHash = new Map(missing.map((hash, i) => [hash, fresh[i] as Float32Array]));
      for (let i = 0; i < vectors.length; i++) vectors[i] ??= byHash.get(hashes[i] as string);
      const version = await this.#sealer.currentVersion();
      for (const [hash, vector] of byHash) {
        const sealed = await this.#sealer.sealCached(embedder.model, hash, version, vector);
        misses.push({ hash, vector, version, sealed });
      }
    }
    return { vectors: vectors as Float32Array[], misses };
  }

  /** Synchronous; call inside the caller's transaction. */
  write(model: string, rows: readonly PendingCacheRow[], now: number): void {
    for (const row of rows) {
      this.#sql.exec(
        `INSERT INTO embedding_cache (tenant, model, content_hash, key_version, sealed, created_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant, model, content_hash) DO UPDATE SET key_version = excluded.key_version, sealed = excluded.sealed`,
        this.#tenant,
        model,
        row.hash,
        row.version,
        row.sealed,
        now,
      );
    }
  }

  stats(): EmbeddingCacheStats {
    return { hits: this.#hits, misses: this.#misses, uncached: this.#uncached };
  }

  count(): number {
    return this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM embedding_cache WHERE tenant = ?`, this.#tenant)
      .one().n;
  }

  /** Data key versions sealing at least one cached vector. */
  keyVersionsInUse(): number[] {
    return this.#sql
      .exec<{ v: number }>(
        `SELECT DISTINCT key_version AS v FROM embedding_cache WHERE tenant = ? ORDER BY v`,
        this.#tenant,
      )
      .toArray()
      .map((row) => row.v);
  }

  /**
   * Rotation: re-seals up to `limit` cached vectors still under a version older than `target`; a row that no
   * longer opens is dropped (it is only a cache). A concurrent write of the same row wins. Returns rows handled.
   */
  async resealBatch(target: number, limit: number, transaction: <T>(fn: () => T) => T): Promise<number> {
    const rows = this.#sql
      .exec<{ model: string; content_hash: string; key_version: number; sealed: ArrayBuffer }>(
        `SELECT model, content_hash, key_version, sealed FROM embedding_cache
         WHERE tenant = ? AND key_version < ? LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray();
    const resealed = await Promise.all(
      rows.map(async (row) => {
        const vector = await this.#open(row.model, row.content_hash, row.key_version, row.sealed);
        return {
          row,
          sealed: vector ? await this.#sealer.sealCached(row.model, row.content_hash, target, vector) : null,
        };
      }),
    );
    return transaction(() => {
      for (const { row, sealed } of resealed) {
        const where = `WHERE tenant = ? AND model = ? AND content_hash = ? AND key_version = ?`;
        const key = [this.#tenant, row.model, row.content_hash, row.key_version] as const;
        if (sealed)
          this.#sql.exec(`UPDATE embedding_cache SET key_version = ?, sealed = ? ${where}`, target, sealed, ...key);
        else this.#sql.exec(`DELETE FROM embedding_cache ${where}`, ...key);
      }
      return resealed.length;
    });
  }

  async #get(model: string, hash: string): Promise<Float32Array | undefined> {
    const row = this.#sql
      .exec<{ key_version: number; sealed: ArrayBuffer }>(
        `SELECT key_version, sealed FROM embedding_cache WHERE tenant = ? AND model = ? AND content_hash = ?`,
        this.#tenant,
        model,
        hash,
      )
      .toArray()[0];
    return row ? await this.#open(model, hash, row.key_version, row.sealed) : undefined;
  }

  async #open(model: string, hash: string, version: number, sealed: ArrayBuffer): Promise<Float32Array | undefined> {
    try {
      return await this.#sealer.openCached(model, hash, version, new Uint8Array(sealed));
    } catch {
      return undefined; // a row that does not open (destroyed version, tampered) is a miss, re-embedded
    }
  }
}
