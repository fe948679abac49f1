import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { documentObjectKey } from "../../src/blob/blob-gc";
import { putEncrypted } from "../../src/blob/blob-stream";
import { EncryptedBlobs } from "../../src/blob/encrypted-blobs";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { migrate, SCHEMA_VERSION } from "../../src/tenant/schema";
import { tenantStub } from "../helpers/docs";
import { uniqueTenant } from "../helpers/kb-client";

/**
 * Step-level crash tests of document custody (src/blob/blob-custody.ts). Each operation (new document, overwrite,
 * delete, one rotation re-encryption, a garbage collection) runs once unfaulted to count its storage operations
 * (R2 calls and SQL statements), then once for every k over that count with a fault at the k-th operation, in two
 * modes: `before` (the operation does not happen, like a crash just before it) and `after` (it happens, then the
 * caller sees a failure, like a crash just after it). After each fault the object "restarts" (a fresh keyring and
 * EncryptedBlobs on the same storage, nothing in memory) and the invariant is checked: the document reads back as
 * the previous content, or as the new one exactly when the call returned; every row opens; once collectGarbage has
 * run, R2 holds exactly the objects the rows name; re-running the operation succeeds.
 */

type Mode = "before" | "after";

class Faults {
  ops = 0;
  failAt = Number.POSITIVE_INFINITY;
  mode: Mode = "before";
  readonly trace: string[] = [];

  arm(failAt: number, mode: Mode): void {
    this.ops = 0;
    this.failAt = failAt;
    this.mode = mode;
    this.trace.length = 0;
  }

  /** Counts one storage operation; true if it is the one to fail. */
  hit(name: string): boolean {
    this.ops++;
    this.trace.push(name);
    return this.ops === this.failAt;
  }
}

class InjectedFault extends Error {}

function injected(faults: Faults): InjectedFault {
  return new InjectedFault(`injected fault (${faults.mode}) at op ${faults.ops}: ${faults.trace.at(-1)}`);
}

/** R2 bucket whose k-th call (get, head, put, delete, list) fails. */
function faultyBucket(bucket: R2Bucket, faults: Faults): R2Bucket {
  return new Proxy(bucket, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      const method = value.bind(target) as (...args: unknown[]) => Promise<unknown>;
      if (!["get", "head", "put", "delete", "list"].includes(String(property))) return method;
      return async (...args: unknown[]) => {
        if (!faults.hit(`r2.${String(property)}`)) return method(...args);
        if (faults.mode === "before") {
          // Like a failed request: a streamed body is cancelled, so the writer's pipe fails too.
          const body = args[1];
          if (property === "put" && body instanceof ReadableStream) await body.cancel(injected(faults));
          throw injected(faults);
        }
        await method(...args);
        throw injected(faults);
      };
    },
  });
}

/** SqlStorage whose k-th exec fails (inside transactionSync, a failure rolls the transaction back). */
function faultySql(sql: SqlStorage, faults: Faults): SqlStorage {
  return new Proxy(sql, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property !== "exec") return typeof value === "function" ? value.bind(target) : value;
      return (query: string, ...bindings: SqlStorageValue[]) => {
        const fail = faults.hit(`sql ${query.trim().split(/\s+/).slice(0, 3).join(" ")}`);
        if (fail && faults.mode === "before") throw injected(faults);
        const cursor = target.exec(query, ...bindings);
        if (fail) throw injected(faults);
        return cursor;
      };
    },
  });
}

interface Harness {
  readonly tenant: string;
  readonly state: DurableObjectState;
  /** The instance under test: storage wrapped in the fault injector. */
  readonly faulty: EncryptedBlobs;
  readonly faults: Faults;
  /** A restart: fresh keyring and EncryptedBlobs on the same storage, no in-memory state. */
  fresh(): EncryptedBlobs;
}

function harness(tenant: string, state: DurableObjectState): Harness {
  const faults = new Faults();
  const sql = state.storage.sql;
  const transaction = <T>(fn: () => T): T => state.storage.transactionSync(fn);
  const keyring = () => new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
  return {
    tenant,
    state,
    faults,
    faulty: new EncryptedBlobs(faultyBucket(env.DOCS, faults), tenant, keyring(), faultySql(sql, faults), transaction),
    fresh: () => new EncryptedBlobs(env.DOCS, tenant, keyring(), sql, transaction),
  };
}

