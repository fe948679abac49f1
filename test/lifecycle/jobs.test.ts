import { listDurableObjectIds, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createRequestStateCodec, type ServerContext } from "@modelcontextprotocol/server";
import { describe, expect, it } from "vitest";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { KbError } from "../../src/errors";
import { backoffMs, type Job, JobRunner } from "../../src/tenant/jobs";
import { TenantLifecycle } from "../../src/tenant/lifecycle";
import { TenantContext } from "../../src/tenant/tenant-context";
import { runRecord, runRows } from "../extract/helpers";
import {
  adminCall,
  holdTenantAlarms,
  putDocument,
  registryStub,
  stepTenantAlarm,
  tenantStatus,
  tenantStub,
} from "../helpers/admin";
import { modernRequest } from "../helpers/clients";
import { kbCaller, refusal, uniqueTenant } from "../helpers/kb-client";
import { mcpFetch, rpcResult } from "../helpers/mcp-http";
import { addAtoms, corpus, docBytes } from "./fixtures";

/**
 * Background jobs (src/tenant/jobs.ts) are independent, recorded when they fail and retried with backoff; receipt
 * and rotation counts are exact whatever step fails; handles outlive a key rotation; admin calls never create a
 * tenant.
 */

describe("JobRunner", () => {
  it("isolates a failing job, records its code, backs off, and clears the record once it succeeds", async () => {
    const tenant = uniqueTenant("jobs-unit");
    await kbCaller(tenant).then((caller) => caller.ok("whoami", {}));
    await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const runner = new JobRunner(state.storage.sql, tenant);
      const ran: string[] = [];
      let failing = true;
      const jobs: Job[] = [
        {
          name: "broken",
          step: async () => {
            ran.push("broken");
            if (failing) throw new KbError("ERR_DECRYPT", "decryption failed");
            return "idle";
          },
        },
        { name: "healthy", step: async () => (ran.push("healthy") ? "more" : "idle") },
      ];
      const t0 = Date.now();
      const next = await runner.runDue(jobs, t0);
      expect(ran).toEqual(["broken", "healthy"]);
      // The healthy job has more work: the alarm comes back at once, not after the broken job's backoff.
      expect(next).not.toBeNull();
      expect((next as number) - t0).toBeLessThan(backoffMs(1));
      expect(runner.failures()).toEqual([
        expect.objectContaining({ job: "broken", failures: 1, lastCode: "ERR_DECRYPT" }),
      ]);

      // Backing off: the broken job is skipped until its retry time; the other still runs.
      ran.length = 0;
      await runner.runDue(jobs, t0 + 10);
      expect(ran).toEqual(["healthy"]);

      // Past the retry time it runs again; a second failure doubles the wait.
      ran.length = 0;
      const again = await runner.runDue([jobs[0] as Job], t0 + backoffMs(1) + 1);
      expect(ran).toEqual(["broken"]);
      expect(runner.failures()[0]).toMatchObject({ failures: 2 });
      expect((again as number) - Date.now()).toBeGreaterThan(backoffMs(2) - 1000);

      // Recovered: the record goes; with nothing left to do no alarm is wanted.
      failing = false;
      expect(await runner.runDue([jobs[0] as Job], Date.now() + backoffMs(2) + 1)).toBeNull();
      expect(runner.failures()).toEqual([]);
    });
  });

  it("backoff grows and is capped", () => {
    expect([1, 2, 3, 4].map(backoffMs)).toEqual([1000, 2000, 4000, 8000]);
    expect(backoffMs(40)).toBe(600_000);
  });
});

