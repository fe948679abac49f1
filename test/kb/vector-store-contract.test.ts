import { evictDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { VectorMatch, VectorRecord } from "../../src/kb/vector-store";
import { VectorizeVectorStore } from "../../src/kb/vectorize-index";
import { VectorizeDouble } from "../helpers/vectorize-double";
import {
  type BackendFixture,
  type BackendName,
  backendFixture,
  exactCosine,
  exactTopK,
  inObject,
  nudge,
  records,
  rng,
  stubFor,
  uniqueTenant,
  unitVector,
} from "./vector-fixtures";

/**
 * One contract for every VectorStore backend: the local index (SQLite + int8 SIMD scan + exact re-rank) and the
 * Vectorize adapter, pooled and dedicated. The Vectorize backends run over an in-test double of the binding
 * (test/helpers/vectorize-double.ts) because Vectorize has no local simulator: it is NOT Vectorize, and these
 * tests show the adapter's use of the binding as the double models it. Writes go through the three-step protocol
 * (beforeCommit* / write*Rows inside transactionSync / afterCommit*) exactly as KnowledgeBase drives it; before
 * asserting query results, Vectorize's queued mutations are processed (`settle`).
 */

const DIMS = 32;

/** Contract items a backend is known not to meet (run with it.fails so a fix is noticed; see the report). */
type Gap = "allowed-beyond-overfetch";

function sameRanking(actual: VectorMatch[], expected: VectorMatch[]) {
  expect(actual.map((match) => match.id)).toEqual(expected.map((match) => match.id));
  actual.forEach((match, i) => {
    expect(match.score).toBeCloseTo((expected[i] as VectorMatch).score, 5);
  });
}

function contract(name: BackendName, makeFixture: () => BackendFixture, gaps: ReadonlySet<Gap> = new Set()) {
  const test = (gap: Gap | null) => (gap && gaps.has(gap) ? it.fails : it);

  describe(`VectorStore contract: ${name}`, () => {
    it("upsert then query returns the nearest vectors, best first, with exact cosine scores", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-near-${name}`);
      const corpus = records("v", 40, DIMS, 1);
      const random = rng(2);
      const queries = [
        unitVector(DIMS, random),
        unitVector(DIMS, random),
        nudge((corpus[7] as VectorRecord).vector, 0.2, random),
      ];
      await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
      fixture.settle();
      await inObject(fixture, tenant, async ({ store }) => {
        for (const query of queries) {
          const expected = exactTopK(corpus, query, 5);
          sameRanking(await store.query(query, 5, null), expected);
        }
        // A nudged copy of v7 has v7 as its nearest neighbour.
        expect((await store.query(queries[2] as Float32Array, 1, null))[0]?.id).toBe("v7");
        // A stored vector queried exactly scores 1.
        const [hit] = await store.query((corpus[3] as VectorRecord).vector, 1, null);
        expect(hit?.id).toBe("v3");
        expect(hit?.score).toBeCloseTo(1, 5);
      });
    });

    it("replacing a vector updates the results", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-repl-${name}`);
      const corpus = records("r", 12, DIMS, 3);
      const random = rng(4);
      const before = (corpus[0] as VectorRecord).vector;
      const after = unitVector(DIMS, random);
      await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
      fixture.settle();
      await inObject(fixture, tenant, (ctx) => ctx.upsert([{ id: "r0", vector: after }]));
      fixture.settle();
      const current = corpus.map((record) => (record.id === "r0" ? { id: "r0", vector: after } : record));
      await inObject(fixture, tenant, async ({ store }) => {
        const [top] = await store.query(after, 1, null);
        expect(top?.id).toBe("r0");
        expect(top?.score).toBeCloseTo(1, 5);
        // The old vector no longer scores 1 for r0: r0 is scored by its new vector.
        const all = await store.query(before, 12, null);
        sameRanking(all, exactTopK(current, before, 12));
        expect(all.find((match) => match.id === "r0")?.score).toBeCloseTo(exactCosine(before, after), 5);
        expect(all).toHaveLength(12);
        expect((await store.stats()).vectors).toBe(12);
      });
    });

    it("delete removes vectors from the results and from the count", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-del-${name}`);
      const corpus = records("d", 10, DIMS, 5);
      await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
      fixture.settle();
      await inObject(fixture, tenant, (ctx) => ctx.remove(["d2", "d5", "never-stored"]));
      fixture.settle();
      const remaining = corpus.filter((record) => record.id !== "d2" && record.id !== "d5");
      await inObject(fixture, tenant, async ({ store }) => {
        const results = await store.query((corpus[2] as VectorRecord).vector, 10, null);
        expect(results.map((match) => match.id)).not.toContain("d2");
        expect(results.map((match) => match.id)).not.toContain("d5");
        sameRanking(results, exactTopK(remaining, (corpus[2] as VectorRecord).vector, 10));
        expect((await store.stats()).vectors).toBe(8);
      });
    });

    it("`allowed` restricts the candidates; unknown ids are ignored; an empty set finds nothing", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-allow-${name}`);
      const corpus = records("a", 30, DIMS, 6);
      const query = unitVector(DIMS, rng(7));
      await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
      fixture.settle();
      // Take candidates from the middle of the exact ranking, so the filter must change the answer.
      const ranking = exactTopK(corpus, query, 30);
      const allowed = new Set([ranking[10], ranking[14], ranking[20]].map((match) => (match as VectorMatch).id));
      await inObject(fixture, tenant, async ({ store }) => {
        const results = await store.query(query, 5, new Set([...allowed, "not-an-atom"]));
        sameRanking(results, exactTopK(corpus, query, 5, allowed));
        expect(results).toHaveLength(3);
        expect(await store.query(query, 2, allowed)).toHaveLength(2);
        expect(await store.query(query, 5, new Set())).toEqual([]);
        expect(await store.query(query, 5, new Set(["not-an-atom"]))).toEqual([]);
      });
    });

    it("`allowed` may name more atoms than one SQL statement binds (120 of 150)", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-big-${name}`);
      const corpus = records("g", 150, DIMS, 19);
      const query = unitVector(DIMS, rng(26));
      await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
      fixture.settle();
      const allowed = new Set(corpus.filter((_, i) => i % 5 !== 0).map((record) => record.id));
      expect(allowed.size).toBe(120);
      await inObject(fixture, tenant, async ({ store }) => {
        sameRanking(await store.query(query, 10, allowed), exactTopK(corpus, query, 10, allowed));
      });
    });

    test("allowed-beyond-overfetch")(
      "`allowed` finds a candidate however far it ranks among all vectors (here: 140th of 150)",
      async () => {
        const fixture = makeFixture();
        const tenant = uniqueTenant(`vc-far-${name}`);
        const corpus = records("f", 150, DIMS, 8);
        const query = unitVector(DIMS, rng(9));
        await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
        fixture.settle();
        const far = (exactTopK(corpus, query, 150)[139] as VectorMatch).id;
        await inObject(fixture, tenant, async ({ store }) => {
          sameRanking(await store.query(query, 3, new Set([far])), exactTopK(corpus, query, 3, new Set([far])));
        });
      },
    );

    it("topK is honoured", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-topk-${name}`);
      const corpus = records("k", 40, DIMS, 10);
      const query = unitVector(DIMS, rng(11));
      await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
      fixture.settle();
      await inObject(fixture, tenant, async ({ store }) => {
        for (const topK of [1, 3, 10, 40]) {
          sameRanking(await store.query(query, topK, null), exactTopK(corpus, query, topK));
        }
        // More than stored (50 is the knowledge base's top_k maximum): every vector, in order.
        sameRanking(await store.query(query, 50, null), exactTopK(corpus, query, 40));
      });
    });

    it("a vector of the wrong dimensions is rejected, before anything is written; so is such a query", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-dims-${name}`);
      const corpus = records("m", 3, DIMS, 12);
      await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
      fixture.settle();
      const upsertsBefore = fixture.double?.callsOf("upsert").length ?? 0;
      await inObject(fixture, tenant, async (ctx) => {
        const wrong = [{ id: "m0", vector: unitVector(DIMS + 16, rng(13)) }];
        await expect(ctx.upsert([...records("n", 2, DIMS, 14), ...wrong])).rejects.toThrow(/dimensions/);
        await expect(ctx.store.query(unitVector(DIMS - 16, rng(15)), 3, null)).rejects.toThrow(/dimensions/);
      });
      // Nothing of the refused batch reached the index.
      expect(fixture.double?.callsOf("upsert").length ?? 0).toBe(upsertsBefore);
      fixture.settle();
      await inObject(fixture, tenant, async ({ store }) => {
        expect((await store.stats()).vectors).toBe(3);
        sameRanking(
          await store.query((corpus[0] as VectorRecord).vector, 5, null),
          exactTopK(corpus, (corpus[0] as VectorRecord).vector, 5),
        );
      });
    });

    it("stats report backend, dimensions, count and consistency", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-stats-${name}`);
      await inObject(fixture, tenant, async ({ store }) => {
        expect(await store.stats()).toEqual({
          backend: name,
          dimensions: DIMS,
          vectors: 0,
          consistency: name === "local" ? "synchronous" : "eventual",
          pendingMutation: null,
        });
      });
      await inObject(fixture, tenant, (ctx) => ctx.upsert(records("s", 7, DIMS, 16)));
      const lastMutation = fixture.double?.callsOf("upsert").at(-1)?.mutationId ?? null;
      await inObject(fixture, tenant, async ({ store }) => {
        const stats = await store.stats();
        expect(stats.backend).toBe(name);
        expect(stats.dimensions).toBe(DIMS);
        if (name === "local") {
          expect(stats).toMatchObject({ vectors: 7, consistency: "synchronous", pendingMutation: null });
        } else {
          // Not processed yet: the mutation is reported as pending.
          expect(lastMutation).toMatch(/^[0-9a-f-]{36}$/);
          expect(stats).toMatchObject({ consistency: "eventual", pendingMutation: lastMutation });
        }
      });
      fixture.settle();
      await inObject(fixture, tenant, async ({ store }) => {
        expect(await store.stats()).toEqual({
          backend: name,
          dimensions: DIMS,
          vectors: 7,
          consistency: name === "local" ? "synchronous" : "eventual",
          pendingMutation: null,
        });
      });
    });

    it("the vectors survive eviction of the tenant object (a new instance reads them from storage)", async () => {
      const fixture = makeFixture();
      const tenant = uniqueTenant(`vc-evict-${name}`);
      const corpus = records("e", 20, DIMS, 17);
      const query = unitVector(DIMS, rng(18));
      await inObject(fixture, tenant, async (ctx) => {
        await ctx.upsert(corpus);
        fixture.settle();
        sameRanking(await ctx.store.query(query, 5, null), exactTopK(corpus, query, 5));
      });
      await evictDurableObject(stubFor(tenant));
      await inObject(fixture, tenant, async ({ store }) => {
        sameRanking(await store.query(query, 5, null), exactTopK(corpus, query, 5));
        expect((await store.stats()).vectors).toBe(20);
      });
    });
  });
}

