import { env, exports } from "cloudflare:workers";
import { decodeJwt } from "jose";
import { describe, expect, it } from "vitest";
import { keyResolver } from "../../src/auth/keys";
import { verifyAccessToken, verifyAdminToken } from "../../src/auth/verify-token";
import { loadConfig } from "../../src/config";
import type { Env } from "../../src/env";
import { KbError } from "../../src/errors";
import { adminCall, mintAdminToken } from "../helpers/admin";
import { exchangeForm, expectOAuthError, setEgress, tokenRequest } from "../helpers/exchange";
import { expectSafeErrorResponse, signRawToken, tenantObjectExists } from "../helpers/http";
import { initializeBody, mcpFetch } from "../helpers/mcp-http";
import { BASE, bearer, mintToken } from "../helpers/tokens";

/**
 * Issue 11 item 4: a maximum token age from `iat` (AUTH_MAX_TOKEN_AGE_S, default 24 h), no `iat` in the future beyond
 * the clock tolerance, `iat` required; and revocation by `jti` or by subject through the admin API, stored per
 * tenant and checked by the tenant object on every tenant-facing RPC (serveMcp, serveDocument, exchange).
 */
const config = loadConfig(env);
const now = () => Math.floor(Date.now() / 1000);
const unique = (label: string) => `rev-${label}-${crypto.randomUUID().slice(0, 8)}`;
const DAY = 86_400;

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "accepted";
  } catch (error) {
    return error instanceof KbError ? error.code : "other";
  }
}

const verify = (token: string) => verifyAccessToken(token, config, keyResolver(config));

