import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { unwrapKey, type WrappedKey, wrapKey } from "../../src/crypto/key-wrap";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { KbError } from "../../src/errors";
import { AtomCipher } from "../../src/kb/atom-cipher";
import { base64url } from "../../src/util/bytes";
import { cellBytes, containsBytes, equalBytes, tenantStub } from "../helpers/docs";
import { uniqueTenant } from "../helpers/kb-client";

/**
 * The key hierarchy: master epochs (Worker secrets) -> per-epoch KEK -> per-tenant, versioned data keys stored only
 * wrapped. Wrapping binds tenant, version and epoch; an epoch whose secret is gone makes its wrapped keys
 * unavailable; rewrapping moves keys to the current epoch without changing them; destroying a version makes it
 * unavailable for good.
 */

const bindings = env as unknown as Record<string, unknown>;
const SECRET_T0 = String(bindings.MASTER_KEY_T0);
const SECRET_T1 = String(bindings.MASTER_KEY_T1);
const RAW_T0 = decodeBase64(SECRET_T0);
const RAW_T1 = decodeBase64(SECRET_T1);

function decodeBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
}

function standardBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Master keys with both test epochs readable and `current` as the current one. */
const masterWith = (current: "t0" | "t1") =>
  MasterKeys.fromEnv({ MASTER_KEY_EPOCH: current, MASTER_KEY_T0: SECRET_T0, MASTER_KEY_T1: SECRET_T1 });

/** Only the t1 epoch: t0's secret has been deleted. */
const onlyT1 = () => new MasterKeys(new Map([["t1", Uint8Array.from(RAW_T1)]]), "t1");

function codeOfSync(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(KbError);
    return (error as KbError).code;
  }
  throw new Error("expected a KbError");
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    // Errors thrown inside a Durable Object callback may come from another module instance: check the shape.
    expect((error as { name?: unknown }).name).toBe("KbError");
    const { code, message } = error as { code: string; message: string };
    if (code === "ERR_DECRYPT") expect(message).toBe("decryption failed");
    if (code === "ERR_KEY_UNAVAILABLE") expect(message).toBe("key unavailable");
    return code;
  }
  throw new Error("expected a rejection");
}

const randomKey = () => crypto.getRandomValues(new Uint8Array(32));

