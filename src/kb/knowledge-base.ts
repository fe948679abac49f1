import { KbError } from "../errors";
import { flagText } from "../extract/injection-flags";
import { base64url } from "../util/bytes";
import { yieldToEventLoop } from "../util/yield";
import type { AtomCipher, AtomFields, Provenance } from "./atom-cipher";
import type { Embedder } from "./embedder";
import { contentHash, type EmbeddingCache, type PendingCacheRow } from "./embedding-cache";
import type { AtomFilter } from "./filters";
import { LIMITS, SQL_IDS_PER_STATEMENT, utf8Length } from "./limits";
import type { VectorRecord, VectorStore, VectorStoreStats } from "./vector-store";

export interface AtomInput {
  readonly id?: string;
  readonly text: string;
  readonly title?: string;
  readonly source?: string;
  readonly tags?: readonly string[];
  /** Set by server code only (extraction runs); the add_atoms tool schema has no such field. */
  readonly provenance?: Provenance;
  readonly flags?: readonly string[];
}

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

export interface SearchHit {
  readonly id: string;
  readonly score: number;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly createdAt: string;
  /** Flags for text that looks like instructions to an agent: treat `text` as untrusted data. */
  readonly flags: string[];
  readonly provenance: Provenance | null;
  readonly text: string;
}

type AtomRow = {
  id: string;
  seq: number;
  key_version: number;
  sealed: ArrayBuffer;
  created_at: number;
  updated_at: number;
};

/** What one `add` committed: ids created, and ids that existed and were overwritten. */
export type AddResult = {
  readonly added: string[];
  readonly replaced: string[];
};

/**
 * Atoms embedded (local, synchronous embedder) or sealed between two yields to the event loop: one slice is a few
 * milliseconds of CPU, so a 100-atom batch never holds the thread for long (other tenants' objects may share it).
 */
const CPU_SLICE = 10;

export interface KnowledgeBaseDeps {
  readonly sql: SqlStorage;
  /** Runs `fn` as one SQLite transaction (the Durable Object's transactionSync). */
  readonly transaction: <T>(fn: () => T) => T;
  readonly tenant: string;
  readonly store: VectorStore;
  readonly embedder: Embedder;
  readonly cache: EmbeddingCache;
  /** Seals atom text and metadata under the tenant's data key; makes blind tokens for filterable values. */
  readonly cipher: AtomCipher;
  readonly maxAtoms: number;
}

/**
 * One tenant's atoms. Constructed by the tenant object for its own tenant; every statement binds that tenant.
 * Writes are all-or-nothing: inputs are validated, embedded and sealed first, then atom rows, tag tokens, vectors
 * and cache rows commit in one transaction. At rest, an atom's text, title, source and tags exist only sealed
 * under the tenant's data key (src/kb/atom-cipher.ts); tags and source are also stored as blind tokens so filters
 * work. Vectors are stored in the clear (they must be searchable) and are deleted with the atom.
 */
export class KnowledgeBase {
  readonly #d: KnowledgeBaseDeps;
  /**
   * This tenant's writes, one at a time. Each write reads the current rows, then awaits (embedding, sealing, the
   * Vectorize call), then commits what it decided. Without this queue another write can run during those awaits
   * and the commit acts on a stale decision: a duplicate INSERT that fails after its vector already replaced the
   * other write's in Vectorize (stored text and indexed vector disagree), or a count check that no longer holds.
   */
  #writes: Promise<unknown> = Promise.resolve();

  constructor(deps: KnowledgeBaseDeps) {
    this.#d = deps;
  }

  /**
   * Adds or overwrites up to 100 atoms, all or nothing. `onCommit`, if given, runs inside the same SQLite
   * transaction as the atom rows (after them), so whatever it writes (an extraction run's ledger and counts) commits
   * or rolls back with the atoms: it must be synchronous, and a throw in it refuses the whole batch.
   */
  add(inputs: readonly AtomInput[], now = Date.now(), onCommit?: (result: AddResult) => void): Promise<AddResult> {
    return this.#serial(() => this.#add(inputs, now, onCommit));
  }

  delete(ids: readonly string[]): Promise<{ deleted: string[]; notFound: string[] }> {
    return this.#serial(() => this.#delete(ids));
  }

