import type { AtomCipher, AtomFields, Provenance } from "./atom-cipher";
import { contentHash } from "./embedding-cache";
import type { AtomFilter } from "./filters";
import { SQL_IDS_PER_STATEMENT } from "./limits";

export interface Atom {
  readonly id: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly text: string;
  readonly contentHash: string;
  readonly flags: string[];
  readonly provenance: Provenance | null;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export type AtomRow = {
  id: string;
  seq: number;
  key_version: number;
  sealed: ArrayBuffer;
  created_at: number;
  updated_at: number;
};

/** An atom sealed under one key version, with the blind tokens its filters match on. */
export interface SealedAtom {
  readonly sealed: Uint8Array;
  readonly sourceToken: string | null;
  readonly contentToken: string;
  readonly tagTokens: string[];
}

/**
 * One tenant's atom rows in its object's SQLite: reads, the sealed row format, tag tokens and filter matching.
 * Every statement binds the tenant. It holds no write ordering of its own: the knowledge base serializes writes
 * and calls the write helpers inside its transactions.
 */
export class AtomRows {
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  readonly #cipher: AtomCipher;

  constructor(sql: SqlStorage, tenant: string, cipher: AtomCipher) {
    this.#sql = sql;
    this.#tenant = tenant;
    this.#cipher = cipher;
  }

  count(): number {
    return this.#sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM atoms WHERE tenant = ?`, this.#tenant).one().n;
  }

  nextSeq(): number {
    return (
      (this.#sql.exec<{ s: number | null }>(`SELECT MAX(seq) AS s FROM atoms WHERE tenant = ?`, this.#tenant).one().s ??
        0) + 1
    );
  }

  existingIds(ids: readonly string[]): string[] {
    return this.rows(ids).map((row) => row.id);
  }

  rows(ids: readonly string[]): AtomRow[] {
    const out: AtomRow[] = [];
    for (let i = 0; i < ids.length; i += SQL_IDS_PER_STATEMENT) {
      const chunk = ids.slice(i, i + SQL_IDS_PER_STATEMENT);
      if (!chunk.length) continue;
      out.push(
        ...this.#sql
          .exec<AtomRow>(
            `SELECT * FROM atoms WHERE tenant = ? AND id IN (${chunk.map(() => "?").join(",")})`,
            this.#tenant,
            ...chunk,
          )
          .toArray(),
      );
    }
    return out;
  }

  /** Up to `limit` rows after `afterSeq` in insertion order (one more than asked, to tell whether more follow). */
  page(afterSeq: number, limit: number): AtomRow[] {
    return this.#sql
      .exec<AtomRow>(
        `SELECT * FROM atoms WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?`,
        this.#tenant,
        afterSeq,
        limit + 1,
      )
      .toArray();
  }