describe("MasterKeys.fromEnv", () => {
  const secret32 = () => crypto.getRandomValues(new Uint8Array(32));

  it("reads the test bindings: current epoch t1, t0 still readable", () => {
    const master = MasterKeys.fromEnv(env);
    expect(master.current).toBe("t1");
    expect(master.has("t1")).toBe(true);
    expect(master.has("t0")).toBe(true);
    expect(master.epochs()).toEqual(expect.arrayContaining(["t0", "t1"]));
    expect(RAW_T0.byteLength).toBeGreaterThanOrEqual(32);
    expect(RAW_T1.byteLength).toBeGreaterThanOrEqual(32);
  });

  it("accepts standard base64 (with + / and padding) and base64url for the same secret", async () => {
    // 0xfb 0xff bytes encode to '+' and '/' in standard base64 and '-' '_' in base64url; 32 bytes need one '='.
    const secret = new Uint8Array(32);
    for (let i = 0; i < 32; i++) secret[i] = i % 2 ? 0xff : 0xfb;
    secret[31] = 7;
    const standard = standardBase64(secret);
    const url = base64url(secret);
    expect(standard).toMatch(/[+/]/);
    expect(standard.endsWith("=")).toBe(true);
    expect(url).toMatch(/[-_]/);
    const fromStandard = MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: standard });
    const fromUrl = MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: url });
    const fromPadded = MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: `  ${standard}\n` });
    const direct = new MasterKeys(new Map([["e1", secret]]), "e1");
    expect(fromStandard.current).toBe("e1");
    // Same secret => a key wrapped under one decodes under every other form.
    const key = randomKey();
    const wrapped = await wrapKey(fromStandard, "acme", 1, key);
    for (const master of [fromUrl, fromPadded, direct]) {
      expect(equalBytes(await unwrapKey(master, wrapped), key)).toBe(true);
    }
    // A different secret under the same epoch name does not.
    const other = MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: base64url(secret32()) });
    expect(await codeOf(unwrapKey(other, wrapped))).toBe("ERR_DECRYPT");
  });

  it("epoch names are case-insensitive in the environment and normalised to lower case", () => {
    const master = MasterKeys.fromEnv({
      MASTER_KEY_EPOCH: "E7",
      MASTER_KEY_E7: base64url(secret32()),
      MASTER_KEY_OLD: base64url(secret32()),
    });
    expect(master.current).toBe("e7");
    expect(master.epochs().sort()).toEqual(["e7", "old"]);
    expect(master.has("E7")).toBe(false);
  });

  it("rejects secrets shorter than 256 bits (31 bytes), and accepts exactly 256", () => {
    const short = crypto.getRandomValues(new Uint8Array(31));
    expect(codeOfSync(() => MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: base64url(short) }))).toBe(
      "ERR_CONFIG",
    );
    // A short *old* epoch is refused too, not silently ignored.
    expect(
      codeOfSync(() =>
        MasterKeys.fromEnv({
          MASTER_KEY_EPOCH: "e2",
          MASTER_KEY_E2: base64url(secret32()),
          MASTER_KEY_E1: base64url(short),
        }),
      ),
    ).toBe("ERR_CONFIG");
    expect(codeOfSync(() => MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: "" }))).toBe("ERR_CONFIG");
    expect(codeOfSync(() => new MasterKeys(new Map([["e1", short]]), "e1"))).toBe("ERR_CONFIG");
    expect(MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: base64url(secret32()) }).current).toBe("e1");
  });

  it("rejects a missing MASTER_KEY_EPOCH and a current epoch without a secret", () => {
    expect(codeOfSync(() => MasterKeys.fromEnv({ MASTER_KEY_E1: base64url(secret32()) }))).toBe("ERR_CONFIG");
    expect(codeOfSync(() => MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "", MASTER_KEY_E1: base64url(secret32()) }))).toBe(
      "ERR_CONFIG",
    );
    expect(codeOfSync(() => MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e2", MASTER_KEY_E1: base64url(secret32()) }))).toBe(
      "ERR_CONFIG",
    );
    expect(codeOfSync(() => MasterKeys.fromEnv({}))).toBe("ERR_CONFIG");
    expect(codeOfSync(() => new MasterKeys(new Map([["e1", secret32()]]), "e2"))).toBe("ERR_CONFIG");
  });

  it("rejects secrets that are not base64, without echoing them", () => {
    const bad = ["not base64!!", "AAAA*AAAA", "A", "AA==AA", "é".repeat(44), "a b c d"];
    for (const value of bad) {
      let caught: unknown;
      try {
        MasterKeys.fromEnv({ MASTER_KEY_EPOCH: "e1", MASTER_KEY_E1: value });
      } catch (error) {
        caught = error;
      }
      expect(caught, value).toBeInstanceOf(KbError);
      expect((caught as KbError).code, value).toBe("ERR_CONFIG");
      expect((caught as KbError).message, value).not.toContain(value);
    }
  });

  it("rejects epoch names outside [a-z0-9]{1,16} when given directly", () => {
    for (const name of ["E1", "e-1", "", "a".repeat(17)]) {
      expect(
        codeOfSync(() => new MasterKeys(new Map([[name, randomKey()]]), name)),
        name,
      ).toBe("ERR_CONFIG");
    }
  });

  it("kek() of an absent epoch is ERR_KEY_UNAVAILABLE", async () => {
    expect(await codeOf(onlyT1().kek("t0"))).toBe("ERR_KEY_UNAVAILABLE");
  });
});