describe("token age", () => {
  it("the default maximum age is 24 hours", () => {
    expect(config.maxTokenAgeS).toBe(DAY);
  });

  it("a 10-year token issued more than 24 h ago is refused (ERR_TOKEN_TOO_OLD), whatever its exp", async () => {
    const tenant = unique("old");
    const token = await signRawToken({
      tenant_id: tenant,
      scope: "mcp",
      iat: now() - DAY - 120,
      exp: now() + 10 * 365 * DAY,
    });
    expect(await codeOf(verify(token))).toBe("ERR_TOKEN_TOO_OLD");
    await expectSafeErrorResponse(await mcpFetch({ method: "POST", token, body: initializeBody() }), 401);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("a fresh 10-year token is accepted, but only until iat + max age", async () => {
    const iat = now();
    const token = await signRawToken({ tenant_id: unique("long"), scope: "mcp", iat, exp: iat + 10 * 365 * DAY });
    const identity = await verify(token);
    expect(identity.issuedAt).toBe(iat);
    expect(identity.expiresAt).toBe(iat + DAY);
  });

  it("iat one hour in the future is refused (ERR_TOKEN_NOT_YET_VALID); within the tolerance it is accepted", async () => {
    const tenant = unique("future");
    const future = await signRawToken({ tenant_id: tenant, scope: "mcp", iat: now() + 3600, exp: now() + 7200 });
    expect(await codeOf(verify(future))).toBe("ERR_TOKEN_NOT_YET_VALID");
    await expectSafeErrorResponse(await mcpFetch({ method: "POST", token: future, body: initializeBody() }), 401);
    expect(await tenantObjectExists(tenant)).toBe(false);
    const skewed = await signRawToken({ tenant_id: unique("skew"), iat: now() + config.clockToleranceS - 5 });
    expect(await codeOf(verify(skewed))).toBe("accepted");
  });

  it("a token without iat is refused (iat is required, RFC 9068 section 2.2)", async () => {
    const tenant = unique("no-iat");
    const token = await signRawToken({ tenant_id: tenant, scope: "mcp", iat: undefined });
    expect(decodeJwt(token).iat).toBeUndefined();
    expect(await codeOf(verify(token))).toBe("ERR_TOKEN_CLAIMS");
    await expectSafeErrorResponse(await mcpFetch({ method: "POST", token, body: initializeBody() }), 401);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("admin tokens obey the same age rules", async () => {
    const old = await mintAdminToken({ claims: { iat: now() - DAY - 120, exp: now() + 3600 } });
    expect(await codeOf(verifyAdminToken(old, config, keyResolver(config)))).toBe("ERR_TOKEN_TOO_OLD");
    expect((await adminCall("GET", "/admin/tenants", { token: old })).status).toBe(401);
    const future = await mintAdminToken({ claims: { iat: now() + 3600, exp: now() + 7200 } });
    expect((await adminCall("GET", "/admin/tenants", { token: future })).status).toBe(401);
  });

  it("AUTH_MAX_TOKEN_AGE_S is validated (fails closed)", () => {
    for (const bad of ["0", "59", "604801", "1.5", "-1", "a day"]) {
      expect(() => loadConfig({ ...env, AUTH_MAX_TOKEN_AGE_S: bad } as Env), bad).toThrowError(KbError);
    }
    expect(loadConfig({ ...env, AUTH_MAX_TOKEN_AGE_S: "3600" } as Env).maxTokenAgeS).toBe(3600);
  });
});

const revocationsPath = (tenant: string) => `/admin/tenants/${tenant}/revocations`;

async function liveRevocations(tenant: string): Promise<unknown[]> {
  const answer = await adminCall("GET", revocationsPath(tenant));
  expect(answer.status, answer.text).toBe(200);
  return answer.body.revocations as unknown[];
}

/** A tenant that exists (its object served one request) with a downstream resource for exchange. */
async function servedTenant(label: string): Promise<string> {
  const tenant = unique(label);
  const first = await mcpFetch({ method: "POST", token: await mintToken({ tenant }), body: initializeBody() });
  expect(first.status, await first.text()).toBe(200);
  await setEgress(tenant, {
    origins: ["https://api.example"],
    resources: [{ resource: "https://api.example/", audience: "https://api.example", scopes: ["mcp"] }],
  });
  return tenant;
}

function putDocument(token: string, id: string): Promise<Response> {
  return exports.default.fetch(
    new Request(`${BASE}/v1/documents/${id}`, {
      method: "PUT",
      headers: { ...bearer(token), "content-type": "text/plain", "content-length": "5" },
      body: "hello",
    }),
  );
}

/** Every tenant-facing RPC refuses the token, and nothing is written. */
async function refusedEverywhere(tenant: string, token: string): Promise<void> {
  const mcp = await mcpFetch({ method: "POST", token, body: initializeBody() });
  const body = await expectSafeErrorResponse(mcp, 401);
  expect(body).toEqual({ error: "invalid_token", error_description: "The access token is invalid." });
  expect(mcp.headers.get("www-authenticate")).toContain('error="invalid_token"');

  const id = `doc-${crypto.randomUUID().slice(0, 8)}`;
  await expectSafeErrorResponse(await putDocument(token, id), 401);
  expectOAuthError(await tokenRequest(exchangeForm(token, { audience: "https://api.example" })), "invalid_grant");

  // Nothing was written: the document does not exist for a valid token of the same tenant.
  const check = await exports.default.fetch(
    new Request(`${BASE}/v1/documents/${id}`, { headers: bearer(await mintToken({ tenant, sub: "auditor" })) }),
  );
  expect(check.status).toBe(404);
  await check.body?.cancel();
}

describe("revocation by jti", () => {
  it("a revoked jti is refused at /mcp, /v1/documents and /oauth/token; other tokens keep working", async () => {
    const tenant = await servedTenant("jti");
    const token = await mintToken({ tenant, scope: "mcp kb.read kb.write" });
    const { jti } = decodeJwt(token);
    expect(await tokenRequest(exchangeForm(token, { audience: "https://api.example" }))).toMatchObject({ status: 200 });

    const answer = await adminCall("POST", revocationsPath(tenant), { body: { jti } });
    expect(answer.status, answer.text).toBe(201);
    const revocation = answer.body.revocation as { kind: string; value: string; expiresAt: number };
    expect(revocation).toMatchObject({ kind: "jti", value: jti, before: null });
    // Kept exactly as long as a token accepted now can live: max age plus twice the clock tolerance.
    expect(revocation.expiresAt).toBeGreaterThanOrEqual(now() + DAY + 2 * config.clockToleranceS - 5);
    expect(revocation.expiresAt).toBeLessThanOrEqual(now() + DAY + 2 * config.clockToleranceS);

    await refusedEverywhere(tenant, token);
    const other = await mintToken({ tenant, scope: "mcp kb.read kb.write" });
    expect((await putDocument(other, "still-works")).status).toBe(201);
    expect(await liveRevocations(tenant)).toHaveLength(1);
  });
});

describe("revocation by subject", () => {
  it("tokens of the subject issued before `before` are refused; later ones and other subjects are not", async () => {
    const tenant = await servedTenant("sub");
    const old = await signRawToken({ tenant_id: tenant, sub: "bob", scope: "mcp kb.write", iat: now() - 60 });
    const before = now() - 10;
    const answer = await adminCall("POST", revocationsPath(tenant), { body: { subject: "bob", before } });
    expect(answer.status, answer.text).toBe(201);
    expect(answer.body.revocation).toMatchObject({
      kind: "subject",
      value: "bob",
      before,
      expiresAt: before + DAY + 2 * config.clockToleranceS,
    });

    await refusedEverywhere(tenant, old);
    const fresh = await signRawToken({ tenant_id: tenant, sub: "bob", scope: "mcp kb.write", iat: now() });
    expect((await putDocument(fresh, "bob-again")).status).toBe(201);
    const carol = await signRawToken({ tenant_id: tenant, sub: "carol", scope: "mcp kb.write", iat: now() - 60 });
    expect((await putDocument(carol, "carol")).status).toBe(201);
  });

  it("`before` defaults to now: every token the subject holds now is refused", async () => {
    const tenant = await servedTenant("sub-now");
    const token = await signRawToken({ tenant_id: tenant, sub: "dave", scope: "mcp kb.write", iat: now() - 1 });
    expect((await adminCall("POST", revocationsPath(tenant), { body: { subject: "dave" } })).status).toBe(201);
    await refusedEverywhere(tenant, token);
  });
});

describe("the revocation admin API refuses bad requests and writes nothing", () => {
  it("an unknown tenant: 404, and no tenant object is created", async () => {
    const tenant = unique("unknown");
    for (const body of [{ jti: "x" }, { subject: "bob" }]) {
      const answer = await adminCall("POST", revocationsPath(tenant), { body });
      expect(answer.status, answer.text).toBe(404);
    }
    expect((await adminCall("GET", revocationsPath(tenant))).status).toBe(404);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("malformed bodies: 400 ERR_BAD_REQUEST and no row", async () => {
    const tenant = await servedTenant("bad");
    const bodies: unknown[] = [
      null,
      [],
      "jti",
      {},
      { jti: "" },
      { jti: 42 },
      { jti: "a b" },
      { jti: "x".repeat(257) },
      { jti: "x", subject: "bob" },
      { jti: "x", extra: 1 },
      { subject: "" },
      { subject: "bob", before: "yesterday" },
      { subject: "bob", before: 1.5 },
      { subject: "bob", before: now() + 3600 },
      { subject: "bob", before: now() - 2 * DAY },
      { before: now() },
    ];
    for (const body of bodies) {
      const answer = await adminCall("POST", revocationsPath(tenant), { body });
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.body).toMatchObject({ error: { data: { code: "ERR_BAD_REQUEST" } } });
    }
    expect(await liveRevocations(tenant)).toEqual([]);
  });

  it("a tenant token cannot revoke (401), and no row is written", async () => {
    const tenant = await servedTenant("tenant-token");
    const token = await mintToken({ tenant, scope: "mcp kb.read kb.write" });
    const answer = await adminCall("POST", revocationsPath(tenant), { token, body: { subject: "alice" } });
    expect(answer.status).toBe(401);
    expect(await liveRevocations(tenant)).toEqual([]);
  });
});
