import { abortAllDurableObjects, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { decrypt } from "../../src/crypto/chunked-aead";
import { unwrapKey, type WrappedKey, wrapKey } from "../../src/crypto/key-wrap";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { AtomCipher } from "../../src/kb/atom-cipher";
import { TenantLifecycle } from "../../src/tenant/lifecycle";
import { TenantContext } from "../../src/tenant/tenant-context";
import {
  adminCall,
  documentRequest,
  holdTenantAlarms,
  legacyWhoami,
  masterKeys,
  masterSecret,
  openLegacySession,
  putDocument,
  type ReceiptOut,
  rewrapToCompletion,
  scheduledAlarm,
  stepTenantAlarm,
  tableRows,
  tenantStatus,
  tenantStub,
} from "../helpers/admin";
import { type KbCaller, kbCaller, type RpcAnswer, uniqueTenant } from "../helpers/kb-client";
import { initializeBody, LEGACY_VERSION, mcpFetch } from "../helpers/mcp-http";
import {
  type AtomIn,
  addAtoms,
  corpus,
  docBytes,
  expectAtoms,
  expectDocuments,
  r2Objects,
  runSearches,
  type StoredRows,
  settle,
  slowUpload,
  storedRows,
} from "./fixtures";

/**
 * Offboarding = crypto-shred (src/tenant/lifecycle.ts): the data keys and sessions are destroyed in the request,
 * the tenant is refused from then on, and the purge of what the keys protected follows in alarm steps. The last
 * part shows what "final" means with copies of the ciphertext and of the wrapped keys in hand (a backup, a
 * point-in-time restore): they decrypt exactly as long as the master epoch that wrapped the keys still exists.
 */

const A = uniqueTenant("off-a");
const B = uniqueTenant("off-b");
const ATOM_COUNT = 450; // three purge steps of 200 atoms
const HTTP_DOCS = 12;
const MCP_DOCS = 2;
const STRAY = "other/stray-object"; // under the tenant's prefix, named by no row: purged all the same

interface Kept {
  keys: WrappedKey[];
  atoms: { id: string; keyVersion: number; sealed: Uint8Array }[];
  objects: { key: string; keyVersion: number; bytes: Uint8Array }[];
  docs: Map<string, Uint8Array>;
  atomsIn: Map<string, AtomIn>;
  counts: { atoms: number; vectors: number; documents: number; r2Objects: number; cacheRows: number };
}

let a: KbCaller;
let b: KbCaller;
let sessionA: string;
let sessionB: string;
let kept: Kept;
let bBefore: { rows: StoredRows; objects: Awaited<ReturnType<typeof r2Objects>>; searches: unknown };
const bAtoms = corpus(40, "b", 99);
const bDocs = new Map([
  ["b-1", docBytes(50)],
  ["b-2", docBytes(51, 30_000)],
]);

const OFFBOARDED = { error: { data: { code: "ERR_TENANT_OFFBOARDED" } } };

async function count(tenant: string, table: string): Promise<number> {
  return (await tableRows(tenantStub(tenant), table)).length;
}

async function keepCopies(tenant: string, docs: Map<string, Uint8Array>, atomsIn: AtomIn[]): Promise<Kept> {
  const keys = (await tableRows(tenantStub(tenant), "tenant_keys")).map((row) => ({
    tenant,
    version: Number(row.version),
    epoch: String(row.epoch),
    wrapped: new Uint8Array(row.wrapped as ArrayBuffer).slice(),
  }));
  const atoms = (await tableRows(tenantStub(tenant), "atoms")).map((row) => ({
    id: String(row.id),
    keyVersion: Number(row.key_version),
    sealed: new Uint8Array(row.sealed as ArrayBuffer).slice(),
  }));
  const objects: Kept["objects"] = [];
  for (const [key, meta] of await r2Objects(`t/${tenant}/`)) {
    const object = await env.DOCS.get(key);
    objects.push({
      key,
      keyVersion: Number(meta.keyVersion ?? 0),
      bytes: new Uint8Array((await object?.arrayBuffer()) ?? new ArrayBuffer(0)),
    });
  }
  return {
    keys,
    atoms,
    objects,
    docs,
    atomsIn: new Map(atomsIn.map((atom) => [atom.id, atom])),
    counts: {
      atoms: atoms.length,
      vectors: await count(tenant, "vector_rows"),
      documents: await count(tenant, "documents"),
      r2Objects: objects.length,
      cacheRows: await count(tenant, "embedding_cache"),
    },
  };
}

function expectRefused(answer: { status: number; body: unknown; text?: string }, what: string): void {
  expect(answer.status, `${what}: ${answer.text ?? JSON.stringify(answer.body)}`).toBe(403);
  expect(answer.body, what).toMatchObject(OFFBOARDED);
}

async function asAnswer(response: Response): Promise<{ status: number; body: unknown; text: string }> {
  const text = await response.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: response.status, body, text };
}