  /** Ids of the first `limit` atoms in insertion order (offboarding purges in this order). */
  firstIds(limit: number): string[] {
    return this.#sql
      .exec<{ id: string }>(`SELECT id FROM atoms WHERE tenant = ? ORDER BY seq LIMIT ?`, this.#tenant, limit)
      .toArray()
      .map((row) => row.id);
  }

  /** Rows sealed under a version older than `target`, oldest first (rotation). */
  olderThan(target: number, limit: number): AtomRow[] {
    return this.#sql
      .exec<AtomRow>(
        `SELECT id, seq, key_version, sealed, created_at, updated_at FROM atoms
         WHERE tenant = ? AND key_version < ? ORDER BY seq LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray();
  }

  /** Data key versions that seal at least one atom (for filters and for rotation). */
  keyVersionsInUse(): number[] {
    return this.#sql
      .exec<{ v: number }>(`SELECT DISTINCT key_version AS v FROM atoms WHERE tenant = ? ORDER BY v`, this.#tenant)
      .toArray()
      .map((row) => row.v);
  }

  insert(id: string, seq: number, version: number, row: SealedAtom, now: number): void {
    this.#sql.exec(
      `INSERT INTO atoms (tenant, id, seq, key_version, sealed, source_token, content_token, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      this.#tenant,
      id,
      seq,
      version,
      row.sealed,
      row.sourceToken,
      row.contentToken,
      now,
      now,
    );
    this.#writeTagTokens(id, row.tagTokens);
  }

  /**
   * Replaces a row's sealed content. With `onlyBelow`, only a row still sealed under an older version is touched
   * (rotation: a concurrent writer's newer row wins). Returns whether a row was updated.
   */
  update(id: string, version: number, row: SealedAtom, now: number, onlyBelow?: number): boolean {
    const cursor = this.#sql.exec(
      `UPDATE atoms SET key_version = ?, sealed = ?, source_token = ?, content_token = ?, updated_at = ?
       WHERE tenant = ? AND id = ?${onlyBelow === undefined ? "" : " AND key_version < ?"} RETURNING 1`,
      version,
      row.sealed,
      row.sourceToken,
      row.contentToken,
      now,
      this.#tenant,
      id,
      ...(onlyBelow === undefined ? [] : [onlyBelow]),
    );
    if (cursor.toArray().length === 0) return false;
    this.#writeTagTokens(id, row.tagTokens);
    return true;
  }

  /** Deletes the rows and tag tokens of `ids` (inside the caller's transaction, with the vectors). */
  delete(ids: readonly string[]): void {
    for (const id of ids) {
      this.#sql.exec(`DELETE FROM atoms WHERE tenant = ? AND id = ?`, this.#tenant, id);
      this.#sql.exec(`DELETE FROM atom_tags WHERE tenant = ? AND atom_id = ?`, this.#tenant, id);
    }
  }

  async seal(atomId: string, version: number, fields: AtomFields): Promise<SealedAtom> {
    const cipher = this.#cipher;
    const [sealed, sourceToken, contentToken, tagTokens] = await Promise.all([
      cipher.seal(atomId, version, {
        title: fields.title,
        source: fields.source,
        tags: fields.tags,
        text: fields.text,
        flags: fields.flags ?? [],
        provenance: fields.provenance ?? null,
      }),
      fields.source === null ? Promise.resolve(null) : cipher.token(version, "source", fields.source),
      cipher.token(version, "content", fields.text),
      Promise.all(fields.tags.map((tag) => cipher.token(version, "tag", tag))),
    ]);
    return { sealed, sourceToken, contentToken, tagTokens };
  }

  async open(rows: readonly AtomRow[]): Promise<Atom[]> {
    return Promise.all(
      rows.map(async (row) => {
        const fields = await this.#cipher.open(row.id, row.key_version, new Uint8Array(row.sealed));
        return {
          id: row.id,
          title: fields.title,
          source: fields.source,
          tags: fields.tags,
          text: fields.text,
          contentHash: contentHash(fields.text),
          flags: fields.flags ?? [],
          provenance: fields.provenance ?? null,
          createdAt: new Date(row.created_at).toISOString(),
          updatedAt: new Date(row.updated_at).toISOString(),
        };
      }),
    );
  }

  /** Atom ids matching a filter, through blind tokens computed for every key version in use. */
  async matchingIds(filter: AtomFilter): Promise<Set<string>> {
    const versions = this.keyVersionsInUse();
    const tokens = async (kind: "tag" | "source", values: readonly string[]) =>
      (
        await Promise.all(
          versions.flatMap((version) => values.map((value) => this.#cipher.token(version, kind, value))),
        )
      ).flat();
    const ids = (query: (list: string) => string, wanted: string[], ...extra: SqlStorageValue[]) =>
      new Set(
        this.#sql
          .exec<{ id: string }>(query(wanted.map(() => "?").join(",")), this.#tenant, ...wanted, ...extra)
          .toArray()
          .map((row) => row.id),
      );
    const sets: Set<string>[] = [];
    if (filter.sources.length) {
      sets.push(
        ids(
          (list) => `SELECT id FROM atoms WHERE tenant = ? AND source_token IN (${list})`,
          await tokens("source", filter.sources),
        ),
      );
    }
    if (filter.tagsAny.length) {
      sets.push(
        ids(
          (list) => `SELECT DISTINCT atom_id AS id FROM atom_tags WHERE tenant = ? AND tag_token IN (${list})`,
          await tokens("tag", filter.tagsAny),
        ),
      );
    }
    if (filter.tagsAll.length) {
      // An atom is sealed under one version, so it can hold at most one token per tag value.
      sets.push(
        ids(
          (list) =>
            `SELECT atom_id AS id FROM atom_tags WHERE tenant = ? AND tag_token IN (${list})
             GROUP BY atom_id HAVING COUNT(DISTINCT tag_token) = ?`,
          await tokens("tag", filter.tagsAll),
          filter.tagsAll.length,
        ),
      );
    }
    const [first, ...rest] = sets;
    if (!first) return new Set();
    return new Set([...first].filter((id) => rest.every((set) => set.has(id))));
  }

  #writeTagTokens(atomId: string, tokens: readonly string[]): void {
    this.#sql.exec(`DELETE FROM atom_tags WHERE tenant = ? AND atom_id = ?`, this.#tenant, atomId);
    for (const token of tokens) {
      this.#sql.exec(
        `INSERT OR IGNORE INTO atom_tags (tenant, tag_token, atom_id) VALUES (?, ?, ?)`,
        this.#tenant,
        token,
        atomId,
      );
    }
  }
}
