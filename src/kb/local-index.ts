import { KbError } from "../errors";
import { type IndexOp, pagesFor, type RowsView, simulate } from "./index-overlay";
import { convertLegacyVectors } from "./legacy-vectors";
import { SQL_IDS_PER_STATEMENT } from "./limits";
import int8DotModule from "./simd/int8-dot.wasm";
import { PAGE_ROWS, packPage, unpackPage, type VectorSealer } from "./vector-pages";
import type { VectorMatch, VectorRecord, VectorStore, VectorStoreStats } from "./vector-store";

interface Kernels {
  readonly memory: WebAssembly.Memory;
  dot_all(vecs: number, n: number, dim: number, q: number, out: number): void;
  dot_some(vecs: number, rows: number, count: number, dim: number, q: number, out: number): void;
}

const PAGE = 65_536;
/** Candidates re-ranked exactly (float32 from SQLite) per result wanted; int8 scores only shortlist. */
const RERANK_FACTOR = 4;
const RERANK_MIN = 32;

/** What a write will commit, computed (and sealed) before its transaction; see src/kb/index-overlay.ts. */
interface Plan {
  /** The live rows' generation the plan was computed from: a plan is only valid against exactly those rows. */
  readonly generation: number;
  readonly version: number;
  readonly ops: readonly IndexOp[];
  readonly pages: { readonly page: number; readonly sealed: Uint8Array }[];
  readonly keepBelow: number;
  readonly exact: { readonly id: string; readonly sealed: Uint8Array }[];
  /** The tenant's keys are destroyed (offboarding): only the exact rows are deleted, the pages go wholesale. */
  readonly shredded: boolean;
}

