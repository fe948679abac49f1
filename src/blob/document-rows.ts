import { KbError } from "../errors";
import { LIMITS } from "../kb/limits";
import { documentObjectKey } from "./blob-gc";

/**
 * The `documents` table (tenant SQLite): the index of what exists, under which generation and key version; R2
 * holds the bytes (src/blob/encrypted-blobs.ts). Every statement is keyed by the tenant given at construction, and
 * object keys are built from that tenant, a validated id and a generation (src/blob/blob-gc.ts): no client-supplied
 * path reaches R2. The order in which the row and its object change is described, with its invariant, in
 * blob-custody.ts; the conditional updates here only commit over the row that was read (a concurrent write wins).
 */
export interface DocumentMeta {
  readonly id: string;
  readonly size: number;
  readonly contentType: string;
  readonly keyVersion: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export type DocumentRow = {
  id: string;
  /** null: the legacy object key `t/<tenant>/docs/<id>` (rows written before generations). */
  generation: string | null;
  key_version: number;
  size: number;
  content_type: string;
  created_at: number;
  updated_at: number;
};

const COLUMNS = "id, generation, key_version, size, content_type, created_at, updated_at";

export class DocumentRows {
  readonly #sql: SqlStorage;
  readonly #tenant: string;

  constructor(sql: SqlStorage, tenant: string) {
    this.#sql = sql;
    this.#tenant = tenant;
  }

  /** The object key the row names. */
  objectKey(row: DocumentRow): string {
    return documentObjectKey(this.#tenant, row.id, row.generation);
  }

  get(id: string): DocumentRow | undefined {
    return this.#sql
      .exec<DocumentRow>(`SELECT ${COLUMNS} FROM documents WHERE tenant = ? AND id = ?`, this.#tenant, id)
      .toArray()[0];
  }

  /** Inside the commit transaction: the row names `row.generation` from now on (created_at kept on update). */
  upsert(row: DocumentRow): void {
    this.#sql.exec(
      `INSERT INTO documents (tenant, id, generation, key_version, size, content_type, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant, id) DO UPDATE SET generation = excluded.generation,
         key_version = excluded.key_version, size = excluded.size, content_type = excluded.content_type,
         updated_at = excluded.updated_at`,
      this.#tenant,
      row.id,
      row.generation,
      row.key_version,
      row.size,
      row.content_type,
      row.created_at,
      row.updated_at,
    );
  }

  delete(id: string): void {
    this.#sql.exec(`DELETE FROM documents WHERE tenant = ? AND id = ?`, this.#tenant, id);
  }

  /** Deletes the row only if it still names the generation and key version that were read. */
  deleteIfUnchanged(read: DocumentRow): void {
    this.#sql.exec(
      `DELETE FROM documents WHERE tenant = ? AND id = ? AND generation IS ? AND key_version = ?`,
      this.#tenant,
      read.id,
      read.generation,
      read.key_version,
    );
  }

  /**
   * Points the row at `generation` under `version`, only if it still names the generation that was read (a
   * concurrent write wins). Whether it did.
   */
  switchIfUnchanged(read: DocumentRow, generation: string, version: number): boolean {
    const updated = this.#sql.exec(
      `UPDATE documents SET generation = ?, key_version = ?
       WHERE tenant = ? AND id = ? AND generation IS ? AND key_version = ?`,
      generation,
      version,
      this.#tenant,
      read.id,
      read.generation,
      read.key_version,
    ).rowsWritten;
    return updated !== 0;
  }

  list(limit: number, after: string): DocumentRow[] {
    return this.#sql
      .exec<DocumentRow>(
        `SELECT ${COLUMNS} FROM documents WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?`,
        this.#tenant,
        after,
        limit,
      )
      .toArray();
  }

  count(): number {
    return this.#sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM documents WHERE tenant = ?`, this.#tenant).one().n;
  }

  /** Count and bytes of the tenant's documents other than `id` (quota checks). */
  usageExcept(id: string): { n: number; bytes: number } {
    return this.#sql
      .exec<{ n: number; bytes: number }>(
        `SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM documents WHERE tenant = ? AND id != ?`,
        this.#tenant,
        id,
      )
      .one();
  }

  /** Rotation: up to `limit` rows still under a version older than `target`, by id. */
  olderThan(target: number, limit: number): DocumentRow[] {
    return this.#sql
      .exec<DocumentRow>(
        `SELECT ${COLUMNS} FROM documents WHERE tenant = ? AND key_version < ? ORDER BY id LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray();
  }

  keyVersions(): number[] {
    return this.#sql
      .exec<{ v: number }>(`SELECT DISTINCT key_version AS v FROM documents WHERE tenant = ?`, this.#tenant)
      .toArray()
      .map((row) => row.v);
  }
}

export function checkId(id: string): void {
  if (typeof id !== "string" || !LIMITS.idPattern.test(id)) {
    throw new KbError("ERR_INVALID_PARAMS", `document id must match ${LIMITS.idPattern.source}`);
  }
}

export function toMeta(row: DocumentRow): DocumentMeta {
  return {
    id: row.id,
    size: row.size,
    contentType: row.content_type,
    keyVersion: row.key_version,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}
