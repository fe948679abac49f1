import type { RowsView } from "./index-overlay";
import { BestRows, offsetQuery7, quantize, topRows } from "./int8-scoring";
import int8DotModule from "./simd/int8-dot.wasm";
import { PAGE_ROWS, type PageRows, packPage } from "./vector-pages";
import type { PageSink } from "./vector-tables";

/**
 * The live rows of one tenant's local index (src/kb/local-index.ts), in the WebAssembly linear memory of this
 * object's own instance: the int8 copies back to back, 384 bytes per atom, so 100,000 atoms take 38.4 MB (float32
 * would take 153.6 MB and not fit the 128 MB object limit). Plaintext vectors exist only in this object's memory.
 * Search, in three stages: (1) a pre-scan of every row against the query quantized to 7 bits (relaxed-SIMD
 * kernel, about 0.6 of the 8-bit kernel's time) keeps the best PRESCAN_FACTOR * k; (2) their exact int8 scores
 * (the scores a full int8 scan computes) pick the best RERANK_FACTOR * k, (3) the shortlist the index re-scores
 * exactly with float32 (src/kb/vector-tables.ts). A filter (`allowed`) skips stage 1: its rows get stage 2 directly.
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
  prescan7(
    first: number,
    n: number,
    dim: number,
    q: number,
    scales: number,
    bias: number,
    floor: number,
    rowsOut: number,
    scoresOut: number,
  ): number;
  row_bias(first: number, n: number, dim: number, bias: number): void;
}

const PAGE = 65_536;
/** Largest growth step of the row capacity (8,192 rows: 3.1 MiB of int8 copies at 384 dimensions). */
const GROW_ROWS_MAX = 8_192;
/**
 * Candidates re-ranked exactly (float32 from SQLite) per result wanted; int8 scores only shortlist. The exact top 10
 * lay inside the int8 top 20 for all but about 1 in 200 queries of the benchmark, and inside the top 30 for every
 * one (BENCHMARKS.md, coverage@20/@30); each candidate costs one SQLite row and one AES-GCM open per query.
 */
const RERANK_FACTOR = 3;
const RERANK_MIN = 30;
/**
 * Rows the 7-bit pre-scan keeps per result wanted, for the exact int8 scores. It only has to hold the int8 top
 * RERANK_FACTOR * k, with a margin of 2.7x (the 7-bit and 8-bit rankings differ only between near-equal scores;
 * the benchmark checks that the results equal those of a full int8 scan, BENCHMARKS.md).
 */
const PRESCAN_FACTOR = 8;
const PRESCAN_MIN = 80;
/** Rows pre-scanned without a floor, whose best set the floor for the rest (the kernel then returns only those). */
const PRESCAN_SAMPLE = 4_096;

/** One tenant's live rows (see the header); built from its opened pages by each load. */
export class LiveRows implements PageSink {
  readonly #dims: number;
  readonly #kernels: Kernels;
  #ids: string[] = [];
  /** Row of each id, built on first use (a cold load's first unfiltered query does not need it). */
  #byId: Map<string, number> | null = null;
  /** Views into wasm memory (see #layoutFor), re-made whenever the memory grows: scale and pre-scan bias per row. */
  #scales = new Float32Array(0);
  #bias = new Int32Array(0);
  #capacity = 0;
  /** Where the tables and scratch lie for the current capacity (#ensureCapacity keeps it). */
  #layout: Layout;

  /** An empty index in a fresh instance of the kernel module, sized for `capacity` rows (it grows as needed). */
  constructor(dims: number, capacity = 0) {
    this.#dims = dims;
    this.#kernels = new WebAssembly.Instance(int8DotModule, {}).exports as unknown as Kernels;
    this.#layout = this.#layoutFor(0);
    this.#ensureCapacity(capacity);
  }

  /** Makes room for `rows` rows (a load reserves what its pages can hold, so the memory grows once). */
  reserve(rows: number): void {
    this.#ensureCapacity(rows);
  }

