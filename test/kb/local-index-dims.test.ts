import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { normalize } from "../../src/kb/embedder";
import { localIndex } from "../helpers/local-index";

/** The SIMD kernel steps 32 bytes at a time with a 16-byte tail: check both paths against an exact scan. */
describe.each([16, 48, 384, 400])("LocalVectorIndex at %i dimensions", (dims) => {
  it("ranks like an exact float32 scan (full scan and allowed subset)", async () => {
    const tenant = `dims-${dims}`;
    const stub = env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
    await runInDurableObject(stub, async (_instance, state) => {
      let seed = dims;
      const random = () => {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        return seed / 2147483648 - 0.5;
      };
      const vectors = Array.from({ length: 300 }, (_, i) => ({
        id: `v${i}`,
        vector: normalize(Float32Array.from({ length: dims }, random)),
      }));
      const index = localIndex(state.storage.sql, tenant, dims);
      await index.beforeCommitUpsert(vectors);
      state.storage.transactionSync(() => index.writeUpsertRows(vectors));
      index.afterCommitUpsert(vectors);
      const exact = (query: Float32Array, ids: Set<string> | null) =>
        vectors
          .filter((v) => ids === null || ids.has(v.id))
          .map((v) => ({ id: v.id, score: v.vector.reduce((sum, x, d) => sum + x * (query[d] as number), 0) }))
          .sort((a, b) => b.score - a.score)
          .slice(0, 10);
      for (let q = 0; q < 5; q++) {
        const query = normalize(Float32Array.from({ length: dims }, random));
        const got = await index.query(query, 10, null);
        expect(got.map((m) => m.id)).toEqual(exact(query, null).map((m) => m.id));
        const allowed = new Set(vectors.filter((_, i) => i % 3 === q % 3).map((v) => v.id));
        const subset = await index.query(query, 10, allowed);
        expect(subset.map((m) => m.id)).toEqual(exact(query, allowed).map((m) => m.id));
        expect(subset.every((m) => allowed.has(m.id))).toBe(true);
      }
    });
  });
});
