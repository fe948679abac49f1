/**
 * Timing and exact-search helpers for the benchmark.
 *
 * Clock: inside workerd, `performance.now()` is the wall clock (it equals `Date.now()`, `timeOrigin` is 0) with
 * 1 ms resolution. Under local workerd (this bench) it advances during pure computation; on Cloudflare's edge it
 * would not (the clock only moves across I/O there), so these timings are only meaningful locally. With a 1 ms
 * tick, one sub-millisecond operation cannot be timed on its own, so `timeInterleaved` times every item by running it
 * `reps` times back to back (enough reps to fill a ~25 ms window) and divides; it also keeps one single-shot pass,
 * whose mean is unbiased (the tick phase is random relative to the operation) and shows whether repetition (warm
 * caches) flatters the repeated figures.
 */

export const now = (): number => performance.now();

export interface LatencyStats {
  readonly samples: number;
  /** Repetitions per sample (each sample is the mean of this many back-to-back runs of one item). */
  readonly reps: number;
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly p99Ms: number;
  readonly meanMs: number;
  readonly maxMs: number;
  /** Mean of one run per item, timed individually with the 1 ms clock (unbiased, coarse per item). */
  readonly singleShotMeanMs: number;
  /**
   * Percentiles of those single runs (each quantized to the 1 ms tick, so only meaningful for multi-ms operations).
   * Single runs are interleaved with the other operations, so caches are not warmed by the same query just before.
   */
  readonly singleShotP50Ms: number;
  readonly singleShotP95Ms: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (rank - lo);
}

/**
 * Times several operations over the same items, interleaved: for each item, every operation in turn, so that all
 * operations see the same machine load (other processes share the 2 cores; load drifts over a run).
 *   1. warm-up: each operation on the first `warmup` items;
 *   2. single-shot pass: each operation once per item, timed alone (its results are returned: `results[op][i]`);
 *   3. repeated pass: each operation `reps[op]` times back to back per item, `reps` chosen from the single-shot
 *      pass so that one sample spans about `windowMs`; the sample is the total divided by `reps`.
 */
export async function timeInterleaved<T, Ops extends Record<string, (item: T) => unknown>>(
  items: readonly T[],
  ops: Ops,
  options: { windowMs?: number; warmup?: number; maxReps?: number } = {},
): Promise<{ [K in keyof Ops]: { stats: LatencyStats; results: Awaited<ReturnType<Ops[K]>>[] } }> {
  const names = Object.keys(ops) as (keyof Ops & string)[];
  const windowMs = options.windowMs ?? 25;
  const warmup = Math.min(options.warmup ?? 30, items.length);
  for (let i = 0; i < warmup; i++) for (const name of names) await (ops[name] as (item: T) => unknown)(items[i] as T);

  const results = Object.fromEntries(names.map((name) => [name, [] as unknown[]])) as Record<string, unknown[]>;
  const single = Object.fromEntries(names.map((name) => [name, 0])) as Record<string, number>;
  const singles = Object.fromEntries(names.map((name) => [name, [] as number[]])) as Record<string, number[]>;
  for (const item of items) {
    for (const name of names) {
      const t0 = now();
      const value = await (ops[name] as (item: T) => unknown)(item);
      const elapsed = now() - t0;
      single[name] = (single[name] as number) + elapsed;
      (singles[name] as number[]).push(elapsed);
      (results[name] as unknown[]).push(value);
    }
  }
  const reps = Object.fromEntries(
    names.map((name) => {
      const estimate = Math.max((single[name] as number) / items.length, 0.001);
      return [name, Math.max(1, Math.min(options.maxReps ?? 2000, Math.ceil(windowMs / estimate)))];
    }),
  ) as Record<string, number>;
  const samples = Object.fromEntries(names.map((name) => [name, [] as number[]])) as Record<string, number[]>;
  for (const item of items) {
    for (const name of names) {
      const run = ops[name] as (item: T) => unknown;
      const count = reps[name] as number;
      const t0 = now();
      for (let r = 0; r < count; r++) await run(item);
      (samples[name] as number[]).push((now() - t0) / count);
    }
  }
  const out: Record<string, { stats: LatencyStats; results: unknown[] }> = {};
  for (const name of names) {
    const sorted = (samples[name] as number[]).sort((a, b) => a - b);
    const singleSorted = (singles[name] as number[]).sort((a, b) => a - b);
    out[name] = {
      stats: {
        samples: sorted.length,
        reps: reps[name] as number,
        p50Ms: round(percentile(sorted, 50)),
        p95Ms: round(percentile(sorted, 95)),
        p99Ms: round(percentile(sorted, 99)),
        meanMs: round(mean(sorted)),
        maxMs: round(sorted.at(-1) ?? Number.NaN),
        singleShotMeanMs: round((single[name] as number) / items.length),
        singleShotP50Ms: round(percentile(singleSorted, 50)),
        singleShotP95Ms: round(percentile(singleSorted, 95)),
      },
      results: results[name] as unknown[],
    };
  }
  return out as { [K in keyof Ops]: { stats: LatencyStats; results: Awaited<ReturnType<Ops[K]>>[] } };
}