/** Every way the tenant can be reached, each of which must be refused with 403 ERR_TENANT_OFFBOARDED. */
async function expectEverythingRefused(caller: KbCaller, sessionId: string): Promise<void> {
  const calls: [string, Record<string, unknown>][] = [
    ["whoami", {}],
    ["add_atoms", { atoms: [{ id: "late", text: "written after offboarding" }] }],
    ["search", { query: "river lake ocean" }],
    ["get_atom", { id: "atom-001" }],
    ["delete_atoms", { ids: ["atom-001"] }],
    ["list_atoms", {}],
    ["kb_stats", {}],
    ["put_document", { id: "late-doc", text: "written after offboarding" }],
    ["get_document", { id: "doc-01" }],
  ];
  for (const [name, args] of calls) {
    const answer: RpcAnswer = await caller.rpc("tools/call", { name, arguments: args });
    expectRefused(answer, `tools/call ${name}`);
  }
  for (const [method, params] of [
    ["resources/read", { uri: "atom://atom-001" }],
    ["tools/list", {}],
    ["resources/templates/list", {}],
    ["ping", {}],
  ] as const) {
    expectRefused(await caller.rpc(method, params), method);
  }
  // Another subject of the same tenant, with a fresh token.
  const other = await kbCaller(caller.tenant, { sub: "bob" });
  expectRefused(await other.rpc("tools/call", { name: "whoami", arguments: {} }), "another subject");
  // 2025-era: a new session, the existing session, and ending it.
  expectRefused(
    await asAnswer(await mcpFetch({ method: "POST", token: caller.token, body: initializeBody() })),
    "initialize",
  );
  expectRefused(await asAnswer(await legacyWhoami(caller.token, sessionId)), "existing session");
  expectRefused(
    await asAnswer(
      await mcpFetch({
        method: "DELETE",
        token: caller.token,
        headers: { "mcp-session-id": sessionId, "mcp-protocol-version": LEGACY_VERSION },
      }),
    ),
    "DELETE session",
  );
  // The document endpoint, every method.
  expectRefused(await asAnswer(await documentRequest(caller.token, "GET", "doc-01")), "GET document");
  expectRefused(await asAnswer(await documentRequest(caller.token, "DELETE", "doc-01")), "DELETE document");
  expectRefused(await asAnswer(await putDocument(caller.token, "doc-01", docBytes(9))), "PUT document");
  expectRefused(await asAnswer(await putDocument(caller.token, "brand-new", docBytes(9))), "PUT new document");
  expect((await documentRequest(caller.token, "HEAD", "doc-01")).status).toBe(403);
}