describe("wrapKey / unwrapKey", () => {
  const master = masterWith("t1");

  it("round-trips; the wrapped form is IV || ciphertext || tag, random per wrap, and never the raw key", async () => {
    const key = randomKey();
    const a = await wrapKey(master, "acme", 1, key);
    const b = await wrapKey(master, "acme", 1, key);
    expect(a).toMatchObject({ tenant: "acme", version: 1, epoch: "t1" });
    expect(a.wrapped.byteLength).toBe(12 + 32 + 16);
    expect(equalBytes(a.wrapped, b.wrapped)).toBe(false); // fresh IV each time
    expect(equalBytes(a.wrapped.subarray(0, 12), b.wrapped.subarray(0, 12))).toBe(false);
    for (const record of [a, b]) {
      expect(containsBytes(record.wrapped, key)).toBe(false);
      expect(containsBytes(record.wrapped, key.subarray(0, 8))).toBe(false);
      expect(equalBytes(await unwrapKey(master, record), key)).toBe(true);
    }
  });

  it("wraps under an explicit older epoch when asked", async () => {
    const key = randomKey();
    const record = await wrapKey(master, "acme", 3, key, "t0");
    expect(record.epoch).toBe("t0");
    expect(equalBytes(await unwrapKey(master, record), key)).toBe(true);
  });

  it("refuses data keys that are not 256 bits", async () => {
    for (const length of [0, 16, 31, 33, 64]) {
      await expect(wrapKey(master, "acme", 1, new Uint8Array(length))).rejects.toBeInstanceOf(RangeError);
    }
  });

  describe("fails with ERR_DECRYPT when anything bound or stored changes", () => {
    const key = randomKey();
    let record: WrappedKey;
    const expectDecryptFailure = async (changed: WrappedKey, why: string) => {
      expect(await codeOf(unwrapKey(master, changed)), why).toBe("ERR_DECRYPT");
    };

    it("another tenant, another version, another epoch label", async () => {
      record = await wrapKey(master, "tenant-a", 2, key);
      expect(equalBytes(await unwrapKey(master, record), key)).toBe(true);
      await expectDecryptFailure({ ...record, tenant: "tenant-b" }, "tenant");
      await expectDecryptFailure({ ...record, tenant: "tenant-a2" }, "tenant prefix");
      await expectDecryptFailure({ ...record, tenant: "TENANT-A" }, "tenant case");
      await expectDecryptFailure({ ...record, version: 1 }, "version 1");
      await expectDecryptFailure({ ...record, version: 3 }, "version 3");
      await expectDecryptFailure({ ...record, version: 20 }, "version 20");
      // Both epochs' secrets exist, so this is an authentication failure, not an unavailable key.
      await expectDecryptFailure({ ...record, epoch: "t0" }, "epoch label");
      const underT0 = await wrapKey(master, "tenant-a", 2, key, "t0");
      await expectDecryptFailure({ ...underT0, epoch: "t1" }, "epoch label (t0 -> t1)");
    });

    it("any flipped bit (IV, ciphertext, tag)", async () => {
      record = await wrapKey(master, "tenant-a", 2, key);
      for (let byte = 0; byte < record.wrapped.byteLength; byte++) {
        for (const bit of [0, 7]) {
          const wrapped = Uint8Array.from(record.wrapped);
          wrapped[byte] = (wrapped[byte] ?? 0) ^ (1 << bit);
          await expectDecryptFailure({ ...record, wrapped }, `byte ${byte} bit ${bit}`);
        }
      }
    });

    it("a truncated or extended blob", async () => {
      record = await wrapKey(master, "tenant-a", 2, key);
      for (const length of [0, 1, 12, 28, 44, 59]) {
        await expectDecryptFailure({ ...record, wrapped: record.wrapped.slice(0, length) }, `truncated to ${length}`);
      }
      const longer = new Uint8Array(record.wrapped.byteLength + 1);
      longer.set(record.wrapped);
      await expectDecryptFailure({ ...record, wrapped: longer }, "one extra byte");
      // The key itself, or zeros, in place of the wrapped form.
      await expectDecryptFailure({ ...record, wrapped: new Uint8Array(60) }, "zeros");
      await expectDecryptFailure({ ...record, wrapped: key }, "the raw key");
    });
  });

  it("ERR_KEY_UNAVAILABLE once the epoch's secret is gone (a deleted old epoch)", async () => {
    const key = randomKey();
    const underT0 = await wrapKey(master, "acme", 1, key, "t0");
    expect(equalBytes(await unwrapKey(master, underT0), key)).toBe(true);
    expect(await codeOf(unwrapKey(onlyT1(), underT0))).toBe("ERR_KEY_UNAVAILABLE");
    // Even a wrapped blob of the wrong length: availability is checked first, and nothing is tried.
    expect(await codeOf(unwrapKey(onlyT1(), { ...underT0, wrapped: new Uint8Array(3) }))).toBe("ERR_KEY_UNAVAILABLE");
    // An epoch never configured at all.
    expect(await codeOf(unwrapKey(master, { ...underT0, epoch: "t9" }))).toBe("ERR_KEY_UNAVAILABLE");
    // And nothing new can be wrapped under it.
    expect(await codeOf(wrapKey(onlyT1(), "acme", 1, key, "t0"))).toBe("ERR_KEY_UNAVAILABLE");
  });
});

