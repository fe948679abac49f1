import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { EncryptedBlobs } from "../../src/blob/encrypted-blobs";
import { decrypt } from "../../src/crypto/chunked-aead";
import { unwrapKey, type WrappedKey } from "../../src/crypto/key-wrap";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import {
  adminCall,
  documentRequest,
  holdTenantAlarms,
  masterKeys,
  putDocument,
  rewrapToCompletion,
  type StatusOut,
  scheduledAlarm,
  stepTenantAlarm,
  tenantStatus,
  tenantStub,
} from "../helpers/admin";
import { documentKeys, storedKey } from "../helpers/docs";
import { type KbCaller, kbCaller, refusal, type StatsOut, uniqueTenant } from "../helpers/kb-client";
import { BASE } from "../helpers/tokens";
import {
  type AtomIn,
  addAtoms,
  corpus,
  docBytes,
  expectAtoms,
  expectDocuments,
  openAllAtoms,
  r2Objects,
  readAllDocuments,
  runSearches,
  settle,
  slowUpload,
  storedRows,
} from "./fixtures";

/**
 * Data key rotation (src/tenant/lifecycle.ts startRotation / rotationStep, driven by the tenant object's alarm):
 * a new version takes new writes at once; the alarm re-seals atoms (200 per step) and re-encrypts documents (10 per
 * step) under it; when nothing is left under an older version, those versions are destroyed. And the master epoch
 * rewrap (src/tenant/registry.ts), which rewraps data keys under the current epoch without touching data.
 *
 * Miniflare fires alarms by itself, so the tests hold them (helpers/admin.ts holdTenantAlarms) and step the real
 * handler by hand, reading everything between steps.
 */

const ATOM_COUNT = 450; // three re-seal steps of 200
const DOC_COUNT = 25; // three re-encryption steps of 10
const BIG = 3; // doc-003 is multi-chunk (16 KiB chunks) so range reads cross chunks

function docId(i: number): string {
  return `doc-${String(i).padStart(2, "0")}`;
}

interface Seeded {
  caller: KbCaller;
  atoms: Map<string, AtomIn>;
  docs: Map<string, Uint8Array>;
}

async function seed(tenant: string): Promise<Seeded> {
  const caller = await kbCaller(tenant);
  const atoms = corpus(ATOM_COUNT);
  await addAtoms(caller, atoms);
  const docs = new Map<string, Uint8Array>();
  for (let i = 0; i < DOC_COUNT; i++) {
    const bytes = i === BIG ? docBytes(i, 70_000) : docBytes(i);
    if (i % 12 === 5) {
      // A few through the MCP tool (text), the rest streamed over HTTP.
      const text = `document ${i} ${"lorem ipsum ".repeat(i)}`;
      await caller.ok("put_document", { id: docId(i), text });
      docs.set(docId(i), new TextEncoder().encode(text));
    } else {
      const response = await putDocument(caller.token, docId(i), bytes, "application/octet-stream");
      expect(response.status).toBe(201);
      docs.set(docId(i), bytes);
    }
  }
  return { caller, atoms: new Map(atoms.map((atom) => [atom.id, atom])), docs };
}

async function rotate(tenant: string, from: number[], to: number): Promise<void> {
  const answer = await adminCall("POST", `/admin/tenants/${tenant}/rotate`);
  expect(answer.status, answer.text).toBe(202);
  expect(answer.body).toMatchObject({ rotation: { from, to, completedAt: null, destroyedVersions: [] } });
}

/** A Range read of the big document, across a chunk boundary (random access decrypts only those chunks). */
async function expectRangeRead(token: string, bytes: Uint8Array): Promise<void> {
  const ranged = await exports.default.fetch(
    new Request(`${BASE}/v1/documents/${docId(BIG)}`, {
      headers: { authorization: `Bearer ${token}`, range: "bytes=16000-33000" },
    }),
  );
  expect(ranged.status).toBe(206);
  expect(new Uint8Array(await ranged.arrayBuffer())).toEqual(bytes.subarray(16000, 33001));
}

async function evictAndProve(tenant: string): Promise<void> {
  let before: unknown;
  await runInDurableObject(tenantStub(tenant), (instance) => {
    before = instance;
  });
  await evictDurableObject(tenantStub(tenant));
  await runInDurableObject(tenantStub(tenant), (instance) => {
    expect(instance).not.toBe(before);
  });
}

