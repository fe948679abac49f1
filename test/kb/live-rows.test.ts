import { describe, expect, it } from "vitest";
import { normalize } from "../../src/kb/embedder";
import { BestRows, offsetQuery7, quantize } from "../../src/kb/int8-scoring";
import { LiveRows } from "../../src/kb/live-rows";
import { PAGE_ROWS, type PageRows } from "../../src/kb/vector-pages";

/**
 * The shortlist of src/kb/live-rows.ts (7-bit pre-scan, exact int8 scores of its survivors) against a reference
 * computed here in plain JS: the int8 top m of a full scan, which is what the index shortlisted before the pre-scan.
 */
const DIMS = 384;

function generator(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648 - 0.5;
  };
}

interface Row {
  readonly id: string;
  readonly q8: Int8Array;
  readonly scale: number;
}

function rows(count: number, random: () => number, prefix = "r"): Row[] {
  return Array.from({ length: count }, (_, i) => {
    const { q8, scale } = quantize(normalize(Float32Array.from({ length: DIMS }, random)));
    return { id: `${prefix}${i}`, q8, scale };
  });
}

function pagesOf(all: readonly Row[]): PageRows[] {
  const pages: PageRows[] = [];
  for (let first = 0; first < all.length; first += PAGE_ROWS) {
    const slice = all.slice(first, first + PAGE_ROWS);
    const q8 = new Int8Array(slice.length * DIMS);
    slice.forEach((row, i) => {
      q8.set(row.q8, i * DIMS);
    });
    pages.push({ ids: slice.map((row) => row.id), scales: Float32Array.from(slice, (row) => row.scale), q8 });
  }
  return pages;
}

/** Ids of the int8 top m of a full scan (the pre-scan must not change this set). */
function int8Top(all: readonly Row[], query: Float32Array, m: number): string[] {
  const { q8 } = quantize(query);
  const best = new BestRows(m);
  all.forEach((row, r) => {
    let dot = 0;
    for (let d = 0; d < DIMS; d++) dot += (row.q8[d] as number) * (q8[d] as number);
    best.offer(dot * row.scale, r);
  });
  return best.rowsBestFirst().map((r) => (all[r] as Row).id);
}

describe("LiveRows shortlist", () => {
  it("keeps exactly the int8 top 3k of a full scan (pages loaded, then rows put and removed)", () => {
    const random = generator(7);
    const loaded = rows(3_000, random);
    const live = new LiveRows(DIMS, 3_000);
    for (const page of pagesOf(loaded)) live.appendPage(page);
    const current = new Map(loaded.map((row) => [row.id, row]));
    // Past the loaded capacity (the per-row tables move when the memory grows), replacements, swap-removes.
    for (const row of rows(2_000, random, "p")) {
      live.put(row.id, row.q8, row.scale);
      current.set(row.id, row);
    }
    for (const row of rows(50, random)) {
      live.put(row.id, row.q8, row.scale);
      current.set(row.id, row);
    }
    for (let i = 0; i < 500; i += 7) {
      live.remove(`r${i}`);
      current.delete(`r${i}`);
    }
    expect(live.size).toBe(current.size);
    const all = [...current.values()];
    for (let q = 0; q < 20; q++) {
      const query = normalize(Float32Array.from({ length: DIMS }, random));
      for (const topK of [1, 10, 50]) {
        const got = live.shortlist(query, topK, null);
        const m = Math.max(3 * topK, 30);
        expect(got).toHaveLength(m);
        expect([...got].sort()).toEqual(int8Top(all, query, m).sort());
      }
    }
  });

  it("scores a filter's rows directly, and returns nothing for ids it does not hold", () => {
    const random = generator(11);
    const all = rows(1_000, random);
    const live = new LiveRows(DIMS);
    for (const page of pagesOf(all)) live.appendPage(page);
    const allowed = new Set(all.filter((_, i) => i % 4 === 0).map((row) => row.id));
    const query = normalize(Float32Array.from({ length: DIMS }, random));
    const got = live.shortlist(query, 10, allowed);
    expect(got.every((id) => allowed.has(id))).toBe(true);
    expect([...got].sort()).toEqual(
      int8Top(
        all.filter((row) => allowed.has(row.id)),
        query,
        30,
      ).sort(),
    );
    expect(live.shortlist(query, 10, new Set(["not-here"]))).toEqual([]);
  });

  it("refuses a page appended after a partly full one", () => {
    const random = generator(3);
    const live = new LiveRows(DIMS);
    const [partial] = pagesOf(rows(10, random));
    live.appendPage(partial as PageRows);
    expect(() => live.appendPage(partial as PageRows)).toThrow(RangeError);
  });
});

describe("offsetQuery7", () => {
  it("maps every component into [1, 127] (the relaxed-SIMD kernel's exact range)", () => {
    const random = generator(5);
    for (let i = 0; i < 50; i++) {
      const q = offsetQuery7(normalize(Float32Array.from({ length: DIMS }, random)));
      expect(Math.min(...q)).toBeGreaterThanOrEqual(1);
      expect(Math.max(...q)).toBeLessThanOrEqual(127);
      expect(q.some((value) => value === 1 || value === 127)).toBe(true);
    }
    expect([...offsetQuery7(new Float32Array(32))]).toEqual(new Array(32).fill(64));
  });
});
