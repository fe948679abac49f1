import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { AtomCipher } from "../../src/kb/atom-cipher";
import { hashEmbed, LOCAL_DIMENSIONS, LocalHashEmbedder } from "../../src/kb/embedder";
import { EmbeddingCache } from "../../src/kb/embedding-cache";
import { parseFilter } from "../../src/kb/filters";
import { KnowledgeBase } from "../../src/kb/knowledge-base";
import { VectorSealer } from "../../src/kb/vector-pages";
import { VectorizeVectorStore } from "../../src/kb/vectorize-index";
import type { VectorizeDouble } from "../helpers/vectorize-double";
import {
  BACKENDS,
  type BackendFixture,
  type BackendName,
  backendFixture,
  stubFor,
  uniqueTenant,
} from "./vector-fixtures";

/**
 * The KnowledgeBase end to end on every vector backend: the local index, and the Vectorize adapter (pooled and
 * dedicated) over the in-test double of the binding (test/helpers/vectorize-double.ts — NOT Vectorize; it stands
 * in because no local simulator exists). Each test builds the knowledge base the way the tenant object does, inside
 * the tenant object, with the deterministic local embedder.
 */

const ATOMS = [
  { id: "fox", text: "The quick brown fox jumps over the lazy dog", tags: ["animals"], source: "s1" },
  { id: "do", text: "Durable Objects give each tenant its own SQLite database", tags: ["cloud"], source: "s2" },
  { id: "vec", text: "Vectorize is a vector database for embeddings", tags: ["cloud", "vectors"], source: "s2" },
  { id: "cat", text: "The lazy cat sleeps in the brown armchair", tags: ["animals"], source: "s3" },
];

/** A test master key (per run, in memory only), as MASTER_KEY_<epoch> would provide it. */
const MASTER = new MasterKeys(new Map([["test", crypto.getRandomValues(new Uint8Array(32))]]), "test");

function inKb<R>(fixture: BackendFixture, tenant: string, fn: (kb: KnowledgeBase, sql: SqlStorage) => Promise<R>) {
  return runInDurableObject(stubFor(tenant), async (_instance, state) => {
    const sql = state.storage.sql;
    const keyring = new TenantKeyring(sql, tenant, MASTER);
    const kb = new KnowledgeBase({
      sql,
      transaction: (body) => state.storage.transactionSync(body),
      tenant,
      store: fixture.makeStore(sql, tenant, keyring),
      embedder: new LocalHashEmbedder(),
      cache: new EmbeddingCache(sql, tenant, new VectorSealer(keyring, tenant)),
      cipher: new AtomCipher(keyring, tenant),
      maxAtoms: 1000,
    });
    return fn(kb, sql);
  });
}

const ids = (hits: { id: string }[]) => hits.map((hit) => hit.id);

