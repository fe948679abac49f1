import { KbError } from "../errors";
import { base64url } from "../util/bytes";
import type { Embedder } from "./embedder";
import { contentHash, type EmbeddingCache } from "./embedding-cache";
import type { AtomFilter } from "./filters";
import { LIMITS, SQL_IDS_PER_STATEMENT, utf8Length } from "./limits";
import type { VectorRecord, VectorStore, VectorStoreStats } from "./vector-store";

export interface AtomInput {
  readonly id?: string;
  readonly text: string;
  readonly title?: string;
  readonly source?: string;
  readonly tags?: readonly string[];
}

export interface Atom {
  readonly id: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly text: string;
  readonly contentHash: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface SearchHit {
  readonly id: string;
  readonly score: number;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly createdAt: string;
  readonly text: string;
}

type AtomRow = {
  id: string;
  seq: number;
  title: string | null;
  source: string | null;
  tags: string;
  text: string;
  content_hash: string;
  created_at: number;
  updated_at: number;
};

export interface KnowledgeBaseDeps {
  readonly sql: SqlStorage;
  /** Runs `fn` as one SQLite transaction (the Durable Object's transactionSync). */
  readonly transaction: <T>(fn: () => T) => T;
  readonly tenant: string;
  readonly store: VectorStore;
  readonly embedder: Embedder;
  readonly cache: EmbeddingCache;
  readonly maxAtoms: number;
}

/**
 * One tenant's atoms. Constructed by the tenant object for its own tenant; every statement binds that tenant.
 * Writes are all-or-nothing: inputs are validated and embedded first, then atom rows, tags, vectors and cache
 * rows commit in one transaction.
 */
export class KnowledgeBase {
  readonly #d: KnowledgeBaseDeps;

  constructor(deps: KnowledgeBaseDeps) {
    this.#d = deps;
  }