async function rawKey(tenant: string, version: number, master = MasterKeys.fromEnv(env)): Promise<Uint8Array> {
  return runInDurableObject(tenantStub(tenant), (_instance, state) =>
    new TenantKeyring(state.storage.sql, tenant, master).key(version),
  );
}

/** An R2 binding whose next put of one key waits (after its body has been handed over) until released. */
function pausedR2(bucket: R2Bucket): {
  bucket: R2Bucket;
  pauseNextPut(key: string): void;
  paused: Promise<void>;
  release(): void;
} {
  let armed: string | null = null;
  let onPaused = () => {};
  let release = () => {};
  const gate = {
    bucket: new Proxy(bucket, {
      get(target, property) {
        if (property === "put") {
          return async (key: string, value: ReadableStream, options?: R2PutOptions) => {
            // `armed` is a document's legacy key; each write goes to `<that key>/<generation>`.
            if (armed === null || !key.startsWith(`${armed}/`)) return target.put(key, value, options);
            armed = null;
            // Hold the bytes the writer produced, then write them once released.
            const bytes = await new Response(value).arrayBuffer();
            const wait = new Promise<void>((resolve) => {
              release = resolve;
            });
            onPaused();
            await wait;
            return target.put(key, bytes, options);
          };
        }
        const value = Reflect.get(target, property);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }),
    paused: Promise.resolve(),
    pauseNextPut(key: string) {
      armed = key;
      gate.paused = new Promise<void>((resolve) => {
        onPaused = resolve;
      });
    },
    release: () => release(),
  };
  return gate;
}

describe("data key rotation", () => {
  it("re-encrypts every atom and document under the new version, step by step, readable throughout", async () => {
    const tenant = uniqueTenant("rot");
    const { caller, atoms, docs } = await seed(tenant);
    const baseline = await runSearches(caller);
    expect(baseline.every((results) => results.length > 0)).toBe(true);
    const before = await storedRows(tenant);
    expect(before.keys.map((key) => key.version)).toEqual([1]);
    expect(new Set(before.atoms.map((row) => row.key_version))).toEqual(new Set([1]));
    const oldKey = await rawKey(tenant, 1);
    const oldObjectKey = await storedKey(tenant, docId(0));
    const oldObject = new Uint8Array(await ((await env.DOCS.get(oldObjectKey))?.arrayBuffer() ?? new ArrayBuffer(0)));

    await holdTenantAlarms(tenant);
    await rotate(tenant, [1], 2);
    expect(await scheduledAlarm(tenant)).not.toBeNull();
    const started = await tenantStatus(tenant);
    expect(started.keys.map(({ version, current }) => ({ version, current }))).toEqual([
      { version: 1, current: false },
      { version: 2, current: true },
    ]);

    let steps = 0;
    let oldRows = before.atoms.length + before.documents.length;
    for (;;) {
      const { rescheduled } = await stepTenantAlarm(tenant);
      steps++;
      const status = await tenantStatus(tenant);
      // Everything is readable between steps: through the server, and row by row with freshly unwrapped keys.
      expect(await runSearches(caller)).toEqual(baseline);
      await expectDocuments(caller.token, docs);
      await expectRangeRead(caller.token, docs.get(docId(BIG)) ?? new Uint8Array());
      await expectAtoms(tenant, atoms);
      const rows = await storedRows(tenant);
      const stillOld = [...rows.atoms, ...rows.documents].filter((row) => row.key_version === 1).length;
      expect(stillOld).toBeLessThan(oldRows);
      oldRows = stillOld;
      if (status.rotation?.completedAt) {
        expect(rescheduled).toBe(false);
        break;
      }
      expect(rescheduled).toBe(true);
      expect(status.keys.map((key) => key.version)).toEqual([1, 2]);
      if (steps === 1) {
        // Half-way: the object goes away; the job resumes from SQLite.
        expect(stillOld).toBeGreaterThan(0);
        await evictAndProve(tenant);
      }
      expect(steps).toBeLessThan(10);
    }
    expect(steps).toBe(3);

    const done = await tenantStatus(tenant);
    expect(done.rotation).toMatchObject({
      from: [1],
      to: 2,
      resealedAtoms: ATOM_COUNT,
      reencryptedDocuments: DOC_COUNT,
      destroyedVersions: [1],
    });
    expect(done.keys).toEqual([{ version: 2, epoch: "t1", current: true, createdAt: expect.any(String) }]);
    const after = await storedRows(tenant);
    expect(after.keys.map((key) => key.version)).toEqual([2]);
    expect(after.atoms.every((row) => row.key_version === 2)).toBe(true);
    expect(after.documents.every((row) => row.key_version === 2)).toBe(true);
    expect(after.atoms).toHaveLength(ATOM_COUNT);
    expect(after.documents).toHaveLength(DOC_COUNT);
    // Every sealed atom was re-sealed (fresh ciphertext), not just relabelled.
    const sealedBefore = new Map(before.atoms.map((row) => [row.id, row.sealed]));
    expect(after.atoms.filter((row) => row.sealed === sealedBefore.get(row.id))).toEqual([]);
    const objects = await r2Objects(`t/${tenant}/`);
    expect(objects.size).toBe(DOC_COUNT);
    expect([...objects.values()].every((object) => object.keyVersion === "2")).toBe(true);

    // The old version is gone: no wrapped copy, a fresh keyring cannot load it; the R2 objects are really under
    // version 2 (the old key, which did open the old object, opens none of the new ones).
    await expect(rawKey(tenant, 1)).rejects.toMatchObject({ code: "ERR_KEY_UNAVAILABLE" });
    const newKey = await rawKey(tenant, 2);
    const newObjectKey = await storedKey(tenant, docId(0));
    expect(newObjectKey).not.toBe(oldObjectKey); // re-encryption writes a new generation
    expect(await env.DOCS.head(oldObjectKey)).toBeNull(); // and deletes the old one once the row names the new
    const context = (key: string, version: number) =>
      new TextEncoder().encode(`tenant-mcp-kb/blob/v1\0${tenant}\0${key}\0${version}`);
    expect(await decrypt(oldKey, context(oldObjectKey, 1), oldObject)).toEqual(docs.get(docId(0)));
    const newObject = new Uint8Array(await ((await env.DOCS.get(newObjectKey))?.arrayBuffer() ?? new ArrayBuffer(0)));
    expect(await decrypt(newKey, context(newObjectKey, 2), newObject)).toEqual(docs.get(docId(0)));
    await expect(decrypt(oldKey, context(newObjectKey, 2), newObject)).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    await expect(decrypt(oldKey, context(newObjectKey, 1), newObject)).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    await expect(decrypt(newKey, context(oldObjectKey, 2), newObject)).rejects.toMatchObject({ code: "ERR_DECRYPT" });

    // After eviction (nothing cached) the same answers.
    await evictAndProve(tenant);
    expect(await runSearches(caller)).toEqual(baseline);
    await expectDocuments(caller.token, docs);

    // Idempotent: more steps change nothing at all.
    for (let i = 0; i < 3; i++) expect(await stepTenantAlarm(tenant)).toEqual({ rescheduled: false });
    expect(await storedRows(tenant)).toEqual(after);
    expect(await r2Objects(`t/${tenant}/`)).toEqual(objects);
    expect((await tenantStatus(tenant)).rotation).toEqual(done.rotation);
  });

  it("takes concurrent writes and deletes between steps under the new version; nothing lost or unreadable", async () => {
    const tenant = uniqueTenant("rot-conc");
    const { caller, atoms, docs } = await seed(tenant);
    await holdTenantAlarms(tenant);
    await rotate(tenant, [1], 2);

    const newAtomIds = new Set<string>();
    const newDocIds = new Set<string>();
    const deletedAtoms = new Set<string>();
    const deletedDocs = new Set<string>();
    const mutate = async (round: number) => {
      // New atoms, and replacements of atoms the rotation has not reached yet (it goes in seq order).
      const fresh = corpus(30, `new${round}`, 777 + round);
      const replaced = [440 - round * 3, 441 - round * 3, 5 + round].map((i) => {
        const id = `atom-${String(i).padStart(3, "0")}`;
        return { ...(atoms.get(id) as AtomIn), id, text: `replaced in round ${round}: lynx wolf bison ${i}` };
      });
      await addAtoms(caller, [...fresh, ...replaced]);
      for (const atom of [...fresh, ...replaced]) atoms.set(atom.id, atom);
      for (const atom of fresh) newAtomIds.add(atom.id);
      const doomed = [
        `atom-${String(100 + round).padStart(3, "0")}`,
        `atom-${String(400 + round).padStart(3, "0")}`,
        fresh[0]?.id ?? "",
      ];
      const deleted = await caller.ok<{ deleted: string[] }>("delete_atoms", { ids: doomed });
      expect(deleted.deleted.sort()).toEqual([...doomed].sort());
      for (const id of doomed) {
        atoms.delete(id);
        deletedAtoms.add(id);
        newAtomIds.delete(id);
      }
      // Documents: a new one over HTTP and one over MCP, an overwrite of one not re-encrypted yet, a delete.
      const httpId = `new-${round}-http`;
      const bytes = docBytes(1000 + round, 20_000);
      const put = await putDocument(caller.token, httpId, bytes);
      expect(put.status).toBe(201);
      expect(((await put.json()) as { document: { keyVersion: number } }).document.keyVersion).toBe(2);
      docs.set(httpId, bytes);
      newDocIds.add(httpId);
      const mcpId = `new-${round}-mcp`;
      const viaMcp = await caller.ok<{ document: { keyVersion: number } }>("put_document", {
        id: mcpId,
        text: `written during rotation, round ${round}`,
      });
      expect(viaMcp.document.keyVersion).toBe(2);
      docs.set(mcpId, new TextEncoder().encode(`written during rotation, round ${round}`));
      newDocIds.add(mcpId);
      const overwritten = docId(DOC_COUNT - 1 - round);
      const replacement = docBytes(2000 + round, 5_000);
      expect((await putDocument(caller.token, overwritten, replacement)).status).toBe(201);
      docs.set(overwritten, replacement);
      const gone = docId(10 + round);
      expect((await documentRequest(caller.token, "DELETE", gone)).status).toBe(204);
      docs.delete(gone);
      deletedDocs.add(gone);
    };

    const check = async () => {
      const opened = await expectAtoms(tenant, atoms);
      for (const id of newAtomIds) expect(opened.get(id)?.keyVersion, id).toBe(2);
      await expectDocuments(caller.token, docs);
      const stored = await storedRows(tenant);
      for (const id of newDocIds) expect(stored.documents.find((row) => row.id === id)?.key_version, id).toBe(2);
      for (const id of deletedDocs) {
        expect((await documentRequest(caller.token, "GET", id)).status, id).toBe(404);
        expect(await documentKeys(tenant, id), id).toEqual([]);
      }
      for (const id of [...deletedAtoms].slice(0, 4)) {
        expect(refusal(await caller.call("get_atom", { id })).code).toBe("ERR_ATOM_NOT_FOUND");
      }
      expect(await caller.ok<StatsOut>("kb_stats", {})).toMatchObject({
        atoms: atoms.size,
        index: { vectors: atoms.size },
      });
      expect([...(await readAllDocuments(tenant)).keys()].sort()).toEqual([...docs.keys()].sort());
    };

    let round = 0;
    await mutate(round);
    await check();
    for (;;) {
      await stepTenantAlarm(tenant);
      await check();
      if ((await tenantStatus(tenant)).rotation?.completedAt) break;
      round++;
      await mutate(round);
      await check();
      if (round === 1) await evictAndProve(tenant);
      expect(round).toBeLessThan(10);
    }
    expect(round).toBeGreaterThanOrEqual(2);

    const after = await storedRows(tenant);
    expect(after.keys.map((key) => key.version)).toEqual([2]);
    expect(after.atoms.filter((row) => row.key_version !== 2)).toEqual([]);
    expect(after.documents.filter((row) => row.key_version !== 2)).toEqual([]);
    expect(after.atoms).toHaveLength(atoms.size);
    expect(after.documents).toHaveLength(docs.size);
    const objects = await r2Objects(`t/${tenant}/`);
    const named = await Promise.all([...docs.keys()].map((id) => storedKey(tenant, id)));
    expect([...objects.keys()].sort()).toEqual(named.sort());
    // A replaced atom is found by its new text, a deleted one by nothing.
    const hits = await caller.ok<{ results: { id: string; text: string }[] }>("search", {
      query: "replaced in round 1: lynx wolf bison",
      top_k: 5,
    });
    expect(hits.results.map((hit) => hit.text)).toContain(atoms.get("atom-438")?.text);
    await evictAndProve(tenant);
    await check();
  });

  it("an upload in flight when the rotation starts is not left under a destroyed key", async () => {
    const tenant = uniqueTenant("rot-inflight");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", { atoms: corpus(5) });
    await holdTenantAlarms(tenant);
    const first = docBytes(1, 20_000);
    const second = docBytes(2, 20_000);
    const upload = slowUpload(caller.token, "in-flight", first.byteLength + second.byteLength);
    upload.send(first);
    await settle(); // the tenant object has taken the upload's key version and is encrypting

    await rotate(tenant, [1], 2);
    for (let i = 0; i < 5 && !(await tenantStatus(tenant)).rotation?.completedAt; i++) await stepTenantAlarm(tenant);
    upload.send(second);
    upload.finish();
    const response = await upload.response;
    const text = await response.text();
    // Either the upload succeeds and stays readable, or it is refused and leaves nothing behind; never a 201 for a
    // document nobody can ever read again.
    if (response.status === 201) {
      for (let i = 0; i < 5 && (await scheduledAlarm(tenant)) !== null; i++) await stepTenantAlarm(tenant);
      const got = await documentRequest(caller.token, "GET", "in-flight");
      const body = new Uint8Array(await got.arrayBuffer());
      expect(got.status, `201 ${text}, then GET: ${new TextDecoder().decode(body.subarray(0, 200))}`).toBe(200);
      const whole = new Uint8Array(first.byteLength + second.byteLength);
      whole.set(first);
      whole.set(second, first.byteLength);
      expect(body).toEqual(whole);
      const rows = await storedRows(tenant);
      expect(rows.keys.map((key) => key.version)).toContain(
        rows.documents.find((row) => row.id === "in-flight")?.key_version,
      );
    } else {
      expect(response.status, text).toBeGreaterThanOrEqual(400);
      expect((await storedRows(tenant)).documents).toEqual([]);
      expect(await documentKeys(tenant, "in-flight")).toEqual([]);
    }
  });

  it("an overwrite or delete of a document while the rotation re-encrypts it wins (R2 write paused)", async () => {
    // Component level, deterministic: EncryptedBlobs over an R2 binding that pauses the re-encryption's write of
    // one object (the await where, in production, another request to the tenant object can run).
    const tenant = uniqueTenant("rot-race");
    const outcome = await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      const keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
      const gate = pausedR2(env.DOCS);
      const blobs = new EncryptedBlobs(gate.bucket, tenant, keyring, sql, (fn) => state.storage.transactionSync(fn));
      const old = docBytes(7, 50_000);
      await blobs.put("doc-a", old, old.byteLength, "application/octet-stream");
      await blobs.put("doc-b", old, old.byteLength, "application/octet-stream");
      const to = await keyring.rotate();

      const replacement = new TextEncoder().encode("the newer, shorter content");
      gate.pauseNextPut(`t/${tenant}/docs/doc-a`);
      const first = blobs.reencryptBatch(to, 1);
      await gate.paused; // the re-encryption has read doc-a's old bytes and is writing them back
      // The overwrite may finish at once (nothing orders it after the re-encryption) or wait for it (a lock);
      // either way the re-encryption is released once the overwrite has had its chance to run.
      const overwrite = blobs.put("doc-a", replacement, replacement.byteLength, "text/plain");
      await Promise.race([overwrite, settle(300)]);
      gate.release();
      await first;
      await overwrite;

      gate.pauseNextPut(`t/${tenant}/docs/doc-b`);
      const second = blobs.reencryptBatch(to, 1);
      await gate.paused;
      const removal = blobs.delete("doc-b");
      await Promise.race([removal, settle(300)]);
      gate.release();
      await second;
      expect(await removal).toBe(true);
      for (let i = 0; i < 3; i++) await blobs.reencryptBatch(to, 10);

      const got = await blobs.get("doc-a");
      const body = got ? new Uint8Array(await new Response(got.body).arrayBuffer()) : null;
      return {
        meta: blobs.head("doc-a"),
        body: body ? new TextDecoder().decode(body.subarray(0, 64)) : null,
        length: body?.byteLength ?? null,
        docB: blobs.head("doc-b"),
        r2: (await env.DOCS.list({ prefix: `t/${tenant}/` })).objects.map((object) => object.key),
        named: blobs.storedObjectKey("doc-a"),
      };
    });
    expect(outcome.meta).toMatchObject({ size: 26, contentType: "text/plain" });
    // The overwrite is what is stored, not the old bytes the re-encryption had read (a lost update).
    expect(outcome.body).toBe("the newer, shorter content");
    expect(outcome.length).toBe(26);
    expect(outcome.docB).toBeNull();
    // The deleted document is not resurrected in R2 by the re-encryption's write.
    expect(outcome.r2).toEqual([outcome.named]);
  });

  it("a document row whose R2 object is missing does not keep the rotation (and the old key) alive forever", async () => {
    const tenant = uniqueTenant("rot-dangling");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", { atoms: corpus(3) });
    for (const id of ["kept", "dangling"]) expect((await putDocument(caller.token, id, docBytes(1))).status).toBe(201);
    // E.g. DELETE removed the object, then the object was evicted before the row went.
    await env.DOCS.delete(await storedKey(tenant, "dangling"));
    await holdTenantAlarms(tenant);
    await rotate(tenant, [1], 2);
    for (let i = 0; i < 10 && !(await tenantStatus(tenant)).rotation?.completedAt; i++) await stepTenantAlarm(tenant);
    const status = await tenantStatus(tenant);
    expect(status.rotation?.completedAt, JSON.stringify(status.rotation)).toEqual(expect.any(String));
    expect(status.keys.map((key) => key.version)).toEqual([2]);
    await expectDocuments(caller.token, new Map([["kept", docBytes(1)]]));
  });

  it("a second rotation (2 -> 3) works the same way and retires version 2", async () => {
    const tenant = uniqueTenant("rot-twice");
    const caller = await kbCaller(tenant);
    const atoms = corpus(30);
    await addAtoms(caller, atoms);
    expect((await putDocument(caller.token, "d1", docBytes(1))).status).toBe(201);
    await holdTenantAlarms(tenant);
    for (const [from, to] of [
      [1, 2],
      [2, 3],
    ] as const) {
      await rotate(tenant, [from], to);
      // A second rotate while one runs returns the running one.
      const again = await adminCall("POST", `/admin/tenants/${tenant}/rotate`);
      expect(again.body).toMatchObject({ rotation: { from: [from], to } });
      for (let i = 0; i < 5 && !(await tenantStatus(tenant)).rotation?.completedAt; i++) await stepTenantAlarm(tenant);
      const status = await tenantStatus(tenant);
      expect(status.rotation).toMatchObject({ to, destroyedVersions: [from], completedAt: expect.any(String) });
      expect(status.keys.map((key) => key.version)).toEqual([to]);
    }
    await expectAtoms(tenant, new Map(atoms.map((atom) => [atom.id, atom])));
    await expectDocuments(caller.token, new Map([["d1", docBytes(1)]]));
  });
});

