import { createHash } from "node:crypto";
import { SQL_IDS_PER_STATEMENT } from "./limits";
import type { VectorMatch, VectorRecord, VectorStore, VectorStoreStats } from "./vector-store";

/** Documented Vectorize limits (developers.cloudflare.com/vectorize/platform/limits). */
export const VECTORIZE_LIMITS = {
  maxDimensions: 1536,
  maxIdBytes: 64,
  maxNamespaceBytes: 64,
  maxTopKWithoutMetadata: 100,
  maxTopKWithMetadata: 20,
  maxUpsertBatch: 1000,
  maxMetadataBytes: 10_240,
} as const;

/** Filters leaving at most this many atoms are scored exactly through getByIds (see #queryAllowed). */
const EXACT_FILTER_MAX = 200;
const GET_BY_IDS_BATCH = 20;

/** The part of the Vectorize binding the adapter uses (so a test double can stand in for it). */
export type VectorizeLike = Pick<Vectorize, "query" | "upsert" | "deleteByIds" | "describe" | "getByIds">;

export type VectorizePlacement = { readonly mode: "pooled" | "dedicated"; readonly index: VectorizeLike };

/**
 * Vectorize adapter for one tenant. Pooled: every vector and every query carries `namespace = tenant`, set here
 * and never taken from a client. Dedicated: the tenant's own index. In both, vector ids are
 * SHA-256(tenant, atom id), so tenants never collide in a shared index, and results map back to atoms only
 * through this tenant's own id table: a vector that is not this tenant's cannot surface as an atom.
 * Vectorize indexes writes asynchronously: stats report the last mutation and whether it has been processed.
 */
export class VectorizeVectorStore implements VectorStore {
  readonly dimensions: number;
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  readonly #placement: VectorizePlacement;

  constructor(sql: SqlStorage, tenant: string, placement: VectorizePlacement, dimensions: number) {
    if (dimensions > VECTORIZE_LIMITS.maxDimensions) throw new RangeError("Vectorize supports at most 1536 dimensions");
    if (new TextEncoder().encode(tenant).byteLength > VECTORIZE_LIMITS.maxNamespaceBytes) {
      throw new RangeError("tenant id is too long for a Vectorize namespace");
    }
    this.#sql = sql;
    this.#tenant = tenant;
    this.#placement = placement;
    this.dimensions = dimensions;
  }

  vectorId(atomId: string): string {
    return createHash("sha256").update(`${this.#tenant}\0${atomId}`, "utf8").digest("base64url");
  }

