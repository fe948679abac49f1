import type { RowsView } from "./index-overlay";
import { quantize, topRows } from "./int8-scoring";
import int8DotModule from "./simd/int8-dot.wasm";
import { PAGE_ROWS, type PageRows, packPage } from "./vector-pages";

/**
 * The live rows of one tenant's local index (src/kb/local-index.ts), in the WebAssembly linear memory of this
 * object's own instance: the int8 copies back to back, 384 bytes per atom, so 100,000 atoms take 38.4 MB (float32
 * would take 153.6 MB and not fit the 128 MB object limit). Plaintext vectors exist only in this object's memory.
 * Search: a SIMD int8 dot product over every candidate (full scan, no approximation in candidate choice); the best
 * RERANK_FACTOR * k are the shortlist the index re-scores exactly.
 *
 * Invariant: row r of the live index is slot r % PAGE_ROWS of page floor(r / PAGE_ROWS); rows stay dense
 * (swap-remove, which src/kb/index-overlay.ts simulates). The index changes them only after a commit.
 *
 * Instances are per tenant object; nothing here is module-level except the compiled (stateless) wasm module.
 */

interface Kernels {
  readonly memory: WebAssembly.Memory;
  dot_all(vecs: number, n: number, dim: number, q: number, out: number): void;
  dot_some(vecs: number, rows: number, count: number, dim: number, q: number, out: number): void;
}

const PAGE = 65_536;
/** Candidates re-ranked exactly (float32 from SQLite) per result wanted; int8 scores only shortlist. */
const RERANK_FACTOR = 4;
const RERANK_MIN = 32;

/** One tenant's live rows (see the header); built from its opened pages by each load. */
export class LiveRows {
  readonly #dims: number;
  readonly #kernels: Kernels;
  #ids: string[] = [];
  #rows = new Map<string, number>();
  #scales = new Float32Array(0);
  #capacity = 0;

  /** The rows of these opened pages, in order, in a fresh instance of the kernel module. */
  constructor(pages: readonly PageRows[], dims: number) {
    this.#dims = dims;
    this.#kernels = new WebAssembly.Instance(int8DotModule, {}).exports as unknown as Kernels;
    const total = pages.reduce((sum, page) => sum + page.ids.length, 0);
    this.#ensureCapacity(total);
    const memory = new Int8Array(this.#kernels.memory.buffer);
    for (const page of pages) {
      const first = this.#ids.length;
      memory.set(page.q8, first * dims);
      this.#scales.set(page.scales, first);
      for (const id of page.ids) {
        this.#rows.set(id, this.#ids.length);
        this.#ids.push(id);
      }
    }
  }

  get size(): number {
    return this.#ids.length;
  }

  /** Bytes held (wasm memory plus the JS-side row tables, estimated). */
  get memoryBytes(): number {
    return this.#kernels.memory.buffer.byteLength + this.#scales.byteLength + this.#ids.length * 120;
  }

  /** Ids of the candidates to re-rank for `topK` results, best int8 score first (only `allowed` ones if given). */
  shortlist(vector: Float32Array, topK: number, allowed: ReadonlySet<string> | null): string[] {
    const kernels = this.#kernels;
    const ids = this.#ids;
    const dims = this.#dims;
    const n = ids.length;
    if (n === 0 || topK <= 0) return [];
    const layout = this.#layoutFor(this.#capacity);
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
    return topRows(raw, count, shortlist, this.#scales, rows).map((row) => ids[row] as string);
  }

  /** The live rows as src/kb/index-overlay.ts reads them. */
  view(): RowsView {
    const kernels = this.#kernels;
    const dims = this.#dims;
    return {
      count: this.#ids.length,
      rowOf: (id) => this.#rows.get(id),
      idAt: (row) => this.#ids[row] as string,
      scaleAt: (row) => this.#scales[row] as number,
      q8At: (row) => new Int8Array(kernels.memory.buffer, row * dims, dims).slice(),
    };
  }

  /** Plaintext of one live page. */
  packPage(page: number): Uint8Array {
    const dims = this.#dims;
    const first = page * PAGE_ROWS;
    const count = Math.min(this.#ids.length, first + PAGE_ROWS) - first;
    return packPage(
      {
        ids: this.#ids.slice(first, first + count),
        scales: this.#scales.slice(first, first + count),
        q8: new Int8Array(this.#kernels.memory.buffer, first * dims, count * dims),
      },
      dims,
    );
  }

  put(id: string, q8: Int8Array, scale: number): void {
    let row = this.#rows.get(id);
    if (row === undefined) {
      this.#ensureCapacity(this.#ids.length + 1);
      row = this.#ids.length;
      this.#ids.push(id);
      this.#rows.set(id, row);
    }
    new Int8Array(this.#kernels.memory.buffer, row * this.#dims, this.#dims).set(q8);
    this.#scales[row] = scale;
  }

  /** Swap-remove: the last row moves into the hole, so rows stay dense (src/kb/index-overlay.ts simulates it). */
  remove(id: string): void {
    const row = this.#rows.get(id);
    if (row === undefined) return;
    const last = this.#ids.length - 1;
    if (row !== last) {
      const lastId = this.#ids[last] as string;
      const bytes = new Int8Array(this.#kernels.memory.buffer);
      bytes.copyWithin(row * this.#dims, last * this.#dims, (last + 1) * this.#dims);
      this.#scales[row] = this.#scales[last] as number;
      this.#ids[row] = lastId;
      this.#rows.set(lastId, row);
    }
    this.#ids.pop();
    this.#rows.delete(id);
  }

  /** Zeroes the plaintext and drops every row (offboarding); the instance is not used afterwards. */
  wipe(): void {
    new Uint8Array(this.#kernels.memory.buffer).fill(0);
    this.#scales.fill(0);
    this.#ids = [];
    this.#rows = new Map();
    this.#scales = new Float32Array(0);
    this.#capacity = 0;
  }

  #ensureCapacity(rows: number): void {
    if (rows <= this.#capacity) return;
    const capacity = Math.max(rows, Math.ceil(this.#capacity * 1.5), 1024);
    const needed = this.#layoutFor(capacity).end;
    const have = this.#kernels.memory.buffer.byteLength;
    if (needed > have) this.#kernels.memory.grow(Math.ceil((needed - have) / PAGE));
    const scales = new Float32Array(capacity);
    scales.set(this.#scales);
    this.#scales = scales;
    this.#capacity = capacity;
  }

  /** Vectors first (they never move when memory grows), then per-query scratch: query, row list, scores. */
  #layoutFor(capacity: number) {
    const align = (value: number) => Math.ceil(value / 16) * 16;
    const query = align(capacity * this.#dims);
    const rows = align(query + this.#dims * 2);
    const out = align(rows + capacity * 4);
    return { query, rows, out, end: out + capacity * 4 };
  }
}