describe.each(BACKENDS)("KnowledgeBase over %s", (name: BackendName) => {
  it("adds, searches, filters by tag and source (post-filtering), replaces and deletes", async () => {
    const fixture = backendFixture(name, LOCAL_DIMENSIONS);
    const tenant = uniqueTenant(`kbb-flow-${name}`);
    await inKb(fixture, tenant, async (kb) => {
      expect(await kb.add(ATOMS, 1_700_000_000_000)).toEqual({ added: ["fox", "do", "vec", "cat"], replaced: [] });
    });
    fixture.settle();
    await inKb(fixture, tenant, async (kb) => {
      const hits = await kb.search("brown fox", 2, null);
      expect(hits[0]).toMatchObject({
        id: "fox",
        title: null,
        source: "s1",
        tags: ["animals"],
        text: ATOMS[0]?.text,
        createdAt: new Date(1_700_000_000_000).toISOString(),
      });
      expect(hits).toHaveLength(2);
      expect(hits[0]?.score).toBeGreaterThan(hits[1]?.score ?? 1);

      // Filters are applied to this tenant's own rows; the nearest atoms (animals) are filtered out.
      const cloud = await kb.search("brown fox", 5, parseFilter({ tags: ["cloud"] }));
      expect(ids(cloud).sort()).toEqual(["do", "vec"]);
      expect(ids(await kb.search("database", 5, parseFilter({ tags: { all: ["cloud", "vectors"] } })))).toEqual([
        "vec",
      ]);
      expect(ids(await kb.search("brown fox", 5, parseFilter({ source: "s3" })))).toEqual(["cat"]);
      expect(
        ids(await kb.search("brown", 5, parseFilter({ source: { in: ["s1", "s3"] }, tags: ["animals"] }))).sort(),
      ).toEqual(["cat", "fox"]);
      expect(await kb.search("brown fox", 5, parseFilter({ tags: ["nope"] }))).toEqual([]);

      expect(await kb.add([{ id: "fox", text: "A red fox naps under the old oak tree", tags: ["animals"] }])).toEqual({
        added: [],
        replaced: ["fox"],
      });
    });
    fixture.settle();
    await inKb(fixture, tenant, async (kb) => {
      const [top] = await kb.search("red fox naps under the oak", 1, null);
      expect(top).toMatchObject({ id: "fox", text: "A red fox naps under the old oak tree", source: null });
      expect(await kb.delete(["cat", "missing"])).toEqual({ deleted: ["cat"], notFound: ["missing"] });
      // Gone from search at once on every backend (on Vectorize through the id table and the atom rows).
      expect(ids(await kb.search("lazy cat sleeps in the brown armchair", 4, null))).not.toContain("cat");
    });
    fixture.settle();
    await inKb(fixture, tenant, async (kb) => {
      expect(ids(await kb.search("lazy cat sleeps in the brown armchair", 4, null)).sort()).toEqual([
        "do",
        "fox",
        "vec",
      ]);
      const stats = await kb.stats();
      expect(stats.atoms).toBe(3);
      expect(stats.index).toEqual({
        backend: name,
        dimensions: LOCAL_DIMENSIONS,
        vectors: 3,
        consistency: name === "local" ? "synchronous" : "eventual",
        pendingMutation: null,
      });
    });
  });

  it("a filtered atom is found even when many unfiltered atoms rank above it", async () => {
    const fixture = backendFixture(name, LOCAL_DIMENSIONS);
    const tenant = uniqueTenant(`kbb-post-${name}`);
    const noise = Array.from({ length: 40 }, (_, i) => ({
      id: `noise-${i}`,
      text: `kettle boiling water number ${i} in the kitchen`,
      tags: ["noise"],
    }));
    await inKb(fixture, tenant, async (kb) => {
      await kb.add(noise);
      await kb.add([{ id: "target", text: "a teapot on the stove", tags: ["special"], source: "manual" }]);
    });
    fixture.settle();
    await inKb(fixture, tenant, async (kb) => {
      const unfiltered = await kb.search("kettle boiling water in the kitchen", 10, null);
      expect(ids(unfiltered)).not.toContain("target");
      expect(
        ids(await kb.search("kettle boiling water in the kitchen", 3, parseFilter({ tags: ["special"] }))),
      ).toEqual(["target"]);
      expect(ids(await kb.search("kettle boiling water", 3, parseFilter({ source: "manual" })))).toEqual(["target"]);
    });
  });
});