  async beforeCommitUpsert(records: readonly VectorRecord[]): Promise<void> {
    for (let i = 0; i < records.length; i += VECTORIZE_LIMITS.maxUpsertBatch) {
      const batch = records.slice(i, i + VECTORIZE_LIMITS.maxUpsertBatch).map((record) => {
        if (record.vector.length !== this.dimensions) throw new RangeError("vector has the wrong number of dimensions");
        return { id: this.vectorId(record.id), values: record.vector, ...this.#namespace() };
      });
      const { mutationId } = await this.#placement.index.upsert(batch);
      const probe = batch[batch.length - 1] as (typeof batch)[number];
      this.#recordMutation(mutationId, { id: probe.id, values: valuesDigest(probe.values) });
    }
  }

  writeUpsertRows(records: readonly VectorRecord[]): void {
    for (const record of records) {
      this.#sql.exec(
        `INSERT INTO vectorize_ids (tenant, vector_id, atom_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
        this.#tenant,
        this.vectorId(record.id),
        record.id,
      );
    }
  }

  afterCommitUpsert(): void {}

  async beforeCommitDelete(ids: readonly string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += VECTORIZE_LIMITS.maxUpsertBatch) {
      const batch = ids.slice(i, i + VECTORIZE_LIMITS.maxUpsertBatch).map((id) => this.vectorId(id));
      const { mutationId } = await this.#placement.index.deleteByIds(batch);
      this.#recordMutation(mutationId, { id: batch[batch.length - 1] as string, values: null });
    }
  }

  writeDeleteRows(ids: readonly string[]): void {
    for (const id of ids) {
      this.#sql.exec(`DELETE FROM vectorize_ids WHERE tenant = ? AND atom_id = ?`, this.#tenant, id);
    }
  }

  afterCommitDelete(): void {}

  async query(vector: Float32Array, topK: number, allowed: ReadonlySet<string> | null): Promise<VectorMatch[]> {
    if (allowed && allowed.size <= EXACT_FILTER_MAX) return this.#queryAllowed(vector, topK, allowed);
    // With a filter, over-fetch the maximum Vectorize allows without metadata and filter on this tenant's rows.
    const want = allowed
      ? VECTORIZE_LIMITS.maxTopKWithoutMetadata
      : Math.min(topK, VECTORIZE_LIMITS.maxTopKWithoutMetadata);
    const result = await this.#placement.index.query(vector, {
      topK: want,
      returnValues: false,
      returnMetadata: "none",
      ...this.#namespace(),
    });
    const matches: VectorMatch[] = [];
    for (const match of result.matches) {
      const row = this.#sql
        .exec<{ atom_id: string }>(
          `SELECT atom_id FROM vectorize_ids WHERE tenant = ? AND vector_id = ?`,
          this.#tenant,
          match.id,
        )
        .toArray()[0];
      if (!row || (allowed && !allowed.has(row.atom_id))) continue;
      matches.push({ id: row.atom_id, score: match.score });
      if (matches.length >= topK) break;
    }
    return matches;
  }

  /**
   * A filter that leaves few atoms: score exactly those atoms' vectors (fetched by id) rather than hoping they rank
   * among the 100 nearest of the whole namespace. Only vectors Vectorize has processed are found, as with query.
   */
  async #queryAllowed(vector: Float32Array, topK: number, allowed: ReadonlySet<string>): Promise<VectorMatch[]> {
    const atomOf = new Map<string, string>();
    const atomIds = [...allowed];
    for (let i = 0; i < atomIds.length; i += SQL_IDS_PER_STATEMENT) {
      const chunk = atomIds.slice(i, i + SQL_IDS_PER_STATEMENT);
      for (const row of this.#sql.exec<{ vector_id: string; atom_id: string }>(
        `SELECT vector_id, atom_id FROM vectorize_ids WHERE tenant = ? AND atom_id IN (${chunk.map(() => "?").join(",")})`,
        this.#tenant,
        ...chunk,
      )) {
        atomOf.set(row.vector_id, row.atom_id);
      }
    }
    const vectorIds = [...atomOf.keys()];
    const matches: VectorMatch[] = [];
    for (let i = 0; i < vectorIds.length; i += GET_BY_IDS_BATCH) {
      for (const found of await this.#placement.index.getByIds(vectorIds.slice(i, i + GET_BY_IDS_BATCH))) {
        const atomId = atomOf.get(found.id);
        if (atomId === undefined || (this.#placement.mode === "pooled" && found.namespace !== this.#tenant)) continue;
        matches.push({ id: atomId, score: cosine(vector, found.values) });
      }
    }
    return matches.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1)).slice(0, topK);
  }

  async stats(): Promise<VectorStoreStats> {
    const info = await this.#placement.index.describe();
    const last = this.#sql
      .exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'vectorize_last_mutation'`)
      .toArray()[0]?.value;
    const mapped = this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM vectorize_ids WHERE tenant = ?`, this.#tenant)
      .one().n;
    const processed = info.processedUpToMutation === undefined ? null : String(info.processedUpToMutation);
    // processedUpToMutation is index-wide: in a pooled index it is usually another tenant's mutation, and mutation
    // ids are not ordered. So when it is not ours, look at the index itself: is our last write's effect visible?
    const pending = last && last !== processed && !(await this.#lastWriteVisible()) ? last : null;
    return {
      backend: this.#placement.mode === "pooled" ? "vectorize-pooled" : "vectorize-dedicated",
      dimensions: this.dimensions,
      // A pooled index counts every tenant's vectors; report this tenant's own.
      vectors: this.#placement.mode === "pooled" ? mapped : info.vectorCount,
      consistency: "eventual",
      pendingMutation: pending,
    };
  }

  #namespace(): { namespace?: string } {
    return this.#placement.mode === "pooled" ? { namespace: this.#tenant } : {};
  }

  /** Records the tenant's last mutation and a probe of its effect: one vector id and its values (null: deleted). */
  #recordMutation(mutationId: string, probe: { id: string; values: string | null }): void {
    for (const [key, value] of [
      ["vectorize_last_mutation", mutationId],
      ["vectorize_last_probe", JSON.stringify(probe)],
    ]) {
      this.#sql.exec(
        `INSERT INTO tenant_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
        key,
        value,
      );
    }
  }

  /** Whether the index already shows the effect of this tenant's last mutation (mutations apply in order). */
  async #lastWriteVisible(): Promise<boolean> {
    const raw = this.#sql
      .exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'vectorize_last_probe'`)
      .toArray()[0]?.value;
    if (!raw) return false;
    const probe = JSON.parse(raw) as { id: string; values: string | null };
    const [found] = await this.#placement.index.getByIds([probe.id]);
    return probe.values === null
      ? found === undefined
      : found !== undefined && valuesDigest(found.values) === probe.values;
  }
}

function valuesDigest(values: VectorFloatArray | number[]): string {
  // Vectorize stores float32: compare at that precision.
  return createHash("sha256").update(Float32Array.from(values).join(","), "utf8").digest("base64url");
}

function cosine(a: Float32Array, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}
