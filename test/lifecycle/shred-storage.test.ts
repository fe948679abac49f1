import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { VectorSealer } from "../../src/kb/vector-pages";
import { TenantLifecycle } from "../../src/tenant/lifecycle";
import { TenantContext } from "../../src/tenant/tenant-context";
import { holdTenantAlarms, tenantStub } from "../helpers/admin";
import { kbCaller, uniqueTenant } from "../helpers/kb-client";
import { corpus } from "./fixtures";

/**
 * The shred's last step drops the tenant object's storage wholesale (TenantContext.dropStorage): afterwards the
 * object holds only the tombstone (tenant_meta: tenant, registered, schema_version, state, shred_receipt), no other
 * row in any table, no alarm; and nothing sealed that was copied before the shred opens any more.
 */

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let k = 0; k < needle.length; k++) if (haystack[i + k] !== needle[k]) continue outer;
    return true;
  }
  return false;
}

describe("shred drops the object's storage", () => {
  it("keeps only the tombstone; copies of pages and keys taken before do not open", async () => {
    const tenant = uniqueTenant("shred-drop");
    const caller = await kbCaller(tenant);
    await caller.ok("add_atoms", { atoms: corpus(60, "s") });
    await caller.ok("search", { query: "granite river", top_k: 3 });
    await holdTenantAlarms(tenant);
    const result = await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
      const sql = state.storage.sql;
      const copy = {
        pages: sql
          .exec<{ page: number; key_version: number; sealed: ArrayBuffer }>(
            `SELECT page, key_version, sealed FROM vector_pages`,
          )
          .toArray(),
        keys: sql.exec<{ wrapped: ArrayBuffer }>(`SELECT wrapped FROM tenant_keys`).toArray(),
      };
      expect(copy.pages.length).toBe(1);
      const context = new TenantContext(state, env, tenant);
      const lifecycle = new TenantLifecycle(sql, context);
      lifecycle.offboard("operator-1", MasterKeys.fromEnv(env).epochs());
      let steps = 0;
      while ((await lifecycle.purgeStep()) === "more") expect(++steps).toBeLessThan(10);

      const tables = sql
        .exec<{ name: string }>(
          `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'`,
        )
        .toArray()
        .map((row) => row.name);
      const rows: Record<string, number> = {};
      const bytes: Uint8Array[] = [];
      for (const table of tables) {
        const all = sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM "${table}"`).toArray();
        rows[table] = all.length;
        for (const row of all) {
          for (const value of Object.values(row)) {
            bytes.push(value instanceof ArrayBuffer ? new Uint8Array(value) : new TextEncoder().encode(String(value)));
          }
        }
      }
      // A restored copy of the pages (e.g. point-in-time recovery before the shred) no longer opens: no key.
      const restored = new VectorSealer(new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env)), tenant);
      const page = copy.pages[0] as { page: number; key_version: number; sealed: ArrayBuffer };
      const reopened = await restored
        .openPage(page.page, page.key_version, new Uint8Array(page.sealed))
        .then(() => "opened")
        .catch((error: { code?: string }) => error.code);
      return {
        rows,
        meta: sql
          .exec<{ key: string }>(`SELECT key FROM tenant_meta ORDER BY key`)
          .toArray()
          .map((row) => row.key),
        receipt: JSON.parse(
          sql.exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'shred_receipt'`).one().value,
        ),
        leaked: copy.keys.some((key) =>
          bytes.some((cell) => contains(cell, new Uint8Array(key.wrapped).subarray(0, 24))),
        ),
        pageLeft: bytes.some((cell) => contains(cell, new Uint8Array(page.sealed).subarray(0, 24))),
        reopened,
        alarm: await state.storage.getAlarm(),
      };
    });
    expect(result.meta).toEqual(["registered", "schema_version", "shred_receipt", "state", "tenant"]);
    for (const [table, n] of Object.entries(result.rows)) expect(n, table).toBe(table === "tenant_meta" ? 5 : 0);
    expect(result.rows).toHaveProperty("vector_pages", 0);
    expect(result.receipt).toMatchObject({
      completedAt: expect.any(String),
      storageDroppedAt: expect.any(String),
      purged: { atoms: 60, vectors: 60 },
    });
    expect(result.leaked).toBe(false);
    expect(result.pageLeft).toBe(false);
    expect(result.reopened).toBe("ERR_KEY_UNAVAILABLE");
    expect(result.alarm).toBeNull();
    // The tombstone still refuses the tenant.
    const refused = await caller.rpc("tools/call", { name: "search", arguments: { query: "granite", top_k: 1 } });
    expect(JSON.stringify(refused)).toContain("ERR_TENANT_OFFBOARDED");
  });
});