const te = new TextEncoder();
const OLD = te.encode("the previous, acknowledged content ".repeat(900)); // > 16 KiB: several chunks
const NEW = te.encode("the new content");

async function read(blobs: EncryptedBlobs, id: string): Promise<Uint8Array | null> {
  const got = await blobs.get(id);
  return got ? new Uint8Array(await new Response(got.body).arrayBuffer()) : null;
}

async function docsKeys(tenant: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.DOCS.list({ prefix: `t/${tenant}/docs/`, ...(cursor ? { cursor } : {}) });
    keys.push(...page.objects.map((object) => object.key));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return keys.sort();
}

/**
 * The invariant after a restart: every row opens and reads back whole; after collectGarbage has run to
 * completion, R2 under the docs prefix holds exactly the objects rows name, and no candidate is left.
 */
async function expectConsistent(h: Harness, label: string): Promise<void> {
  const blobs = h.fresh();
  const named: string[] = [];
  for (const meta of blobs.list(1000)) {
    const bytes = await read(blobs, meta.id); // throws ERR_DECRYPT if the row named bytes it cannot open
    expect(bytes?.byteLength, `${label}: ${meta.id}`).toBe(meta.size);
    named.push(blobs.storedObjectKey(meta.id) as string);
  }
  const present = await docsKeys(h.tenant);
  for (const key of named) expect(present, `${label}: a row names a missing object`).toContain(key);
  for (let i = 0; i < 10 && (await blobs.collectGarbage(3)) > 0; i++);
  expect(await blobs.collectGarbage(1000), label).toBe(0);
  expect(blobs.pendingGarbage(), label).toBe(0);
  expect(await docsKeys(h.tenant), `${label}: unnamed objects after collection`).toEqual(named.sort());
}

interface Scenario {
  readonly name: string;
  /** Prepares the tenant with a clean instance; returns the content expected if the operation did not happen. */
  setup(h: Harness): Promise<void>;
  /** The operation, on the instance it is given. */
  run(blobs: EncryptedBlobs, h: Harness): Promise<unknown>;
  /** Content expected when the operation did not take effect / did (null: no document). */
  readonly before: Uint8Array | null;
  readonly after: Uint8Array | null;
  /** For rotation: the key version expected on the row when the operation did / did not take effect. */
  readonly versions?: { readonly before: number; readonly after: number };
}

const ID = "doc";

const SCENARIOS: Scenario[] = [
  {
    name: "put of a new document",
    setup: async () => {},
    run: (blobs) => blobs.put(ID, NEW, NEW.byteLength, "text/plain"),
    before: null,
    after: NEW,
  },
  {
    name: "overwrite",
    setup: async (h) => {
      await h.fresh().put(ID, OLD, OLD.byteLength, "text/plain");
    },
    run: (blobs) => blobs.put(ID, NEW, NEW.byteLength, "text/plain"),
    before: OLD,
    after: NEW,
  },
  {
    name: "delete",
    setup: async (h) => {
      await h.fresh().put(ID, OLD, OLD.byteLength, "text/plain");
    },
    run: (blobs) => blobs.delete(ID),
    before: OLD,
    after: null,
  },
  {
    name: "rotation re-encryption step",
    setup: async (h) => {
      await h.fresh().put(ID, OLD, OLD.byteLength, "text/plain");
      await new TenantKeyring(h.state.storage.sql, h.tenant, MasterKeys.fromEnv(env)).rotate();
    },
    run: (blobs) => blobs.reencryptBatch(2, 10),
    before: OLD,
    after: OLD,
    versions: { before: 1, after: 2 },
  },
];

