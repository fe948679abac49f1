/**
 * The int8 arithmetic of the local index (src/kb/local-index.ts), pure: quantization of vectors and the bounded
 * selection of the best-scoring rows. Int8 scores only shortlist; the shortlisted candidates are re-ranked exactly
 * with their float32 vectors (src/kb/vector-tables.ts).
 */

/** Symmetric per-vector int8 quantization: q = round(x / scale), scale = max|x| / 127. */
export function quantize(vector: Float32Array): { q8: Int8Array; scale: number } {
  const length = vector.length;
  const max = maxAbs(vector);
  const scale = max === 0 ? 1 : max / 127;
  const q8 = new Int8Array(length);
  for (let i = 0; i < length; i++) q8[i] = Math.round((vector[i] as number) / scale);
  return { q8, scale };
}

/**
 * The query of the 7-bit pre-scan (src/kb/live-rows.ts): round(x / scale) with scale = max|x| / 63, plus 64, so
 * every component lies in [1, 127] (the relaxed-SIMD kernel's exact range). Dot products with it carry
 * 64 * (sum of the row), which the kernel subtracts (the row's bias, src/kb/live-rows.ts).
 */
export function offsetQuery7(vector: Float32Array): Uint8Array {
  const length = vector.length;
  const max = maxAbs(vector);
  const scale = max === 0 ? 1 : max / 63;
  const q = new Uint8Array(length);
  for (let i = 0; i < length; i++) q[i] = Math.round((vector[i] as number) / scale) + 64;
  return q;
}

/**
 * The `m` best (score, row) pairs offered: a bounded min-heap, O(n log m), with a plain comparison against the
 * heap's minimum (`floor`) for the common case of a rejected candidate. Ties keep the row offered first.
 */
export class BestRows {
  readonly #m: number;
  readonly #score: Float64Array;
  readonly #row: Int32Array;
  #size = 0;
  /** Scores at or below this cannot enter (-Infinity until m rows were offered). */
  floor = Number.NEGATIVE_INFINITY;

  constructor(m: number) {
    this.#m = m;
    this.#score = new Float64Array(m);
    this.#row = new Int32Array(m);
  }

  offer(score: number, row: number): void {
    const heapScore = this.#score;
    const heapRow = this.#row;
    const m = this.#m;
    if (this.#size === m) {
      if (score <= this.floor) return;
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
      this.floor = heapScore[0] as number;
      return;
    }
    let i = this.#size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heapScore[parent] as number) <= score) break;
      heapScore[i] = heapScore[parent] as number;
      heapRow[i] = heapRow[parent] as number;
      i = parent;
    }
    heapScore[i] = score;
    heapRow[i] = row;
    if (this.#size === m) this.floor = heapScore[0] as number;
  }

  /** The rows held, in no particular order. */
  rows(): Int32Array {
    return this.#row.subarray(0, this.#size);
  }

  /** The rows held, best score first. */
  rowsBestFirst(): number[] {
    const score = this.#score;
    const order = Array.from({ length: this.#size }, (_, i) => i).sort(
      (a, b) => (score[b] as number) - (score[a] as number),
    );
    return order.map((i) => this.#row[i] as number);
  }
}

/** Rows of the `m` largest `raw[k] * scales[row]` (row = rows ? rows[k] : k), best first. */
export function topRows(
  raw: Int32Array,
  n: number,
  m: number,
  scales: Float32Array,
  rows: Int32Array | null,
): number[] {
  const best = new BestRows(m);
  for (let k = 0; k < n; k++) {
    const row = rows === null ? k : (rows[k] as number);
    best.offer((raw[k] as number) * (scales[row] as number), row);
  }
  return best.rowsBestFirst();
}

function maxAbs(vector: Float32Array): number {
  let max = 0;
  for (let i = 0; i < vector.length; i++) {
    const value = Math.abs(vector[i] as number);
    if (value > max) max = value;
  }
  return max;
}
