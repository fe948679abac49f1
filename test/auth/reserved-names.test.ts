import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import { describe, expect, it } from "vitest";
import { isTenantId, RESERVED_TENANTS } from "../../src/auth/identity";
import { keyResolver } from "../../src/auth/keys";
import { verifyAccessToken } from "../../src/auth/verify-token";
import { loadConfig } from "../../src/config";
import { unwrapKey, unwrapKeyIn, wrapKey, wrapKeyIn } from "../../src/crypto/key-wrap";
import { KbError } from "../../src/errors";
import { SigningKeys } from "../../src/exchange/signing-keys";
import { adminCall, masterKeys } from "../helpers/admin";
import { expectSafeErrorResponse, tenantObjectExists } from "../helpers/http";
import { initializeBody, mcpFetch } from "../helpers/mcp-http";
import { mintToken } from "../helpers/tokens";

/**
 * Issue 11 item 6: reserved tenant names are refused at token verification (and by the admin API and the tenant
 * object), and signing keys are wrapped in their own key domain, which no tenant id can produce; rows in the old
 * format ("platform-signing" as a data-key tenant) are read once and rewrapped.
 */
const config = loadConfig(env);

describe("reserved tenant names", () => {
  it.each([...RESERVED_TENANTS])("a token for tenant %s: 401 at /mcp, ERR_TOKEN_TENANT, no object", async (name) => {
    const token = await mintToken({ tenant: name });
    let code = "accepted";
    try {
      await verifyAccessToken(token, config, keyResolver(config));
    } catch (error) {
      code = error instanceof KbError ? error.code : "other";
    }
    expect(code).toBe("ERR_TOKEN_TENANT");
    await expectSafeErrorResponse(await mcpFetch({ method: "POST", token, body: initializeBody() }), 401);
    expect(await tenantObjectExists(name)).toBe(false);
  });

  it("the admin API refuses a reserved tenant path with 400 and creates nothing", async () => {
    for (const name of ["platform-signing", "registry", "admin"]) {
      const answer = await adminCall("GET", `/admin/tenants/${name}`);
      expect(answer.status, name).toBe(400);
      expect(answer.body).toMatchObject({ error: { data: { code: "ERR_BAD_REQUEST" } } });
      expect(await tenantObjectExists(name)).toBe(false);
    }
  });

  it("isTenantId: pattern and reserved list", () => {
    expect(isTenantId("acme")).toBe(true);
    expect(isTenantId("platform-signing-2")).toBe(true);
    expect(isTenantId("platform-signing")).toBe(false);
    expect(isTenantId("Admin")).toBe(false);
    expect(isTenantId(["acme"])).toBe(false);
  });
});

describe("key domains", () => {
  const master = masterKeys("t1", "t0");
  const key = () => crypto.getRandomValues(new Uint8Array(32));

  it("a data key of tenant 'platform-signing' never unwraps as a signing key, and the reverse", async () => {
    const raw = key();
    const dataKey = await wrapKey(master, "platform-signing", 1, raw);
    await expect(unwrapKeyIn("signing-key", master, dataKey)).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    await expect(unwrapKeyIn("signing-key", master, { ...dataKey, tenant: "registry" })).rejects.toMatchObject({
      code: "ERR_DECRYPT",
    });
    const signingKey = await wrapKeyIn("signing-key", master, "registry", 1, raw);
    for (const tenant of ["registry", "platform-signing", "signing-key/v1\0registry"]) {
      await expect(unwrapKey(master, { ...signingKey, tenant })).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    }
    expect(await unwrapKeyIn("signing-key", master, signingKey)).toEqual(raw);
  });

  it("legacy signing-key rows are read, rewrapped in the signing domain, and keep signing with the same key", async () => {
    const stub = env.TENANT_REGISTRY.get(env.TENANT_REGISTRY.idFromName(`migration-${crypto.randomUUID()}`));
    await runInDurableObject(stub, async (_instance, state) => {
      const sql = state.storage.sql;
      const keys = new SigningKeys(sql, master);
      const row = await keys.rotate();
      // Turn the row into the old format: wrapped as a data key of "platform-signing", in a table without the column.
      const sealing = await unwrapKeyIn("signing-key", master, {
        tenant: "registry",
        version: row.version,
        epoch: row.epoch,
        wrapped: new Uint8Array(row.wrapped_key),
      });
      const legacy = await wrapKey(master, "platform-signing", row.version, sealing);
      sql.exec(`CREATE TABLE old_keys AS SELECT kid, version, epoch, wrapped_key, sealed_jwk, public_jwk, created_at,
        retired_at FROM signing_keys`);
      sql.exec(`DROP TABLE signing_keys`);
      sql.exec(`ALTER TABLE old_keys RENAME TO signing_keys`);
      sql.exec(`UPDATE signing_keys SET wrapped_key = ? WHERE kid = ?`, legacy.wrapped, row.kid);

      const migrated = new SigningKeys(sql, master);
      const format = () =>
        sql.exec<{ wrap_format: number }>(`SELECT wrap_format FROM signing_keys WHERE kid = ?`, row.kid).one()
          .wrap_format;
      expect(format()).toBe(1);
      const token = await migrated.sign({ sub: "s" }, "https://kb.test", 60);
      const jwks = createLocalJWKSet(migrated.jwks() as unknown as JSONWebKeySet);
      const { protectedHeader } = await jwtVerify(token, jwks, { issuer: "https://kb.test" });
      expect(protectedHeader.kid).toBe(row.kid);
      expect(format()).toBe(2);
      // The stored wrapping is now the signing domain's; the old data-key reading fails.
      const stored = sql
        .exec<{ wrapped_key: ArrayBuffer; epoch: string }>(`SELECT wrapped_key, epoch FROM signing_keys`)
        .one();
      const record = { version: row.version, epoch: stored.epoch, wrapped: new Uint8Array(stored.wrapped_key) };
      await expect(unwrapKey(master, { ...record, tenant: "platform-signing" })).rejects.toMatchObject({
        code: "ERR_DECRYPT",
      });
      expect(await unwrapKeyIn("signing-key", master, { ...record, tenant: "registry" })).toEqual(sealing);
      // A fresh instance (as after eviction) signs with the rewrapped row.
      await new SigningKeys(sql, master).sign({ sub: "s" }, "https://kb.test", 60);
    });
  });
});