  async add(inputs: readonly AtomInput[], now = Date.now()): Promise<{ added: string[]; replaced: string[] }> {
    const atoms = validateBatch(inputs);
    const existing = new Set(this.#existingIds(atoms.map((atom) => atom.id)));
    const fresh = atoms.length - existing.size;
    if (this.count() + fresh > this.#d.maxAtoms) {
      throw new KbError("ERR_LIMIT", `this tenant's knowledge base is limited to ${this.#d.maxAtoms} atoms`);
    }
    const { vectors, misses } = await this.#d.cache.embed(
      this.#d.embedder,
      atoms.map((atom) => embeddingText(atom)),
    );
    const records: VectorRecord[] = atoms.map((atom, i) => ({ id: atom.id, vector: vectors[i] as Float32Array }));
    await this.#d.store.beforeCommitUpsert(records);
    this.#d.transaction(() => {
      let seq = this.#nextSeq();
      for (const atom of atoms) {
        const hash = contentHash(atom.text);
        if (existing.has(atom.id)) {
          this.#d.sql.exec(
            `UPDATE atoms SET title = ?, source = ?, tags = ?, text = ?, content_hash = ?, updated_at = ?
             WHERE tenant = ? AND id = ?`,
            atom.title,
            atom.source,
            JSON.stringify(atom.tags),
            atom.text,
            hash,
            now,
            this.#d.tenant,
            atom.id,
          );
          this.#d.sql.exec(`DELETE FROM atom_tags WHERE tenant = ? AND atom_id = ?`, this.#d.tenant, atom.id);
        } else {
          this.#d.sql.exec(
            `INSERT INTO atoms (tenant, id, seq, title, source, tags, text, content_hash, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            this.#d.tenant,
            atom.id,
            seq++,
            atom.title,
            atom.source,
            JSON.stringify(atom.tags),
            atom.text,
            hash,
            now,
            now,
          );
        }
        for (const tag of atom.tags) {
          this.#d.sql.exec(
            `INSERT INTO atom_tags (tenant, tag, atom_id) VALUES (?, ?, ?)`,
            this.#d.tenant,
            tag,
            atom.id,
          );
        }
      }
      this.#d.store.writeUpsertRows(records);
      this.#d.cache.write(this.#d.embedder.model, misses, now);
    });
    this.#d.store.afterCommitUpsert(records);
    return {
      added: atoms.filter((atom) => !existing.has(atom.id)).map((atom) => atom.id),
      replaced: atoms.filter((atom) => existing.has(atom.id)).map((atom) => atom.id),
    };
  }

  async search(query: string, topK: number, filter: AtomFilter | null): Promise<SearchHit[]> {
    if (typeof query !== "string" || query.trim() === "") throw invalid("query must not be empty");
    if (utf8Length(query) > LIMITS.queryBytes) throw invalid(`query is longer than ${LIMITS.queryBytes} bytes`);
    if (!Number.isInteger(topK) || topK < 1 || topK > LIMITS.topKMax) {
      throw invalid(`top_k must be an integer from 1 to ${LIMITS.topKMax}`);
    }
    const allowed = filter ? this.#matchingIds(filter) : null;
    if (allowed && allowed.size === 0) return [];
    const { vectors } = await this.#d.cache.embed(this.#d.embedder, [query]);
    const vector = vectors[0] as Float32Array;
    if (!vector.some((value) => value !== 0)) throw invalid("query has no searchable words");
    const matches = await this.#d.store.query(vector, topK, allowed);
    const rows = new Map(this.#rows(matches.map((match) => match.id)).map((row) => [row.id, row]));
    const hits: SearchHit[] = [];
    for (const match of matches) {
      const row = rows.get(match.id);
      if (!row) continue; // e.g. deleted while an eventually consistent index still returns it
      hits.push({
        id: row.id,
        score: Math.round(match.score * 10_000) / 10_000,
        title: row.title,
        source: row.source,
        tags: JSON.parse(row.tags) as string[],
        createdAt: new Date(row.created_at).toISOString(),
        text: row.text,
      });
    }
    return hits;
  }

  get(ids: readonly string[]): Atom[] {
    checkIds(ids);
    return this.#rows(ids).map(toAtom);
  }

  async delete(ids: readonly string[]): Promise<{ deleted: string[]; notFound: string[] }> {
    checkIds(ids);
    const unique = [...new Set(ids)];
    const found = this.#existingIds(unique);
    const foundSet = new Set(found);
    if (found.length) {
      await this.#d.store.beforeCommitDelete(found);
      this.#d.transaction(() => {
        for (const id of found) {
          this.#d.sql.exec(`DELETE FROM atoms WHERE tenant = ? AND id = ?`, this.#d.tenant, id);
          this.#d.sql.exec(`DELETE FROM atom_tags WHERE tenant = ? AND atom_id = ?`, this.#d.tenant, id);
        }
        this.#d.store.writeDeleteRows(found);
      });
      this.#d.store.afterCommitDelete(found);
    }
    return { deleted: found, notFound: unique.filter((id) => !foundSet.has(id)) };
  }

  /** A page of atoms in insertion order, after `afterSeq`. */
  list(afterSeq: number, limit: number): { atoms: Omit<Atom, "text">[]; lastSeq: number | null } {
    const rows = this.#d.sql
      .exec<AtomRow>(
        `SELECT * FROM atoms WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?`,
        this.#d.tenant,
        afterSeq,
        limit + 1,
      )
      .toArray();
    const page = rows.slice(0, limit);
    return {
      atoms: page.map((row) => {
        const { text: _text, ...rest } = toAtom(row);
        return rest;
      }),
      lastSeq: rows.length > limit ? (page.at(-1)?.seq ?? null) : null,
    };
  }

  count(): number {
    return this.#d.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM atoms WHERE tenant = ?`, this.#d.tenant).one().n;
  }

  async stats(): Promise<{ atoms: number; index: VectorStoreStats; embedder: string; cachedEmbeddings: number }> {
    return {
      atoms: this.count(),
      index: await this.#d.store.stats(),
      embedder: this.#d.embedder.model,
      cachedEmbeddings: this.#d.cache.count(),
    };
  }

  #nextSeq(): number {
    return (
      (this.#d.sql.exec<{ s: number | null }>(`SELECT MAX(seq) AS s FROM atoms WHERE tenant = ?`, this.#d.tenant).one()
        .s ?? 0) + 1
    );
  }

  #existingIds(ids: readonly string[]): string[] {
    return this.#rows(ids).map((row) => row.id);
  }

