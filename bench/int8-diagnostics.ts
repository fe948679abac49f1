/**
 * Diagnostics for the int8 shortlist (not timed): how good is the int8 ranking alone, before the exact re-rank?
 * Uses the index's own quantization (`quantize`) and SIMD kernel (src/kb/simd/int8-dot.wasm) in a private
 * instance, over the same float32 vectors as the exact baseline. For each query it reports
 *   - int8-only recall@10: the int8 top 10 against the exact top 10 (what the index would return without re-rank);
 *   - coverage@m: the share of the exact top 10 inside the int8 top m (m = 20, 30, 40). The index re-ranks the
 *     int8 top 3k = 30 (RERANK_FACTOR = 3; it re-ranked the top 4k = 40 before the 7-bit pre-scan), so coverage@30
 *     is its recall if the pre-scan keeps the int8 top 30;
 *   - sameAsFullInt8Scan: the share of queries for which the index returned exactly (same ids, same scores, same
 *     order) what the index before the pre-scan returned: a full int8 scan, its top 40 re-ranked with the exact
 *     float32 dot product (the same arithmetic as src/kb/vector-tables.ts).
 */
import { quantize } from "../src/kb/int8-scoring";
import int8DotModule from "../src/kb/simd/int8-dot.wasm";
import type { VectorMatch } from "../src/kb/vector-store";
import { type ExactTop, mean, round } from "./measure";

interface Kernels {
  readonly memory: WebAssembly.Memory;
  dot_all(vecs: number, n: number, dim: number, q: number, out: number): void;
}

export interface Int8Diagnostics {
  readonly int8OnlyRecallAt10: number;
  readonly coverageAt20: number;
  readonly coverageAt30: number;
  readonly coverageAt40: number;
  readonly sameAsFullInt8Scan: number;
  readonly queries: number;
}

export function int8Diagnostics(
  data: Float32Array,
  n: number,
  dims: number,
  queries: readonly Float32Array[],
  exact: readonly ExactTop[],
  found: readonly (readonly VectorMatch[])[],
  ids: readonly string[],
): Int8Diagnostics {
  const kernels = new WebAssembly.Instance(int8DotModule, {}).exports as unknown as Kernels;
  const queryAt = Math.ceil((n * dims) / 16) * 16;
  const outAt = queryAt + dims * 2;
  const needed = outAt + n * 4;
  const have = kernels.memory.buffer.byteLength;
  if (needed > have) kernels.memory.grow(Math.ceil((needed - have) / 65_536));
  const bytes = new Int8Array(kernels.memory.buffer);
  const scales = new Float32Array(n);
  for (let row = 0; row < n; row++) {
    const { q8, scale } = quantize(data.subarray(row * dims, (row + 1) * dims));
    bytes.set(q8, row * dims);
    scales[row] = scale;
  }
  const only: number[] = [];
  const at20: number[] = [];
  const at30: number[] = [];
  const at40: number[] = [];
  let same = 0;
  const scores = new Float64Array(n);
  for (let i = 0; i < queries.length; i++) {
    const query = queries[i] as Float32Array;
    new Int16Array(kernels.memory.buffer, queryAt, dims).set(quantize(query).q8);
    kernels.dot_all(0, n, dims, queryAt, outAt);
    const raw = new Int32Array(kernels.memory.buffer, outAt, n);
    for (let row = 0; row < n; row++) scores[row] = (raw[row] as number) * (scales[row] as number);
    const top = topRows(scores, n, 40);
    const truth = new Set((exact[i] as ExactTop).rows.filter((row) => row >= 0));
    const share = (m: number) => top.slice(0, m).filter((row) => truth.has(row)).length / truth.size;
    only.push(share(10));
    at20.push(share(20));
    at30.push(share(30));
    at40.push(share(40));
    const k = (found[i] as readonly VectorMatch[]).length;
    const reference = top
      .map((row) => {
        let dot = 0;
        for (let d = 0; d < dims; d++) dot += (data[row * dims + d] as number) * (query[d] as number);
        return { id: ids[row] as string, score: dot };
      })
      .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1))
      .slice(0, k);
    if (JSON.stringify(reference) === JSON.stringify(found[i])) same++;
  }
  return {
    int8OnlyRecallAt10: round(mean(only)),
    coverageAt20: round(mean(at20)),
    coverageAt30: round(mean(at30)),
    coverageAt40: round(mean(at40)),
    sameAsFullInt8Scan: round(same / queries.length),
    queries: queries.length,
  };
}

/** Rows of the m best scores, best first (insertion into a sorted array; m is small). */
function topRows(scores: Float64Array, n: number, m: number): number[] {
  const best: number[] = [];
  const bestScores: number[] = [];
  for (let row = 0; row < n; row++) {
    const score = scores[row] as number;
    if (best.length === m && score <= (bestScores[m - 1] as number)) continue;
    let i = best.length < m ? best.length : m - 1;
    if (best.length < m) {
      best.push(row);
      bestScores.push(score);
    }
    while (i > 0 && (bestScores[i - 1] as number) < score) {
      best[i] = best[i - 1] as number;
      bestScores[i] = bestScores[i - 1] as number;
      i--;
    }
    best[i] = row;
    bestScores[i] = score;
  }
  return best;
}
