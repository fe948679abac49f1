import { KbError } from "../errors";
import { type IndexOp, simulate } from "./index-overlay";
import { quantize } from "./int8-scoring";
import { LiveRows } from "./live-rows";
import { packPage, type VectorSealer } from "./vector-pages";
import type { VectorMatch, VectorRecord, VectorStore, VectorStoreStats } from "./vector-store";
import { type PageWrite, VectorTables } from "./vector-tables";

/** What a write will commit, computed (and sealed) before its transaction; see src/kb/index-overlay.ts. */
interface Plan extends PageWrite {
  /** The live rows' generation the plan was computed from: a plan is only valid against exactly those rows. */
  readonly generation: number;
  readonly ops: readonly IndexOp[];
  readonly exact: { readonly id: string; readonly sealed: Uint8Array }[];
}

/**
 * The embedded vector index of one tenant, inside its Durable Object.
 *
 * At rest (docs/storage.md, docs/crypto.md), everything sealed under the tenant's "vectors" subkey
 * (src/kb/vector-pages.ts, tables in src/kb/vector-tables.ts): `vector_pages` holds the int8 copies with their
 * scales and atom ids, PAGE_ROWS rows a page; `vector_rows` holds each atom's exact float32 vector. Plaintext
 * vectors exist only in this object's memory (src/kb/live-rows.ts: the int8 copies in WebAssembly linear memory).
 * Search (src/kb/live-rows.ts): every row is scored against a 7-bit copy of the query (SIMD), the best 8k get
 * their exact int8 scores, and the best 3k of those are re-scored exactly with their float32 vectors (opened per
 * candidate). Every row is scanned; only the pre-scan and the int8 copies approximate. See BENCHMARKS.md.
 *
 * Invariants:
 * - Row r of the live index is slot r % PAGE_ROWS of page floor(r / PAGE_ROWS); pages 0..P-1 exist, all full but
 *   the last, and each equals the live rows it covers (after every commit; memory changes only after the commit).
 * - Pages and exact rows are written in the caller's transaction together with the atom rows (writeUpsertRows,
 *   writeDeleteRows), so at every commit point the index at rest holds exactly the atoms at rest.
 *
 * Instances are per tenant object; nothing here is module-level except the compiled (stateless) wasm module.
 */
export class LocalVectorIndex implements VectorStore {
  readonly dimensions: number;
  readonly #tables: VectorTables;
  readonly #sealer: VectorSealer;
  #live: LiveRows | null = null;
  #loading: Promise<LiveRows> | null = null;
  /** Bumped by every commit that changes the live rows. */
  #generation = 0;
  /** Bumped by every wipe: a load in flight across a wipe discards what it opened. */
  #wipes = 0;
  /** Plans by the records / ids array the caller passes to all three steps of one write. */
  #plans = new WeakMap<object, Plan>();

  constructor(sql: SqlStorage, tenant: string, dimensions: number, sealer: VectorSealer) {
    if (dimensions % 16 !== 0 || dimensions < 16 || dimensions > 1536) {
      throw new RangeError("local index dimensions must be a multiple of 16 in [16, 1536]");
    }
    if (sealer.tenant !== tenant) throw new RangeError("vector sealer belongs to another tenant");
    this.#tables = new VectorTables(sql, tenant, dimensions, sealer);
    this.#sealer = sealer;
    this.dimensions = dimensions;
  }

  /** Rows in the live index (0 until loaded; see load). */
  get size(): number {
    return this.#live?.size ?? 0;
  }

  /** Bytes held by the in-memory index (wasm memory plus the JS-side row tables, estimated). */
  get memoryBytes(): number {
    return this.#live?.memoryBytes ?? 0;
  }