/**
 * The embedded vector index of one tenant, inside its Durable Object.
 *
 * At rest (docs/storage.md, docs/crypto.md), everything sealed under the tenant's "vectors" subkey
 * (src/kb/vector-pages.ts): `vector_pages` holds the int8 copies with their scales and atom ids, PAGE_ROWS rows a
 * page; `vector_rows` holds each atom's exact float32 vector. Plaintext vectors exist only in this object's memory.
 * In memory (WebAssembly linear memory of this object's own instance): the int8 copies back to back, 384 bytes
 * per atom, so 100,000 atoms take 38.4 MB (float32 would take 153.6 MB and not fit the 128 MB object limit).
 * Search: a SIMD int8 dot product over every candidate (full scan, no approximation in candidate choice),
 * then the best RERANK_FACTOR * k are re-scored exactly with their float32 vectors. See BENCHMARKS.md.
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
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  readonly #sealer: VectorSealer;
  #kernels: Kernels | null = null;
  #loading: Promise<Kernels> | null = null;
  #ids: string[] = [];
  #rows = new Map<string, number>();
  #scales = new Float32Array(0);
  #capacity = 0;
  /** Bumped by every commit that changes the live rows. */
  #generation = 0;
  /** Plans by the records / ids array the caller passes to all three steps of one write. */
  #plans = new WeakMap<object, Plan>();

  constructor(sql: SqlStorage, tenant: string, dimensions: number, sealer: VectorSealer) {
    if (dimensions % 16 !== 0 || dimensions < 16 || dimensions > 1536) {
      throw new RangeError("local index dimensions must be a multiple of 16 in [16, 1536]");
    }
    if (sealer.tenant !== tenant) throw new RangeError("vector sealer belongs to another tenant");
    this.#sql = sql;
    this.#tenant = tenant;
    this.#sealer = sealer;
    this.dimensions = dimensions;
  }

  /** Rows in the live index (0 until loaded; see load). */
  get size(): number {
    return this.#ids.length;
  }

  /** Bytes held by the in-memory index (wasm memory plus the JS-side row tables, estimated). */
  get memoryBytes(): number {
    if (!this.#kernels) return 0;
    return this.#kernels.memory.buffer.byteLength + this.#scales.byteLength + this.#ids.length * 120;
  }

  /** Reads and opens the pages (once per object lifetime); returns the number of rows. */
  async load(): Promise<number> {
    await this.#loaded();
    return this.#ids.length;
  }

  async beforeCommitUpsert(records: readonly VectorRecord[]): Promise<void> {
    for (const record of records) this.#checkDimensions(record.vector);
    const ops: IndexOp[] = records.map((record) => ({ kind: "put", id: record.id, ...quantize(record.vector) }));
    const plan = await this.#plan(ops);
    const exact = await Promise.all(
      records.map(async (record) => ({
        id: record.id,
        sealed: await this.#sealer.sealExact(record.id, plan.version, record.vector),
      })),
    );
    this.#plans.set(records, { ...plan, exact });
  }

  writeUpsertRows(records: readonly VectorRecord[]): void {
    const plan = this.#planFor(records);
    for (const row of plan.exact) {
      this.#sql.exec(
        `INSERT INTO vector_rows (tenant, atom_id, key_version, sealed) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant, atom_id) DO UPDATE SET key_version = excluded.key_version, sealed = excluded.sealed`,
        this.#tenant,
        row.id,
        plan.version,
        row.sealed,
      );
    }
    this.#writePages(plan);
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
    for (const id of ids) {
      this.#sql.exec(`DELETE FROM vector_rows WHERE tenant = ? AND atom_id = ?`, this.#tenant, id);
    }
    this.#writePages(plan);
  }

  afterCommitDelete(ids: readonly string[]): void {
    this.#apply(ids);
  }

  async query(vector: Float32Array, topK: number, allowed: ReadonlySet<string> | null): Promise<VectorMatch[]> {
    this.#checkDimensions(vector);
    const kernels = await this.#loaded();
    const ids = this.#ids;
    const dims = this.dimensions;
    const n = ids.length;
    if (n === 0 || topK <= 0) return [];
    const layout = this.#layout();
    const mem = kernels.memory.buffer;

    // Query widened to int16 once; vectors stay int8.
    const { q8 } = quantize(vector);
    new Int16Array(mem, layout.query, dims).set(q8);

    let count: number;
    let rows: Int32Array | null = null;
    if (allowed === null) {
      kernels.dot_all(0, n, dims, layout.query, layout.out);
      count = n;
    } else {
      rows = new Int32Array(mem, layout.rows, n);
      count = 0;
      for (const id of allowed) {
        const row = this.#rows.get(id);
        if (row !== undefined) rows[count++] = row;
      }
      if (count === 0) return [];
      kernels.dot_some(0, layout.rows, count, dims, layout.query, layout.out);
    }

    const raw = new Int32Array(mem, layout.out, count);
    const shortlist = Math.min(count, Math.max(topK * RERANK_FACTOR, RERANK_MIN));
    const best = topRows(raw, count, shortlist, this.#scales, rows);
    const candidates = best.map((row) => ids[row] as string);
    return (await this.#rerank(candidates, vector)).slice(0, topK);
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
    return this.#sql
      .exec<{ v: number }>(
        `SELECT key_version AS v FROM vector_pages WHERE tenant = ?
         UNION SELECT key_version AS v FROM vector_rows WHERE tenant = ? ORDER BY v`,
        this.#tenant,
        this.#tenant,
      )
      .toArray()
      .map((row) => row.v);
  }

  /**
   * Rotation: re-seals up to `limit` pages and `limit` exact rows still under a version older than `target`.
   * Contents do not change (the live rows equal the pages), so concurrent writes stay valid; a write that commits
   * meanwhile re-seals what it touches under the current version itself. Returns how many were re-sealed.
   */
  async resealBatch(target: number, limit: number, transaction: <T>(fn: () => T) => T): Promise<number> {
    await this.#loaded();
    const generation = this.#generation;
    const pages = this.#sql
      .exec<{ page: number }>(
        `SELECT page FROM vector_pages WHERE tenant = ? AND key_version < ? ORDER BY page LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray()
      .map((row) => row.page);
    const sealedPages = await Promise.all(
      pages.map(async (page) => ({ page, sealed: await this.#sealer.sealPage(page, target, this.#packLive(page)) })),
    );
    const rows = this.#sql
      .exec<{ atom_id: string; key_version: number; sealed: ArrayBuffer }>(
        `SELECT atom_id, key_version, sealed FROM vector_rows WHERE tenant = ? AND key_version < ? LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray();
    const sealedRows = await Promise.all(
      rows.map(async (row) => {
        const vector = await this.#sealer.openExact(row.atom_id, row.key_version, new Uint8Array(row.sealed));
        return {
          id: row.atom_id,
          from: row.key_version,
          sealed: await this.#sealer.sealExact(row.atom_id, target, vector),
        };
      }),
    );
    return transaction(() => {
      let resealed = 0;
      // Pages packed from rows a commit has changed since are stale: skip them (that commit re-sealed them).
      if (generation === this.#generation) {
        for (const { page, sealed } of sealedPages) {
          resealed += this.#sql
            .exec(
              `UPDATE vector_pages SET key_version = ?, sealed = ? WHERE tenant = ? AND page = ? AND key_version < ? RETURNING 1`,
              target,
              sealed,
              this.#tenant,
              page,
              target,
            )
            .toArray().length;
        }
      }
      for (const row of sealedRows) {
        // Only if still the row we opened: a concurrent replacement or delete wins.
        resealed += this.#sql
          .exec(
            `UPDATE vector_rows SET key_version = ?, sealed = ? WHERE tenant = ? AND atom_id = ? AND key_version = ? RETURNING 1`,
            target,
            row.sealed,
            this.#tenant,
            row.id,
            row.from,
          )
          .toArray().length;
      }
      return resealed;
    });
  }

  /** Drops the live rows from memory, zeroing the plaintext (offboarding). A later load reads the pages again. */
  wipe(): void {
    if (this.#kernels) new Uint8Array(this.#kernels.memory.buffer).fill(0);
    this.#scales.fill(0);
    this.#kernels = null;
    this.#ids = [];
    this.#rows = new Map();
    this.#scales = new Float32Array(0);
    this.#capacity = 0;
    this.#generation++;
  }

  async #plan(ops: IndexOp[]): Promise<Plan> {
    await this.#loaded();
    const version = await this.#sealer.currentVersion();
    // Synchronous from here to the end of simulate: the live rows cannot change underneath it.
    const generation = this.#generation;
    const changes = simulate(this.#view(), ops, this.dimensions);
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

  /** Inside the caller's transaction. */
  #writePages(plan: Plan): void {
    if (plan.shredded) {
      this.#sql.exec(`DELETE FROM vector_pages WHERE tenant = ?`, this.#tenant);
      return;
    }
    for (const { page, sealed } of plan.pages) {
      this.#sql.exec(
        `INSERT INTO vector_pages (tenant, page, key_version, sealed) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant, page) DO UPDATE SET key_version = excluded.key_version, sealed = excluded.sealed`,
        this.#tenant,
        page,
        plan.version,
        sealed,
      );
    }
    this.#sql.exec(`DELETE FROM vector_pages WHERE tenant = ? AND page >= ?`, this.#tenant, plan.keepBelow);
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
    if (!this.#kernels) return;
    for (const op of plan.ops) {
      if (op.kind === "put") this.#put(op.id, op.q8, op.scale);
      else this.#remove(op.id);
    }
    this.#generation++;
  }

  #view(): RowsView {
    const kernels = this.#kernels as Kernels;
    const dims = this.dimensions;
    return {
      count: this.#ids.length,
      rowOf: (id) => this.#rows.get(id),
      idAt: (row) => this.#ids[row] as string,
      scaleAt: (row) => this.#scales[row] as number,
      q8At: (row) => new Int8Array(kernels.memory.buffer, row * dims, dims).slice(),
    };
  }

  /** Plaintext of one live page. */
  #packLive(page: number): Uint8Array {
    const kernels = this.#kernels as Kernels;
    const dims = this.dimensions;
    const first = page * PAGE_ROWS;
    const count = Math.min(this.#ids.length, first + PAGE_ROWS) - first;
    return packPage(
      {
        ids: this.#ids.slice(first, first + count),
        scales: this.#scales.slice(first, first + count),
        q8: new Int8Array(kernels.memory.buffer, first * dims, count * dims),
      },
      dims,
    );
  }

  /** Exact cosine scores from the sealed float32 vectors (all stored vectors are unit length). */
  async #rerank(ids: string[], vector: Float32Array): Promise<VectorMatch[]> {
    const rows: { atom_id: string; key_version: number; sealed: ArrayBuffer }[] = [];
    for (let i = 0; i < ids.length; i += SQL_IDS_PER_STATEMENT) {
      const chunk = ids.slice(i, i + SQL_IDS_PER_STATEMENT);
      rows.push(
        ...this.#sql
          .exec<{ atom_id: string; key_version: number; sealed: ArrayBuffer }>(
            `SELECT atom_id, key_version, sealed FROM vector_rows WHERE tenant = ? AND atom_id IN (${chunk.map(() => "?").join(",")})`,
            this.#tenant,
            ...chunk,
          )
          .toArray(),
      );
    }
    const out = await Promise.all(
      rows.map(async (row) => {
        const stored = await this.#sealer.openExact(row.atom_id, row.key_version, new Uint8Array(row.sealed));
        let dot = 0;
        for (let d = 0; d < stored.length; d++) dot += (stored[d] as number) * (vector[d] as number);
        return { id: row.atom_id, score: dot };
      }),
    );
    return out.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
  }

  #checkDimensions(vector: Float32Array): void {
    if (vector.length !== this.dimensions) throw new RangeError("vector has the wrong number of dimensions");
  }

  /** One load at a time; a failed load (e.g. a destroyed key) is not cached. */
  #loaded(): Promise<Kernels> {
    if (this.#kernels) return Promise.resolve(this.#kernels);
    this.#loading ??= this.#load().finally(() => {
      this.#loading = null;
    });
    return this.#loading;
  }

  async #load(): Promise<Kernels> {
    await convertLegacyVectors(this.#sql, this.#tenant, this.dimensions, this.#sealer);
    const stored = this.#sql
      .exec<{ page: number; key_version: number; sealed: ArrayBuffer }>(
        `SELECT page, key_version, sealed FROM vector_pages WHERE tenant = ? ORDER BY page`,
        this.#tenant,
      )
      .toArray();
    const pages = await Promise.all(
      stored.map(async (row) =>
        unpackPage(await this.#sealer.openPage(row.page, row.key_version, new Uint8Array(row.sealed)), this.dimensions),
      ),
    );
    pages.forEach((page, i) => {
      const full = i === pages.length - 1 || page.ids.length === PAGE_ROWS;
      if ((stored[i] as { page: number }).page !== i || !full) {
        throw new KbError("ERR_DECRYPT", "vector pages are not contiguous");
      }
    });
    const instance = new WebAssembly.Instance(int8DotModule, {});
    const kernels = instance.exports as unknown as Kernels;
    this.#kernels = kernels;
    this.#ids = [];
    this.#rows = new Map();
    this.#capacity = 0;
    this.#scales = new Float32Array(0);
    const total = pages.reduce((sum, page) => sum + page.ids.length, 0);
    this.#ensureCapacity(total);
    const memory = new Int8Array(kernels.memory.buffer);
    for (const page of pages) {
      const first = this.#ids.length;
      memory.set(page.q8, first * this.dimensions);
      this.#scales.set(page.scales, first);
      for (const id of page.ids) {
        this.#rows.set(id, this.#ids.length);
        this.#ids.push(id);
      }
    }
    if (pagesFor(total) !== pages.length) throw new KbError("ERR_DECRYPT", "vector pages are not contiguous");
    this.#generation++;
    return kernels;
  }

  #put(id: string, q8: Int8Array, scale: number): void {
    const kernels = this.#kernels as Kernels;
    let row = this.#rows.get(id);
    if (row === undefined) {
      this.#ensureCapacity(this.#ids.length + 1);
      row = this.#ids.length;
      this.#ids.push(id);
      this.#rows.set(id, row);
    }
    new Int8Array(kernels.memory.buffer, row * this.dimensions, this.dimensions).set(q8);
    this.#scales[row] = scale;
  }

  /** Swap-remove: the last row moves into the hole, so rows stay dense (src/kb/index-overlay.ts simulates it). */
  #remove(id: string): void {
    const row = this.#rows.get(id);
    if (row === undefined) return;
    const kernels = this.#kernels as Kernels;
    const last = this.#ids.length - 1;
    if (row !== last) {
      const lastId = this.#ids[last] as string;
      const bytes = new Int8Array(kernels.memory.buffer);
      bytes.copyWithin(row * this.dimensions, last * this.dimensions, (last + 1) * this.dimensions);
      this.#scales[row] = this.#scales[last] as number;
      this.#ids[row] = lastId;
      this.#rows.set(lastId, row);
    }
    this.#ids.pop();
    this.#rows.delete(id);
  }

  #ensureCapacity(rows: number): void {
    if (rows <= this.#capacity) return;
    const capacity = Math.max(rows, Math.ceil(this.#capacity * 1.5), 1024);
    const kernels = this.#kernels as Kernels;
    const needed = this.#layoutFor(capacity).end;
    const have = kernels.memory.buffer.byteLength;
    if (needed > have) kernels.memory.grow(Math.ceil((needed - have) / PAGE));
    const scales = new Float32Array(capacity);
    scales.set(this.#scales);
    this.#scales = scales;
    this.#capacity = capacity;
  }

  #layout() {
    return this.#layoutFor(this.#capacity);
  }

  /** Vectors first (they never move when memory grows), then per-query scratch: query, row list, scores. */
  #layoutFor(capacity: number) {
    const align = (value: number) => Math.ceil(value / 16) * 16;
    const query = align(capacity * this.dimensions);
    const rows = align(query + this.dimensions * 2);
    const out = align(rows + capacity * 4);
    return { query, rows, out, end: out + capacity * 4 };
  }
}

