import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config";
import { MasterKeys } from "../../src/crypto/master-keys";
import type { Env } from "../../src/env";
import { setPlacementChoice } from "../../src/kb/tenant-placement";
import { TenantLifecycle } from "../../src/tenant/lifecycle";
import { TenantContext } from "../../src/tenant/tenant-context";
import { adminCall, mintAdminToken, tenantStatus, tenantStub } from "../helpers/admin";
import { tenantObjectExists } from "../helpers/http";
import { kbCaller, searchIds, uniqueTenant } from "../helpers/kb-client";
import { VectorizeDouble } from "../helpers/vectorize-double";

/**
 * The per-tenant vector placement (src/kb/tenant-placement.ts): the platform admin keeps a tenant's vectors local
 * (inside its key boundary) or lets it use the Vectorize index VECTOR_PLACEMENT gives it. PUT
 * /admin/tenants/:tenant/placement; the status and the shred receipt say where the vectors are or were.
 */

const DIMS = 384;

interface PlacementOut {
  choice: string;
  effective: { kind: string; binding?: string };
}

const put = (tenant: string, body: unknown, token?: string) =>
  adminCall("PUT", `/admin/tenants/${tenant}/placement`, { body, ...(token !== undefined ? { token } : {}) });

describe("PUT /admin/tenants/:tenant/placement", () => {
  it("defaults to local; 'local' is stored and shown; search keeps working", async () => {
    const tenant = uniqueTenant("plc");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", { atoms: [{ id: "p1", text: "a heron fishing in the reeds" }] });
    const before = (await tenantStatus(tenant)) as unknown as { placement: PlacementOut; embedderKey: unknown };
    expect(before.placement).toEqual({ choice: "default", effective: { kind: "local" } });
    expect(before.embedderKey).toEqual({ hash: "keyed", epoch: "t1", createdAt: expect.any(String) });

    const answer = await put(tenant, { placement: "local" });
    expect(answer.status, answer.text).toBe(200);
    expect(answer.headers.get("cache-control")).toBe("no-store");
    expect(answer.body).toEqual({ placement: { choice: "local", effective: { kind: "local" } } });
    const after = (await tenantStatus(tenant)) as unknown as { placement: PlacementOut };
    expect(after.placement).toEqual({ choice: "local", effective: { kind: "local" } });
    expect((await searchIds(caller, "heron reeds", 1))[0]?.id).toBe("p1");

    // Back to the configuration's choice (local here).
    const reset = await put(tenant, { placement: "default" });
    expect(reset.body).toEqual({ placement: { choice: "default", effective: { kind: "local" } } });
  });

  it("refuses 'vectorize' when VECTOR_PLACEMENT gives the tenant no index, and malformed bodies (400)", async () => {
    const tenant = uniqueTenant("plc-bad");
    await (await kbCaller(tenant)).ok("kb_stats", {});
    for (const body of [{ placement: "vectorize" }, { placement: "pooled" }, { placement: 1 }, {}, null]) {
      const answer = await put(tenant, body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.body).toMatchObject({ error: { data: { code: "ERR_BAD_REQUEST" } } });
    }
    const status = (await tenantStatus(tenant)) as unknown as { placement: PlacementOut };
    expect(status.placement.choice).toBe("default");
  });

  it("needs an admin token (401 without, 401 with a tenant token); an unknown tenant is 404 and creates nothing", async () => {
    const tenant = uniqueTenant("plc-auth");
    const caller = await kbCaller(tenant);
    await caller.ok("kb_stats", {});
    expect((await put(tenant, { placement: "local" }, "")).status).toBe(401);
    expect((await adminCall("PUT", `/admin/tenants/${tenant}/placement`, { token: null, body: {} })).status).toBe(401);
    expect((await put(tenant, { placement: "local" }, caller.token)).status).toBe(401);
    expect(((await tenantStatus(tenant)) as unknown as { placement: PlacementOut }).placement.choice).toBe("default");

    const ghost = `ghost-${crypto.randomUUID().slice(0, 8)}`;
    const answer = await put(ghost, { placement: "local" }, await mintAdminToken());
    expect(answer.status).toBe(404);
    expect(await tenantObjectExists(ghost)).toBe(false);
  });
});