  /** Reads and opens the pages (once per object lifetime); returns the number of rows. */
  async load(): Promise<number> {
    return (await this.#loaded()).size;
  }

  async beforeCommitUpsert(records: readonly VectorRecord[]): Promise<void> {
    for (const record of records) this.#checkDimensions(record.vector);
    const ops: IndexOp[] = records.map((record) => ({ kind: "put", id: record.id, ...quantize(record.vector) }));
    const plan = await this.#plan(ops);
    const sealed = await this.#sealer.sealExactAll(plan.version, records);
    const exact = records.map((record, i) => ({ id: record.id, sealed: sealed[i] as Uint8Array }));
    this.#plans.set(records, { ...plan, exact });
  }

  writeUpsertRows(records: readonly VectorRecord[]): void {
    const plan = this.#planFor(records);
    this.#tables.writeExact(plan.version, plan.exact);
    this.#tables.writePages(plan);
  }

  afterCommitUpsert(records: readonly VectorRecord[]): void {
    this.#apply(records);
  }

  async beforeCommitDelete(ids: readonly string[]): Promise<void> {
    if (this.#sealer.keysDestroyed()) {
      // Offboarding: nothing sealed can be opened any more, so pages cannot be rewritten; they go wholesale.
      this.#plans.set(ids, {
        generation: this.#generation,
        version: 0,
        ops: [],
        pages: [],
        keepBelow: 0,
        exact: [],
        shredded: true,
      });
      return;
    }
    this.#plans.set(ids, await this.#plan(ids.map((id) => ({ kind: "remove", id }))));
  }

  writeDeleteRows(ids: readonly string[]): void {
    const plan = this.#planFor(ids);
    this.#tables.deleteExact(ids);
    this.#tables.writePages(plan);
  }

  afterCommitDelete(ids: readonly string[]): void {
    this.#apply(ids);
  }

  async query(vector: Float32Array, topK: number, allowed: ReadonlySet<string> | null): Promise<VectorMatch[]> {
    this.#checkDimensions(vector);
    const live = await this.#loaded();
    const candidates = live.shortlist(vector, topK, allowed);
    if (candidates.length === 0) return [];
    return (await this.#tables.exactScores(candidates, vector)).slice(0, topK);
  }

  async stats(): Promise<VectorStoreStats> {
    return {
      backend: "local",
      dimensions: this.dimensions,
      vectors: await this.load(),
      consistency: "synchronous",
      pendingMutation: null,
    };
  }

  /** Data key versions that seal at least one page or exact row (rotation destroys a version only when unused). */
  keyVersionsInUse(): number[] {
    return this.#tables.keyVersionsInUse();
  }

  /**
   * Rotation: re-seals up to `limit` pages and `limit` exact rows still under a version older than `target`.
   * Contents do not change (the live rows equal the pages), so concurrent writes stay valid; a write that commits
   * meanwhile re-seals what it touches under the current version itself. Returns how many were re-sealed.
   */
  async resealBatch(target: number, limit: number, transaction: <T>(fn: () => T) => T): Promise<number> {
    const live = await this.#loaded();
    const generation = this.#generation;
    const pages = await Promise.all(
      this.#tables
        .stalePages(target, limit)
        .map(async (page) => ({ page, sealed: await this.#sealer.sealPage(page, target, live.packPage(page)) })),
    );
    const rows = await this.#tables.resealExact(target, limit);
    return transaction(() =>
      // Pages packed from rows a commit has changed since are stale: skip them (that commit re-sealed them).
      this.#tables.commitReseal(target, generation === this.#generation ? pages : [], rows),
    );
  }

  /** Drops the live rows from memory, zeroing the plaintext (offboarding). A later load reads the pages again. */
  wipe(): void {
    this.#wipes++;
    this.#live?.wipe();
    this.#live = null;
    this.#generation++;
  }

  async #plan(ops: IndexOp[]): Promise<Plan> {
    const live = await this.#loaded();
    const version = await this.#sealer.currentVersion();
    // Synchronous from here to the end of simulate: the live rows cannot change underneath it.
    const generation = this.#generation;
    const changes = simulate(live.view(), ops, this.dimensions);
    const pages = await Promise.all(
      changes.write.map(async ({ page, rows }) => ({
        page,
        sealed: await this.#sealer.sealPage(page, version, packPage(rows, this.dimensions)),
      })),
    );
    return { generation, version, ops, pages, keepBelow: changes.keepBelow, exact: [], shredded: false };
  }

  #planFor(key: object): Plan {
    const plan = this.#plans.get(key);
    // KnowledgeBase runs one write at a time, so the rows cannot have changed since the plan; checked anyway.
    if (!plan || plan.generation !== this.#generation) {
      throw new KbError("ERR_CONFIG", "vector index write out of order (no current plan)");
    }
    return plan;
  }

  /** After the commit: the same operations on the live rows (memory now matches the pages just committed). */
  #apply(key: object): void {
    const plan = this.#plans.get(key);
    this.#plans.delete(key);
    if (!plan) return;
    if (plan.shredded) {
      this.wipe();
      return;
    }
    const live = this.#live;
    if (!live) return;
    for (const op of plan.ops) {
      if (op.kind === "put") live.put(op.id, op.q8, op.scale);
      else live.remove(op.id);
    }
    this.#generation++;
  }

  #checkDimensions(vector: Float32Array): void {
    if (vector.length !== this.dimensions) throw new RangeError("vector has the wrong number of dimensions");
  }

  /** One load at a time; a failed load (e.g. a destroyed key) is not cached. */
  #loaded(): Promise<LiveRows> {
    if (this.#live) return Promise.resolve(this.#live);
    this.#loading ??= this.#load().finally(() => {
      this.#loading = null;
    });
    return this.#loading;
  }

  /**
   * Opens the pages into fresh live rows. A load that fails part-way, or that a wipe (offboarding) overtook while
   * it awaited, zeroes what it had opened and does not become the live index.
   */
  async #load(): Promise<LiveRows> {
    const live = new LiveRows(this.dimensions);
    const wipes = this.#wipes;
    try {
      await this.#tables.openPages(live);
      if (wipes !== this.#wipes) throw new KbError("ERR_KEY_UNAVAILABLE", "the index was wiped while it loaded");
    } catch (error) {
      live.wipe();
      throw error;
    }
    this.#live = live;
    this.#generation++;
    return live;
  }
}