  #rows(ids: readonly string[]): AtomRow[] {
    const out: AtomRow[] = [];
    for (let i = 0; i < ids.length; i += SQL_IDS_PER_STATEMENT) {
      const chunk = ids.slice(i, i + SQL_IDS_PER_STATEMENT);
      if (!chunk.length) continue;
      out.push(
        ...this.#d.sql
          .exec<AtomRow>(
            `SELECT * FROM atoms WHERE tenant = ? AND id IN (${chunk.map(() => "?").join(",")})`,
            this.#d.tenant,
            ...chunk,
          )
          .toArray(),
      );
    }
    return out;
  }

  #matchingIds(filter: AtomFilter): Set<string> {
    const sets: Set<string>[] = [];
    const tenant = this.#d.tenant;
    const placeholders = (values: readonly string[]) => values.map(() => "?").join(",");
    if (filter.sources.length) {
      sets.push(
        new Set(
          this.#d.sql
            .exec<{ id: string }>(
              `SELECT id FROM atoms WHERE tenant = ? AND source IN (${placeholders(filter.sources)})`,
              tenant,
              ...filter.sources,
            )
            .toArray()
            .map((row) => row.id),
        ),
      );
    }
    if (filter.tagsAny.length) {
      sets.push(
        new Set(
          this.#d.sql
            .exec<{ atom_id: string }>(
              `SELECT DISTINCT atom_id FROM atom_tags WHERE tenant = ? AND tag IN (${placeholders(filter.tagsAny)})`,
              tenant,
              ...filter.tagsAny,
            )
            .toArray()
            .map((row) => row.atom_id),
        ),
      );
    }
    if (filter.tagsAll.length) {
      sets.push(
        new Set(
          this.#d.sql
            .exec<{ atom_id: string }>(
              `SELECT atom_id FROM atom_tags WHERE tenant = ? AND tag IN (${placeholders(filter.tagsAll)})
               GROUP BY atom_id HAVING COUNT(DISTINCT tag) = ?`,
              tenant,
              ...filter.tagsAll,
              filter.tagsAll.length,
            )
            .toArray()
            .map((row) => row.atom_id),
        ),
      );
    }
    const [first, ...rest] = sets;
    if (!first) return new Set();
    return new Set([...first].filter((id) => rest.every((set) => set.has(id))));
  }
}

interface ValidAtom {
  readonly id: string;
  readonly text: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
}

/** Validates a whole batch before anything is embedded or written; the first problem refuses the batch. */
export function validateBatch(inputs: readonly AtomInput[]): ValidAtom[] {
  if (!Array.isArray(inputs) || inputs.length === 0) throw invalid("atoms must be a non-empty list");
  if (inputs.length > LIMITS.batchSize) throw limit(`at most ${LIMITS.batchSize} atoms per call`);
  const seen = new Set<string>();
  return inputs.map((input, i) => {
    const at = `atoms[${i}]`;
    if (typeof input !== "object" || input === null) throw invalid(`${at} must be an object`);
    if (typeof input.text !== "string" || input.text.trim() === "") throw invalid(`${at}.text must not be empty`);
    if (utf8Length(input.text) > LIMITS.atomTextBytes) {
      throw limit(`${at}.text is longer than ${LIMITS.atomTextBytes} bytes`);
    }
    const id = input.id ?? `a_${base64url(crypto.getRandomValues(new Uint8Array(12)))}`;
    if (typeof id !== "string" || !LIMITS.idPattern.test(id)) {
      throw invalid(`${at}.id must match ${LIMITS.idPattern.source}`);
    }
    if (seen.has(id)) throw invalid(`${at}.id "${id}" appears more than once in this batch`);
    seen.add(id);
    const title = optionalString(input.title, LIMITS.titleChars, `${at}.title`);
    const source = optionalString(input.source, LIMITS.sourceChars, `${at}.source`);
    const tags = input.tags ?? [];
    if (!Array.isArray(tags) || tags.length > LIMITS.tagsPerAtom) {
      throw invalid(`${at}.tags must be a list of at most ${LIMITS.tagsPerAtom} tags`);
    }
    for (const tag of tags) {
      if (typeof tag !== "string" || !LIMITS.tagPattern.test(tag)) {
        throw invalid(`${at}.tags: each tag must be 1-${LIMITS.tagChars} letters, digits or " ._:/-"`);
      }
    }
    return { id, text: input.text, title, source, tags: [...new Set(tags as string[])] };
  });
}

function optionalString(value: unknown, max: number, name: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || value.length === 0 || value.length > max) {
    throw invalid(`${name} must be a non-empty string of at most ${max} characters`);
  }
  return value;
}

function checkIds(ids: readonly string[]): void {
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > LIMITS.idsPerCall) {
    throw invalid(`ids must be a list of 1 to ${LIMITS.idsPerCall} atom ids`);
  }
  for (const id of ids) {
    if (typeof id !== "string" || !LIMITS.idPattern.test(id)) throw invalid(`invalid atom id`);
  }
}

function embeddingText(atom: ValidAtom): string {
  return atom.title ? `${atom.title}\n${atom.text}` : atom.text;
}

function toAtom(row: AtomRow): Atom {
  return {
    id: row.id,
    title: row.title,
    source: row.source,
    tags: JSON.parse(row.tags) as string[],
    text: row.text,
    contentHash: row.content_hash,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

function invalid(message: string): KbError {
  return new KbError("ERR_INVALID_PARAMS", message);
}

function limit(message: string): KbError {
  return new KbError("ERR_LIMIT", message);
}
