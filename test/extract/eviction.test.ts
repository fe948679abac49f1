import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import type { RunRecord } from "../../src/extract/extraction-run";
import type { TenantServer } from "../../src/tenant/tenant-server";
import { docClient, putOk, tenantStub } from "../helpers/docs";
import { type KbCaller, kbCaller, uniqueTenant } from "../helpers/kb-client";
import {
  driveUntilSettled,
  expectedAtomIds,
  expectNoDuplicates,
  listAll,
  type RunRow,
  runRecord,
  runRows,
  runStub,
  sleep,
  storedAtomIds,
} from "./helpers";

/**
 * A run whose ExtractionRun object goes away in the middle (after some write-back batches, before the last) is
 * finished by the tenant's alarm, possibly as a new attempt in a new object, and ends with exactly the atoms a clean
 * run of the same document produces: same count, same ids (ids derive from document id, position and content, not
 * from the tenant or the attempt), no duplicates, none lost.
 *
 * How the interruption is made: `evictDurableObject` is graceful (it waits for in-flight requests to drain), so
 * evicting a run object mid-run lets `execute` finish first (measured here: the eviction call returns only after the
 * run is done, ~0.6 s later); the test accepts either outcome and records which happened. `state.abort()` on the run
 * object is the hard interruption (as a crash, a deploy or a forced eviction would be): `execute` fails in the tenant
 * object, which retries in a fresh object.
 */

const DOC_ID = "big";
const PARAGRAPHS = 6000;
const TEXT = Array.from(
  { length: PARAGRAPHS },
  (_, i) =>
    `Paragraph ${i} about rivers, lakes and the mountains that feed them; measurement ${i * 7} was taken at ` +
    `station ${i % 97} on a clear morning with little wind and steady flow, and the notes were filed that evening.`,
).join("\n\n");
const BYTES = new TextEncoder().encode(TEXT);
const TYPE = "text/markdown";
const EXPECTED = expectedAtomIds(DOC_ID, TEXT, TYPE);

async function tenantWithDocument(prefix: string): Promise<{ tenant: string; caller: KbCaller }> {
  const tenant = uniqueTenant(prefix);
  const caller = await kbCaller(tenant);
  await putOk(await docClient(tenant), DOC_ID, BYTES, TYPE);
  return { tenant, caller };
}

interface Interruption {
  readonly tenant: string;
  readonly caller: KbCaller;
  readonly objectId: string;
  /** The run object's record just before the interruption (a run in progress: some batches written). */
  readonly before: RunRecord;
  /** Its record just after. */
  readonly after: RunRecord | null;
}

/**
 * Queues an ingest (wait:false), then drives the tenant's alarm from inside the tenant object, as
 * runDurableObjectAlarm does (take the scheduled alarm, run alarm()). While the alarm is driving the run, the
 * callback watches the run object through RPC, sleeping 1 ms between looks (the run yields to the event loop with
 * timers between slices of work, so a watcher that only did back-to-back I/O would keep the loop busy and starve
 * the run's timers), and, once the run has written at least one batch and is still running, interrupts it. Returns
 * null when the run had already finished when it was seen (the caller tries again with a new tenant).
 */