describe("master epoch rewrap", () => {
  /** Creates the tenant's first key (and optionally a second) wrapped under epoch t0, before it serves anything. */
  async function keysUnderT0(tenant: string): Promise<void> {
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const keyring = new TenantKeyring(state.storage.sql, tenant, masterKeys("t0", "t1"));
      await keyring.current();
    });
  }

  async function rotateUnderT0(tenant: string): Promise<void> {
    await evictDurableObject(tenantStub(tenant));
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      await new TenantKeyring(state.storage.sql, tenant, masterKeys("t0", "t1")).rotate();
    });
  }

  async function wrappedRows(tenant: string): Promise<WrappedKey[]> {
    return (await storedRows(tenant)).keys.map((row) => ({
      tenant,
      version: row.version,
      epoch: row.epoch,
      wrapped: Uint8Array.from(row.wrapped.match(/../g) ?? [], (byte) => Number.parseInt(byte, 16)),
    }));
  }

  it("rewraps every tenant's keys under the current epoch; data readable with only that epoch's secret", async () => {
    const [m1, m2, m3] = [uniqueTenant("mk-a"), uniqueTenant("mk-b"), uniqueTenant("mk-c")];
    await keysUnderT0(m1);
    await keysUnderT0(m2);
    // m1: atoms and documents under version 1, then version 2 (also under t0) and more of both.
    const c1 = await kbCaller(m1);
    const atoms1 = corpus(40, "m1");
    await addAtoms(c1, atoms1.slice(0, 20));
    expect((await putDocument(c1.token, "d1", docBytes(1))).status).toBe(201);
    await rotateUnderT0(m1);
    await addAtoms(c1, atoms1.slice(20));
    expect((await putDocument(c1.token, "d2", docBytes(2, 40_000))).status).toBe(201);
    const c2 = await kbCaller(m2);
    const atoms2 = corpus(10, "m2");
    await addAtoms(c2, atoms2);
    expect((await putDocument(c2.token, "d1", docBytes(3))).status).toBe(201);
    // m3 has only ever had keys under the current epoch.
    const c3 = await kbCaller(m3);
    await addAtoms(c3, corpus(5, "m3"));

    const before1 = await wrappedRows(m1);
    const before2 = await wrappedRows(m2);
    const before3 = await wrappedRows(m3);
    expect(before1.map(({ version, epoch }) => ({ version, epoch }))).toEqual([
      { version: 1, epoch: "t0" },
      { version: 2, epoch: "t0" },
    ]);
    expect(before2.map((row) => row.epoch)).toEqual(["t0"]);
    expect(before3.map((row) => row.epoch)).toEqual(["t1"]);
    const rows1 = await storedRows(m1);
    expect(new Set(rows1.atoms.map((row) => row.key_version))).toEqual(new Set([1, 2]));
    const t0Only = masterKeys("t0");
    const keys1 = await Promise.all(before1.map((record) => unwrapKey(t0Only, record)));
    const keys2 = await Promise.all(before2.map((record) => unwrapKey(t0Only, record)));

    const job = await rewrapToCompletion();
    expect(job).toMatchObject({ epoch: "t1", completedAt: expect.any(String), failures: [], keysRewrapped: 3 });
    expect(job.tenantsDone).toBeGreaterThanOrEqual(3);

    const after1 = await wrappedRows(m1);
    const after2 = await wrappedRows(m2);
    expect(after1.map(({ version, epoch }) => ({ version, epoch }))).toEqual([
      { version: 1, epoch: "t1" },
      { version: 2, epoch: "t1" },
    ]);
    expect(after2.map((row) => row.epoch)).toEqual(["t1"]);
    expect(await wrappedRows(m3)).toEqual(before3); // already current: untouched
    for (const [i, row] of after1.entries()) expect(row.wrapped).not.toEqual(before1[i]?.wrapped);
    const status = (await adminCall("GET", `/admin/tenants/${m1}`)).body as unknown as StatusOut;
    expect(status.keys.map((key) => key.epoch)).toEqual(["t1", "t1"]);

    // The old epoch's secret is deleted: a MasterKeys with only t1 still unwraps every key, to the same bytes.
    const t1Only = masterKeys("t1");
    expect(await Promise.all(after1.map((record) => unwrapKey(t1Only, record)))).toEqual(keys1);
    expect(await Promise.all(after2.map((record) => unwrapKey(t1Only, record)))).toEqual(keys2);
    // ...and opens all the data, through the production cipher and blob code.
    const opened1 = await openAllAtoms(m1, t1Only);
    expect(opened1.size).toBe(atoms1.length);
    for (const atom of atoms1) expect(opened1.get(atom.id)?.text).toBe(atom.text);
    expect(await readAllDocuments(m1, t1Only)).toEqual(
      new Map([
        ["d1", docBytes(1)],
        ["d2", docBytes(2, 40_000)],
      ]),
    );
    expect((await openAllAtoms(m2, t1Only)).size).toBe(atoms2.length);
    expect(await readAllDocuments(m2, t1Only)).toEqual(new Map([["d1", docBytes(3)]]));
    // While a copy wrapped before the rewrap (a backup) needs the deleted secret.
    for (const record of [...before1, ...before2]) {
      await expect(unwrapKey(t1Only, record)).rejects.toMatchObject({ code: "ERR_KEY_UNAVAILABLE" });
    }
    // And the server, evicted (nothing cached), serves the same data.
    await evictDurableObject(tenantStub(m1));
    await expectAtoms(m1, new Map(atoms1.map((atom) => [atom.id, atom])));
    expect((await c1.ok<{ atom: { text: string } }>("get_atom", { id: "m1-003" })).atom.text).toBe(atoms1[3]?.text);
    await expectDocuments(c1.token, new Map([["d2", docBytes(2, 40_000)]]));

    // Running it again finds nothing to do.
    expect(await rewrapToCompletion()).toMatchObject({ keysRewrapped: 0, failures: [] });
    expect(await wrappedRows(m1)).toEqual(after1);
  });
});