beforeAll(async () => {
  a = await kbCaller(A);
  const atomsA = corpus(ATOM_COUNT);
  await addAtoms(a, atomsA);
  const docsA = new Map<string, Uint8Array>();
  for (let i = 0; i < HTTP_DOCS; i++) {
    const id = `doc-${String(i).padStart(2, "0")}`;
    const bytes = docBytes(i, i === 3 ? 60_000 : 300 + i);
    expect((await putDocument(a.token, id, bytes)).status).toBe(201);
    docsA.set(id, bytes);
  }
  for (let i = 0; i < MCP_DOCS; i++) {
    const text = `an MCP document ${i}`;
    await a.ok("put_document", { id: `mcp-${i}`, text });
    docsA.set(`mcp-${i}`, new TextEncoder().encode(text));
  }
  await env.DOCS.put(`t/${A}/${STRAY}`, "bytes no row names");
  await runSearches(a); // query embeddings land in the cache too
  sessionA = await openLegacySession(a.token);
  expect((await legacyWhoami(a.token, sessionA)).status).toBe(200);

  b = await kbCaller(B);
  await addAtoms(b, bAtoms);
  for (const [id, bytes] of bDocs) expect((await putDocument(b.token, id, bytes)).status).toBe(201);
  sessionB = await openLegacySession(b.token);
  bBefore = { rows: await storedRows(B), objects: await r2Objects(`t/${B}/`), searches: await runSearches(b) };

  kept = await keepCopies(A, docsA, atomsA);
  expect(kept.counts).toMatchObject({
    atoms: ATOM_COUNT,
    vectors: ATOM_COUNT,
    documents: HTTP_DOCS + MCP_DOCS,
    r2Objects: HTTP_DOCS + MCP_DOCS + 1,
  });
  // The local hash embedder is not cached (EMBEDDER=workers-ai is); the count is whatever exists.
  expect(kept.counts.cacheRows).toBeGreaterThanOrEqual(0);
  expect(kept.keys.map((key) => ({ version: key.version, epoch: key.epoch }))).toEqual([{ version: 1, epoch: "t1" }]);
});