async function interruptMidRun(prefix: string, how: "evict" | "abort"): Promise<Interruption | null> {
  const { tenant, caller } = await tenantWithDocument(prefix);
  expect(await caller.ok("ingest_document", { document_id: DOC_ID, wait: false })).toMatchObject({
    status: "queued",
  });
  const seen = await runInDurableObject(tenantStub(tenant), async (instance: TenantServer, state) => {
    const scheduled = await state.storage.getAlarm();
    const queued = state.storage.sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM extraction_runs WHERE status = 'queued'`)
      .one().n;
    if (scheduled === null || queued !== 1) return null; // the runtime's own alarm got there first
    await state.storage.deleteAlarm();
    const alarm = instance.alarm();
    let found: { objectId: string; before: RunRecord; after: RunRecord | null } | null = null;
    for (let i = 0; i < 20_000 && !found; i++) {
      await sleep(1); // the event loop goes idle, so the run's yields (timers) fire between looks
      const row = state.storage.sql.exec<{ object_ids: string }>(`SELECT object_ids FROM extraction_runs`).one();
      const objectId = (JSON.parse(row.object_ids) as string[])[0];
      if (!objectId) continue;
      const before = await runStub(objectId).record();
      if (!before || before.segments === 0) continue;
      if (before.status !== "running") break;
      if (how === "evict") {
        await evictDurableObject(runStub(objectId));
      } else {
        // abort() resets the object at once; the callback's own request fails with it.
        await runInDurableObject(runStub(objectId), (_instance, runState) => runState.abort("test: interrupted")).catch(
          () => undefined,
        );
      }
      found = { objectId, before, after: await runStub(objectId).record() };
    }
    await alarm;
    return found;
  });
  return seen ? { tenant, caller, ...seen } : null;
}

async function interruptWithRetries(prefix: string, how: "evict" | "abort"): Promise<Interruption> {
  for (let attempt = 0; attempt < 4; attempt++) {
    const got = await interruptMidRun(`${prefix}${attempt}`, how);
    if (got) return got;
  }
  throw new Error(`could not catch a ${how} window in 4 tries`);
}

let clean: string[] = [];

async function expectSameAtomsAsCleanRun(tenant: string, caller: KbCaller, row: RunRow): Promise<void> {
  const stored = (await storedAtomIds(tenant)).map((atom) => atom.id);
  expectNoDuplicates(stored);
  expect(stored.length).toBe(clean.length);
  expect([...stored].sort()).toEqual([...clean].sort());
  expect(row.segments).toBe(clean.length);
  // None lost: every position 0..n-1 exactly once, all from this run.
  const listed = await listAll(caller);
  const positions = listed.map((atom) => atom.provenance?.position ?? -1).sort((x, y) => x - y);
  expect(positions).toEqual(clean.map((_, i) => i));
  expect(listed.every((atom) => atom.provenance?.run === row.runId)).toBe(true);
}

describe("eviction of the run object in the middle of a run", () => {
  beforeAll(async () => {
    const { tenant, caller } = await tenantWithDocument("evict-clean");
    const result = await caller.ok<{ status: string; segments: number; attempts: number }>("ingest_document", {
      document_id: DOC_ID,
    });
    expect(result).toMatchObject({ status: "done", attempts: 1 });
    clean = (await storedAtomIds(tenant)).map((atom) => atom.id);
  }, 60_000);

  it("the document needs many write-back batches, and a clean run gives the expected atoms", () => {
    expect(BYTES.byteLength).toBeGreaterThan(1_000_000);
    expect(clean.length).toBeGreaterThan(25 * 10); // ExtractionRun writes back in batches of 25 segments
    expect([...clean].sort()).toEqual([...EXPECTED].sort());
  });

  it("evictDurableObject mid-run: the run completes with exactly the clean run's atoms", async () => {
    const cut = await interruptWithRetries("evict-graceful", "evict");
    expect(cut.before.written).toBeGreaterThan(0);
    expect(cut.before.written).toBeLessThan(clean.length);
    await driveUntilSettled([cut.tenant]);
    const [row] = await runRows(cut.tenant);
    expect(row).toMatchObject({ status: "done", error: null });
    expectNoDuplicates(row?.objectIds ?? []);
    // Graceful eviction drains in-flight requests: either the first attempt finished before the object went away
    // (1 attempt), or it was cut and retried in a new object (2 attempts).
    expect(row?.objectIds.length).toBe(row?.attempt);
    if (row?.attempt === 1) expect(cut.after?.status).toBe("done");
    console.log(
      `eviction: run object evicted after ${cut.before.written} of ${clean.length} atoms; ` +
        `attempts ${row?.attempt}; record after eviction: ${cut.after?.status}`,
    );
    await expectSameAtomsAsCleanRun(cut.tenant, cut.caller, row as RunRow);
  }, 120_000);

  describe("hard interruption (state.abort) mid-run", () => {
    let cut: Interruption;
    let row: RunRow;

    beforeAll(async () => {
      cut = await interruptWithRetries("evict-abort", "abort");
      await driveUntilSettled([cut.tenant]);
      row = (await runRows(cut.tenant))[0] as RunRow;
    }, 120_000);

    it("the run was cut after some batches and before the last", () => {
      expect(cut.before.status).toBe("running");
      expect(cut.before.written).toBeGreaterThan(0);
      expect(cut.before.written).toBeLessThan(clean.length);
    });

    it("it finishes as a second attempt in a new object", async () => {
      expect(row).toMatchObject({ status: "done", attempt: 2, error: null, written: clean.length });
      expect(row.objectIds).toHaveLength(2);
      expect(row.objectIds[0]).toBe(cut.objectId);
      expect(row.objectIds[1]).not.toBe(cut.objectId);
      expect(await runRecord(row.objectIds[1] as string)).toMatchObject({
        tenant: cut.tenant,
        runId: row.runId,
        status: "done",
        segments: clean.length,
      });
    });

    it("the atom set is exactly the clean run's: same count, same ids, no duplicates, none lost", async () => {
      await expectSameAtomsAsCleanRun(cut.tenant, cut.caller, row);
    });

    it("the interrupted object is cleaned up too (clean-up alarm, then tombstone)", async () => {
      const stub = runStub(cut.objectId);
      const alarm = await runInDurableObject(stub, (_instance, state) => state.storage.getAlarm());
      expect(alarm, `interrupted run object left with ${JSON.stringify(await runRecord(cut.objectId))}`).not.toBeNull();
      expect(await runDurableObjectAlarm(stub)).toBe(true);
      expect(await runInDurableObject(stub, async (_instance, state) => [...(await state.storage.list())])).toEqual([
        ["spent", true],
      ]);
    });
  });
});

describe("atoms do not depend on how the stored document is chunked", () => {
  it("a document read back in 16 KiB chunks gives the atoms of its whole text", async () => {
    // Paragraphs of several lines, a heading every 25 paragraphs and one line longer than 4 x maxChars: the
    // decrypting stream hands the run 16 KiB pieces, so lines and paragraphs straddle piece boundaries.
    const paragraphs = Array.from({ length: 600 }, (_, i) =>
      [
        ...(i % 25 === 0 ? [`## Section ${i / 25}`] : []),
        `Line one of paragraph ${i}, about ferries and tides.`,
        `Line two of paragraph ${i}: the harbour master logs arrivals.`,
        `Line three of paragraph ${i}.`,
      ].join("\n"),
    );
    paragraphs.splice(300, 0, Array.from({ length: 900 }, (_, i) => `word${i % 37}`).join(" "));
    const text = paragraphs.join("\n\n");
    const tenant = uniqueTenant("chunking");
    const caller = await kbCaller(tenant);
    await putOk(await docClient(tenant), "chunked", new TextEncoder().encode(text), TYPE);
    expect(text.length).toBeGreaterThan(4 * 16_384);
    const result = await caller.ok<{ status: string }>("ingest_document", { document_id: "chunked" });
    expect(result.status).toBe("done");
    const stored = (await storedAtomIds(tenant)).map((atom) => atom.id).sort();
    expect(stored).toEqual(expectedAtomIds("chunked", text, TYPE).sort());
  }, 60_000);
});