describe("one failing job never blocks another", () => {
  it("a rotation stuck on an unreadable document is reported, and a queued ingest still completes", async () => {
    const tenant = uniqueTenant("jobs-stuck");
    const caller = await kbCaller(tenant);
    await addAtoms(caller, corpus(20));
    expect((await putDocument(caller.token, "broken", docBytes(1), "application/octet-stream")).status).toBe(201);
    await caller.ok("put_document", { id: "notes", text: "# Notes\n\nThe heron nests by the river.\n" });
    // The broken document's bytes are replaced by garbage: it can never be re-encrypted.
    const [key] = (await env.DOCS.list({ prefix: `t/${tenant}/docs/broken` })).objects.map((o) => o.key);
    await env.DOCS.put(key as string, crypto.getRandomValues(new Uint8Array(400)));

    await holdTenantAlarms(tenant);
    expect((await adminCall("POST", `/admin/tenants/${tenant}/rotate`)).status).toBe(202);
    const queued = await caller.ok<{ run: string; status: string }>("ingest_document", {
      document_id: "notes",
      wait: false,
    });
    expect(queued.status).toBe("queued");

    const { rescheduled } = await stepTenantAlarm(tenant);
    expect(rescheduled).toBe(true); // the rotation is retried later; the alarm did not throw
    const status = await tenantStatus(tenant);
    expect(status.rotation).toMatchObject({ completedAt: null });
    expect((status as unknown as { jobFailures: unknown[] }).jobFailures).toEqual([
      expect.objectContaining({ job: "rotation", failures: 1, lastCode: "ERR_DECRYPT" }),
    ]);
    // The run was not blocked by the rotation's failure.
    const run = await caller.ok<{ status: string; atoms_written: number }>("ingest_status", { run: queued.run });
    expect(run).toMatchObject({ status: "done" });
    expect(run.atoms_written).toBeGreaterThan(0);
  });
});

describe("receipts and rotation counts are exact when a step fails half-way", () => {
  it("purge: failures after the atom transaction and after the R2 delete are counted once", async () => {
    const tenant = uniqueTenant("jobs-purge");
    const caller = await kbCaller(tenant);
    await addAtoms(caller, corpus(450));
    for (let i = 0; i < 7; i++) {
      expect((await putDocument(caller.token, `d${i}`, docBytes(i), "application/octet-stream")).status).toBe(201);
    }
    await holdTenantAlarms(tenant);
    expect((await adminCall("POST", `/admin/tenants/${tenant}/offboard`, { body: { confirm: tenant } })).status).toBe(
      202,
    );
    const receipt = await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      // Each "crash" is a throw at a different point of a step; each retry uses a fresh context (no memory).
      const fresh = () => {
        const context = new TenantContext(state, env, tenant);
        return { context, lifecycle: new TenantLifecycle(state.storage.sql, context) };
      };
      let failures = 0;
      for (const point of ["before-r2-delete", "after-r2-delete", "after-r2-delete", null, null, null, null]) {
        const { context, lifecycle } = fresh();
        const realDelete = context.blobs.deleteObjects.bind(context.blobs);
        context.blobs.deleteObjects = async (keys) => {
          if (point === "before-r2-delete") throw new Error("crash");
          await realDelete(keys);
          if (point === "after-r2-delete") throw new Error("crash");
        };
        try {
          if ((await lifecycle.purgeStep()) === "idle") break;
        } catch {
          failures++;
        }
      }
      expect(failures).toBeGreaterThanOrEqual(1);
      return fresh().lifecycle.receipt();
    });
    expect(receipt).toMatchObject({
      completedAt: expect.any(String),
      purged: { atoms: 450, vectors: 450, documents: 7, r2Objects: 7 },
    });
    expect((await env.DOCS.list({ prefix: `t/${tenant}/` })).objects).toEqual([]);
  });

  it("rotation: a failure after the atom transaction does not lose or double its count", async () => {
    const tenant = uniqueTenant("jobs-rot");
    const caller = await kbCaller(tenant);
    await addAtoms(caller, corpus(450));
    for (let i = 0; i < 13; i++) {
      expect((await putDocument(caller.token, `d${i}`, docBytes(i), "application/octet-stream")).status).toBe(201);
    }
    await holdTenantAlarms(tenant);
    expect((await adminCall("POST", `/admin/tenants/${tenant}/rotate`)).status).toBe(202);
    const state = await runInDurableObject(tenantStub(tenant), async (_instance, durable) => {
      for (let i = 0; i < 20; i++) {
        const context = new TenantContext(durable, env, tenant);
        const lifecycle = new TenantLifecycle(durable.storage.sql, context);
        if (i % 2 === 0) {
          // Crash after the atoms' transaction, before any document is touched.
          context.blobs.reencryptBatch = async () => {
            throw new Error("crash");
          };
        }
        try {
          if ((await lifecycle.rotationStep()) === "idle") break;
        } catch {
          // retried with a fresh context
        }
      }
      return new TenantLifecycle(durable.storage.sql, new TenantContext(durable, env, tenant)).rotation();
    });
    expect(state).toMatchObject({
      resealedAtoms: 450,
      reencryptedDocuments: 13,
      destroyedVersions: [1],
      completedAt: expect.any(String),
    });
  });
});

