import { KbError } from "../errors";
import { yieldToEventLoop } from "../util/yield";
import type { AtomCipher } from "./atom-cipher";
import { type Atom, AtomRows, type SealedAtom } from "./atom-rows";
import { type SearchHit, searchAtoms } from "./atom-search";
import { type AtomInput, checkIds, embeddingText, invalid, validateBatch } from "./atom-validation";
import type { Embedder } from "./embedder";
import type { EmbeddingCache, EmbeddingCacheStats, PendingCacheRow } from "./embedding-cache";
import type { AtomFilter } from "./filters";
import { LIMITS } from "./limits";
import type { VectorRecord, VectorStore, VectorStoreStats } from "./vector-store";

export type { Atom } from "./atom-rows";
export type { SearchHit } from "./atom-search";
export { type AtomInput, validateBatch } from "./atom-validation";

/** What one `add` committed: ids created, and ids that existed and were overwritten. */
export type AddResult = {
  readonly added: string[];
  readonly replaced: string[];
};

/**
 * Characters of atom text embedded (local, synchronous embedder) or sealed between two yields to the event loop:
 * one slice is a few milliseconds of CPU (about 20 µs per 400-character atom to embed, the same to seal), so a
 * batch of large atoms never holds the thread for long (other tenants' objects may share it). A yield costs about
 * a millisecond of wall time in workerd, so slices are sized by work, not by a small atom count.
 */
const SLICE_CHARS = 64 * 1024;

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
 * One tenant's atoms. Constructed by the tenant object for its own tenant; every statement binds that tenant
 * (src/kb/atom-rows.ts). Writes are all-or-nothing: inputs are validated (src/kb/atom-validation.ts), embedded and
 * sealed first, then atom rows, tag tokens, vectors and cache rows commit in one transaction. At rest, an atom's
 * text, title, source and tags exist only sealed under the tenant's data key (src/kb/atom-cipher.ts); tags and
 * source are also stored as blind tokens so filters work. Vectors are stored in the clear (they must be
 * searchable) and are deleted with the atom. Search is src/kb/atom-search.ts.
 */
export class KnowledgeBase {
  readonly #d: KnowledgeBaseDeps;
  readonly #rows: AtomRows;
  /** See count(); null until counted and after a delete. */
  #count: number | null = null;
  /**
   * This tenant's writes, one at a time. Each write reads the current rows, then awaits (embedding, sealing, the
   * Vectorize call), then commits what it decided. Without this queue another write can run during those awaits
   * and the commit acts on a stale decision: a duplicate INSERT that fails after its vector already replaced the
   * other write's in Vectorize (stored text and indexed vector disagree), or a count check that no longer holds.
   */
  #writes: Promise<unknown> = Promise.resolve();

  constructor(deps: KnowledgeBaseDeps) {
    this.#d = deps;
    this.#rows = new AtomRows(deps.sql, deps.tenant, deps.cipher);
  }

  /**
   * Adds or overwrites up to 100 atoms, all or nothing. `onCommit`, if given, runs inside the same SQLite
   * transaction as the atom rows (after them), so whatever it writes (an extraction run's ledger and counts) commits
   * or rolls back with the atoms: it must be synchronous, and a throw in it refuses the whole batch.
   */
  add(inputs: readonly AtomInput[], now = Date.now(), onCommit?: (result: AddResult) => void): Promise<AddResult> {
    return this.#serial(() => this.#add(inputs, now, onCommit));
  }