/** Runs `scenario` on a fresh tenant with a fault at op `k` (Infinity: none). Returns the ops it counted. */
async function runOnce(scenario: Scenario, k: number, mode: Mode): Promise<{ ops: number; returned: boolean }> {
  const tenant = uniqueTenant("custody");
  return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
    const h = harness(tenant, state);
    await scenario.setup(h);
    await expectConsistent(h, `${scenario.name}: setup`);
    h.faults.arm(k, mode);
    let returned = false;
    try {
      await scenario.run(h.faulty, h);
      returned = true;
    } catch (error) {
      // Any error is acceptable only if it is the fault's doing (e.g. a cancelled upload is ERR_BAD_REQUEST).
      if (h.faults.ops < k) throw error;
    }
    const ops = h.faults.ops;
    const label = `${scenario.name}, fault ${mode} op ${k} (${h.faults.trace.at(-1)}), ${returned ? "returned" : "threw"}`;
    h.faults.arm(Number.POSITIVE_INFINITY, mode);

    // After the restart: the previous content, or the new one exactly when the call returned; never ERR_DECRYPT.
    const restarted = h.fresh();
    const expected = returned ? scenario.after : scenario.before;
    const got = await read(restarted, ID);
    expect(got === null ? null : new TextDecoder().decode(got), label).toEqual(
      expected === null ? null : new TextDecoder().decode(expected),
    );
    if (scenario.versions) {
      expect(restarted.head(ID)?.keyVersion, label).toBe(returned ? scenario.versions.after : scenario.versions.before);
    }
    await expectConsistent(h, label);

    // Re-running the interrupted operation succeeds and leaves the new state, consistent.
    if (!returned) {
      await scenario.run(h.fresh(), h);
      const again = await read(h.fresh(), ID);
      expect(again === null ? null : new TextDecoder().decode(again), `${label}, re-run`).toEqual(
        scenario.after === null ? null : new TextDecoder().decode(scenario.after),
      );
      if (scenario.versions) expect(h.fresh().head(ID)?.keyVersion, label).toBe(scenario.versions.after);
      await expectConsistent(h, `${label}, re-run`);
    }
    return { ops, returned };
  });
}

describe("document custody under a fault at every storage operation", () => {
  for (const scenario of SCENARIOS) {
    it(`${scenario.name}: any fault leaves old-or-new content, every row readable, no orphan after collection`, async () => {
      const clean = await runOnce(scenario, Number.POSITIVE_INFINITY, "before");
      expect(clean.returned).toBe(true);
      expect(clean.ops).toBeGreaterThanOrEqual(4);
      const outcomes: string[] = [];
      for (const mode of ["before", "after"] as const) {
        for (let k = 1; k <= clean.ops; k++) {
          const { returned } = await runOnce(scenario, k, mode);
          outcomes.push(`${mode}${k}:${returned ? "ok" : "threw"}`);
        }
      }
      // Faults before the commit fail the call (the sweep really injected); faults in the clean-up after the
      // commit (deleting a replaced object: not for a new document) are absorbed, and the call returns.
      const summary = outcomes.join(" ");
      expect(
        outcomes.some((o) => o.endsWith("threw")),
        summary,
      ).toBe(true);
      expect(
        outcomes.some((o) => o.endsWith("ok")),
        summary,
      ).toBe(scenario.before !== null);
    }, 120_000);
  }

  it("collectGarbage interrupted at any operation never deletes a named object and completes on a re-run", async () => {
    const setupAndCollect = async (k: number, mode: Mode) => {
      const tenant = uniqueTenant("custody-gc");
      return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
        const h = harness(tenant, state);
        const clean = h.fresh();
        for (const id of ["a", "b", "c"]) await clean.put(id, OLD, OLD.byteLength, "text/plain");
        // Leave garbage behind: R2 deletes that fail after the commit (old objects of an overwrite and a delete),
        // and an upload that failed after its bytes were stored.
        const noDeletes = new Faults();
        const sql = state.storage.sql;
        const transaction = <T>(fn: () => T): T => state.storage.transactionSync(fn);
        const keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
        const lossy = new EncryptedBlobs(
          new Proxy(env.DOCS, {
            get(target, property) {
              if (property === "delete") return async () => Promise.reject(new Error("R2 down"));
              const value = Reflect.get(target, property);
              return typeof value === "function" ? value.bind(target) : value;
            },
          }),
          tenant,
          keyring,
          faultySql(sql, noDeletes),
          transaction,
        );
        await lossy.put("a", NEW, NEW.byteLength, "text/plain");
        expect(await lossy.delete("b")).toBe(true);
        noDeletes.arm(Number.POSITIVE_INFINITY, "before");
        expect(lossy.pendingGarbage()).toBe(2);
        expect((await docsKeys(tenant)).length).toBe(4);

        h.faults.arm(k, mode);
        try {
          await h.faulty.collectGarbage(100);
        } catch (error) {
          if (!(error instanceof InjectedFault)) throw error;
        }
        const ops = h.faults.ops;
        h.faults.arm(Number.POSITIVE_INFINITY, mode);
        const label = `collect, fault ${mode} op ${k}`;
        const restarted = h.fresh();
        expect(new TextDecoder().decode((await read(restarted, "a")) ?? new Uint8Array()), label).toBe(
          new TextDecoder().decode(NEW),
        );
        expect(await read(restarted, "b"), label).toBeNull();
        expect((await read(restarted, "c"))?.byteLength, label).toBe(OLD.byteLength);
        await expectConsistent(h, label);
        return ops;
      });
    };
    const ops = await setupAndCollect(Number.POSITIVE_INFINITY, "before");
    expect(ops).toBeGreaterThanOrEqual(4);
    for (const mode of ["before", "after"] as const) for (let k = 1; k <= ops; k++) await setupAndCollect(k, mode);
  }, 120_000);
});