describe("handles and requestState survive a key rotation", () => {
  async function requestStateKey(tenant: string, version: number): Promise<Uint8Array> {
    return runInDurableObject(tenantStub(tenant), (_instance, state) =>
      new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env)).subkey(version, "request-state"),
    );
  }

  it("a list cursor, a run handle and requestState minted before the rotation work after it, until v1 is destroyed", async () => {
    const tenant = uniqueTenant("jobs-handles");
    const caller = await kbCaller(tenant);
    await addAtoms(caller, corpus(30));
    await caller.ok("put_document", { id: "notes", text: "# Notes\n\nThe otter swims.\n" });
    const page = await caller.ok<{ next_cursor: string | null }>("list_atoms", { limit: 10 });
    expect(page.next_cursor).toEqual(expect.any(String));
    const run = await caller.ok<{ run: string }>("ingest_document", { document_id: "notes" });
    const bind = (ctx: ServerContext) => `${tenant}\0alice\0${ctx.mcpReq.method}`;
    const state = await createRequestStateCodec({ key: await requestStateKey(tenant, 1), bind }).mint({ step: 1 }, {
      mcpReq: { method: "tools/call" },
    } as unknown as ServerContext);
    const withState = async () => {
      const raw = modernRequest(7, "tools/call", { name: "whoami", arguments: {}, requestState: state });
      return rpcResult(await mcpFetch({ method: "POST", token: caller.token, headers: raw.headers, body: raw.body }));
    };

    await holdTenantAlarms(tenant);
    expect((await adminCall("POST", `/admin/tenants/${tenant}/rotate`)).status).toBe(202);
    // Rotated (v2 is current), v1 still live: every handle minted under v1 still opens.
    const next = await caller.ok<{ atoms: unknown[] }>("list_atoms", { limit: 10, cursor: page.next_cursor });
    expect(next.atoms).toHaveLength(10);
    expect(await caller.ok("ingest_status", { run: run.run })).toMatchObject({ status: "done" });
    expect(await withState()).toMatchObject({ result: { structuredContent: { tenant } } });

    // The rotation completes and destroys v1: the old handles now fail cleanly (no internal error).
    for (let i = 0; i < 20 && (await stepTenantAlarm(tenant)).rescheduled; i++);
    expect((await tenantStatus(tenant)).rotation).toMatchObject({ destroyedVersions: [1] });
    expect(refusal(await caller.call("list_atoms", { limit: 10, cursor: page.next_cursor })).code).toBe(
      "ERR_INVALID_PARAMS",
    );
    expect(refusal(await caller.call("ingest_status", { run: run.run })).code).toBe("ERR_NOT_FOUND");
    expect(await withState()).toMatchObject({ error: { code: -32602 } });
  });
});