describe("offboarding tenant A", () => {
  let receipt: ReceiptOut;

  it("destroys keys and sessions in the request, and refuses the tenant at once (before any purge)", async () => {
    await holdTenantAlarms(A);
    const answer = await adminCall("POST", `/admin/tenants/${A}/offboard`, { body: { confirm: A } });
    expect(answer.status, answer.text).toBe(202);
    receipt = (answer.body as { receipt: ReceiptOut }).receipt;
    expect(receipt).toMatchObject({
      tenant: A,
      requestedBy: "operator-1",
      keyVersionsDestroyed: [1],
      sessionsEnded: 1,
      purged: { atoms: 0, vectors: 0, documents: 0, r2Objects: 0, cacheRows: 0 },
      purgeBatches: 0,
      completedAt: null,
    });
    // Every epoch configured at the time (t0 and t1 from vitest.config.ts, plus any from a local .dev.vars).
    expect([...receipt.masterEpochsAtShred].sort()).toEqual(MasterKeys.fromEnv(env).epochs().sort());
    expect(receipt.masterEpochsAtShred).toEqual(expect.arrayContaining(["t0", "t1"]));
    expect(Date.parse(receipt.keysDestroyedAt)).toBeGreaterThan(Date.now() - 60_000);

    // Nothing has been purged yet, and the purge is scheduled...
    expect(await count(A, "atoms")).toBe(ATOM_COUNT);
    expect(await scheduledAlarm(A)).not.toBeNull();
    // ...but the keys and sessions are already gone.
    expect(await count(A, "tenant_keys")).toBe(0);
    expect(await count(A, "mcp_sessions")).toBe(0);

    await expectEverythingRefused(a, sessionA);
    // Refusing did not touch anything: no key re-created, nothing written, nothing purged by a request.
    expect(await count(A, "tenant_keys")).toBe(0);
    expect(await count(A, "mcp_sessions")).toBe(0);
    expect(await count(A, "atoms")).toBe(ATOM_COUNT);
    expect(await count(A, "documents")).toBe(HTTP_DOCS + MCP_DOCS);
    expect((await env.DOCS.list({ prefix: `t/${A}/docs/brand-new` })).objects).toEqual([]);

    const status = await tenantStatus(A);
    expect(status).toMatchObject({ state: "offboarding", keys: [], rotation: null });
    expect(status.receipt).toEqual(receipt);
    const listed = (await adminCall("GET", "/admin/tenants")).body as { tenants: { tenant: string; state: string }[] };
    expect(listed.tenants).toContainEqual(expect.objectContaining({ tenant: A, state: "offboarding" }));
    // Asking again returns the same receipt; it does not start over.
    const again = await adminCall("POST", `/admin/tenants/${A}/offboard`, { body: { confirm: A } });
    expect(again.status).toBe(202);
    expect((again.body as { receipt: ReceiptOut }).receipt).toEqual(receipt);
  });

  it("purges in steps, survives eviction in the middle, and completes with exact counts", async () => {
    const first = await stepTenantAlarm(A);
    expect(first.rescheduled).toBe(true);
    const partial = (await tenantStatus(A)).receipt;
    expect(partial).toMatchObject({ purgeBatches: 1, completedAt: null, purged: { atoms: 200 } });
    expect(await count(A, "atoms")).toBe(ATOM_COUNT - 200);

    // The object dies mid-purge. A hard abort (a crash: no draining) rather than a graceful eviction, which waits
    // for every reference to the object to go, and the refused requests above can leave some until GC runs.
    let before: unknown;
    await runInDurableObject(tenantStub(A), (instance) => {
      before = instance;
    });
    await abortAllDurableObjects();
    await runInDurableObject(tenantStub(A), (instance) => {
      expect(instance).not.toBe(before);
    });
    // Still refused by the fresh instance, mid-purge.
    expectRefused(await a.rpc("tools/call", { name: "whoami", arguments: {} }), "whoami after eviction");

    let steps = 1;
    for (;;) {
      const { rescheduled } = await stepTenantAlarm(A);
      steps++;
      const status = await tenantStatus(A);
      if (status.receipt?.completedAt) {
        expect(rescheduled).toBe(false);
        break;
      }
      expect(rescheduled).toBe(true);
      expect(steps).toBeLessThan(10);
    }
    expect(steps).toBe(3); // 200 + 200 + 50 atoms; the step that purges the last ones completes the receipt

    const done = await tenantStatus(A);
    expect(done.state).toBe("offboarded");
    expect(done.receipt).toMatchObject({
      ...receipt,
      purged: { ...kept.counts, runObjects: 0 },
      purgeBatches: steps,
      residuePurgedAt: expect.any(String),
      completedAt: expect.any(String),
    });
    expect(done).toMatchObject({ atoms: 0, documents: 0, keys: [] });
    for (const table of [
      "atoms",
      "atom_tags",
      "vector_rows",
      "vectorize_ids",
      "embedding_cache",
      "documents",
      "mcp_sessions",
      "tenant_keys",
    ]) {
      expect(await count(A, table), table).toBe(0);
    }
    const meta = await tableRows(tenantStub(A), "tenant_meta");
    expect(meta.map((row) => row.key).sort()).toEqual([
      "registered",
      "schema_version",
      "shred_receipt",
      "state",
      "tenant",
    ]);
    expect((await env.DOCS.list({ prefix: `t/${A}/` })).objects).toEqual([]);
    expect(await scheduledAlarm(A)).toBeNull();
    const listed = (await adminCall("GET", "/admin/tenants")).body as { tenants: { tenant: string; state: string }[] };
    expect(listed.tenants).toContainEqual(expect.objectContaining({ tenant: A, state: "offboarded" }));

    // Extra steps change nothing; the tenant stays refused, also after another eviction.
    for (let i = 0; i < 2; i++) expect(await stepTenantAlarm(A)).toEqual({ rescheduled: false });
    expect((await tenantStatus(A)).receipt).toEqual(done.receipt);
    await abortAllDurableObjects();
    await expectEverythingRefused(a, sessionA);
    expect(await count(A, "tenant_keys")).toBe(0);
    expect(await count(A, "atoms")).toBe(0);
    // Rotation is refused, not an internal error; the master rewrap skips the tenant without failing.
    const rotate = await adminCall("POST", `/admin/tenants/${A}/rotate`);
    expect(rotate.status, rotate.text).not.toBe(202);
    expect(await count(A, "tenant_keys")).toBe(0);
    const job = await rewrapToCompletion();
    expect(job).toMatchObject({ completedAt: expect.any(String), failures: [] });
    expect(await count(A, "tenant_keys")).toBe(0);
  });

  it("tenant B is untouched: keys, atoms, documents, session and searches as before", async () => {
    expect(await storedRows(B)).toEqual(bBefore.rows);
    expect(await r2Objects(`t/${B}/`)).toEqual(bBefore.objects);
    await evictDurableObject(tenantStub(B));
    expect(await runSearches(b)).toEqual(bBefore.searches);
    await expectAtoms(B, new Map(bAtoms.map((atom) => [atom.id, atom])));
    await expectDocuments(b.token, bDocs);
    expect((await legacyWhoami(b.token, sessionB)).status).toBe(200);
    const status = await tenantStatus(B);
    expect(status).toMatchObject({ state: "active", atoms: bAtoms.length, documents: bDocs.size, receipt: null });
    expect(status.keys.map((key) => key.version)).toEqual([1]);
  });
});