/** Symmetric per-vector int8 quantization: q = round(x / scale), scale = max|x| / 127. */
export function quantize(vector: Float32Array): { q8: Int8Array; scale: number } {
  const length = vector.length;
  let max = 0;
  for (let i = 0; i < length; i++) {
    const value = Math.abs(vector[i] as number);
    if (value > max) max = value;
  }
  const scale = max === 0 ? 1 : max / 127;
  const q8 = new Int8Array(length);
  for (let i = 0; i < length; i++) q8[i] = Math.round((vector[i] as number) / scale);
  return { q8, scale };
}

/**
 * Rows of the `m` largest `raw[k] * scales[row]` (row = rows ? rows[k] : k), best first: a bounded min-heap,
 * O(n log m), with a plain comparison against the heap's minimum for the common case of a rejected candidate.
 */
function topRows(raw: Int32Array, n: number, m: number, scales: Float32Array, rows: Int32Array | null): number[] {
  const heapScore = new Float64Array(m);
  const heapRow = new Int32Array(m);
  let size = 0;
  let floor = Number.NEGATIVE_INFINITY;
  for (let k = 0; k < n; k++) {
    const row = rows === null ? k : (rows[k] as number);
    const score = (raw[k] as number) * (scales[row] as number);
    if (size === m) {
      if (score <= floor) continue;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= m) break;
        const right = left + 1;
        const child = right < m && (heapScore[right] as number) < (heapScore[left] as number) ? right : left;
        if ((heapScore[child] as number) >= score) break;
        heapScore[i] = heapScore[child] as number;
        heapRow[i] = heapRow[child] as number;
        i = child;
      }
      heapScore[i] = score;
      heapRow[i] = row;
      floor = heapScore[0] as number;
    } else {
      let i = size++;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if ((heapScore[parent] as number) <= score) break;
        heapScore[i] = heapScore[parent] as number;
        heapRow[i] = heapRow[parent] as number;
        i = parent;
      }
      heapScore[i] = score;
      heapRow[i] = row;
      if (size === m) floor = heapScore[0] as number;
    }
  }
  const order = Array.from({ length: size }, (_, i) => i).sort(
    (a, b) => (heapScore[b] as number) - (heapScore[a] as number),
  );
  return order.map((i) => heapRow[i] as number);
}
