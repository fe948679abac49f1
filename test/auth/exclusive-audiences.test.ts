import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { keyResolver } from "../../src/auth/keys";
import { verifyAccessToken, verifyAdminToken } from "../../src/auth/verify-token";
import { loadConfig } from "../../src/config";
import { KbError } from "../../src/errors";
import { ADMIN_AUDIENCE, adminCall, mintAdminToken } from "../helpers/admin";
import { exchangeForm, expectOAuthError, tokenRequest } from "../helpers/exchange";
import { expectSafeErrorResponse, signRawToken, tenantObjectExists } from "../helpers/http";
import { initializeBody, mcpFetch } from "../helpers/mcp-http";
import { BASE, bearer, mintToken, RESOURCE } from "../helpers/tokens";

/**
 * Issue 11 item 3: tenant and admin roles are exclusive. jose accepts an `aud` array that contains the expected
 * audience, so a token naming both audiences (or a tenant token with `platform:admin`, or an admin token with a
 * tenant claim) must be refused by our own check, at every entry point, before any tenant object exists.
 */
const config = loadConfig(env);
const unique = (label: string) => `aud-${label}-${crypto.randomUUID().slice(0, 8)}`;

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "accepted";
  } catch (error) {
    return error instanceof KbError ? error.code : "other";
  }
}

/** The four entry points a tenant token can be shown to; each answer must be a refusal. */
async function everyEntryPoint(token: string): Promise<void> {
  const mcp = await mcpFetch({ method: "POST", token, body: initializeBody() });
  await expectSafeErrorResponse(mcp, 401);
  expect(mcp.headers.get("www-authenticate")).toContain('error="invalid_token"');

  const document = await exports.default.fetch(
    new Request(`${BASE}/v1/documents/doc-1`, { method: "PUT", headers: bearer(token), body: "x" }),
  );
  await expectSafeErrorResponse(document, 401);

  expectOAuthError(await tokenRequest(exchangeForm(token, { audience: "https://api.example" })), "invalid_grant");

  const admin = await adminCall("GET", "/admin/tenants", { token });
  expect(admin.status, admin.text).toBe(401);
}

describe("exclusive audiences: a tenant token that is also an admin token is refused everywhere", () => {
  it("aud = [MCP resource, admin audience] with platform:admin (the reported token)", async () => {
    const tenant = unique("both");
    const token = await signRawToken({
      aud: [RESOURCE, ADMIN_AUDIENCE],
      tenant_id: tenant,
      scope: "mcp kb.read kb.write platform:admin",
    });
    expect(await codeOf(verifyAccessToken(token, config, keyResolver(config)))).toBe("ERR_TOKEN_AUDIENCE");
    expect(await codeOf(verifyAdminToken(token, config, keyResolver(config)))).toBe("ERR_TOKEN_AUDIENCE");
    await everyEntryPoint(token);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("aud = [MCP resource, admin audience] without platform:admin", async () => {
    const tenant = unique("aud");
    const token = await signRawToken({ aud: [RESOURCE, ADMIN_AUDIENCE], tenant_id: tenant, scope: "mcp kb.read" });
    expect(await codeOf(verifyAccessToken(token, config, keyResolver(config)))).toBe("ERR_TOKEN_AUDIENCE");
    await everyEntryPoint(token);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("a tenant token for the MCP resource only, carrying platform:admin", async () => {
    const tenant = unique("scope");
    const token = await mintToken({ tenant, scope: "mcp kb.read platform:admin" });
    expect(await codeOf(verifyAccessToken(token, config, keyResolver(config)))).toBe("ERR_TOKEN_AUDIENCE");
    await everyEntryPoint(token);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("control: the same tenant token without the admin parts is accepted", async () => {
    const tenant = unique("ok");
    const token = await signRawToken({ aud: [RESOURCE, "https://other.example"], tenant_id: tenant, scope: "mcp" });
    expect((await verifyAccessToken(token, config, keyResolver(config))).tenant).toBe(tenant);
  });
});

describe("exclusive audiences: an admin token that names a tenant or the MCP resource is refused", () => {
  it("an admin token with a tenant claim: 401 at /admin, and nothing is created", async () => {
    const tenant = unique("admin-tenant");
    const token = await mintAdminToken({ claims: { tenant_id: tenant } });
    expect(await codeOf(verifyAdminToken(token, config, keyResolver(config)))).toBe("ERR_TOKEN_AUDIENCE");
    for (const [method, path] of [
      ["GET", "/admin/tenants"],
      ["GET", `/admin/tenants/${tenant}`],
      ["POST", `/admin/tenants/${tenant}/rotate`],
      ["POST", "/admin/signing-keys/rotate"],
    ] as const) {
      const answer = await adminCall(method, path, { token });
      expect(answer.status, `${method} ${path}`).toBe(401);
      expect(answer.body).toEqual({ error: "invalid_token", error_description: "The access token is invalid." });
    }
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("an admin token whose aud also names the MCP resource: 401 at /admin and at /mcp", async () => {
    const tenant = unique("admin-aud");
    const token = await mintAdminToken({ aud: [ADMIN_AUDIENCE, RESOURCE] });
    expect(await codeOf(verifyAdminToken(token, config, keyResolver(config)))).toBe("ERR_TOKEN_AUDIENCE");
    expect((await adminCall("GET", "/admin/tenants", { token })).status).toBe(401);
    const withTenant = await mintAdminToken({ aud: [ADMIN_AUDIENCE, RESOURCE], claims: { tenant_id: tenant } });
    await expectSafeErrorResponse(await mcpFetch({ method: "POST", token: withTenant, body: initializeBody() }), 401);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("control: a plain admin token is accepted", async () => {
    expect((await adminCall("GET", "/admin/tenants")).status).toBe(200);
  });
});