describe("finality of the shred, with copies of everything", () => {
  /** A fresh tenant object standing in for a restore target: nothing but the restored key rows. */
  const restoreStub = () => tenantStub(uniqueTenant("restore"));

  function contextFor(objectKey: string, version: number): Uint8Array {
    return new TextEncoder().encode(`tenant-mcp-kb/blob/v1\0${A}\0${objectKey}\0${version}`);
  }

  /** Tries to open every kept atom and every kept document object with `key` as A's data key (version 1). */
  async function tryKey(
    stub: DurableObjectStub,
    key: Uint8Array,
  ): Promise<{ atomsOpened: number; docsOpened: number }> {
    return runInDurableObject(stub, async (_instance, state) => {
      const sql = state.storage.sql;
      // Plant `key` as A's version-1 key under a throw-away master key, so the production AtomCipher uses it.
      const harness = new MasterKeys(new Map([["x0", crypto.getRandomValues(new Uint8Array(32))]]), "x0");
      const planted = await wrapKey(harness, A, 1, key);
      sql.exec(`DELETE FROM tenant_keys`);
      sql.exec(
        `INSERT INTO tenant_keys (tenant, version, epoch, wrapped, created_at) VALUES (?, 1, ?, ?, 0)`,
        A,
        planted.epoch,
        planted.wrapped,
      );
      const cipher = new AtomCipher(new TenantKeyring(sql, A, harness), A);
      let atomsOpened = 0;
      for (const atom of kept.atoms) {
        try {
          const fields = await cipher.open(atom.id, atom.keyVersion, atom.sealed);
          if (fields.text === kept.atomsIn.get(atom.id)?.text) atomsOpened++;
        } catch (error) {
          expect(error).toMatchObject({ code: "ERR_DECRYPT" });
        }
      }
      let docsOpened = 0;
      for (const object of kept.objects.filter((o) => o.keyVersion > 0)) {
        try {
          await decrypt(key, contextFor(object.key, object.keyVersion), object.bytes);
          docsOpened++;
        } catch (error) {
          expect(error).toMatchObject({ code: "ERR_DECRYPT" });
        }
      }
      sql.exec(`DELETE FROM tenant_keys`);
      return { atomsOpened, docsOpened };
    });
  }

  it("a point-in-time restore of the wrapped keys WOULD decrypt everything while their master epoch exists", async () => {
    // This is the documented window: the shred is final against backups only once the master epoch that wrapped
    // the keys (t1 here, the current one) has been rotated away and its secret deleted.
    const stub = restoreStub();
    const recovered = await runInDurableObject(stub, async (_instance, state) => {
      const sql = state.storage.sql;
      for (const row of kept.keys) {
        sql.exec(
          `INSERT INTO tenant_keys (tenant, version, epoch, wrapped, created_at) VALUES (?, ?, ?, ?, 0)`,
          A,
          row.version,
          row.epoch,
          row.wrapped,
        );
      }
      const keyring = new TenantKeyring(sql, A, MasterKeys.fromEnv(env));
      const key = await keyring.key(1);
      const cipher = new AtomCipher(keyring, A);
      const texts: string[] = [];
      for (const atom of kept.atoms.slice(0, 25))
        texts.push((await cipher.open(atom.id, atom.keyVersion, atom.sealed)).text);
      sql.exec(`DELETE FROM tenant_keys`);
      return { key, texts };
    });
    expect(recovered.texts).toEqual(kept.atoms.slice(0, 25).map((atom) => kept.atomsIn.get(atom.id)?.text));
    const documents = kept.objects.filter((object) => object.keyVersion > 0);
    expect(documents).toHaveLength(HTTP_DOCS + MCP_DOCS);
    for (const object of documents) {
      const id = object.key.split("/")[3] ?? ""; // t/<tenant>/docs/<id>/<generation>
      expect(await decrypt(recovered.key, contextFor(object.key, object.keyVersion), object.bytes)).toEqual(
        kept.docs.get(id),
      );
    }
    // The harness used below really opens everything when given the right key.
    expect(await tryKey(stub, recovered.key)).toEqual({ atomsOpened: ATOM_COUNT, docsOpened: documents.length });
  });

  it("after a master epoch rotation that deletes the old epoch's secret, nothing decrypts the copies", async () => {
    const stub = restoreStub();
    // The platform moved to a new epoch t2 and deleted t1's secret (and t0's is irrelevant: it never wrapped A).
    const t2 = crypto.getRandomValues(new Uint8Array(32));
    const afterRotation = [
      new MasterKeys(new Map([["t2", t2]]), "t2"),
      new MasterKeys(
        new Map([
          ["t2", t2],
          ["t0", masterSecret("t0")],
        ]),
        "t2",
      ),
      masterKeys("t0"),
    ];
    for (const master of afterRotation) {
      for (const record of kept.keys) {
        await expect(unwrapKey(master, record)).rejects.toMatchObject({ code: "ERR_KEY_UNAVAILABLE" });
        // Relabelling the copy with an epoch that does exist does not help: the epoch is bound to the wrapping.
        for (const epoch of master.epochs()) {
          await expect(unwrapKey(master, { ...record, epoch })).rejects.toMatchObject({ code: "ERR_DECRYPT" });
        }
      }
      // The same through the keyring of a restored object.
      const failed = await runInDurableObject(stub, async (_instance, state) => {
        const sql = state.storage.sql;
        for (const row of kept.keys) {
          sql.exec(
            `INSERT INTO tenant_keys (tenant, version, epoch, wrapped, created_at) VALUES (?, ?, ?, ?, 0)`,
            A,
            row.version,
            row.epoch,
            row.wrapped,
          );
        }
        try {
          await new TenantKeyring(sql, A, master).key(1);
          return null;
        } catch (error) {
          return (error as { code?: string }).code ?? String(error);
        } finally {
          sql.exec(`DELETE FROM tenant_keys`);
        }
      });
      expect(failed).toBe("ERR_KEY_UNAVAILABLE");
    }

    // Every key that can still be obtained: tenant B's data key, every master secret other than t1's (t0, and
    // any other epoch configured), the new epoch's, and the obvious guesses.
    const bKey = await runInDurableObject(tenantStub(B), (_instance, state) =>
      new TenantKeyring(state.storage.sql, B, MasterKeys.fromEnv(env)).key(1),
    );
    const otherSecrets = Object.entries(env as unknown as Record<string, unknown>)
      .filter(
        ([name, value]) =>
          /^MASTER_KEY_[A-Z0-9]+$/i.test(name) && name !== "MASTER_KEY_EPOCH" && typeof value === "string",
      )
      .filter(([name]) => name.toLowerCase() !== "master_key_t1")
      .map(([, value]) =>
        Uint8Array.from(atob(String(value).replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)),
      );
    expect(otherSecrets.length).toBeGreaterThanOrEqual(1);
    const candidates = [
      bKey,
      masterSecret("t0"),
      ...otherSecrets.map((secret) => secret.subarray(0, 32)),
      t2,
      new Uint8Array(32),
      crypto.getRandomValues(new Uint8Array(32)),
    ];
    for (const candidate of candidates) {
      expect(await tryKey(stub, candidate)).toEqual({ atomsOpened: 0, docsOpened: 0 });
    }
    // And the live system has nothing left to offer: no key rows, no objects, no atoms for A.
    expect(await count(A, "tenant_keys")).toBe(0);
    expect((await env.DOCS.list({ prefix: `t/${A}/` })).objects).toEqual([]);
  });
});