  /** Deletes atoms by id (delete_atoms, an extraction run's roll-back); unknown ids are reported, not errors. */
  delete(ids: readonly string[]): Promise<{ deleted: string[]; notFound: string[] }> {
    return this.#serial(async () => {
      checkIds(ids);
      const unique = [...new Set(ids)];
      const found = this.#rows.existingIds(unique);
      const foundSet = new Set(found);
      await this.#remove(found);
      return { deleted: found, notFound: unique.filter((id) => !foundSet.has(id)) };
    });
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
      const ids = [...(await this.#rows.matchingIds({ tagsAny: [], tagsAll: [], sources: [source] }))];
      for (let i = 0; i < ids.length; i += LIMITS.idsPerCall) await this.#remove(ids.slice(i, i + LIMITS.idsPerCall));
      return ids.length;
    });
  }

  /**
   * Offboarding: deletes up to `limit` atoms with their vectors and tag tokens, without opening them.
   * `inTransaction(ids)` runs inside the deleting transaction, before the rows go (the receipt counts them there).
   */
  purgeBatch(limit: number, inTransaction: (ids: readonly string[]) => void = () => {}): Promise<number> {
    return this.#serial(async () => {
      const ids = this.#rows.firstIds(limit);
      await this.#remove(ids, inTransaction);
      return ids.length;
    });
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
    return this.#serial(async () => {
      const opened = await this.#rows.open(this.#rows.olderThan(target, limit));
      const sealed = await Promise.all(opened.map((atom) => this.#rows.seal(atom.id, target, atom)));
      return this.#d.transaction(() => {
        let resealed = 0;
        opened.forEach((atom, i) => {
          // The version check makes a concurrent writer's newer row win: it is already under the target.
          if (this.#rows.update(atom.id, target, sealed[i] as SealedAtom, now, target)) resealed++;
        });
        // Counted in the transaction that re-seals: a crash cannot leave the count behind the data.
        inTransaction(resealed);
        return resealed;
      });
    });
  }

  search(query: string, topK: number, filter: AtomFilter | null): Promise<SearchHit[]> {
    const { store, embedder, cache } = this.#d;
    return searchAtoms({ rows: this.#rows, store, embedder, cache }, query, topK, filter);
  }

  async get(ids: readonly string[]): Promise<Atom[]> {
    checkIds(ids);
    return this.#rows.open(this.#rows.rows(ids));
  }

  /** A page of atoms in insertion order, after `afterSeq`. */
  async list(afterSeq: number, limit: number): Promise<{ atoms: Omit<Atom, "text">[]; lastSeq: number | null }> {
    const rows = this.#rows.page(afterSeq, limit);
    const page = rows.slice(0, limit);
    return {
      atoms: (await this.#rows.open(page)).map(({ text: _text, ...rest }) => rest),
      lastSeq: rows.length > limit ? (page.at(-1)?.seq ?? null) : null,
    };
  }

  /**
   * Atoms of this tenant. Counted once per instance, then kept: every write to the atoms goes through this object
   * (#add adds what it committed; #remove recounts on next use), and an instance dies with its object.
   */
  count(): number {
    this.#count ??= this.#rows.count();
    return this.#count;
  }

  async stats(): Promise<{
    atoms: number;
    index: VectorStoreStats;
    embedder: string;
    cachedEmbeddings: number;
    embeddingCache: EmbeddingCacheStats & { cacheable: boolean };
  }> {
    return {
      atoms: this.count(),
      index: await this.#d.store.stats(),
      embedder: this.#d.embedder.model,
      cachedEmbeddings: this.#d.cache.count(),
      embeddingCache: { cacheable: this.#d.embedder.cacheable, ...this.#d.cache.stats() },
    };
  }

  /** Data key versions that seal at least one atom (for filters and for rotation). */
  keyVersionsInUse(): number[] {
    return this.#rows.keyVersionsInUse();
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
    const existing = new Set(this.#rows.existingIds(atoms.map((atom) => atom.id)));
    const fresh = atoms.length - existing.size;
    if (this.count() + fresh > this.#d.maxAtoms) {
      throw new KbError("ERR_LIMIT", `this tenant's knowledge base is limited to ${this.#d.maxAtoms} atoms`);
    }
    const { vectors, misses } = await this.#embed(atoms.map((atom) => embeddingText(atom)));
    const records: VectorRecord[] = atoms.map((atom, i) => ({ id: atom.id, vector: vectors[i] as Float32Array }));
    const version = await this.#d.cipher.currentVersion();
    const sealed: SealedAtom[] = [];
    for (const [i, slice] of slices(atoms, (atom) => atom.text.length).entries()) {
      if (i > 0) await yieldToEventLoop(); // safe: #serial keeps other writes out until this one commits
      sealed.push(...(await Promise.all(slice.map((atom) => this.#rows.seal(atom.id, version, atom)))));
    }
    const result: AddResult = {
      added: atoms.filter((atom) => !existing.has(atom.id)).map((atom) => atom.id),
      replaced: atoms.filter((atom) => existing.has(atom.id)).map((atom) => atom.id),
    };
    await this.#d.store.beforeCommitUpsert(records);
    this.#d.transaction(() => {
      let seq = this.#rows.nextSeq();
      atoms.forEach((atom, i) => {
        const row = sealed[i] as SealedAtom;
        if (existing.has(atom.id)) this.#rows.update(atom.id, version, row, now);
        else this.#rows.insert(atom.id, seq++, version, row, now);
      });
      this.#d.store.writeUpsertRows(records);
      this.#d.cache.write(this.#d.embedder.model, misses, now);
      onCommit?.(result);
    });
    if (this.#count !== null) this.#count += result.added.length; // committed
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
    for (const [i, slice] of slices(texts, (text) => text.length).entries()) {
      if (i > 0) await yieldToEventLoop();
      const part = await this.#d.cache.embed(this.#d.embedder, slice);
      vectors.push(...part.vectors);
      misses.push(...part.misses);
    }
    return { vectors, misses };
  }

  /**
   * The one delete path (delete_atoms, purge_source, offboarding): atom rows, tag tokens and vectors leave in one
   * transaction, with whatever the caller counts in `inTransaction`. Called only inside #serial.
   */
  async #remove(ids: readonly string[], inTransaction: (ids: readonly string[]) => void = () => {}): Promise<void> {
    if (!ids.length) return;
    await this.#d.store.beforeCommitDelete(ids);
    this.#count = null; // recounted on next use, whatever this transaction does
    this.#d.transaction(() => {
      inTransaction(ids);
      this.#rows.delete(ids);
      this.#d.store.writeDeleteRows(ids);
    });
    this.#d.store.afterCommitDelete(ids);
  }
}

/** Consecutive slices of `items` of at most SLICE_CHARS characters each (an item larger than that alone). */
function slices<T>(items: readonly T[], chars: (item: T) => number): T[][] {
  const out: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const item of items) {
    const weight = chars(item);
    if (current.length > 0 && size + weight > SLICE_CHARS) {
      out.push(current);
      current = [];
      size = 0;
    }
    current.push(item);
    size += weight;
  }
  if (current.length > 0) out.push(current);
  return out;
}
