import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { LocalHashEmbedder } from "../../src/kb/embedder";
import { EmbeddingCache } from "../../src/kb/embedding-cache";
import { embedderFor } from "../../src/kb/placement";
import { VectorSealer } from "../../src/kb/vector-pages";
import { kbCaller, uniqueTenant } from "../helpers/kb-client";

/**
 * Embedding-cache statistics: hits and misses are counted by the cache itself, per tenant object, and a tenant's
 * kb_stats reports its own counts only (the demo reads them to show that no lookup of B ever hits A's entries).
 */

const stubFor = (tenant: string) => env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));

function cacheIn(state: DurableObjectState, tenant: string): EmbeddingCache {
  const keyring = new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env));
  return new EmbeddingCache(state.storage.sql, tenant, new VectorSealer(keyring, tenant));
}

describe("embedding cache statistics", () => {
  it("counts hits, misses and uncached texts as the cache sees them", async () => {
    const tenant = uniqueTenant("cstat");
    await runInDurableObject(stubFor(tenant), async (_instance, state) => {
      const cache = cacheIn(state, tenant);
      const cached = new LocalHashEmbedder(undefined, { cacheable: true });
      expect(cache.stats()).toEqual({ hits: 0, misses: 0, uncached: 0 });
      const first = await cache.embed(cached, ["alpha", "beta"]);
      expect(cache.stats()).toEqual({ hits: 0, misses: 2, uncached: 0 });
      state.storage.transactionSync(() => cache.write(cached.model, first.misses, Date.now()));
      await cache.embed(cached, ["alpha", "gamma"]);
      expect(cache.stats()).toEqual({ hits: 1, misses: 3, uncached: 0 });
      await cache.embed(new LocalHashEmbedder(), ["alpha"]);
      expect(cache.stats()).toEqual({ hits: 1, misses: 3, uncached: 1 });
    });
  });

  it("the same rows seen by another tenant's cache over the same database are misses", async () => {
    const tenant = uniqueTenant("cstat-a");
    const other = uniqueTenant("cstat-b");
    await runInDurableObject(stubFor(tenant), async (_instance, state) => {
      const cached = new LocalHashEmbedder(undefined, { cacheable: true });
      const mine = cacheIn(state, tenant);
      const { misses } = await mine.embed(cached, ["shared text"]);
      state.storage.transactionSync(() => mine.write(cached.model, misses, Date.now()));
      const foreign = cacheIn(state, other);
      await foreign.embed(cached, ["shared text"]);
      expect(foreign.stats()).toEqual({ hits: 0, misses: 1, uncached: 0 });
      await mine.embed(cached, ["shared text"]);
      expect(mine.stats()).toEqual({ hits: 1, misses: 1, uncached: 0 });
    });
  });

  it("EMBEDDER=local-cached is the local model through the cache; an unknown value fails closed", () => {
    const embedderOf = (value: string) => embedderFor(loadConfig({ ...env, EMBEDDER: value }).embedder, env.AI);
    const embedder = embedderOf("local-cached");
    expect(embedder.cacheable).toBe(true);
    expect(embedder.model).toBe(new LocalHashEmbedder().model);
    expect(embedderOf("local").cacheable).toBe(false);
    expect(() => embedderOf("local-cache")).toThrow(expect.objectContaining({ code: "ERR_CONFIG" }));
  });

  it("kb_stats reports the tenant's own lookups, and another tenant's stay at zero", async () => {
    const a = await kbCaller(uniqueTenant("cstat-ka"));
    const b = await kbCaller(uniqueTenant("cstat-kb"));
    await a.ok("add_atoms", { atoms: [{ id: "x", text: "counted embedding" }] });
    await a.ok("search", { query: "counted embedding" });
    type Stats = { embeddingCache: { cacheable: boolean; hits: number; misses: number; uncached: number } };
    const statsA = await a.ok<Stats>("kb_stats", {});
    // The test configuration uses the local embedder, which bypasses the cache: both texts are counted uncached.
    expect(statsA.embeddingCache).toEqual({ cacheable: false, hits: 0, misses: 0, uncached: 2 });
    const statsB = await b.ok<Stats>("kb_stats", {});
    expect(statsB.embeddingCache).toEqual({ cacheable: false, hits: 0, misses: 0, uncached: 0 });
    expect((await a.ok<Stats>("kb_stats", {})).embeddingCache.uncached).toBe(2);
  });
});