describe("an upload in flight when the tenant is offboarded", () => {
  it("is refused when it completes and leaves nothing behind after the purge", async () => {
    const c = uniqueTenant("off-inflight");
    const caller = await kbCaller(c);
    await caller.ok("add_atoms", { atoms: corpus(3, "c") });
    await holdTenantAlarms(c);
    const first = docBytes(1, 20_000);
    const upload = slowUpload(caller.token, "in-flight", first.byteLength * 2);
    upload.send(first);
    await settle(); // the tenant object has its data key and is encrypting

    expect((await adminCall("POST", `/admin/tenants/${c}/offboard`, { body: { confirm: c } })).status).toBe(202);
    for (let i = 0; i < 10 && !(await tenantStatus(c)).receipt?.completedAt; i++) await stepTenantAlarm(c);
    expect((await tenantStatus(c)).receipt?.completedAt).toEqual(expect.any(String));

    upload.send(docBytes(2, 20_000));
    upload.finish();
    const response = await upload.response;
    const text = await response.text();
    for (let i = 0; i < 5 && (await scheduledAlarm(c)) !== null; i++) await stepTenantAlarm(c);
    // The upload must not be accepted after the shred, and nothing of it may outlive the completed purge.
    expect({
      status: response.status,
      documentRows: await count(c, "documents"),
      keyRows: await count(c, "tenant_keys"),
      r2: (await env.DOCS.list({ prefix: `t/${c}/` })).objects.map((object) => object.key),
      answer: text.slice(0, 400),
    }).toEqual({
      status: 403,
      documentRows: 0,
      keyRows: 0,
      r2: [],
      answer: expect.stringContaining("ERR_TENANT_OFFBOARDED"),
    });
  });
});