describe.each(["vectorize-pooled", "vectorize-dedicated"] as const)(
  "KnowledgeBase over %s: Vectorize specifics",
  (name) => {
    it("reports eventual consistency: new atoms are stored at once but searchable only once Vectorize processed them", async () => {
      const fixture = backendFixture(name, LOCAL_DIMENSIONS);
      const double = fixture.double as VectorizeDouble;
      const tenant = uniqueTenant(`kbb-ev-${name}`);
      await inKb(fixture, tenant, async (kb) => {
        await kb.add(ATOMS);
        expect((await kb.get(["fox"]))[0]?.text).toBe(ATOMS[0]?.text);
        expect(await kb.search("brown fox", 3, null)).toEqual([]);
        const stats = await kb.stats();
        expect(stats.atoms).toBe(4);
        expect(stats.index.consistency).toBe("eventual");
        expect(stats.index.pendingMutation).toBe(double.pendingMutations[0]);
      });
      fixture.settle();
      await inKb(fixture, tenant, async (kb) => {
        expect(ids(await kb.search("brown fox", 1, null))).toEqual(["fox"]);
        expect((await kb.stats()).index.pendingMutation).toBeNull();
      });
    });

    it("a Vectorize failure refuses the whole add (nothing committed) and a refused delete keeps the atoms", async () => {
      const fixture = backendFixture(name, LOCAL_DIMENSIONS);
      const double = fixture.double as VectorizeDouble;
      const tenant = uniqueTenant(`kbb-fail-${name}`);
      double.failNext("upsert");
      await inKb(fixture, tenant, async (kb, sql) => {
        await expect(kb.add(ATOMS)).rejects.toThrow(/injected/);
        expect(kb.count()).toBe(0);
        expect(await kb.get(["fox", "do"])).toEqual([]);
        expect(sql.exec(`SELECT COUNT(*) AS n FROM vectorize_ids`).one().n).toBe(0);
        expect(sql.exec(`SELECT COUNT(*) AS n FROM atom_tags`).one().n).toBe(0);
        await kb.add(ATOMS);
      });
      fixture.settle();
      double.failNext("deleteByIds");
      await inKb(fixture, tenant, async (kb) => {
        await expect(kb.delete(["fox"])).rejects.toThrow(/injected/);
        expect(ids(await kb.get(["fox"]))).toEqual(["fox"]);
        expect(ids(await kb.search("brown fox", 1, null))).toEqual(["fox"]);
      });
    });

    // Regression: KnowledgeBase.add checks which ids exist, then awaits the Vectorize upsert, then
    // writes rows assuming that check still holds. Two concurrent adds of the same new id both pass the check while
    // their upserts are in flight: the second transaction fails on the primary key, after its vector already
    // replaced the first one's in Vectorize, so the stored text and the indexed vector disagree.
    it("concurrent adds of the same new id both succeed and leave text and vector consistent", async () => {
      const fixture = backendFixture(name, LOCAL_DIMENSIONS);
      const double = fixture.double as VectorizeDouble;
      const tenant = uniqueTenant(`kbb-race-${name}`);
      double.hold("upsert");
      const outcome = await inKb(fixture, tenant, async (kb) => {
        const first = kb.add([{ id: "x", text: "alpha particles from radium" }]);
        const second = kb.add([{ id: "x", text: "beta decay of tritium" }]);
        const settled = Promise.allSettled([first, second]);
        let done = false;
        settled.then(() => {
          done = true;
        });
        // Release the in-flight upserts in arrival order, as the network would, until both adds settle.
        for (let round = 0; round < 50 && !done; round++) {
          await new Promise((resolve) => setTimeout(resolve, 2));
          double.releaseHeld();
        }
        return { results: await settled, text: (await kb.get(["x"]))[0]?.text ?? null };
      });
      double.process();
      const vectorId = await runInDurableObject(stubFor(tenant), (_instance, state) =>
        new VectorizeVectorStore(
          state.storage.sql,
          tenant,
          { mode: "pooled", index: double },
          LOCAL_DIMENSIONS,
        ).vectorId("x"),
      );
      const [indexed] = await double.getByIds([vectorId]);
      expect(outcome.results.map((result) => result.status)).toEqual(["fulfilled", "fulfilled"]);
      expect(outcome.text).not.toBeNull();
      expect(indexed?.values).toEqual(Array.from(hashEmbed(outcome.text ?? "", LOCAL_DIMENSIONS)));
    });
  },
);
