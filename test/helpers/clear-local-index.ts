import { SQL_IDS_PER_STATEMENT } from "../../src/kb/limits";
import int8DotModule from "../../src/kb/simd/int8-dot.wasm";
import type { VectorMatch, VectorRecord, VectorStore, VectorStoreStats } from "../../src/kb/vector-store";

/**
 * TEST REFERENCE ONLY: the local index as it was before vectors were sealed (commit 1b3a235, verbatim but for
 * the imports, the class name and the table DDL below). Vectors in the clear in `local_vectors`. Used to check
 * that the sealed index returns identical results, and to build old databases for the conversion test.
 */
export const LEGACY_TABLE = `CREATE TABLE IF NOT EXISTS local_vectors (
     tenant  TEXT NOT NULL,
     atom_id TEXT NOT NULL,
     q8      BLOB NOT NULL,
     scale   REAL NOT NULL,
     f32     BLOB NOT NULL,
     PRIMARY KEY (tenant, atom_id)
   )`;

interface Kernels {
  readonly memory: WebAssembly.Memory;
  dot_all(vecs: number, n: number, dim: number, q: number, out: number): void;
  dot_some(vecs: number, rows: number, count: number, dim: number, q: number, out: number): void;
}

const PAGE = 65_536;
/** Candidates re-ranked exactly (float32 from SQLite) per result wanted; int8 scores only shortlist. */
const RERANK_FACTOR = 4;
const RERANK_MIN = 32;

/**
 * The embedded vector index of one tenant, inside its Durable Object.
 *
 * At rest (SQLite table local_vectors): per atom an int8 copy with its scale, and the exact float32 vector.
 * In memory (WebAssembly linear memory of this object's own instance): the int8 copies back to back, 384 bytes
 * per atom, so 100,000 atoms take 38.4 MB (float32 would take 153.6 MB and not fit the 128 MB object limit).
 * Search: a SIMD int8 dot product over every candidate (full scan, no approximation in candidate choice),
 * then the best RERANK_FACTOR * k are re-scored exactly with their float32 vectors. See BENCHMARKS.md.
 *
 * Instances are per tenant object; nothing here is module-level except the compiled (stateless) wasm module.
 */
export class ClearLocalVectorIndex implements VectorStore {
  readonly dimensions: number;
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  #kernels: Kernels | null = null;
  #ids: string[] = [];
  #rows = new Map<string, number>();
  #scales = new Float32Array(0);
  #capacity = 0;
  /** int8 copies computed in writeUpsertRows, reused by afterCommitUpsert (quantizing is ~10% of an add). */
  #quantized = new WeakMap<VectorRecord, { q8: Int8Array; scale: number }>();

  constructor(sql: SqlStorage, tenant: string, dimensions: number) {
    if (dimensions % 16 !== 0 || dimensions < 16 || dimensions > 1536) {
      throw new RangeError("local index dimensions must be a multiple of 16 in [16, 1536]");
    }
    this.#sql = sql;
    this.#tenant = tenant;
    this.dimensions = dimensions;
    sql.exec(LEGACY_TABLE);
  }

  get size(): number {
    return this.#load().ids.length;
  }

  /** Bytes held by the in-memory index (wasm memory plus the JS-side row tables, estimated). */
  get memoryBytes(): number {
    const state = this.#load();
    return state.kernels.memory.buffer.byteLength + this.#scales.byteLength + state.ids.length * 120;
  }

  async beforeCommitUpsert(records: readonly VectorRecord[]): Promise<void> {
    for (const record of records) this.#checkDimensions(record.vector);
  }

  writeUpsertRows(records: readonly VectorRecord[]): void {
    for (const record of records) {
      const quantized = quantize(record.vector);
      this.#quantized.set(record, quantized);
      const { q8, scale } = quantized;
      this.#sql.exec(
        `INSERT INTO local_vectors (tenant, atom_id, q8, scale, f32) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant, atom_id) DO UPDATE SET q8 = excluded.q8, scale = excluded.scale, f32 = excluded.f32`,
        this.#tenant,
        record.id,
        q8,
        scale,
        new Uint8Array(record.vector.buffer, record.vector.byteOffset, record.vector.byteLength),
      );
    }
  }

  afterCommitUpsert(records: readonly VectorRecord[]): void {
    if (!this.#kernels) return; // not loaded yet: the next load reads the committed rows
    for (const record of records) {
      const { q8, scale } = this.#quantized.get(record) ?? quantize(record.vector);
      this.#put(record.id, q8, scale);
    }
  }

  async beforeCommitDelete(): Promise<void> {}

  writeDeleteRows(ids: readonly string[]): void {
    for (const id of ids) {
      this.#sql.exec(`DELETE FROM local_vectors WHERE tenant = ? AND atom_id = ?`, this.#tenant, id);
    }
  }

  afterCommitDelete(ids: readonly string[]): void {
    if (!this.#kernels) return;
    for (const id of ids) this.#remove(id);
  }

  async query(vector: Float32Array, topK: number, allowed: ReadonlySet<string> | null): Promise<VectorMatch[]> {
    this.#checkDimensions(vector);
    const { kernels, ids } = this.#load();
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
    return this.#rerank(candidates, vector).slice(0, topK);
  }

  async stats(): Promise<VectorStoreStats> {
    return {
      backend: "local",
      dimensions: this.dimensions,
      vectors: this.size,
      consistency: "synchronous",
      pendingMutation: null,
    };
  }

  /** Exact cosine scores from the float32 vectors at rest (all stored vectors are unit length). */
  #rerank(ids: string[], vector: Float32Array): VectorMatch[] {
    const out: VectorMatch[] = [];
    for (let i = 0; i < ids.length; i += SQL_IDS_PER_STATEMENT) {
      const chunk = ids.slice(i, i + SQL_IDS_PER_STATEMENT);
      const rows = this.#sql
        .exec<{ atom_id: string; f32: ArrayBuffer }>(
          `SELECT atom_id, f32 FROM local_vectors WHERE tenant = ? AND atom_id IN (${chunk.map(() => "?").join(",")})`,
          this.#tenant,
          ...chunk,
        )
        .toArray();
      for (const row of rows) {
        const stored = new Float32Array(row.f32);
        let dot = 0;
        for (let d = 0; d < stored.length; d++) dot += (stored[d] as number) * (vector[d] as number);
        out.push({ id: row.atom_id, score: dot });
      }
    }
    return out.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
  }

  #checkDimensions(vector: Float32Array): void {
    if (vector.length !== this.dimensions) throw new RangeError("vector has the wrong number of dimensions");
  }

  #load(): { kernels: Kernels; ids: string[] } {
    if (this.#kernels) return { kernels: this.#kernels, ids: this.#ids };
    const instance = new WebAssembly.Instance(int8DotModule, {});
    this.#kernels = instance.exports as unknown as Kernels;
    this.#ids = [];
    this.#rows = new Map();
    this.#capacity = 0;
    this.#scales = new Float32Array(0);
    const total = this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM local_vectors WHERE tenant = ?`, this.#tenant)
      .one().n;
    this.#ensureCapacity(total);
    for (const row of this.#sql.exec<{ atom_id: string; q8: ArrayBuffer; scale: number }>(
      `SELECT atom_id, q8, scale FROM local_vectors WHERE tenant = ?`,
      this.#tenant,
    )) {
      this.#put(row.atom_id, new Int8Array(row.q8), row.scale);
    }
    return { kernels: this.#kernels, ids: this.#ids };
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

  /** Swap-remove: the last row moves into the hole, so rows stay dense. */
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
function quantize(vector: Float32Array): { q8: Int8Array; scale: number } {
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