describe("work in flight when the keys are destroyed", () => {
  it("cannot mint a new data key: the next write-back of a running extraction or upload is refused", async () => {
    // Component level, deterministic. An extraction run (src/extract/run-manager.ts) holds its tenant's context for
    // its whole duration and writes each batch with `kb.add`; an upload holds it across its body. The shred happens
    // between two such writes; what does the next one do?
    const d = uniqueTenant("off-late");
    const caller = await kbCaller(d);
    await caller.ok("add_atoms", { atoms: corpus(5, "d") });
    await holdTenantAlarms(d);
    const outcome = await runInDurableObject(tenantStub(d), async (_instance, state) => {
      const sql = state.storage.sql;
      const context = new TenantContext(state, env, d);
      const lifecycle = new TenantLifecycle(sql, context);
      lifecycle.offboard("operator-1", MasterKeys.fromEnv(env).epochs());
      const keysAfterShred = sql.exec(`SELECT COUNT(*) AS n FROM tenant_keys`).one().n;
      const attempt = async (write: () => Promise<unknown>) => {
        try {
          await write();
          return "written";
        } catch (error) {
          return (error as { code?: string }).code ?? String(error);
        }
      };
      const lateBatch = await attempt(() =>
        context.kb.add([{ id: "x-late", text: "a segment extracted after the shred", source: "doc:late" }]),
      );
      const lateUpload = await attempt(() =>
        context.blobs.put("late", docBytes(1), docBytes(1).byteLength, "text/plain"),
      );
      const keysAfterWrites = sql.exec(`SELECT COUNT(*) AS n FROM tenant_keys`).one().n;
      let steps = 0;
      while ((await lifecycle.purgeStep()) === "more" && steps < 10) steps++;
      return {
        keysAfterShred,
        lateBatch,
        lateUpload,
        keysAfterWrites,
        keysAfterPurge: sql.exec(`SELECT COUNT(*) AS n FROM tenant_keys`).one().n,
        purgeCompleted: lifecycle.receipt()?.completedAt !== null,
      };
    });
    expect(outcome).toEqual({
      keysAfterShred: 0,
      lateBatch: "ERR_TENANT_OFFBOARDED",
      lateUpload: "ERR_TENANT_OFFBOARDED",
      keysAfterWrites: 0,
      keysAfterPurge: 0,
      purgeCompleted: true,
    });
    expect((await env.DOCS.list({ prefix: `t/${d}/` })).objects).toEqual([]);
  });
});
