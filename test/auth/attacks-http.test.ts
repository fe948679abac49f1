import { listDurableObjectIds } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { base64url, importJWK, type JWK, type JWTHeaderParameters, type JWTPayload, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { MAX_TOKEN_BYTES } from "../../src/config";
import { initializeBody, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { ISSUER, mintToken, privateJwk, RESOURCE } from "../helpers/tokens";

const METADATA_URL = "https://kb.test/.well-known/oauth-protected-resource/mcp";
const CHALLENGE_PREFIX = `Bearer resource_metadata="${METADATA_URL}"`;
/** Words that would tell a client which check failed. */
const DETAIL_WORDS =
  /\b(signature|kid|alg|algorithm|aud|audience|iss|issuer|tenant|jwks?|key|crit|nbf|exp|scope|ERR_\w*)\b/i;

const attackerJwk = JSON.parse(env.TEST_ATTACKER_JWK) as JWK;
const now = () => Math.floor(Date.now() / 1000);

function uniqueTenant(label: string): string {
  return `atk-${label}-${crypto.randomUUID().slice(0, 8)}`;
}

function claims(tenant: string, extra: JWTPayload = {}): JWTPayload {
  return {
    iss: ISSUER,
    aud: RESOURCE,
    sub: "mallory",
    tenant_id: tenant,
    scope: "mcp kb.read kb.write",
    iat: now(),
    exp: now() + 600,
    ...extra,
  };
}

async function sign(payload: JWTPayload, header: JWTHeaderParameters, key: JWK | Uint8Array): Promise<string> {
  const signingKey = key instanceof Uint8Array ? key : await importJWK(key, header.alg);
  return new SignJWT(payload).setProtectedHeader(header).sign(signingKey);
}

async function signTrusted(payload: JWTPayload, header: Partial<JWTHeaderParameters> = {}): Promise<string> {
  return sign(payload, { alg: "ES256", kid: "test-es256", typ: "at+jwt", ...header }, await privateJwk("ES256"));
}

async function tenantObjectExists(tenant: string): Promise<boolean> {
  const wanted = env.TENANT_SERVER.idFromName(tenant);
  const ids = await listDurableObjectIds(env.TENANT_SERVER);
  return ids.some((id) => id.equals(wanted));
}

interface HttpCase {
  readonly name: string;
  /** Builds the request for a tenant name that appears nowhere else. */
  readonly send: (tenant: string) => Promise<Response>;
}

const postInitialize = (token: string, path?: string) =>
  mcpFetch({ method: "POST", token, body: initializeBody(), ...(path ? { path } : {}) });

const invalidTokenCases: HttpCase[] = [
  {
    name: "alg none (unsigned)",
    send: async (tenant) =>
      postInitialize(
        `${base64url.encode(JSON.stringify({ alg: "none" }))}.${base64url.encode(JSON.stringify(claims(tenant)))}.`,
      ),
  },
  {
    name: "alg none with a bogus signature",
    send: async (tenant) =>
      postInitialize(
        `${base64url.encode(JSON.stringify({ alg: "none", kid: "test-es256" }))}.${base64url.encode(JSON.stringify(claims(tenant)))}.AAAA`,
      ),
  },
  {
    name: "HS256 keyed with the trusted public key",
    send: async (tenant) => {
      const publicJwks = (JSON.parse(env.AUTH_JWKS ?? "{}") as { keys: JWK[] }).keys;
      const secret = new TextEncoder().encode(JSON.stringify(publicJwks.find((key) => key.kid === "test-es256")));
      return postInitialize(await sign(claims(tenant), { alg: "HS256", kid: "test-es256" }, secret));
    },
  },
  { name: "unknown kid", send: async (tenant) => postInitialize(await signTrusted(claims(tenant), { kid: "nope" })) },
  {
    name: "expired",
    send: async (tenant) => postInitialize(await signTrusted(claims(tenant, { iat: now() - 7200, exp: now() - 3600 }))),
  },
  {
    // Forged and for another audience: the signature fails first, so nothing is said about the audience.
    name: "wrong aud, attacker-signed",
    send: async (tenant) =>
      postInitialize(await sign(claims(tenant, { aud: "https://other.test/mcp" }), { alg: "ES256" }, attackerJwk)),
  },
  {
    name: "wrong iss",
    send: async (tenant) => postInitialize(await signTrusted(claims(tenant, { iss: "https://attacker.example/" }))),
  },
  {
    name: "missing tenant claim (tenant under another claim name)",
    send: async (tenant) => postInitialize(await signTrusted(claims(tenant, { tenant_id: undefined, tenant }))),
  },
  {
    name: "bad tenant (upper case)",
    // The bad name itself is the one that must never get an object; see tenantFor below.
    send: async (tenant) => postInitialize(await signTrusted(claims(tenant))),
  },
  {
    name: "oversized token",
    send: async (tenant) => postInitialize(await signTrusted(claims(tenant, { pad: "x".repeat(MAX_TOKEN_BYTES) }))),
  },
  {
    name: "valid token in the query string (and in the header)",
    send: async (tenant) => {
      const token = await mintToken({ tenant });
      return postInitialize(token, `/mcp?access_token=${encodeURIComponent(token)}`);
    },
  },
  {
    name: "valid token in the query string only",
    send: async (tenant) =>
      mcpFetch({
        method: "POST",
        body: initializeBody(),
        path: `/mcp?access_token=${encodeURIComponent(await mintToken({ tenant }))}`,
      }),
  },
  {
    name: "attacker key with the trusted kid",
    send: async (tenant) =>
      postInitialize(await sign(claims(tenant), { alg: "ES256", kid: "test-es256" }, attackerJwk)),
  },
  {
    name: "non-Bearer scheme carrying a valid token",
    send: async (tenant) =>
      mcpFetch({
        method: "POST",
        body: initializeBody(),
        headers: { authorization: `Basic ${await mintToken({ tenant })}` },
      }),
  },
  { name: "garbage", send: async () => postInitialize("garbage") },
];

/** Tenant names used in the tokens: the bad-tenant case uses a name the verifier must refuse. */
function tenantFor(name: string): string {
  const tenant = uniqueTenant(
    name
      .replace(/[^a-z0-9]+/gi, "-")
      .toLowerCase()
      .slice(0, 24),
  );
  return name.startsWith("bad tenant") ? tenant.toUpperCase() : tenant;
}

describe("HTTP: every invalid token is refused with the same uninformative 401, before any tenant object exists", () => {
  let referenceBody: string;

  beforeAll(async () => {
    const response = await postInitialize("not-a-token");
    expect(response.status).toBe(401);
    referenceBody = await response.text();
  });

  it.each(invalidTokenCases)("$name", async ({ name, send }) => {
    const tenant = tenantFor(name);
    expect(await tenantObjectExists(tenant)).toBe(false);

    const response = await send(tenant);
    expect(response.status).toBe(401);
    const challenge = response.headers.get("www-authenticate") ?? "";
    expect(challenge.startsWith(CHALLENGE_PREFIX)).toBe(true);
    expect(challenge).toContain('error="invalid_token"');
    expect(challenge).not.toMatch(/error_description/);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    expect(response.headers.get("cache-control")).toBe("no-store");

    const text = await response.text();
    const body = JSON.parse(text) as Record<string, unknown>;
    expect(body.error).toBe("invalid_token");
    expect(Object.keys(body).sort()).toEqual(["error", "error_description"]);
    expect(String(body.error_description)).not.toMatch(DETAIL_WORDS);
    // Byte-for-byte the same body as for a garbage token: nothing distinguishes one failure from another.
    expect(text).toBe(referenceBody);

    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("a genuine token for another audience is told the expected audience (public), and no object is created", async () => {
    const tenant = uniqueTenant("wrong-aud");
    const response = await postInitialize(await signTrusted(claims(tenant, { aud: "https://other.test/mcp" })));
    expect(response.status).toBe(401);
    const description = `The access token is for another audience; this endpoint accepts tokens for ${RESOURCE}.`;
    const challenge = response.headers.get("www-authenticate") ?? "";
    expect(challenge.startsWith(CHALLENGE_PREFIX)).toBe(true);
    expect(challenge).toContain('error="invalid_token"');
    expect(challenge).toContain(`error_description="${description}"`);
    expect(await response.json()).toEqual({ error: "invalid_token", error_description: description });
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("a request without any token gets a challenge without an error code and no object is created", async () => {
    const tenant = uniqueTenant("no-token");
    const response = await mcpFetch({ method: "POST", body: initializeBody() });
    expect(response.status).toBe(401);
    const challenge = response.headers.get("www-authenticate") ?? "";
    expect(challenge.startsWith(CHALLENGE_PREFIX)).toBe(true);
    expect(challenge).not.toContain("error=");
    const body = (await response.json()) as Record<string, unknown>;
    expect(body.error).toBe("invalid_request");
    expect(String(body.error_description)).not.toMatch(DETAIL_WORDS);
    expect(await tenantObjectExists(tenant)).toBe(false);
  });

  it("control: the same request with a valid token creates the tenant object (so the check above can fail)", async () => {
    const tenant = uniqueTenant("control");
    expect(await tenantObjectExists(tenant)).toBe(false);
    const response = await postInitialize(await mintToken({ tenant }));
    expect(response.status).toBe(200);
    expect(await rpcResult(response)).toMatchObject({ result: { protocolVersion: expect.any(String) } });
    expect(await tenantObjectExists(tenant)).toBe(true);
  });
});

describe("HTTP: insufficient scope", () => {
  it.each([
    ["a scope without mcp", "kb.read kb.write"],
    ["no scope at all", undefined],
  ])("%s -> 403 naming the scope, no object created", async (_label, scope) => {
    const tenant = uniqueTenant("scope");
    const token = await signTrusted(claims(tenant, { scope }));
    const response = await postInitialize(token);
    expect(response.status).toBe(403);
    const challenge = response.headers.get("www-authenticate") ?? "";
    expect(challenge).toMatch(/^Bearer /);
    expect(challenge).toContain('error="insufficient_scope"');
    expect(challengeScopes(challenge)).toContain("mcp");
    expect(challenge).toContain(`resource_metadata="${METADATA_URL}"`);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body.error).toBe("insufficient_scope");
    expect(body.scope).toBe("mcp");
    expect(String(body.error_description)).toContain("mcp");
    expect(await tenantObjectExists(tenant)).toBe(false);
  });
});

/** The scopes a step-up challenge names (it lists the token's own scopes plus the missing ones). */
function challengeScopes(challenge: string): string[] {
  return (/scope="([^"]*)"/.exec(challenge)?.[1] ?? "").split(" ").filter(Boolean);
}
