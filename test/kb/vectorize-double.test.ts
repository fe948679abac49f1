import { describe, expect, it } from "vitest";
import { VectorizeDouble, VectorizeDoubleError } from "../helpers/vectorize-double";

/**
 * Checks of the test double itself (test/helpers/vectorize-double.ts — NOT Vectorize): the adapter tests only mean
 * something if the double really refuses what the documented limits refuse, really defers writes, and really keeps
 * ids unique per index. Nothing here says anything about the real service.
 */

const vec = (dims: number, seed = 1) => Array.from({ length: dims }, (_, i) => Math.sin(seed * (i + 1)));

async function rule(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof VectorizeDoubleError) return error.rule;
    throw error;
  }
  throw new Error("expected a rejection");
}

describe("Vectorize test double", () => {
  it("refuses an index of more than 1536 dimensions", () => {
    expect(() => new VectorizeDouble({ dimensions: 1537 })).toThrow(VectorizeDoubleError);
    expect(() => new VectorizeDouble({ dimensions: 1536 })).not.toThrow();
  });

  it("enforces the documented write limits", async () => {
    const index = new VectorizeDouble({ dimensions: 8 });
    expect(await rule(index.upsert([{ id: "a", values: vec(9) }]))).toBe("dimensions");
    expect(await rule(index.upsert([{ id: "x".repeat(65), values: vec(8) }]))).toBe("idBytes");
    expect(await rule(index.upsert([{ id: "é".repeat(33), values: vec(8) }]))).toBe("idBytes"); // 66 bytes
    expect(await rule(index.upsert([{ id: "a", namespace: "n".repeat(65), values: vec(8) }]))).toBe("namespaceBytes");
    const many = Array.from({ length: 1001 }, (_, i) => ({ id: `v${i}`, values: vec(8, i) }));
    expect(await rule(index.upsert(many))).toBe("batch");
    expect(await rule(index.insert(many))).toBe("batch");
    expect(await rule(index.upsert([]))).toBe("batch");
    expect(await rule(index.upsert([{ id: "a", values: [Number.NaN, ...vec(7)] }]))).toBe("values");
    const big = { blob: "x".repeat(10_241) };
    expect(await rule(index.upsert([{ id: "a", values: vec(8), metadata: big }]))).toBe("metadataBytes");
    for (const key of ["", "a.b", 'a"b', "$a"]) {
      expect(await rule(index.upsert([{ id: "a", values: vec(8), metadata: { [key]: 1 } }]))).toBe("metadataKey");
    }
    expect(await rule(index.upsert([{ id: "a", values: vec(8), metadata: { nested: { "a.b": 1 } } }]))).toBe(
      "metadataKey",
    );
    // At the limits: accepted.
    await index.upsert(many.slice(0, 1000));
    await index.upsert([
      { id: "x".repeat(64), namespace: "n".repeat(64), values: vec(8), metadata: { blob: "x".repeat(10_000) } },
    ]);
    expect(index.pendingMutations).toHaveLength(2);
    expect(index.calls.filter((call) => call.error).length).toBe(14);
  });

  it("enforces the documented query limits", async () => {
    const index = new VectorizeDouble({ dimensions: 8, autoProcess: true });
    await index.upsert([{ id: "a", values: vec(8), metadata: { color: "red", size: 3 } }]);
    const q = vec(8);
    expect(await rule(index.query(vec(7)))).toBe("dimensions");
    expect(await rule(index.query(q, { topK: 0 }))).toBe("topK");
    expect(await rule(index.query(q, { topK: 101 }))).toBe("topK");
    expect(await rule(index.query(q, { topK: 21, returnValues: true }))).toBe("topK");
    expect(await rule(index.query(q, { topK: 21, returnMetadata: "all" }))).toBe("topK");
    expect(await rule(index.query(q, { topK: 21, returnMetadata: true }))).toBe("topK");
    expect(await rule(index.query(q, { namespace: "n".repeat(65) }))).toBe("namespaceBytes");
    const badOperator = { color: { $regex: "r" } } as unknown as VectorizeVectorMetadataFilter;
    expect(await rule(index.query(q, { filter: badOperator }))).toBe("filterOperator");
    const bigFilter = { color: { $in: Array.from({ length: 300 }, (_, i) => `color-${i}`) } };
    expect(await rule(index.query(q, { filter: bigFilter }))).toBe("filterBytes");
    // At the limits: accepted.
    expect((await index.query(q, { topK: 100 })).count).toBe(1);
    expect((await index.query(q, { topK: 20, returnValues: true, returnMetadata: "all" })).matches[0]).toMatchObject({
      id: "a",
      values: Array.from(Float32Array.from(q)),
      metadata: { color: "red", size: 3 },
    });
    expect((await index.query(q, { topK: 100, returnMetadata: "indexed" })).count).toBe(1);
    const filters: [VectorizeVectorMetadataFilter, number][] = [
      [{ color: "red" }, 1],
      [{ color: { $ne: "red" } }, 0],
      [{ color: { $in: ["blue", "red"] } }, 1],
      [{ color: { $nin: ["red"] } }, 0],
      [{ size: { $gt: 2, $lte: 3 } }, 1],
      [{ size: { $lt: 3 } }, 0],
      [{ size: { $gte: 4 } }, 0],
    ];
    for (const [filter, hits] of filters) {
      expect((await index.query(q, { filter })).count).toBe(hits);
    }
  });

  it("defers writes until processed and reports the last processed mutation index-wide", async () => {
    const index = new VectorizeDouble({ dimensions: 4 });
    expect(await index.describe()).toMatchObject({ vectorCount: 0, processedUpToMutation: null });
    const first = await index.upsert([{ id: "a", values: [1, 0, 0, 0], namespace: "t1" }]);
    const second = await index.upsert([{ id: "b", values: [0, 1, 0, 0], namespace: "t2" }]);
    expect((await index.query([1, 0, 0, 0], { namespace: "t1" })).matches).toEqual([]);
    expect(await index.getByIds(["a"])).toEqual([]);
    index.process(first.mutationId);
    const info = await index.describe();
    expect(info).toMatchObject({ vectorCount: 1, processedUpToMutation: first.mutationId });
    expect(Number.isNaN(Date.parse(String(info.processedUpToDatetime)))).toBe(false);
    expect(index.pendingMutations).toEqual([second.mutationId]);
    index.process();
    expect((await index.describe()).processedUpToMutation).toBe(second.mutationId);
    await index.deleteByIds(["a"]);
    expect((await index.getByIds(["a"])).map((v) => v.id)).toEqual(["a"]);
    index.process();
    expect(await index.getByIds(["a"])).toEqual([]);
  });

  it("keeps ids unique per index: an upsert in another namespace replaces and moves the vector", async () => {
    const index = new VectorizeDouble({ dimensions: 4, autoProcess: true });
    await index.upsert([{ id: "same", values: [1, 0, 0, 0], namespace: "t1" }]);
    await index.upsert([{ id: "same", values: [0, 1, 0, 0], namespace: "t2" }]);
    expect(index.snapshot()).toHaveLength(1);
    expect((await index.query([1, 0, 0, 0], { namespace: "t1" })).matches).toEqual([]);
    const [match] = (await index.query([0, 1, 0, 0], { namespace: "t2" })).matches;
    expect(match).toMatchObject({ id: "same", namespace: "t2", score: 1 });
    // insert never overwrites an existing id.
    await index.insert([{ id: "same", values: [0, 0, 1, 0], namespace: "t1" }]);
    expect(index.snapshot()).toEqual([{ id: "same", namespace: "t2", values: Float32Array.from([0, 1, 0, 0]) }]);
    // Without a namespace a query sees the whole index; with one, only that namespace.
    await index.upsert([{ id: "other", values: [0, 0, 1, 0], namespace: "t1" }]);
    expect((await index.query([0, 1, 0, 0], { topK: 10 })).count).toBe(2);
    expect((await index.queryById("other", { namespace: "t1" })).matches.map((m) => m.id)).toEqual(["other"]);
  });

  it("scores by cosine similarity, best first", async () => {
    const index = new VectorizeDouble({ dimensions: 2, autoProcess: true });
    await index.upsert([
      { id: "east", values: [1, 0] },
      { id: "north-east", values: [3, 3] },
      { id: "west", values: [-2, 0] },
    ]);
    const { matches } = await index.query([1, 0], { topK: 3 });
    expect(matches.map((m) => m.id)).toEqual(["east", "north-east", "west"]);
    expect(matches.map((m) => m.score)).toEqual([1, expect.closeTo(Math.SQRT1_2, 6), -1]);
  });

  it("records every call with its caller, namespace, topK, filter, ids and mutation id", async () => {
    const index = new VectorizeDouble({ dimensions: 2 });
    const tenant = index.binding("tenant-a");
    const { mutationId } = await tenant.upsert([{ id: "v", values: [1, 0], namespace: "tenant-a" }]);
    await tenant.query([1, 0], { topK: 3, namespace: "tenant-a", filter: { k: "v" } });
    await tenant.deleteByIds(["v"]);
    await index.describe();
    expect(index.calls.map(({ seq, caller, method }) => ({ seq, caller, method }))).toEqual([
      { seq: 1, caller: "tenant-a", method: "upsert" },
      { seq: 2, caller: "tenant-a", method: "query" },
      { seq: 3, caller: "tenant-a", method: "deleteByIds" },
      { seq: 4, caller: null, method: "describe" },
    ]);
    expect(index.calls[0]).toMatchObject({
      mutationId,
      vectors: [{ id: "v", namespace: "tenant-a", dimensions: 2, hasMetadata: false }],
    });
    expect(index.calls[1]).toMatchObject({ namespace: "tenant-a", topK: 3, filter: { k: "v" }, returned: [] });
    expect(index.calls[2]).toMatchObject({ ids: ["v"] });
    expect(index.namespacesOf("v")).toEqual(new Set(["tenant-a"]));
  });
});