  /** Appends an opened page (a load appends pages 0..P-1 in order, so row r lands in page floor(r / PAGE_ROWS)). */
  appendPage(page: PageRows): void {
    const dims = this.#dims;
    const first = this.#ids.length;
    if (first % PAGE_ROWS !== 0) throw new RangeError("pages are appended whole and in order");
    this.#ensureCapacity(first + page.ids.length);
    new Int8Array(this.#kernels.memory.buffer).set(page.q8, first * dims);
    this.#scales.set(page.scales, first);
    this.#kernels.row_bias(first, page.ids.length, dims, this.#layout.bias);
    for (const id of page.ids) this.#ids.push(id);
    this.#byId = null;
  }

  get size(): number {
    return this.#ids.length;
  }

  /** Bytes held (wasm memory plus the JS-side row tables, estimated). */
  get memoryBytes(): number {
    return this.#kernels.memory.buffer.byteLength + this.#ids.length * 120;
  }

  /** Ids of the candidates to re-rank for `topK` results, best int8 score first (only `allowed` ones if given). */
  shortlist(vector: Float32Array, topK: number, allowed: ReadonlySet<string> | null): string[] {
    const kernels = this.#kernels;
    const ids = this.#ids;
    const dims = this.#dims;
    const n = ids.length;
    if (n === 0 || topK <= 0) return [];
    const layout = this.#layout;
    const mem = kernels.memory.buffer;

    // Query widened to int16 once; vectors stay int8.
    const { q8 } = quantize(vector);
    new Int16Array(mem, layout.query, dims).set(q8);
    const shortlist = Math.max(topK * RERANK_FACTOR, RERANK_MIN);
    const prescan = Math.max(topK * PRESCAN_FACTOR, PRESCAN_MIN);

    let count: number;
    const rows = new Int32Array(mem, layout.rows, n);
    if (allowed !== null) {
      count = 0;
      for (const id of allowed) {
        const row = this.#rowMap().get(id);
        if (row !== undefined) rows[count++] = row;
      }
      if (count === 0) return [];
    } else if (dims % 32 === 0 && n > prescan) {
      // Stage 1: the 7-bit pre-scan over every row keeps the best `prescan` for the exact int8 scores.
      new Uint8Array(mem, layout.query7, dims).set(offsetQuery7(vector));
      const best = this.#prescan(layout, n, prescan);
      rows.set(best);
      count = best.length;
    } else {
      kernels.dot_all(0, n, dims, layout.query, layout.out);
      const raw = new Int32Array(mem, layout.out, n);
      return topRows(raw, n, Math.min(n, shortlist), this.#scales, null).map((row) => ids[row] as string);
    }
    // Stage 2: exact int8 scores of the candidates (the same scores a full int8 scan computes).
    kernels.dot_some(0, layout.rows, count, dims, layout.query, layout.out);
    const raw = new Int32Array(mem, layout.out, count);
    return topRows(raw, count, Math.min(count, shortlist), this.#scales, rows).map((row) => ids[row] as string);
  }

  /** Stage 1 over every row; the query7 scratch holds the offset 7-bit query. Clobbers the rows and out scratch. */
  #prescan(layout: Layout, n: number, keep: number): Int32Array {
    const kernels = this.#kernels;
    const best = new BestRows(keep);
    let first = 0;
    while (first < n) {
      const count = first === 0 ? Math.min(n, PRESCAN_SAMPLE) : n - first;
      const { query7, scales, bias, rows, out } = layout;
      const found = kernels.prescan7(first, count, this.#dims, query7, scales, bias, best.floor, rows, out);
      const foundRows = new Int32Array(kernels.memory.buffer, rows, found);
      const foundScores = new Float32Array(kernels.memory.buffer, out, found);
      for (let i = 0; i < found; i++) best.offer(foundScores[i] as number, foundRows[i] as number);
      first += count;
    }
    return best.rows().slice();
  }

  /** The live rows as src/kb/index-overlay.ts reads them. */
  view(): RowsView {
    const kernels = this.#kernels;
    const dims = this.#dims;
    return {
      count: this.#ids.length,
      rowOf: (id) => this.#rowMap().get(id),
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
    let row = this.#rowMap().get(id);
    if (row === undefined) {
      this.#ensureCapacity(this.#ids.length + 1);
      row = this.#ids.length;
      this.#ids.push(id);
      this.#rowMap().set(id, row);
    }
    new Int8Array(this.#kernels.memory.buffer, row * this.#dims, this.#dims).set(q8);
    this.#scales[row] = scale;
    this.#kernels.row_bias(row, 1, this.#dims, this.#layout.bias);
  }

  /** Swap-remove: the last row moves into the hole, so rows stay dense (src/kb/index-overlay.ts simulates it). */
  remove(id: string): void {
    const row = this.#rowMap().get(id);
    if (row === undefined) return;
    const last = this.#ids.length - 1;
    if (row !== last) {
      const lastId = this.#ids[last] as string;
      const bytes = new Int8Array(this.#kernels.memory.buffer);
      bytes.copyWithin(row * this.#dims, last * this.#dims, (last + 1) * this.#dims);
      this.#scales[row] = this.#scales[last] as number;
      this.#bias[row] = this.#bias[last] as number;
      this.#ids[row] = lastId;
      this.#rowMap().set(lastId, row);
    }
    this.#ids.pop();
    this.#rowMap().delete(id);
  }

  /** Zeroes the plaintext and drops every row (offboarding); the instance is not used afterwards. */
  wipe(): void {
    new Uint8Array(this.#kernels.memory.buffer).fill(0);
    this.#ids = [];
    this.#byId = null;
    this.#scales = new Float32Array(0);
    this.#bias = new Int32Array(0);
    this.#capacity = 0;
    this.#layout = this.#layoutFor(0);
  }

  #rowMap(): Map<string, number> {
    if (this.#byId === null) {
      const byId = new Map<string, number>();
      this.#ids.forEach((id, row) => {
        byId.set(id, row);
      });
      this.#byId = byId;
    }
    return this.#byId;
  }

  #ensureCapacity(rows: number): void {
    if (rows <= this.#capacity) return;
    // 1.5x steps while small, then at most GROW_ROWS_MAX rows at a time: the unused capacity stays under 3.2 MB.
    const step = Math.min(Math.max(Math.ceil(this.#capacity / 2), 1024), GROW_ROWS_MAX);
    const capacity = Math.max(rows, this.#capacity + step);
    const before = this.#layout;
    const after = this.#layoutFor(capacity);
    const have = this.#kernels.memory.buffer.byteLength;
    if (after.end > have) this.#kernels.memory.grow(Math.ceil((after.end - have) / PAGE));
    // The per-row tables move up (bias first: it lies above the scales); vectors stay where they are.
    const bytes = new Uint8Array(this.#kernels.memory.buffer);
    const used = this.#capacity * 4;
    bytes.copyWithin(after.bias, before.bias, before.bias + used);
    bytes.fill(0, after.bias + used, after.bias + capacity * 4);
    bytes.copyWithin(after.scales, before.scales, before.scales + used);
    bytes.fill(0, after.scales + used, after.scales + capacity * 4);
    this.#scales = new Float32Array(this.#kernels.memory.buffer, after.scales, capacity);
    this.#bias = new Int32Array(this.#kernels.memory.buffer, after.bias, capacity);
    this.#capacity = capacity;
    this.#layout = after;
  }

  /**
   * Vectors first (they never move when memory grows), then the per-row tables (scale, bias; moved on growth),
   * then per-query scratch: the int16 and 7-bit queries, a row list, scores.
   */
  #layoutFor(capacity: number): Layout {
    const align = (value: number) => Math.ceil(value / 16) * 16;
    const scales = align(capacity * this.#dims);
    const bias = scales + capacity * 4;
    const query = align(bias + capacity * 4);
    const query7 = align(query + this.#dims * 2);
    const rows = align(query7 + this.#dims);
    const out = align(rows + capacity * 4);
    return { scales, bias, query, query7, rows, out, end: out + capacity * 4 };
  }
}

interface Layout {
  readonly scales: number;
  readonly bias: number;
  readonly query: number;
  readonly query7: number;
  readonly rows: number;
  readonly out: number;
  readonly end: number;
}