describe("admin routes never create a tenant", () => {
  it("status, egress, rotate and offboard of a never-seen tenant are 404 and write nothing anywhere", async () => {
    const ghost = uniqueTenant("jobs-ghost");
    const registryBefore = await registryStub().list("", 1000);
    const objectsBefore = (await listDurableObjectIds(env.TENANT_SERVER)).map((id) => id.toString());
    const calls = [
      await adminCall("GET", `/admin/tenants/${ghost}`),
      await adminCall("PUT", `/admin/tenants/${ghost}/egress`, { body: { origins: [], resources: [] } }),
      await adminCall("POST", `/admin/tenants/${ghost}/rotate`),
      await adminCall("POST", `/admin/tenants/${ghost}/offboard`, { body: { confirm: ghost } }),
    ];
    for (const answer of calls) {
      expect(answer.status, answer.text).toBe(404);
      expect(answer.text).not.toMatch(/stack|at \w+ \(/);
    }
    expect(await registryStub().list("", 1000)).toEqual(registryBefore);
    const ghostId = env.TENANT_SERVER.idFromName(ghost).toString();
    const objectsAfter = (await listDurableObjectIds(env.TENANT_SERVER)).map((id) => id.toString());
    expect(objectsAfter).not.toContain(ghostId);
    expect(objectsAfter.sort()).toEqual(objectsBefore.sort());
    // The name stays usable: the tenant's first real request creates it as usual.
    const caller = await kbCaller(ghost);
    expect(await caller.ok("whoami", {})).toMatchObject({ tenant: ghost });
    expect((await adminCall("GET", `/admin/tenants/${ghost}`)).status).toBe(200);
  });
});

describe("the shred leaves no configuration and no run records behind", () => {
  it("wipes the tenant's run objects and egress policy, and the receipt says when", async () => {
    const tenant = uniqueTenant("jobs-residue");
    const caller = await kbCaller(tenant);
    await caller.ok("put_document", { id: "notes", text: "# Notes\n\nThe lynx hunts at dusk.\n" });
    await caller.ok("ingest_document", { document_id: "notes" });
    const policy = { origins: ["https://docs.example.com"], resources: [] };
    expect((await adminCall("PUT", `/admin/tenants/${tenant}/egress`, { body: policy })).status).toBe(200);
    const [run] = await runRows(tenant);
    const objectIds = run?.objectIds ?? [];
    expect(objectIds).toHaveLength(1);
    expect(await runRecord(objectIds[0] as string)).toMatchObject({ tenant, status: "done" });

    await holdTenantAlarms(tenant);
    expect((await adminCall("POST", `/admin/tenants/${tenant}/offboard`, { body: { confirm: tenant } })).status).toBe(
      202,
    );
    for (let i = 0; i < 20 && (await stepTenantAlarm(tenant)).rescheduled; i++);
    const status = await tenantStatus(tenant);
    expect(status.receipt).toMatchObject({
      completedAt: expect.any(String),
      residuePurgedAt: expect.any(String),
      purged: { runObjects: 1 },
    });
    // The run object kept {tenant, run, document}; now only its tombstone is left, long before its own clean-up.
    expect(await runRecord(objectIds[0] as string)).toBeNull();
    expect(await runRows(tenant)).toEqual([]);
    const meta = await runInDurableObject(tenantStub(tenant), (_instance, state) =>
      state.storage.sql
        .exec<{ key: string }>(`SELECT key FROM tenant_meta ORDER BY key`)
        .toArray()
        .map((r) => r.key),
    );
    expect(meta).not.toContain("egress_policy");
    expect(meta).not.toContain("purge_r2_pending");
  });
});

describe("the alarm re-arms for the next due job, never at its own past time", () => {
  it("a job backing off is retried at its retry time, not in a busy loop", async () => {
    const tenant = uniqueTenant("jobs-rearm");
    await (await kbCaller(tenant)).ok("whoami", {});
    const scheduled = await runInDurableObject(tenantStub(tenant), async (instance, state) => {
      const retryAt = Date.now() + 60_000;
      state.storage.sql.exec(
        `INSERT INTO job_state (tenant, job, failures, last_code, last_failed_at, next_at) VALUES (?, 'rotation', 1, 'ERR_DECRYPT', ?, ?)`,
        tenant,
        Date.now(),
        retryAt,
      );
      // The alarm that is firing: its time is in the past.
      await state.storage.setAlarm(Date.now() - 1000);
      await (Object.getPrototypeOf(instance) as { alarm(): Promise<void> }).alarm.call(instance);
      return { alarm: await state.storage.getAlarm(), retryAt };
    });
    expect(scheduled.alarm).toBe(scheduled.retryAt);
  });
});