describe("placement with a Vectorize index configured (in the tenant object, Vectorize double)", () => {
  /** The test env plus a pooled index for every tenant (the configuration a platform could run). */
  function pooledEnv(index: VectorizeDouble, tenant: string): Env {
    return {
      ...(env as unknown as Env),
      VECTOR_PLACEMENT: JSON.stringify({ default: { pooled: "VECTORIZE_POOL" } }),
      VECTORIZE_POOL: index.binding(tenant),
    } as Env;
  }

  it("'local' keeps a pooled-by-default tenant's vectors out of Vectorize; the receipt says local", async () => {
    const tenant = uniqueTenant("plc-local");
    const index = new VectorizeDouble({ dimensions: DIMS, autoProcess: true });
    const bindings = pooledEnv(index, tenant);
    await runInDurableObject(tenantStub(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      const setting = loadConfig(bindings).vectorPlacement;
      const { status, changed } = setPlacementChoice(sql, setting, tenant, { placement: "local" });
      expect(status).toEqual({ choice: "local", effective: { kind: "local" } });
      expect(changed).toBe(true);
      const context = new TenantContext(state, bindings, tenant);
      expect(context.placement.kind).toBe("local");
      await context.kb.add([{ id: "l1", text: "a private note about the harbour" }]);
      expect((await context.kb.search("harbour note", 1, null)).map((hit) => hit.id)).toEqual(["l1"]);
      expect(index.callsOf("upsert")).toEqual([]);
      expect(index.snapshot()).toEqual([]);
      const receipt = new TenantLifecycle(sql, context).offboard("operator-1", MasterKeys.fromEnv(env).epochs());
      expect(receipt.vectorPlacement).toEqual({ kind: "local" });
    });
  });

  it("by default the tenant uses the pooled index; the receipt names the namespace; moving with atoms is 409", async () => {
    const tenant = uniqueTenant("plc-pool");
    const index = new VectorizeDouble({ dimensions: DIMS, autoProcess: true });
    const bindings = pooledEnv(index, tenant);
    await runInDurableObject(tenantStub(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      const setting = loadConfig(bindings).vectorPlacement;
      const context = new TenantContext(state, bindings, tenant);
      expect(context.placement).toMatchObject({ kind: "vectorize", binding: "VECTORIZE_POOL" });
      await context.kb.add([{ id: "v1", text: "vectors of this tenant go to the pooled index" }]);
      expect(index.snapshot(tenant)).toHaveLength(1);
      // 'vectorize' is what it already has: accepted, nothing moves.
      expect(setPlacementChoice(sql, setting, tenant, { placement: "vectorize" })).toEqual({
        status: { choice: "vectorize", effective: { kind: "pooled", binding: "VECTORIZE_POOL" } },
        changed: false,
      });
      // Moving to local with an atom stored in Vectorize would strand it: refused, choice unchanged.
      let code: string | undefined;
      try {
        setPlacementChoice(sql, setting, tenant, { placement: "local" });
      } catch (error) {
        code = (error as { code?: string }).code;
      }
      expect(code).toBe("ERR_CONFLICT");
      expect(sql.exec(`SELECT value FROM tenant_meta WHERE key = 'vector_placement'`).one().value).toBe("vectorize");
      const receipt = new TenantLifecycle(sql, context).offboard("operator-1", MasterKeys.fromEnv(env).epochs());
      expect(receipt.vectorPlacement).toEqual({ kind: "pooled", binding: "VECTORIZE_POOL", namespace: tenant });
    });
  });

  it("a dedicated index is named in the receipt; a 'vectorize' choice the configuration drops fails closed", async () => {
    const tenant = uniqueTenant("plc-ded");
    const index = new VectorizeDouble({ dimensions: DIMS, autoProcess: true });
    const bindings = {
      ...(env as unknown as Env),
      VECTOR_PLACEMENT: JSON.stringify({ tenants: { [tenant]: { dedicated: "VECTORIZE_DED" } } }),
      VECTORIZE_DED: index.binding(tenant),
    } as Env;
    await runInDurableObject(tenantStub(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      setPlacementChoice(sql, loadConfig(bindings).vectorPlacement, tenant, { placement: "vectorize" });
      // The same choice under a configuration without the tenant's index: the object refuses to guess.
      let code: string | undefined;
      try {
        new TenantContext(state, env, tenant);
      } catch (error) {
        code = (error as { code?: string }).code;
      }
      expect(code).toBe("ERR_CONFIG");
      // The operator can still put it right without atoms: back to the configuration's choice, served locally.
      const withoutIndex = loadConfig(env).vectorPlacement;
      expect(setPlacementChoice(sql, withoutIndex, tenant, { placement: "default" })).toEqual({
        status: { choice: "default", effective: { kind: "local" } },
        changed: true,
      });
      expect(new TenantContext(state, env, tenant).placement.kind).toBe("local");
      setPlacementChoice(sql, loadConfig(bindings).vectorPlacement, tenant, { placement: "vectorize" });
      const context = new TenantContext(state, bindings, tenant);
      const receipt = new TenantLifecycle(sql, context).offboard("operator-1", MasterKeys.fromEnv(env).epochs());
      expect(receipt.vectorPlacement).toEqual({ kind: "dedicated", binding: "VECTORIZE_DED" });
    });
  });
});
