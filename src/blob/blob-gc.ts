/**
 * The `blob_gc` table and the object-key helpers of document custody. Why candidates exist and the order in which
 * R2 and SQLite change are described, with the invariant, in blob-custody.ts.
 */

/** Runs `fn` as one SQLite transaction (the Durable Object's transactionSync): all of it commits, or none. */
export type Transaction = <T>(fn: () => T) => T;

/** Why an object key is a garbage candidate: an upload in progress, or an object a row no longer names. */
export type GarbageReason = "write" | "replaced" | "deleted";

export interface GarbageCandidate {
  readonly objectKey: string;
  readonly documentId: string;
  /** null for the legacy key `t/<tenant>/docs/<id>` (rows written before generations existed). */
  readonly generation: string | null;
  readonly reason: GarbageReason;
}

const GENERATION = /^[0-9a-f]{32}$/;

/**
 * The object key of one generation of a document: `t/<tenant>/docs/<id>/<generation>`, or the legacy
 * `t/<tenant>/docs/<id>` for rows without a generation. Ids never contain `/`, so the two forms never collide.
 */
export function documentObjectKey(tenant: string, id: string, generation: string | null): string {
  if (generation === null) return `t/${tenant}/docs/${id}`;
  if (!GENERATION.test(generation)) throw new Error("invalid document generation");
  return `t/${tenant}/docs/${id}/${generation}`;
}

/**
 * A fresh generation: 128 random bits, so a key is never reused, not even after a delete and a re-create of the
 * same id while the old object still waits for the collector.
 */
export function newGeneration(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

type CandidateRow = { object_key: string; document_id: string; generation: string | null; reason: string };

/** The `blob_gc` table of one tenant: object keys that may exist in R2 without a row naming them. */
export class BlobGarbage {
  readonly #sql: SqlStorage;
  readonly #tenant: string;

  constructor(sql: SqlStorage, tenant: string) {
    this.#sql = sql;
    this.#tenant = tenant;
  }

  /** Records a candidate (idempotent: a key already recorded keeps its first reason and time). */
  record(documentId: string, generation: string | null, reason: GarbageReason, now: number): void {
    this.#sql.exec(
      `INSERT INTO blob_gc (tenant, object_key, document_id, generation, reason, created_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant, object_key) DO NOTHING`,
      this.#tenant,
      documentObjectKey(this.#tenant, documentId, generation),
      documentId,
      generation,
      reason,
      now,
    );
  }

  drop(objectKey: string): void {
    this.#sql.exec(`DELETE FROM blob_gc WHERE tenant = ? AND object_key = ?`, this.#tenant, objectKey);
  }

  has(objectKey: string): boolean {
    return (
      this.#sql.exec(`SELECT 1 FROM blob_gc WHERE tenant = ? AND object_key = ?`, this.#tenant, objectKey).toArray()
        .length > 0
    );
  }

  /** Whether a documents row names this candidate's object (then it is not garbage, whatever the table says). */
  isReferenced(candidate: GarbageCandidate): boolean {
    return (
      this.#sql
        .exec(
          `SELECT 1 FROM documents WHERE tenant = ? AND id = ? AND generation IS ?`,
          this.#tenant,
          candidate.documentId,
          candidate.generation,
        )
        .toArray().length > 0
    );
  }

  /** The oldest `limit` candidates whose key is not in `skip` (uploads this object is streaming right now). */
  candidates(limit: number, skip: ReadonlySet<string>): GarbageCandidate[] {
    return this.#sql
      .exec<CandidateRow>(
        `SELECT object_key, document_id, generation, reason FROM blob_gc WHERE tenant = ?
         ORDER BY created_at, object_key LIMIT ?`,
        this.#tenant,
        limit + skip.size,
      )
      .toArray()
      .filter((row) => !skip.has(row.object_key))
      .slice(0, limit)
      .map((row) => ({
        objectKey: row.object_key,
        documentId: row.document_id,
        generation: row.generation,
        reason: row.reason as GarbageReason,
      }));
  }

  pending(): number {
    return this.#sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM blob_gc WHERE tenant = ?`, this.#tenant).one().n;
  }
}