export function round(value: number, digits = 4): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export interface ExactTop {
  /** Row numbers, best first. */
  readonly rows: Int32Array;
  readonly scores: Float64Array;
}

/**
 * Exact float32 brute force: the dot product of `query` with every row of `data` (n rows of `dims`), keeping the
 * best k by insertion into a sorted array. This is the baseline the int8 index is compared against.
 */
export function exactTopK(data: Float32Array, n: number, dims: number, query: Float32Array, k: number): ExactTop {
  const rows = new Int32Array(k).fill(-1);
  const scores = new Float64Array(k).fill(Number.NEGATIVE_INFINITY);
  for (let row = 0, base = 0; row < n; row++, base += dims) {
    let dot = 0;
    for (let d = 0; d < dims; d++) dot += (data[base + d] as number) * (query[d] as number);
    if (dot <= (scores[k - 1] as number)) continue;
    let i = k - 1;
    while (i > 0 && (scores[i - 1] as number) < dot) {
      scores[i] = scores[i - 1] as number;
      rows[i] = rows[i - 1] as number;
      i--;
    }
    scores[i] = dot;
    rows[i] = row;
  }
  return { rows, scores };
}

/**
 * recall@k of `found` (ids the index returned) against the exact top k. `strict`: |found ∩ exact| / k.
 * `tiesCounted`: a found id also counts when its exact score ties the k-th exact score (within 1e-6), since
 * either of two equally scored vectors is a correct answer.
 */
export function recallAtK(
  found: readonly string[],
  exact: ExactTop,
  ids: readonly string[],
  exactScoreOf: (id: string) => number,
  k: number,
): { strict: number; tiesCounted: number } {
  const truth = new Set<string>();
  for (let i = 0; i < k; i++) {
    const row = exact.rows[i] as number;
    if (row >= 0) truth.add(ids[row] as string);
  }
  const kth = exact.scores[Math.min(k, exact.scores.length) - 1] as number;
  let strict = 0;
  let ties = 0;
  for (const id of found.slice(0, k)) {
    if (truth.has(id)) {
      strict++;
      ties++;
    } else if (exactScoreOf(id) >= kth - 1e-6) ties++;
  }
  const denominator = Math.min(k, truth.size);
  return { strict: strict / denominator, tiesCounted: Math.min(1, ties / denominator) };
}

export function mean(values: readonly number[]): number {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : Number.NaN;
}

export function dot(data: Float32Array, row: number, dims: number, query: Float32Array): number {
  let sum = 0;
  const base = row * dims;
  for (let d = 0; d < dims; d++) sum += (data[base + d] as number) * (query[d] as number);
  return sum;
}