  /**
   * Rotation: re-seals up to `limit` atoms that are under a version older than `target`. Idempotent and
   * resumable: it only ever picks rows still under an old version. Returns how many it re-sealed.
   */
  resealBatch(
    target: number,
    limit: number,
    now = Date.now(),
    inTransaction: (resealed: number) => void = () => {},
  ): Promise<number> {
    return this.#serial(() => this.#resealBatch(target, limit, now, inTransaction));
  }

  /**
   * Offboarding: deletes up to `limit` atoms with their vectors and tag tokens, without opening them.
   * `inTransaction(ids)` runs inside the deleting transaction, before the rows go (the receipt counts them there).
   */
  purgeBatch(limit: number, inTransaction: (ids: readonly string[]) => void = () => {}): Promise<number> {
    return this.#serial(async () => {
      const ids = this.#d.sql
        .exec<{ id: string }>(`SELECT id FROM atoms WHERE tenant = ? ORDER BY seq LIMIT ?`, this.#d.tenant, limit)
        .toArray()
        .map((row) => row.id);
      await this.#remove(ids, inTransaction);
      return ids.length;
    });
  }

  #serial<T>(write: () => Promise<T>): Promise<T> {
    const run = this.#writes.then(write, write);
    this.#writes = run.catch(() => undefined);
    return run;
  }

  async #add(
    inputs: readonly AtomInput[],
    now: number,
    onCommit: ((result: AddResult) => void) | undefined,
  ): Promise<AddResult> {
    const atoms = validateBatch(inputs);
    const existing = new Set(this.#existingIds(atoms.map((atom) => atom.id)));
    const fresh = atoms.length - existing.size;
    if (this.count() + fresh > this.#d.maxAtoms) {
      throw new KbError("ERR_LIMIT", `this tenant's knowledge base is limited to ${this.#d.maxAtoms} atoms`);
    }
    const { vectors, misses } = await this.#embed(atoms.map((atom) => embeddingText(atom)));
    const records: VectorRecord[] = atoms.map((atom, i) => ({ id: atom.id, vector: vectors[i] as Float32Array }));
    const version = await this.#d.cipher.currentVersion();
    const sealed: SealedAtom[] = [];
    for (let i = 0; i < atoms.length; i += CPU_SLICE) {
      if (i > 0) await yieldToEventLoop(); // safe: #serial keeps other writes out until this one commits
      sealed.push(...(await Promise.all(atoms.slice(i, i + CPU_SLICE).map((a) => this.#seal(a.id, version, a)))));
    }
    const result: AddResult = {
      added: atoms.filter((atom) => !existing.has(atom.id)).map((atom) => atom.id),
      replaced: atoms.filter((atom) => existing.has(atom.id)).map((atom) => atom.id),
    };
    await this.#d.store.beforeCommitUpsert(records);
    this.#d.transaction(() => {
      let seq = this.#nextSeq();
      atoms.forEach((atom, i) => {
        const row = sealed[i] as SealedAtom;
        if (existing.has(atom.id)) {
          this.#d.sql.exec(
            `UPDATE atoms SET key_version = ?, sealed = ?, source_token = ?, content_token = ?, updated_at = ?
             WHERE tenant = ? AND id = ?`,
            version,
            row.sealed,
            row.sourceToken,
            row.contentToken,
            now,
            this.#d.tenant,
            atom.id,
          );
        } else {
          this.#d.sql.exec(
            `INSERT INTO atoms (tenant, id, seq, key_version, sealed, source_token, content_token, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            this.#d.tenant,
            atom.id,
            seq++,
            version,
            row.sealed,
            row.sourceToken,
            row.contentToken,
            now,
            now,
          );
        }
        this.#writeTagTokens(atom.id, row.tagTokens);
      });
      this.#d.store.writeUpsertRows(records);
      this.#d.cache.write(this.#d.embedder.model, misses, now);
      onCommit?.(result);
    });
    this.#d.store.afterCommitUpsert(records);
    return result;
  }

  /**
   * Embeds a batch. The local embedder is synchronous CPU: it runs in slices with a yield in between. A remote
   * embedder's call is I/O (the thread is free while it waits), so it gets the whole batch in one call.
   */
  async #embed(texts: string[]): Promise<{ vectors: Float32Array[]; misses: PendingCacheRow[] }> {
    if (this.#d.embedder.cacheable) return this.#d.cache.embed(this.#d.embedder, texts);
    const vectors: Float32Array[] = [];
    const misses: PendingCacheRow[] = [];
    for (let i = 0; i < texts.length; i += CPU_SLICE) {
      if (i > 0) await yieldToEventLoop();
      const part = await this.#d.cache.embed(this.#d.embedder, texts.slice(i, i + CPU_SLICE));
      vectors.push(...part.vectors);
      misses.push(...part.misses);
    }
    return { vectors, misses };
  }

  /** `topK` is 1..LIMITS.topKMax, checked once by the search tool's input schema (src/mcp/tools/kb-tools.ts). */
  async search(query: string, topK: number, filter: AtomFilter | null): Promise<SearchHit[]> {
    if (typeof query !== "string" || query.trim() === "") throw invalid("query must not be empty");
    if (utf8Length(query) > LIMITS.queryBytes) throw invalid(`query is longer than ${LIMITS.queryBytes} bytes`);
    const allowed = filter ? await this.#matchingIds(filter) : null;
    if (allowed && allowed.size === 0) return [];
    const { vectors } = await this.#d.cache.embed(this.#d.embedder, [query]);
    const vector = vectors[0] as Float32Array;
    if (!vector.some((value) => value !== 0)) throw invalid("query has no searchable words");
    const matches = await this.#d.store.query(vector, topK, allowed);
    const atoms = new Map((await this.#open(this.#rows(matches.map((match) => match.id)))).map((a) => [a.id, a]));
    const hits: SearchHit[] = [];
    for (const match of matches) {
      const atom = atoms.get(match.id);
      if (!atom) continue; // e.g. deleted while an eventually consistent index still returns it
      hits.push({
        id: atom.id,
        score: Math.round(match.score * 10_000) / 10_000,
        title: atom.title,
        source: atom.source,
        tags: atom.tags,
        createdAt: atom.createdAt,
        flags: atom.flags,
        provenance: atom.provenance,
        text: atom.text,
      });
    }
    return hits;
  }

  async get(ids: readonly string[]): Promise<Atom[]> {
    checkIds(ids);
    return this.#open(this.#rows(ids));
  }

  /**
   * Removes every atom whose source is `source` (e.g. all atoms extracted from one poisoned document), with their
   * vectors and tag tokens. Returns how many were removed.
   */
  async purgeSource(source: string): Promise<number> {
    if (typeof source !== "string" || source.length === 0 || source.length > LIMITS.sourceChars) {
      throw invalid(`source must be 1 to ${LIMITS.sourceChars} characters`);
    }
    return this.#serial(async () => {
      const ids = [...(await this.#matchingIds({ tagsAny: [], tagsAll: [], sources: [source] }))];
      for (let i = 0; i < ids.length; i += LIMITS.idsPerCall) await this.#remove(ids.slice(i, i + LIMITS.idsPerCall));
      return ids.length;
    });
  }

  async #delete(ids: readonly string[]): Promise<{ deleted: string[]; notFound: string[] }> {
    checkIds(ids);
    const unique = [...new Set(ids)];
    const found = this.#existingIds(unique);
    const foundSet = new Set(found);
    await this.#remove(found);
    return { deleted: found, notFound: unique.filter((id) => !foundSet.has(id)) };
  }

  /** The one delete path (delete_atoms, purge_source, offboarding): atoms, tag tokens and vectors together. */
  async #remove(found: readonly string[], inTransaction: (ids: readonly string[]) => void = () => {}): Promise<void> {
    if (found.length) {
      await this.#d.store.beforeCommitDelete(found);
      this.#d.transaction(() => {
        inTransaction(found);
        for (const id of found) {
          this.#d.sql.exec(`DELETE FROM atoms WHERE tenant = ? AND id = ?`, this.#d.tenant, id);
          this.#d.sql.exec(`DELETE FROM atom_tags WHERE tenant = ? AND atom_id = ?`, this.#d.tenant, id);
        }
        this.#d.store.writeDeleteRows(found);
      });
      this.#d.store.afterCommitDelete(found);
    }
  }

  /** A page of atoms in insertion order, after `afterSeq`. */
  async list(afterSeq: number, limit: number): Promise<{ atoms: Omit<Atom, "text">[]; lastSeq: number | null }> {
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
      atoms: (await this.#open(page)).map(({ text: _text, ...rest }) => rest),
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

  /** Atom ids matching a filter, through blind tokens computed for every key version in use. */
  async #matchingIds(filter: AtomFilter): Promise<Set<string>> {
    const versions = this.keyVersionsInUse();
    const tokens = async (kind: "tag" | "source", values: readonly string[]) =>
      (
        await Promise.all(
          versions.flatMap((version) => values.map((value) => this.#d.cipher.token(version, kind, value))),
        )
      ).flat();
    const tenant = this.#d.tenant;
    const ids = (query: (list: string) => string, wanted: string[], ...extra: SqlStorageValue[]) =>
      new Set(
        this.#d.sql
          .exec<{ id: string }>(query(wanted.map(() => "?").join(",")), tenant, ...wanted, ...extra)
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

  /** Data key versions that seal at least one atom (for filters and for rotation). */
  keyVersionsInUse(): number[] {
    return this.#d.sql
      .exec<{ v: number }>(`SELECT DISTINCT key_version AS v FROM atoms WHERE tenant = ? ORDER BY v`, this.#d.tenant)
      .toArray()
      .map((row) => row.v);
  }

  async #resealBatch(
    target: number,
    limit: number,
    now: number,
    inTransaction: (resealed: number) => void,
  ): Promise<number> {
    const rows = this.#d.sql
      .exec<AtomRow>(
        `SELECT id, seq, key_version, sealed, created_at, updated_at FROM atoms
         WHERE tenant = ? AND key_version < ? ORDER BY seq LIMIT ?`,
        this.#d.tenant,
        target,
        limit,
      )
      .toArray();
    const opened = await this.#open(rows);
    const sealed = await Promise.all(opened.map((atom) => this.#seal(atom.id, target, atom)));
    return this.#d.transaction(() => {
      let resealed = 0;
      opened.forEach((atom, i) => {
        const row = sealed[i] as SealedAtom;
        // The version check makes a concurrent writer's newer row win: it is already under the target.
        const cursor = this.#d.sql.exec(
          `UPDATE atoms SET key_version = ?, sealed = ?, source_token = ?, content_token = ?, updated_at = ?
           WHERE tenant = ? AND id = ? AND key_version < ? RETURNING 1`,
          target,
          row.sealed,
          row.sourceToken,
          row.contentToken,
          now,
          this.#d.tenant,
          atom.id,
          target,
        );
        if (cursor.toArray().length === 0) return;
        resealed++;
        this.#writeTagTokens(atom.id, row.tagTokens);
      });
      // Counted in the transaction that re-seals: a crash cannot leave the count behind the data.
      inTransaction(resealed);
      return resealed;
    });
  }

  #writeTagTokens(atomId: string, tokens: readonly string[]): void {
    this.#d.sql.exec(`DELETE FROM atom_tags WHERE tenant = ? AND atom_id = ?`, this.#d.tenant, atomId);
    for (const token of tokens) {
      this.#d.sql.exec(
        `INSERT OR IGNORE INTO atom_tags (tenant, tag_token, atom_id) VALUES (?, ?, ?)`,
        this.#d.tenant,
        token,
        atomId,
      );
    }
  }

  async #seal(atomId: string, version: number, fields: AtomFields): Promise<SealedAtom> {
    const cipher = this.#d.cipher;
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

  async #open(rows: readonly AtomRow[]): Promise<Atom[]> {
    return Promise.all(
      rows.map(async (row) => {
        const fields = await this.#d.cipher.open(row.id, row.key_version, new Uint8Array(row.sealed));
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
}

interface SealedAtom {
  readonly sealed: Uint8Array;
  readonly sourceToken: string | null;
  readonly contentToken: string;
  readonly tagTokens: string[];
}

interface ValidAtom {
  readonly id: string;
  readonly text: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly flags: string[];
  readonly provenance: Provenance | null;
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
    const flags = [...new Set([...flagText(input.text), ...(input.flags ?? [])])];
    return {
      id,
      text: input.text,
      title,
      source,
      tags: [...new Set(tags as string[])],
      flags,
      provenance: input.provenance ?? null,
    };
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

function invalid(message: string): KbError {
  return new KbError("ERR_INVALID_PARAMS", message);
}

function limit(message: string): KbError {
  return new KbError("ERR_LIMIT", message);
}
