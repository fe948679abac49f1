import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { unwrapKey, unwrapKeyIn } from "../../src/crypto/key-wrap";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { hashEmbed, KEYED_EMBEDDER_MODEL, LOCAL_DIMENSIONS, LOCAL_EMBEDDER_MODEL } from "../../src/kb/embedder";
import { resolveHashMode, UNKEYED_FLAG } from "../../src/kb/embedder-key";
import { KeyedFeatureHasher } from "../../src/kb/keyed-features";
import { sipHashString, sipKey } from "../../src/kb/keyed-hash";
import { TenantLifecycle } from "../../src/tenant/lifecycle";
import { TenantContext } from "../../src/tenant/tenant-context";
import { holdTenantAlarms } from "../helpers/admin";
import { equalBytes, tenantStub } from "../helpers/docs";
import { kbCaller, searchIds, uniqueTenant } from "../helpers/kb-client";

/**
 * The keyed local embedder (local-keyed-v2): SipHash-2-4 under a per-tenant embedder key decides each feature's
 * bucket and sign, so the public hash no longer inverts a stored or dumped vector by dictionary. The key is
 * wrapped under the master epoch, rewrapped by a master rewrap, destroyed by the shred, and never rotated.
 */

const DIMS = LOCAL_DIMENSIONS;
const bindings = env as unknown as Record<string, unknown>;
const masterWith = (current: "t0" | "t1") =>
  MasterKeys.fromEnv({
    MASTER_KEY_EPOCH: current,
    MASTER_KEY_T0: String(bindings.MASTER_KEY_T0),
    MASTER_KEY_T1: String(bindings.MASTER_KEY_T1),
  });
const onlyT1 = () => MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "t1", MASTER_KEY_T1: String(bindings.MASTER_KEY_T1) });

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect((error as { name?: unknown }).name).toBe("KbError");
    return (error as { code: string }).code;
  }
  throw new Error("expected a rejection");
}

const randomHasher = () =>
  new KeyedFeatureHasher(
    {
      features: sipKey(crypto.getRandomValues(new Uint8Array(16))),
      pairs: sipKey(crypto.getRandomValues(new Uint8Array(16))),
    },
    DIMS,
  );

/** mulberry32, for deterministic pseudo-words. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function dictionary(size: number, seed: number): string[] {
  const random = prng(seed);
  const words = new Set<string>();
  const letters = "abcdefghijklmnoprstuvwyz";
  while (words.size < size) {
    let word = "";
    const length = 5 + Math.floor(random() * 5);
    for (let i = 0; i < length; i++) word += letters[Math.floor(random() * letters.length)];
    words.add(word);
  }
  return [...words];
}

const dot = (a: Float32Array, b: Float32Array) => {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] as number) * (b[i] as number);
  return sum;
};

/**
 * 1-based rank of each target among the candidates, scored against `vector` with the public hash. Ties count half
 * (mid-rank): sparse vectors often score exactly 0, and counting ties in the target's favour would make a random
 * guess look better than random.
 */
