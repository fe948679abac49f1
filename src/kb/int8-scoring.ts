/**
 * The int8 arithmetic of the local index (src/kb/local-index.ts), pure: quantization of vectors and the bounded
 * selection of the best-scoring rows. Int8 scores only shortlist; the shortlisted candidates are re-ranked exactly
 * with their float32 vectors (src/kb/vector-tables.ts).
 */

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
export function topRows(
  raw: Int32Array,
  n: number,
  m: number,
  scales: Float32Array,
  rows: Int32Array | null,
): number[] {
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