// KNOWN GAP (see the report; documented in docs/storage.md): with `allowed`, the Vectorize adapter over-fetches the
// 100 nearest vectors of the tenant and filters those, so an allowed atom ranked below them is never found.
const VECTORIZE_GAPS: ReadonlySet<Gap> = new Set(); // exact scoring of allowed ids closed the over-fetch gap

contract("local", () => backendFixture("local", DIMS));
contract("vectorize-pooled", () => backendFixture("vectorize-pooled", DIMS), VECTORIZE_GAPS);
contract("vectorize-dedicated", () => backendFixture("vectorize-dedicated", DIMS), VECTORIZE_GAPS);

/** Vectorize indexes asynchronously; the adapter must say so rather than pretend writes are searchable. */
describe.each(["vectorize-pooled", "vectorize-dedicated"] as const)("Vectorize eventual consistency: %s", (name) => {
  it("a write is not searchable before Vectorize processes it, and stats report the pending mutation", async () => {
    const fixture = backendFixture(name, DIMS);
    const double = fixture.double as VectorizeDouble;
    const tenant = uniqueTenant(`ve-pend-${name}`);
    const corpus = records("p", 5, DIMS, 20);
    await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
    const [mutation] = double.pendingMutations;
    expect(double.pendingMutations).toHaveLength(1);
    await inObject(fixture, tenant, async ({ store }) => {
      expect(await store.query((corpus[0] as VectorRecord).vector, 5, null)).toEqual([]);
      const stats = await store.stats();
      expect(stats.consistency).toBe("eventual");
      expect(stats.pendingMutation).toBe(mutation);
      // Pooled counts this tenant's committed id rows (written at once); dedicated reports the index's own count,
      // which only moves when Vectorize has processed the mutation.
      expect(stats.vectors).toBe(name === "vectorize-pooled" ? 5 : 0);
    });
    double.process();
    await inObject(fixture, tenant, async ({ store }) => {
      expect((await store.query((corpus[0] as VectorRecord).vector, 1, null))[0]?.id).toBe("p0");
      expect(await store.stats()).toMatchObject({ vectors: 5, pendingMutation: null });
    });
  });

  it("stats follow the tenant's LAST mutation: processing an earlier one leaves the later one pending", async () => {
    const fixture = backendFixture(name, DIMS);
    const double = fixture.double as VectorizeDouble;
    const tenant = uniqueTenant(`ve-order-${name}`);
    await inObject(fixture, tenant, (ctx) => ctx.upsert(records("o", 3, DIMS, 21)));
    await inObject(fixture, tenant, (ctx) => ctx.remove(["o1"]));
    const [first, second] = double.pendingMutations;
    double.process(first);
    await inObject(fixture, tenant, async ({ store }) => {
      expect((await store.stats()).pendingMutation).toBe(second);
    });
    double.process();
    await inObject(fixture, tenant, async ({ store }) => {
      expect((await store.stats()).pendingMutation).toBeNull();
    });
  });

  it("a deleted vector is hidden at once through the tenant's id table, while Vectorize still holds it", async () => {
    const fixture = backendFixture(name, DIMS);
    const double = fixture.double as VectorizeDouble;
    const tenant = uniqueTenant(`ve-delhide-${name}`);
    const corpus = records("h", 6, DIMS, 22);
    await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
    double.process();
    await inObject(fixture, tenant, (ctx) => ctx.remove(["h0"]));
    // The deletion is queued, the vector still in the index...
    expect(double.snapshot().length).toBe(6);
    await inObject(fixture, tenant, async ({ store }) => {
      const results = await store.query((corpus[0] as VectorRecord).vector, 6, null);
      // ...but it no longer maps to an atom of this tenant.
      expect(results.map((match) => match.id)).not.toContain("h0");
      expect((await store.stats()).pendingMutation).toBe(double.pendingMutations[0]);
    });
  });

  it("a replacement is eventually consistent: the old vector is served until the mutation is processed", async () => {
    const fixture = backendFixture(name, DIMS);
    const double = fixture.double as VectorizeDouble;
    const tenant = uniqueTenant(`ve-repl-${name}`);
    const [old] = records("x", 1, DIMS, 23) as [VectorRecord];
    const fresh = unitVector(DIMS, rng(24));
    await inObject(fixture, tenant, (ctx) => ctx.upsert([old]));
    double.process();
    await inObject(fixture, tenant, (ctx) => ctx.upsert([{ id: "x0", vector: fresh }]));
    await inObject(fixture, tenant, async ({ store }) => {
      expect((await store.query(old.vector, 1, null))[0]?.score).toBeCloseTo(1, 5);
    });
    double.process();
    await inObject(fixture, tenant, async ({ store }) => {
      expect((await store.query(old.vector, 1, null))[0]?.score).toBeCloseTo(exactCosine(old.vector, fresh), 5);
      expect((await store.query(fresh, 1, null))[0]?.score).toBeCloseTo(1, 5);
    });
  });

  it("the adapter stays within Vectorize's documented limits (batches, topK, no values or metadata)", async () => {
    const fixture = backendFixture(name, DIMS);
    const double = fixture.double as VectorizeDouble;
    const tenant = uniqueTenant(`ve-limits-${name}`);
    const corpus = records("l", 1001, DIMS, 25);
    await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus));
    await inObject(fixture, tenant, (ctx) => ctx.remove(corpus.map((record) => record.id)));
    expect(double.callsOf("upsert").map((call) => call.vectors?.length)).toEqual([1000, 1]);
    expect(double.callsOf("deleteByIds").map((call) => call.ids?.length)).toEqual([1000, 1]);
    await inObject(fixture, tenant, (ctx) => ctx.upsert(corpus.slice(0, 30)));
    double.process();
    await inObject(fixture, tenant, async ({ store }) => {
      await store.query((corpus[0] as VectorRecord).vector, 50, null);
      await store.query((corpus[0] as VectorRecord).vector, 5, new Set(["l1", "l2"]));
    });
    for (const call of double.callsOf("query")) {
      expect(call.topK).toBeLessThanOrEqual(100);
      expect(call.returnValues).toBe(false);
      expect(call.returnMetadata).toBe("none");
    }
    // Every call was accepted by the double's limit checks.
    expect(double.calls.filter((call) => call.error !== undefined)).toEqual([]);
  });
});

describe("Vectorize adapter: configuration limits", () => {
  it("refuses more than 1536 dimensions and a tenant id longer than a 64-byte namespace", async () => {
    const double = new VectorizeDouble({ dimensions: 16 });
    const tenant = uniqueTenant("ve-conf");
    await inObject(backendFixture("local", 16), tenant, async ({ state }) => {
      const placement = { mode: "pooled", index: double } as const;
      expect(() => new VectorizeVectorStore(state.storage.sql, tenant, placement, 1537)).toThrow(RangeError);
      expect(() => new VectorizeVectorStore(state.storage.sql, "t".repeat(65), placement, 16)).toThrow(RangeError);
      expect(() => new VectorizeVectorStore(state.storage.sql, "t".repeat(64), placement, 16)).not.toThrow();
    });
  });
});