describe("TenantKeyring (in a tenant's object)", () => {
  type KeyRow = { tenant: string; version: number; epoch: string; wrapped: ArrayBuffer; created_at: number };
  const rows = (sql: SqlStorage) => sql.exec<KeyRow>(`SELECT * FROM tenant_keys ORDER BY tenant, version`).toArray();

  it("current() creates v1 once; rotate() makes v2 current; v1 stays readable", async () => {
    const tenant = uniqueTenant("ring");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      const ring = new TenantKeyring(sql, tenant, masterWith("t1"));
      expect(ring.currentVersion()).toBeNull();
      expect(ring.list()).toEqual([]);
      const first = await ring.current(1_000);
      const again = await ring.current(2_000);
      expect(first.version).toBe(1);
      expect(again.version).toBe(1);
      expect(equalBytes(first.key, again.key)).toBe(true);
      expect(first.key.byteLength).toBe(32);
      expect(rows(sql)).toHaveLength(1);
      expect(rows(sql)[0]).toMatchObject({ tenant, version: 1, epoch: "t1", created_at: 1_000 });
      const v1 = Uint8Array.from(first.key);

      // Another instance over the same storage (e.g. after eviction) gets the same key from the wrapped row.
      const fresh = new TenantKeyring(sql, tenant, masterWith("t1"));
      expect((await fresh.current()).version).toBe(1);
      expect(equalBytes(await fresh.key(1), v1)).toBe(true);

      expect(await ring.rotate(3_000)).toBe(2);
      expect(ring.currentVersion()).toBe(2);
      const second = await ring.current();
      expect(second.version).toBe(2);
      expect(equalBytes(second.key, v1)).toBe(false);
      expect(ring.list()).toEqual([
        { version: 1, epoch: "t1", createdAt: 1_000, current: false },
        { version: 2, epoch: "t1", createdAt: 3_000, current: true },
      ]);
      const reread = new TenantKeyring(sql, tenant, masterWith("t1"));
      expect(equalBytes(await reread.key(1), v1)).toBe(true);
      expect(equalBytes(await reread.key(2), second.key)).toBe(true);
      expect((await reread.current()).version).toBe(2);
      expect(await codeOf(reread.key(3))).toBe("ERR_KEY_UNAVAILABLE");
      expect(await codeOf(reread.key(0))).toBe("ERR_KEY_UNAVAILABLE");
    });
  });

  it("subkeys: one per purpose and version, none equal to the data key or to each other", async () => {
    const tenant = uniqueTenant("subkeys");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const ring = new TenantKeyring(state.storage.sql, tenant, masterWith("t1"));
      const { key } = await ring.current();
      await ring.rotate();
      const seen: Uint8Array[] = [Uint8Array.from(key), Uint8Array.from(await ring.key(2))];
      for (const version of [1, 2]) {
        for (const purpose of ["atoms", "blind-index", "handles", "request-state"] as const) {
          const subkey = await ring.subkey(version, purpose);
          expect(subkey.byteLength).toBe(32);
          expect(seen.some((other) => equalBytes(other, subkey))).toBe(false);
          seen.push(Uint8Array.from(subkey));
          // Deterministic: another instance derives the same subkey.
          const other = new TenantKeyring(state.storage.sql, tenant, masterWith("t1"));
          expect(equalBytes(await other.subkey(version, purpose), subkey)).toBe(true);
        }
      }
    });
  });

  it("rewrapAll() moves every key from epoch t0 to t1 without changing the key bytes", async () => {
    const tenant = uniqueTenant("rewrap");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      const old = new TenantKeyring(sql, tenant, masterWith("t0"));
      const k1 = Uint8Array.from((await old.current()).key);
      await old.rotate();
      const k2 = Uint8Array.from(await old.key(2));
      expect(old.list().map((info) => info.epoch)).toEqual(["t0", "t0"]);
      const before = rows(sql).map((row) => Uint8Array.from(new Uint8Array(row.wrapped)));
      // A backup of the wrapped rows as they are now (e.g. a point-in-time restore).
      const backup = rows(sql).map((row) => ({ ...row, wrapped: new Uint8Array(row.wrapped).slice() }));

      // With t0's secret already deleted, the keys are unavailable: this is why the rewrap must come first.
      const tooEarly = new TenantKeyring(sql, tenant, onlyT1());
      expect(await codeOf(tooEarly.key(1))).toBe("ERR_KEY_UNAVAILABLE");

      const ring = new TenantKeyring(sql, tenant, masterWith("t1"));
      expect(await ring.rewrapAll()).toBe(2);
      expect(ring.list().map((info) => info.epoch)).toEqual(["t1", "t1"]);
      const after = rows(sql);
      expect(after).toHaveLength(2);
      after.forEach((row, i) => {
        expect(row.epoch).toBe("t1");
        expect(equalBytes(new Uint8Array(row.wrapped), before[i] as Uint8Array)).toBe(false);
      });
      expect(await ring.rewrapAll()).toBe(0); // idempotent

      // After the rewrap the old epoch can go: a keyring that only knows t1 reads the same key bytes.
      const afterDeletion = new TenantKeyring(sql, tenant, onlyT1());
      expect(equalBytes(await afterDeletion.key(1), k1)).toBe(true);
      expect(equalBytes(await afterDeletion.key(2), k2)).toBe(true);
      expect(afterDeletion.currentVersion()).toBe(2);

      // The pre-rewrap backup unwraps while t0 exists, and is unreadable once t0's secret is deleted.
      for (const row of backup) {
        const record = { tenant, version: row.version, epoch: row.epoch, wrapped: row.wrapped };
        const unwrapped = await unwrapKey(masterWith("t1"), record);
        expect(equalBytes(unwrapped, row.version === 1 ? k1 : k2)).toBe(true);
        expect(await codeOf(unwrapKey(onlyT1(), record))).toBe("ERR_KEY_UNAVAILABLE");
      }
    });
  });

  it("rewrapAll() leaves keys already under the current epoch untouched", async () => {
    const tenant = uniqueTenant("rewrap-mixed");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      await new TenantKeyring(sql, tenant, masterWith("t0")).current();
      await new TenantKeyring(sql, tenant, masterWith("t1")).rotate();
      const v2Before = new Uint8Array((rows(sql)[1] as KeyRow).wrapped).slice();
      const ring = new TenantKeyring(sql, tenant, masterWith("t1"));
      expect(ring.list().map((info) => info.epoch)).toEqual(["t0", "t1"]);
      expect(await ring.rewrapAll()).toBe(1);
      expect(equalBytes(new Uint8Array((rows(sql)[1] as KeyRow).wrapped), v2Before)).toBe(true);
      expect(ring.list().map((info) => info.epoch)).toEqual(["t1", "t1"]);
    });
  });

  it("destroy(v) makes that version unavailable (cached or not); destroyAll() shreds every version", async () => {
    const tenant = uniqueTenant("destroy");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      const ring = new TenantKeyring(sql, tenant, masterWith("t1"));
      await ring.current();
      await ring.rotate();
      await ring.rotate();
      const k2 = Uint8Array.from(await ring.key(2));
      const held = await ring.key(1); // the keyring's own cached buffer
      await ring.subkey(1, "atoms");

      ring.destroy(1);
      expect(held.every((byte) => byte === 0)).toBe(true); // zeroised in memory
      expect(await codeOf(ring.key(1))).toBe("ERR_KEY_UNAVAILABLE");
      expect(await codeOf(ring.subkey(1, "atoms"))).toBe("ERR_KEY_UNAVAILABLE");
      expect(await codeOf(new TenantKeyring(sql, tenant, masterWith("t1")).key(1))).toBe("ERR_KEY_UNAVAILABLE");
      expect(equalBytes(await ring.key(2), k2)).toBe(true);
      expect(ring.list().map((info) => info.version)).toEqual([2, 3]);

      expect(ring.destroyAll()).toBe(2);
      for (const version of [1, 2, 3]) {
        expect(await codeOf(ring.key(version))).toBe("ERR_KEY_UNAVAILABLE");
        expect(await codeOf(new TenantKeyring(sql, tenant, masterWith("t1")).key(version))).toBe("ERR_KEY_UNAVAILABLE");
      }
      expect(ring.currentVersion()).toBeNull();
      expect(rows(sql).filter((row) => row.tenant === tenant)).toEqual([]);
      expect(ring.destroyAll()).toBe(0);
    });
  });

  it("concurrent first calls to current() all get version 1 and the same key (one row, no constraint error)", async () => {
    const tenant = uniqueTenant("ring-race");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const ring = new TenantKeyring(state.storage.sql, tenant, masterWith("t1"));
      // Callers that start in the same turn (e.g. Promise.all over two writes) must not race to create v1.
      const results = await Promise.allSettled([ring.current(), ring.current(), ring.current()]);
      const failures = results.flatMap((result) => (result.status === "rejected" ? [String(result.reason)] : []));
      expect(failures).toEqual([]);
      const keys = results.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
      expect(keys.map((k) => k.version)).toEqual([1, 1, 1]);
      expect(equalBytes(keys[0]?.key ?? new Uint8Array(), keys[2]?.key ?? new Uint8Array(1))).toBe(true);
      expect(rows(state.storage.sql)).toHaveLength(1);
      // And the key every caller got is the one stored (a fresh instance unwraps the same bytes).
      const fresh = new TenantKeyring(state.storage.sql, tenant, masterWith("t1"));
      expect(equalBytes(await fresh.key(1), keys[1]?.key ?? new Uint8Array())).toBe(true);
    });
  });

  it("after destroy(v), atoms under v no longer open in the same object (no key survives in a cipher's cache)", async () => {
    const tenant = uniqueTenant("cipher-destroy");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const ring = new TenantKeyring(state.storage.sql, tenant, masterWith("t1"));
      const cipher = new AtomCipher(ring, tenant);
      const v1 = await cipher.currentVersion();
      const fields = { title: "t", source: "s", tags: ["x"], text: "sealed under v1" };
      const sealed = await cipher.seal("atom-1", v1, fields);
      expect(await cipher.open("atom-1", v1, sealed)).toEqual(fields);
      await cipher.token(v1, "tag", "x");
      await ring.rotate();
      ring.destroy(v1);
      expect(await codeOf(ring.key(v1))).toBe("ERR_KEY_UNAVAILABLE");
      // The keyring forgot v1; the cipher built on it must not keep opening data under v1 from its own cache.
      // (open() reports any failure to get or use its key as ERR_DECRYPT; either way nothing opens.)
      expect(["ERR_KEY_UNAVAILABLE", "ERR_DECRYPT"]).toContain(await codeOf(cipher.open("atom-1", v1, sealed)));
      expect(await codeOf(cipher.token(v1, "tag", "x"))).toBe("ERR_KEY_UNAVAILABLE");
      // The current version still works.
      const v2 = await cipher.currentVersion();
      expect(v2).toBe(2);
      expect(await cipher.open("atom-1", v2, await cipher.seal("atom-1", v2, fields))).toEqual(fields);
    });
  });

  it("keyrings of two tenants over one database never see each other's keys", async () => {
    const tenant = uniqueTenant("shared-db");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      const a = new TenantKeyring(sql, "tenant-a", masterWith("t1"));
      const b = new TenantKeyring(sql, "tenant-b", masterWith("t1"));
      const ka = Uint8Array.from((await a.current()).key);
      expect(b.currentVersion()).toBeNull();
      expect(await codeOf(b.key(1))).toBe("ERR_KEY_UNAVAILABLE");
      const kb = Uint8Array.from((await b.current()).key);
      expect(equalBytes(ka, kb)).toBe(false);
      b.destroyAll();
      expect(equalBytes(await new TenantKeyring(sql, "tenant-a", masterWith("t1")).key(1), ka)).toBe(true);
    });
  });

  it("nothing in tenant_keys contains a raw key: every column of every row is scanned", async () => {
    const tenant = uniqueTenant("scan");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      const ring = new TenantKeyring(sql, tenant, masterWith("t0"));
      const keys: Uint8Array[] = [Uint8Array.from((await ring.current()).key)];
      for (let i = 0; i < 3; i++) keys.push(Uint8Array.from(await ring.key(await ring.rotate())));
      const current = new TenantKeyring(sql, tenant, masterWith("t1"));
      await current.rewrapAll();
      keys.push(Uint8Array.from(await current.key(await current.rotate())));
      const all = sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM tenant_keys`).toArray();
      expect(all).toHaveLength(5);
      for (const row of all) {
        expect(Object.keys(row).sort()).toEqual(["created_at", "epoch", "tenant", "version", "wrapped"]);
        for (const [column, value] of Object.entries(row)) {
          const bytes = cellBytes(value);
          for (const key of keys) {
            expect(equalBytes(bytes, key), column).toBe(false);
            expect(containsBytes(bytes, key), column).toBe(false);
            expect(containsBytes(bytes, key.subarray(0, 12)), column).toBe(false);
            expect(containsBytes(bytes, key.subarray(20)), column).toBe(false);
            // Nor a textual encoding of it.
            const text = new TextDecoder().decode(bytes);
            expect(text.includes(base64url(key)), column).toBe(false);
            expect(text.includes(standardBase64(key)), column).toBe(false);
            expect(
              text.toLowerCase().includes([...key].map((b) => b.toString(16).padStart(2, "0")).join("")),
              column,
            ).toBe(false);
          }
        }
      }
      // The whole database file's other tables hold no copy either (e.g. tenant_meta).
      for (const table of ["tenant_meta", "mcp_sessions", "documents", "atoms"]) {
        for (const row of sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM ${table}`)) {
          for (const value of Object.values(row)) {
            for (const key of keys) expect(containsBytes(cellBytes(value), key), table).toBe(false);
          }
        }
      }
    });
  });
});