function ranks(vector: Float32Array, candidates: readonly Float32Array[], targets: readonly number[]): number[] {
  const scores = candidates.map((candidate) => dot(candidate, vector));
  return targets.map((target) => {
    const own = scores[target] as number;
    const above = scores.filter((score) => score > own).length;
    const tied = scores.filter((score) => score === own).length - 1;
    return 1 + above + tied / 2;
  });
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

describe("SipHash-2-4 over UTF-16LE code units", () => {
  // The reference vectors (Aumasson and Bernstein): key 00..0f, message 00..(n-1). Even lengths only, since the
  // input is code units: unit j = bytes 2j, 2j+1 (little-endian).
  const expected: Record<number, bigint> = {
    0: 0x726fdb47dd0e0e31n,
    2: 0x0d6c8009d9a94f5an,
    4: 0xcf2794e0277187b7n,
    6: 0xcbc9466e58fee3cen,
    8: 0x93f5f5799a932462n,
    10: 0x7a5dbbc594ddb9f3n,
    12: 0x751e8fbc860ee5fbn,
    14: 0xf723ca908e7af2een,
    16: 0x3f2acc7f57c29bdbn,
    18: 0x4bc1b3f0968dd39cn,
    32: 0x7127512f72f27ccen,
    62: 0xe51b38608ef25f57n,
  };
  it("matches the reference vectors", () => {
    const key = sipKey(Uint8Array.from({ length: 16 }, (_, i) => i));
    const out = new Uint32Array(2);
    for (const [length, tag] of Object.entries(expected)) {
      let text = "";
      for (let j = 0; j < Number(length) / 2; j++) text += String.fromCharCode((2 * j) | ((2 * j + 1) << 8));
      sipHashString(key, text, out);
      expect(((BigInt(out[1] as number) << 32n) | BigInt(out[0] as number)).toString(16), `length ${length}`).toBe(
        tag.toString(16),
      );
    }
  });
});

describe("keyed feature hashing", () => {
  it("a warm word table gives the same vectors as a cold one, and stays bounded", () => {
    const keys = {
      features: sipKey(crypto.getRandomValues(new Uint8Array(16))),
      pairs: sipKey(crypto.getRandomValues(new Uint8Array(16))),
    };
    const warm = new KeyedFeatureHasher(keys, DIMS);
    const words = dictionary(40_000, 9);
    for (let i = 0; i < words.length; i += 50) warm.embed(words.slice(i, i + 50).join(" "), DIMS);
    expect(warm.cachedWords).toBeGreaterThan(0);
    expect(warm.cachedWords).toBeLessThanOrEqual(32_768);
    const text = `${words.slice(39_990).join(" ")} ${words.slice(0, 5).join(" ")} ${"x".repeat(40)}`;
    const once = warm.embed(text, DIMS);
    expect(Array.from(warm.embed(text, DIMS))).toEqual(Array.from(once));
    expect(Array.from(new KeyedFeatureHasher(keys, DIMS).embed(text, DIMS))).toEqual(Array.from(once));
  });

  it("dictionary inversion with the public hash finds the words of an unkeyed vector, not of a keyed one", () => {
    const candidates = dictionary(1000, 4242);
    const candidateVectors = candidates.map((word) => hashEmbed(word, DIMS));
    const codes = Array.from({ length: 10_000 }, (_, i) => String(i).padStart(4, "0"));
    const codeVectors = codes.map((code) => hashEmbed(code, DIMS));
    const random = prng(77);
    const plain = { words: [] as number[], codes: [] as number[] };
    const keyed = { words: [] as number[], codes: [] as number[] };
    for (let trial = 0; trial < 20; trial++) {
      const secret = [0, 1, 2, 3].map(() => Math.floor(random() * candidates.length));
      const code = Math.floor(random() * codes.length);
      const text = `the vault code is ${codes[code]} and the words are ${secret.map((i) => candidates[i]).join(" ")}`;
      const unkeyedVector = hashEmbed(text, DIMS);
      const keyedVector = randomHasher().embed(text, DIMS);
      plain.words.push(...ranks(unkeyedVector, candidateVectors, secret));
      plain.codes.push(...ranks(unkeyedVector, codeVectors, [code]));
      keyed.words.push(...ranks(keyedVector, candidateVectors, secret));
      keyed.codes.push(...ranks(keyedVector, codeVectors, [code]));
    }
    const top12 = (list: number[]) => list.filter((rank) => rank <= 12).length / list.length;
    // The attack works on the public hash (so the bound below means something): secret words at the very top.
    expect(top12(plain.words)).toBeGreaterThanOrEqual(0.9);
    expect(median(plain.codes)).toBeLessThanOrEqual(100);
    // Against keyed vectors it is a random guess: ranks spread over the dictionary (expected median 500 of 1,000,
    // 5,000 of 10,000; top-12 share 1.2%; measured over 200 atoms: 504.5, 4,997.5, 0.9%). Bounds chosen so a random
    // key fails them with probability < 1e-4.
    expect(top12(keyed.words)).toBeLessThanOrEqual(0.1);
    expect(median(keyed.words)).toBeGreaterThanOrEqual(250);
    expect(median(keyed.codes)).toBeGreaterThanOrEqual(1000);
  });
});

describe("the tenant's embedder key", () => {
  it("same tenant, same text: the same vector, after eviction too; another tenant: a different one", async () => {
    const a = uniqueTenant("emb-a");
    const b = uniqueTenant("emb-b");
    const text = "the falcon nests above the granite river";
    const inA = await runInDurableObject(tenantStub(a), async (_i, state) => {
      const first = new TenantContext(state, env, a);
      const [one] = await first.embedder.embed([text]);
      const [two] = await first.embedder.embed([text]);
      // A fresh context is what the object builds after eviction: same key, same vector.
      const [again] = await new TenantContext(state, env, a).embedder.embed([text]);
      return { one, two, again, model: first.embedder.model };
    });
    const inB = await runInDurableObject(tenantStub(b), async (_i, state) => {
      const [vector] = await new TenantContext(state, env, b).embedder.embed([text]);
      return vector;
    });
    expect(inA.model).toBe(KEYED_EMBEDDER_MODEL);
    expect(Array.from(inA.two as Float32Array)).toEqual(Array.from(inA.one as Float32Array));
    expect(Array.from(inA.again as Float32Array)).toEqual(Array.from(inA.one as Float32Array));
    expect(dot(inA.one as Float32Array, inB as Float32Array)).toBeLessThan(0.5);
    expect(dot(inA.one as Float32Array, hashEmbed(text, DIMS))).toBeLessThan(0.5);
    // A's key and vectors are untouched by B.
    await runInDurableObject(tenantStub(a), async (_i, state) => {
      const [vector] = await new TenantContext(state, env, a).embedder.embed([text]);
      expect(Array.from(vector as Float32Array)).toEqual(Array.from(inA.one as Float32Array));
    });
  });

  it("search works end to end for a keyed tenant; the key row exists and is wrapped (no clear key in it)", async () => {
    const tenant = uniqueTenant("emb-search");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", {
      atoms: [
        { id: "falcon", text: "a peregrine falcon nests on the cathedral tower" },
        { id: "river", text: "the granite river floods every spring" },
        { id: "bread", text: "sourdough bread needs a long cold proof" },
      ],
    });
    expect((await searchIds(caller, "falcon nests tower", 1))[0]?.id).toBe("falcon");
    expect((await searchIds(caller, "river floods", 1))[0]?.id).toBe("river");
    await runInDurableObject(tenantStub(tenant), async (_i, state) => {
      const rows = state.storage.sql
        .exec<{ tenant: string; epoch: string; wrapped: ArrayBuffer }>(
          `SELECT tenant, epoch, wrapped FROM embedder_keys`,
        )
        .toArray();
      expect(rows.map((row) => [row.tenant, row.epoch])).toEqual([[tenant, "t1"]]);
      const key = await new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env)).embedderKey();
      const wrapped = new Uint8Array((rows[0] as { wrapped: ArrayBuffer }).wrapped);
      expect(key?.byteLength).toBe(32);
      expect(wrapped.byteLength).toBe(60);
      for (let i = 0; i + 8 <= 32; i += 8) {
        const run = (key as Uint8Array).subarray(i, i + 8);
        expect(wrapped.some((_, at) => equalBytes(wrapped.subarray(at, at + 8), run))).toBe(false);
      }
      // Another domain's unwrap of the same bytes fails: an embedder key is never a data key.
      const record = { tenant, version: 1, epoch: "t1", wrapped };
      expect(await codeOf(unwrapKey(MasterKeys.fromEnv(env), record))).toBe("ERR_DECRYPT");
      expect(equalBytes(await unwrapKeyIn("embedder-key", MasterKeys.fromEnv(env), record), key as Uint8Array)).toBe(
        true,
      );
    });
  });

  it("A's wrapped embedder key placed into B's row does not open for B; A's key still opens for A", async () => {
    const a = uniqueTenant("emb-xa");
    const b = uniqueTenant("emb-xb");
    const fromA = await runInDurableObject(tenantStub(a), async (_i, state) => {
      const ring = new TenantKeyring(state.storage.sql, a, MasterKeys.fromEnv(env));
      const key = Uint8Array.from(await ring.createEmbedderKey());
      const row = state.storage.sql
        .exec<{ epoch: string; wrapped: ArrayBuffer }>(`SELECT epoch, wrapped FROM embedder_keys`)
        .one();
      return { key, epoch: row.epoch, wrapped: new Uint8Array(row.wrapped) };
    });
    await runInDurableObject(tenantStub(b), async (_i, state) => {
      state.storage.sql.exec(
        `INSERT INTO embedder_keys (tenant, epoch, wrapped, created_at) VALUES (?, ?, ?, ?)`,
        b,
        fromA.epoch,
        fromA.wrapped,
        Date.now(),
      );
      const ring = new TenantKeyring(state.storage.sql, b, MasterKeys.fromEnv(env));
      expect(await codeOf(ring.embedderKey())).toBe("ERR_DECRYPT");
      expect(await codeOf(new TenantContext(state, env, b).embedder.embed(["x"]))).toBe("ERR_DECRYPT");
    });
    await runInDurableObject(tenantStub(a), async (_i, state) => {
      const ring = new TenantKeyring(state.storage.sql, a, MasterKeys.fromEnv(env));
      expect(equalBytes((await ring.embedderKey()) as Uint8Array, fromA.key)).toBe(true);
    });
  });

  it("a master rewrap rewraps the embedder key; the copy from before opens only while its epoch exists", async () => {
    const tenant = uniqueTenant("emb-rewrap");
    await runInDurableObject(tenantStub(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      const old = new TenantKeyring(sql, tenant, masterWith("t0"));
      const key = Uint8Array.from(await old.createEmbedderKey());
      const backup = new Uint8Array(
        sql.exec<{ wrapped: ArrayBuffer }>(`SELECT wrapped FROM embedder_keys`).one().wrapped,
      );
      expect(old.embedderKeyInfo()?.epoch).toBe("t0");
      const ring = new TenantKeyring(sql, tenant, masterWith("t1"));
      expect(await ring.rewrapAll()).toBe(1);
      expect(ring.embedderKeyInfo()?.epoch).toBe("t1");
      expect(await ring.rewrapAll()).toBe(0);
      // After the rewrap, t0's secret can go: the key still opens under t1 alone, unchanged.
      expect(equalBytes((await new TenantKeyring(sql, tenant, onlyT1()).embedderKey()) as Uint8Array, key)).toBe(true);
      const record = { tenant, version: 1, epoch: "t0", wrapped: backup };
      expect(equalBytes(await unwrapKeyIn("embedder-key", masterWith("t1"), record), key)).toBe(true);
      expect(await codeOf(unwrapKeyIn("embedder-key", onlyT1(), record))).toBe("ERR_KEY_UNAVAILABLE");
    });
  });

  it("the shred destroys the embedder key (row and memory); nothing embeds or creates one afterwards", async () => {
    const tenant = uniqueTenant("emb-shred");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", { atoms: [{ id: "a1", text: "a secret about the glacier" }] });
    await holdTenantAlarms(tenant);
    await runInDurableObject(tenantStub(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      const context = new TenantContext(state, env, tenant);
      await context.embedder.embed(["warm the hasher"]);
      const held = await context.keyring.embedderKey();
      expect(held?.byteLength).toBe(32);
      const receipt = new TenantLifecycle(sql, context).offboard("operator-1", MasterKeys.fromEnv(env).epochs());
      expect(receipt.embedderKeyDestroyed).toBe(true);
      expect(sql.exec(`SELECT COUNT(*) AS n FROM embedder_keys`).one().n).toBe(0);
      expect((held as Uint8Array).every((byte) => byte === 0)).toBe(true);
      expect(await codeOf(context.embedder.embed(["after"]))).toBe("ERR_TENANT_OFFBOARDED");
      expect(await context.keyring.embedderKey()).toBeNull();
      expect(await codeOf(context.keyring.createEmbedderKey())).toBe("ERR_TENANT_OFFBOARDED");
      expect(sql.exec(`SELECT COUNT(*) AS n FROM embedder_keys`).one().n).toBe(0);
    });
  });

  it("a tenant whose atoms predate keyed hashing stays on the unkeyed hash while it has atoms", async () => {
    const tenant = uniqueTenant("emb-legacy");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", { atoms: [{ id: "old", text: "an atom embedded before keys existed" }] });
    const text = "an atom embedded before keys existed";
    await runInDurableObject(tenantStub(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      // As a database from before: atoms, no embedder key (and no flag yet).
      sql.exec(`DELETE FROM embedder_keys`);
      const ring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
      const mode = await resolveHashMode(sql, tenant, ring, DIMS);
      expect(mode.kind).toBe("unkeyed");
      expect(sql.exec(`SELECT value FROM tenant_meta WHERE key = 'embedder_hash'`).one().value).toBe(UNKEYED_FLAG);
      const context = new TenantContext(state, env, tenant);
      const [vector] = await context.embedder.embed([text]);
      expect(context.embedder.model).toBe(LOCAL_EMBEDDER_MODEL);
      expect(Array.from(vector as Float32Array)).toEqual(Array.from(hashEmbed(text, DIMS)));
      // That instance keeps the unkeyed hash for its lifetime, even with every atom gone (no switch mid-life).
      await context.kb.delete(["old"]);
      const [same] = await context.embedder.embed([text]);
      expect(Array.from(same as Float32Array)).toEqual(Array.from(hashEmbed(text, DIMS)));
      // The next instance that starts with no atom creates the key: nothing stored was made with the old hash.
      const next = new TenantContext(state, env, tenant);
      const [keyed] = await next.embedder.embed([text]);
      expect(next.embedder.model).toBe(KEYED_EMBEDDER_MODEL);
      expect(Array.from(keyed as Float32Array)).not.toEqual(Array.from(hashEmbed(text, DIMS)));
      expect(sql.exec(`SELECT COUNT(*) AS n FROM embedder_keys`).one().n).toBe(1);
      expect(sql.exec(`SELECT key FROM tenant_meta WHERE key = 'embedder_hash'`).toArray()).toEqual([]);
      // Keyed for good: atoms written now keep it keyed in later instances.
      await next.kb.add([{ id: "new", text }]);
      expect((await new TenantContext(state, env, tenant).kb.search(text, 1, null))[0]?.id).toBe("new");
    });
  });
});
