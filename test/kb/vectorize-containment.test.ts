import { runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { Env } from "../../src/env";
import { placementFor } from "../../src/kb/placement";
import { parseVectorPlacement } from "../../src/kb/placement-config";
import type { VectorRecord } from "../../src/kb/vector-store";
import { VectorizeVectorStore } from "../../src/kb/vectorize-index";
import { type RecordedCall, VectorizeDouble } from "../helpers/vectorize-double";
import { deleteVectors, records, rng, stubFor, uniqueTenant, unitVector, upsertVectors } from "./vector-fixtures";

/**
 * Tenant containment on Vectorize, over the in-test double of the binding (test/helpers/vectorize-double.ts;
 * NOT Vectorize — it stands in because no local simulator exists). Pooled: two tenants' adapters share ONE index
 * (each gets a view of it tagged with the tenant, so the call log says who sent what). Dedicated: each tenant has
 * its own index. Each tenant's adapter runs inside its own tenant object, over that object's SQLite.
 */

const DIMS = 32;

type Op = (store: VectorizeVectorStore, state: DurableObjectState) => Promise<unknown>;

/** Runs `op` inside `tenant`'s object with a Vectorize adapter over `index` (pooled or dedicated). */
function asTenant<R>(tenant: string, mode: "pooled" | "dedicated", index: Vectorize, op: Op): Promise<R> {
  return runInDurableObject(stubFor(tenant), async (_instance, state) => {
    const store = new VectorizeVectorStore(state.storage.sql, tenant, { mode, index }, DIMS);
    return (await op(store, state)) as R;
  });
}

/** The vector id the tenant's adapter derives for an atom id (computed by the adapter itself). */
function vectorIdOf(tenant: string, atomId: string): Promise<string> {
  return asTenant(tenant, "pooled", new VectorizeDouble({ dimensions: DIMS }), async (store) => store.vectorId(atomId));
}

/**
 * The whole call log of a shared index, whatever the test did: every query carries namespace = the calling
 * tenant, every upserted vector carries it, and every id a tenant deletes was only ever written in its namespace.
 */
function assertContained(double: VectorizeDouble, tenants: readonly string[]) {
  const calls = double.calls;
  for (const call of calls) {
    const caller = call.caller;
    expect(caller, `call #${call.seq} ${call.method} has no caller`).not.toBeNull();
    expect(tenants).toContain(caller);
    const where = `call #${call.seq} ${call.method} by ${caller}`;
    switch (call.method) {
      case "query":
      case "queryById":
        expect(call.namespace, where).toBe(caller);
        break;
      case "insert":
      case "upsert":
        expect(call.vectors?.length, where).toBeGreaterThan(0);
        for (const vector of call.vectors ?? []) expect(vector.namespace, where).toBe(caller);
        break;
      case "deleteByIds":
        // deleteByIds has no namespace parameter in Vectorize (ids are index-wide): containment rests on the ids.
        for (const id of call.ids ?? []) {
          for (const namespace of double.namespacesOf(id)) expect(namespace, `${where}: id ${id}`).toBe(caller);
        }
        break;
      case "getByIds":
      case "describe":
        break;
    }
  }
  return calls;
}

describe("pooled Vectorize: two tenants over one index", () => {
  let shared: { double: VectorizeDouble; tenants: string[] } | null = null;

  function pool() {
    const double = new VectorizeDouble({ dimensions: DIMS, name: "pool" });
    const a = uniqueTenant("pool-a");
    const b = uniqueTenant("pool-b");
    shared = { double, tenants: [a, b] };
    return { double, a, b, A: double.binding(a), B: double.binding(b) };
  }

  afterEach(() => {
    if (!shared) return;
    const calls = assertContained(shared.double, shared.tenants);
    expect(calls.length).toBeGreaterThan(0);
    shared = null;
  });

  it("B querying with A's exact canary vector gets nothing of A's", async () => {
    const { double, a, b, A, B } = pool();
    const canary: VectorRecord = { id: "canary", vector: unitVector(DIMS, rng(100)) };
    await asTenant(a, "pooled", A, (store, state) => upsertVectors(store, state, [canary]));
    await asTenant(b, "pooled", B, (store, state) => upsertVectors(store, state, records("b", 5, DIMS, 101)));
    double.process();

    const seen = await asTenant<unknown[]>(b, "pooled", B, async (store) => [
      await store.query(canary.vector, 50, null),
      await store.query(canary.vector, 5, new Set(["canary"])),
    ]);
    for (const results of seen) {
      expect((results as { id: string }[]).map((match) => match.id)).not.toContain("canary");
    }
    // The index itself never handed A's vector to B: B's queries were confined to B's namespace.
    const canaryId = await vectorIdOf(a, "canary");
    for (const call of double.callsOf("query").filter((entry) => entry.caller === b)) {
      expect(call.returned).not.toContain(canaryId);
    }
    // A, of course, finds its canary.
    const own = await asTenant<{ id: string; score: number }[]>(a, "pooled", A, (store) =>
      store.query(canary.vector, 1, null),
    );
    expect(own[0]?.id).toBe("canary");
    expect(own[0]?.score).toBeCloseTo(1, 5);
  });

  it("defence in depth: even if the index ignored the namespace, B's id table cannot map A's vector to an atom", async () => {
    const { double, a, b, A, B } = pool();
    const canary: VectorRecord = { id: "canary", vector: unitVector(DIMS, rng(110)) };
    await asTenant(a, "pooled", A, (store, state) => upsertVectors(store, state, [canary]));
    await asTenant(b, "pooled", B, (store, state) =>
      upsertVectors(store, state, [{ id: "canary", vector: unitVector(DIMS, rng(111)) }]),
    );
    double.process();
    double.ignoreQueryNamespace = true; // fault injection: a broken index returns every namespace's vectors
    const results = await asTenant<{ id: string; score: number }[]>(b, "pooled", B, (store) =>
      store.query(canary.vector, 10, null),
    );
    const call = double.callsOf("query").at(-1) as RecordedCall;
    expect(call.returned).toContain(await vectorIdOf(a, "canary")); // the index did leak A's vector...
    // ...but the adapter only returned B's own atom, scored by B's vector (not A's exact match).
    expect(results.map((match) => match.id)).toEqual(["canary"]);
    expect(results[0]?.score).toBeLessThan(0.99);
  });

  it("the same atom id in A and B gets different vector ids: no cross-tenant overwrite", async () => {
    const { double, a, b, A, B } = pool();
    const vA = unitVector(DIMS, rng(120));
    const vB = unitVector(DIMS, rng(121));
    await asTenant(a, "pooled", A, (store, state) => upsertVectors(store, state, [{ id: "same-id", vector: vA }]));
    await asTenant(b, "pooled", B, (store, state) => upsertVectors(store, state, [{ id: "same-id", vector: vB }]));
    double.process();

    const [idA, idB] = [await vectorIdOf(a, "same-id"), await vectorIdOf(b, "same-id")];
    expect(idA).not.toBe(idB);
    expect(new TextEncoder().encode(idA).byteLength).toBeLessThanOrEqual(64);
    expect(double.snapshot(a).map((vector) => vector.id)).toEqual([idA]);
    expect(double.snapshot(b).map((vector) => vector.id)).toEqual([idB]);

    // Each tenant still finds its own vector under "same-id", with score 1 for its own vector.
    const fromA = await asTenant<{ id: string; score: number }[][]>(a, "pooled", A, async (store) => [
      await store.query(vA, 5, null),
      await store.query(vB, 5, null),
    ]);
    expect(fromA[0]).toEqual([{ id: "same-id", score: expect.closeTo(1, 5) }]);
    expect(fromA[1]?.[0]?.score).toBeLessThan(0.99); // scored against A's vector, not B's
    const fromB = await asTenant<{ id: string; score: number }[]>(b, "pooled", B, (store) => store.query(vB, 5, null));
    expect(fromB).toEqual([{ id: "same-id", score: expect.closeTo(1, 5) }]);
  });

  it("stats: while A's write is queued it is pending for A; B's writes do not clear it", async () => {
    const { double, a, b, A, B } = pool();
    await asTenant(a, "pooled", A, (store, state) => upsertVectors(store, state, records("a", 2, DIMS, 150)));
    const [mutationA] = double.pendingMutations;
    await asTenant(b, "pooled", B, (store, state) => upsertVectors(store, state, records("b", 2, DIMS, 151)));
    const statsA = await asTenant<{ pendingMutation: string | null; vectors: number }>(a, "pooled", A, (store) =>
      store.stats(),
    );
    const statsB = await asTenant<{ pendingMutation: string | null }>(b, "pooled", B, (store) => store.stats());
    expect(statsA).toMatchObject({ pendingMutation: mutationA, vectors: 2 });
    expect(statsB.pendingMutation).toBe(double.pendingMutations[1]);
  });

  // Regression: processedUpToMutation is index-wide. Once the pooled index has processed a later
  // mutation of ANOTHER tenant, A's last mutation id never equals it again, so A is reported pending forever.
  it("stats: once the pooled index processed A's mutation (and B's after it), A has nothing pending", async () => {
    const { double, a, b, A, B } = pool();
    await asTenant(a, "pooled", A, (store, state) => upsertVectors(store, state, records("a", 2, DIMS, 152)));
    await asTenant(b, "pooled", B, (store, state) => upsertVectors(store, state, records("b", 2, DIMS, 153)));
    double.process();
    const statsB = await asTenant<{ pendingMutation: string | null }>(b, "pooled", B, (store) => store.stats());
    expect(statsB.pendingMutation).toBeNull();
    const statsA = await asTenant<{ pendingMutation: string | null }>(a, "pooled", A, (store) => store.stats());
    expect(statsA.pendingMutation).toBeNull();
  });

  it("B deleting atom ids that A uses leaves A's vectors intact", async () => {
    const { double, a, b, A, B } = pool();
    const mine = records("atom-", 4, DIMS, 130);
    await asTenant(a, "pooled", A, (store, state) => upsertVectors(store, state, mine));
    await asTenant(b, "pooled", B, (store, state) =>
      upsertVectors(store, state, [{ id: "atom-0", vector: unitVector(DIMS, rng(131)) }]),
    );
    double.process();
    const ids = mine.map((record) => record.id);
    await asTenant(b, "pooled", B, (store, state) => deleteVectors(store, state, ids));
    double.process();

    // B's delete named only B-derived vector ids.
    const [deleteCall] = double.callsOf("deleteByIds");
    const expected = await Promise.all(ids.map((id) => vectorIdOf(b, id)));
    expect(deleteCall?.ids).toEqual(expected);
    for (const id of ids) expect(deleteCall?.ids).not.toContain(await vectorIdOf(a, id));
    expect(double.snapshot(a)).toHaveLength(4);
    expect(double.snapshot(b)).toHaveLength(0);

    const found = await asTenant<{ id: string }[][]>(a, "pooled", A, async (store) =>
      Promise.all(mine.map((record) => store.query(record.vector, 1, null))),
    );
    expect(found.map((results) => results[0]?.id)).toEqual(ids);
    const stats = await asTenant<{ vectors: number | null }>(a, "pooled", A, (store) => store.stats());
    expect(stats.vectors).toBe(4);
  });
});

describe("dedicated Vectorize: each tenant its own index", () => {
  it("every call goes to the tenant's own index and never to the other tenant's", async () => {
    const a = uniqueTenant("ded-a");
    const b = uniqueTenant("ded-b");
    const indexA = new VectorizeDouble({ dimensions: DIMS, name: "index-a" });
    const indexB = new VectorizeDouble({ dimensions: DIMS, name: "index-b" });
    // The indexes are chosen by server configuration, as the tenant object does (src/kb/placement.ts).
    const env = {
      VECTOR_PLACEMENT: JSON.stringify({
        default: "local",
        tenants: { [a]: { dedicated: "VECTORIZE_A" }, [b]: { dedicated: "VECTORIZE_B" } },
      }),
      VECTORIZE_A: indexA.binding(a),
      VECTORIZE_B: indexB.binding(b),
    } as unknown as Env;
    const setting = parseVectorPlacement(env.VECTOR_PLACEMENT, env);
    const placementA = placementFor(setting, env, a);
    const placementB = placementFor(setting, env, b);
    if (placementA.kind !== "vectorize" || placementB.kind !== "vectorize") throw new Error("expected Vectorize");
    expect(placementA.vectorize.mode).toBe("dedicated");
    expect(placementFor(setting, env, uniqueTenant("ded-other")).kind).toBe("local");

    const canaryA: VectorRecord = { id: "canary", vector: unitVector(DIMS, rng(140)) };
    const canaryB: VectorRecord = { id: "canary", vector: unitVector(DIMS, rng(141)) };
    const run = <R>(tenant: string, index: Vectorize, op: Op) => asTenant<R>(tenant, "dedicated", index, op);
    const A = placementA.vectorize.index as Vectorize;
    const B = placementB.vectorize.index as Vectorize;

    await run(a, A, (store, state) => upsertVectors(store, state, [canaryA, ...records("a", 3, DIMS, 142)]));
    await run(b, B, (store, state) => upsertVectors(store, state, [canaryB, ...records("b", 3, DIMS, 143)]));
    indexA.process();
    indexB.process();
    const aSees = await run<{ id: string; score: number }[]>(a, A, (store) => store.query(canaryB.vector, 10, null));
    const bSees = await run<{ id: string; score: number }[]>(b, B, (store) => store.query(canaryA.vector, 10, null));
    await run(a, A, (store, state) => deleteVectors(store, state, ["a0"]));
    await run(b, B, (store, state) => deleteVectors(store, state, ["canary"]));
    const statsA = await run<{ backend: string }>(a, A, (store) => store.stats());
    indexA.process();
    indexB.process();

    // Each tenant only ever sees its own atoms, scored by its own vectors.
    expect(aSees.map((match) => match.id).sort()).toEqual(["a0", "a1", "a2", "canary"]);
    expect(aSees.find((match) => match.id === "canary")?.score).toBeLessThan(0.99);
    expect(bSees.map((match) => match.id).sort()).toEqual(["b0", "b1", "b2", "canary"]);
    expect(statsA.backend).toBe("vectorize-dedicated");

    // The call logs: index A only ever heard from tenant A, index B only from tenant B; no namespace is used.
    for (const [index, tenant] of [
      [indexA, a],
      [indexB, b],
    ] as const) {
      expect(index.calls.length).toBeGreaterThan(0);
      for (const call of index.calls) {
        expect(call.caller).toBe(tenant);
        expect(call.namespace).toBeUndefined();
        for (const vector of call.vectors ?? []) expect(vector.namespace).toBeUndefined();
      }
    }
    // B's delete of "canary" hit only B's index: A's canary is still there, and B's vectors never reached index A.
    expect(indexA.snapshot().map((vector) => vector.id)).toContain(await vectorIdOf(a, "canary"));
    expect(indexA.snapshot()).toHaveLength(3);
    expect(indexB.snapshot()).toHaveLength(3);
    const valuesOf = (vector: { values: Float32Array }) => Array.from(vector.values).join(",");
    const inA = new Set(indexA.snapshot().map(valuesOf));
    for (const record of [canaryB, ...records("b", 3, DIMS, 143)])
      expect(inA.has(valuesOf({ values: record.vector }))).toBe(false);
  });
});