describe("document custody: uploads in flight, legacy rows, migration", () => {
  it("collectGarbage never collects an upload still streaming; a failed upload leaves no orphan", async () => {
    const tenant = uniqueTenant("custody-flight");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const h = harness(tenant, state);
      const blobs = h.fresh();
      let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          controller = c;
        },
      });
      const pending = blobs.put("slow", body, 20, "text/plain");
      controller?.enqueue(te.encode("0123456789"));
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(blobs.pendingGarbage()).toBe(1); // the intent of the upload
      expect(await blobs.collectGarbage(100)).toBe(0); // ... is not garbage while it streams
      controller?.enqueue(te.encode("abcdefghij"));
      controller?.close();
      await pending;
      expect(new TextDecoder().decode((await read(blobs, "slow")) ?? new Uint8Array())).toBe("0123456789abcdefghij");
      expect(blobs.pendingGarbage()).toBe(0);

      // A body shorter than declared: refused, nothing named, nothing left behind.
      await expect(blobs.put("short", te.encode("abc"), 10, "text/plain")).rejects.toMatchObject({
        code: "ERR_BAD_REQUEST",
      });
      expect(blobs.head("short")).toBeNull();
      expect(blobs.pendingGarbage()).toBe(0);
      await expectConsistent(h, "in flight");
    });
  });

  it("a legacy row (no generation, object at t/<tenant>/docs/<id>) reads, re-encrypts and is replaced", async () => {
    const tenant = uniqueTenant("custody-legacy");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const h = harness(tenant, state);
      const sql = state.storage.sql;
      const keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
      const blobs = h.fresh();
      const { version, key } = await keyring.current();
      for (const id of ["old-a", "old-b"]) {
        const objectKey = documentObjectKey(tenant, id, null);
        expect(objectKey).toBe(`t/${tenant}/docs/${id}`);
        await putEncrypted(env.DOCS, objectKey, OLD, OLD.byteLength, key, blobs.context(objectKey, version), {
          keyVersion: version,
          contentType: "text/plain",
        });
        sql.exec(
          `INSERT INTO documents (tenant, id, key_version, size, content_type, created_at, updated_at)
           VALUES (?, ?, ?, ?, 'text/plain', 0, 0)`,
          tenant,
          id,
          version,
          OLD.byteLength,
        );
      }
      expect(blobs.storedObjectKey("old-a")).toBe(`t/${tenant}/docs/old-a`);
      expect((await read(blobs, "old-a"))?.byteLength).toBe(OLD.byteLength);
      // Overwrite: a new generation; the legacy object is deleted once the row names the new one.
      await blobs.put("old-a", NEW, NEW.byteLength, "text/plain");
      expect(blobs.storedObjectKey("old-a")).toMatch(new RegExp(`^t/${tenant}/docs/old-a/[0-9a-f]{32}$`));
      expect(await env.DOCS.head(`t/${tenant}/docs/old-a`)).toBeNull();
      // Rotation of a legacy row moves it to a generation under the new version.
      const target = await keyring.rotate();
      expect(await h.fresh().reencryptBatch(target, 10)).toBe(2);
      const after = h.fresh();
      expect(after.head("old-b")?.keyVersion).toBe(target);
      expect(after.storedObjectKey("old-b")).toMatch(new RegExp(`^t/${tenant}/docs/old-b/[0-9a-f]{32}$`));
      expect((await read(after, "old-b"))?.byteLength).toBe(OLD.byteLength);
      expect(after.keyVersionsInUse()).toEqual([target]);
      await expectConsistent(h, "legacy");
    });
  });

  it("a legacy row left one version behind its object (the schema-3 crash) is repaired by the rotation step", async () => {
    const tenant = uniqueTenant("custody-repair");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const h = harness(tenant, state);
      const keyring = new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env));
      await keyring.current();
      const target = await keyring.rotate();
      const objectKey = documentObjectKey(tenant, "stuck", null);
      const blobs = h.fresh();
      // What the old order left: the object re-encrypted under the target version, the row still at version 1.
      await putEncrypted(
        env.DOCS,
        objectKey,
        OLD,
        OLD.byteLength,
        await keyring.key(target),
        blobs.context(objectKey, target),
        {
          keyVersion: target,
          contentType: "text/plain",
        },
      );
      state.storage.sql.exec(
        `INSERT INTO documents (tenant, id, key_version, size, content_type, created_at, updated_at)
         VALUES (?, 'stuck', 1, ?, 'text/plain', 0, 0)`,
        tenant,
        OLD.byteLength,
      );
      await expect(blobs.get("stuck")).rejects.toMatchObject({ code: "ERR_DECRYPT" });
      expect(await h.fresh().reencryptBatch(target, 10)).toBe(1);
      const after = h.fresh();
      expect(after.head("stuck")?.keyVersion).toBe(target);
      expect((await read(after, "stuck"))?.byteLength).toBe(OLD.byteLength);
      expect(after.keyVersionsInUse()).toEqual([target]);
      await expectConsistent(h, "repair");
    });
  });

  it("an object copied to another generation or id of the same tenant fails to open (the context binds the key)", async () => {
    const tenant = uniqueTenant("custody-copy");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const blobs = harness(tenant, state).fresh();
      await blobs.put("src", OLD, OLD.byteLength, "text/plain");
      await blobs.put("dst", NEW, NEW.byteLength, "text/plain");
      const source = await env.DOCS.get(blobs.storedObjectKey("src") as string);
      await env.DOCS.put(blobs.storedObjectKey("dst") as string, (await source?.arrayBuffer()) ?? new ArrayBuffer(0));
      await expect(blobs.get("dst")).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    });
  });

  it("migrate adds documents.generation and blob_gc to a schema-3 database; its rows keep the legacy key", async () => {
    const tenant = uniqueTenant("custody-migrate");
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      sql.exec(`DROP TABLE documents`);
      sql.exec(`DROP TABLE blob_gc`);
      sql.exec(`CREATE TABLE documents (
        tenant TEXT NOT NULL, id TEXT NOT NULL, key_version INTEGER NOT NULL, size INTEGER NOT NULL,
        content_type TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (tenant, id))`);
      sql.exec(`INSERT INTO documents VALUES (?, 'kept', 1, 3, 'text/plain', 0, 0)`, tenant);
      migrate(sql);
      migrate(sql); // idempotent
      const columns = sql
        .exec<{ name: string }>(`PRAGMA table_info(documents)`)
        .toArray()
        .map((c) => c.name);
      expect(columns).toContain("generation");
      expect(sql.exec(`SELECT id, generation FROM documents`).toArray()).toEqual([{ id: "kept", generation: null }]);
      expect(sql.exec(`SELECT COUNT(*) AS n FROM blob_gc`).one().n).toBe(0);
      expect(sql.exec(`SELECT value FROM tenant_meta WHERE key = 'schema_version'`).one().value).toBe(
        String(SCHEMA_VERSION),
      );
      const blobs = harness(tenant, state).fresh();
      expect(blobs.storedObjectKey("kept")).toBe(`t/${tenant}/docs/kept`);
    });
  });
});
