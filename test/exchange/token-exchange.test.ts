import { env } from "cloudflare:workers";
import {
  base64url,
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWK,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { mintAdminToken } from "../helpers/admin";
import {
  ACCESS_TOKEN_TYPE,
  claimsOf,
  EXCHANGE_ISSUER,
  exchangeForm,
  exchangeOk,
  expectOAuthError,
  publishedJwks,
  publishedKeySet,
  rotateSigningKey,
  setEgress,
  TOKEN_EXCHANGE,
  tokenRequest,
} from "../helpers/exchange";
import { signRawToken } from "../helpers/http";
import { uniqueTenant } from "../helpers/kb-client";
import { initializeBody, mcpFetch } from "../helpers/mcp-http";
import { ISSUER, mintToken, privateJwk, RESOURCE } from "../helpers/tokens";

/**
 * RFC 8693 token exchange at POST /oauth/token: the subject token is verified like any access token for this
 * server, the target must be one of the caller's tenant's downstream resources, the scope can only narrow, and the
 * issued token is short-lived, audience-bound and signed by the registry's own keys (published at
 * /.well-known/jwks.json). Every refusal is an RFC 6749 error body with `Cache-Control: no-store` and no token.
 */

const DOWNSTREAM = "https://api.downstream.test/v1";
const AUDIENCE = "downstream-api";
const OTHER = "https://api.reports.test/r";
const B_RESOURCE = "https://api.b-only.test/data";
const B_AUDIENCE = "b-api";

const A = uniqueTenant("xa");
const B = uniqueTenant("xb");

let tokenA: string;
let tokenB: string;

beforeAll(async () => {
  await setEgress(A, {
    origins: ["https://api.downstream.test", "https://api.reports.test"],
    resources: [
      { resource: DOWNSTREAM, audience: AUDIENCE, scopes: ["docs.read", "docs.write"] },
      { resource: OTHER, audience: "reports-api", scopes: ["reports.read"] },
    ],
  });
  await setEgress(B, {
    origins: ["https://api.b-only.test"],
    resources: [{ resource: B_RESOURCE, audience: B_AUDIENCE, scopes: ["docs.read"] }],
  });
  tokenA = await mintToken({ tenant: A, sub: "alice", scope: "mcp kb.read docs.read reports.read" });
  tokenB = await mintToken({ tenant: B, sub: "bob", scope: "mcp docs.read" });
});

async function verifyExchanged(token: string, audience: string, keys?: JWTVerifyGetKey) {
  return jwtVerify(token, keys ?? (await publishedKeySet()), {
    issuer: EXCHANGE_ISSUER,
    audience,
    algorithms: ["ES256"],
    typ: "at+jwt",
  });
}

describe("successful exchange", () => {
  it("issues a short-lived, audience-bound token for A's downstream resource, verifiable with the published JWKS", async () => {
    const before = Math.floor(Date.now() / 1000);
    const answer = await tokenRequest(exchangeForm(tokenA, { resource: DOWNSTREAM }));
    expect(answer.status, answer.text).toBe(200);
    expect(answer.headers.get("cache-control")).toBe("no-store");
    expect(answer.headers.get("pragma")).toBe("no-cache");
    expect(answer.body.issued_token_type).toBe(ACCESS_TOKEN_TYPE);
    expect(answer.body.token_type).toBe("Bearer");
    const expiresIn = answer.body.expires_in as number;
    expect(Number.isInteger(expiresIn)).toBe(true);
    expect(expiresIn).toBeGreaterThan(0);
    expect(expiresIn).toBeLessThanOrEqual(300);
    // No scope asked for: the target's scopes narrowed to the caller's (A holds docs.read, not docs.write).
    expect(answer.body.scope).toBe("docs.read");
    expect(answer.body).not.toHaveProperty("refresh_token");

    const token = answer.body.access_token as string;
    const { payload, protectedHeader } = await verifyExchanged(token, AUDIENCE);
    expect(protectedHeader.alg).toBe("ES256");
    expect(typeof protectedHeader.kid).toBe("string");
    const jwks = await publishedJwks();
    expect(jwks.keys.map((key) => key.kid)).toContain(protectedHeader.kid);
    expect(payload.iss).toBe("https://kb.test");
    expect(payload.aud).toBe(AUDIENCE);
    expect(payload.sub).toBe("alice");
    expect(payload.tenant_id).toBe(A);
    expect(payload.scope).toBe("docs.read");
    expect(payload.act).toEqual({ sub: "https://kb.test" });
    expect(typeof payload.jti).toBe("string");
    expect((payload.jti as string).length).toBeGreaterThan(8);
    const iat = payload.iat as number;
    const exp = payload.exp as number;
    expect(iat).toBeGreaterThanOrEqual(before - 1);
    expect(exp - iat).toBeGreaterThan(0);
    expect(exp - iat).toBeLessThanOrEqual(300);
    // The subject token's identity is carried, never the subject token itself.
    expect(payload.jti).not.toBe(claimsOf(tokenA).jti);
  });

  it("names the target by audience alone, or by resource and audience together; each exchange gets its own jti", async () => {
    const byAudience = await exchangeOk(tokenA, { audience: AUDIENCE });
    const byBoth = await exchangeOk(tokenA, { resource: DOWNSTREAM, audience: AUDIENCE });
    for (const token of [byAudience, byBoth])
      expect((await verifyExchanged(token, AUDIENCE)).payload.tenant_id).toBe(A);
    expect(claimsOf(byAudience).jti).not.toBe(claimsOf(byBoth).jti);
  });

  it("an explicit scope can narrow: docs.read only, from a caller holding docs.read and docs.write", async () => {
    const wide = await mintToken({ tenant: A, sub: "carol", scope: "mcp docs.read docs.write" });
    const all = await tokenRequest(exchangeForm(wide, { resource: DOWNSTREAM }));
    expect(all.body.scope).toBe("docs.read docs.write");
    const narrow = await tokenRequest(exchangeForm(wide, { resource: DOWNSTREAM, scope: "docs.write" }));
    expect(narrow.status, narrow.text).toBe(200);
    expect(narrow.body.scope).toBe("docs.write");
    const { payload } = await verifyExchanged(narrow.body.access_token as string, AUDIENCE);
    expect(payload.scope).toBe("docs.write");
    expect(payload.sub).toBe("carol");
  });

  it("B gets a token for its own resource (so B's refusals for A below are about the tenant, not the resource)", async () => {
    const token = await exchangeOk(tokenB, { resource: B_RESOURCE });
    const { payload } = await verifyExchanged(token, B_AUDIENCE);
    expect(payload.tenant_id).toBe(B);
    expect(payload.sub).toBe("bob");
  });
});

describe("request errors", () => {
  const cases: [string, (subject: string) => Record<string, string | null> | [string, string][], string][] = [
    [
      "missing grant_type",
      (t) => ({ ...exchangeForm(t, { resource: DOWNSTREAM }), grant_type: null }),
      "invalid_request",
    ],
    [
      "missing subject_token",
      (t) => ({ ...exchangeForm(t, { resource: DOWNSTREAM }), subject_token: null }),
      "invalid_request",
    ],
    [
      "empty subject_token",
      (t) => ({ ...exchangeForm(t, { resource: DOWNSTREAM }), subject_token: "" }),
      "invalid_request",
    ],
    [
      "missing subject_token_type",
      (t) => ({ ...exchangeForm(t, { resource: DOWNSTREAM }), subject_token_type: null }),
      "invalid_request",
    ],
    [
      "unknown subject_token_type",
      (t) => ({
        ...exchangeForm(t, { resource: DOWNSTREAM }),
        subject_token_type: "urn:ietf:params:oauth:token-type:saml2",
      }),
      "invalid_request",
    ],
    [
      "wrong grant_type",
      (t) => ({ ...exchangeForm(t, { resource: DOWNSTREAM }), grant_type: "client_credentials" }),
      "unsupported_grant_type",
    ],
    [
      "an actor token",
      (t) => ({ ...exchangeForm(t, { resource: DOWNSTREAM }), actor_token: t, actor_token_type: ACCESS_TOKEN_TYPE }),
      "invalid_request",
    ],
    [
      "unsupported requested_token_type",
      (t) => ({
        ...exchangeForm(t, { resource: DOWNSTREAM }),
        requested_token_type: "urn:ietf:params:oauth:token-type:refresh_token",
      }),
      "invalid_request",
    ],
    ["no target at all", (t) => exchangeForm(t, {}), "invalid_target"],
    ["a relative resource", (t) => exchangeForm(t, { resource: "/v1" }), "invalid_target"],
    ["a resource with a fragment", (t) => exchangeForm(t, { resource: `${DOWNSTREAM}#x` }), "invalid_target"],
    ["an empty scope", (t) => exchangeForm(t, { resource: DOWNSTREAM, scope: "   " }), "invalid_scope"],
  ];

  for (const [name, form, error] of cases) {
    it(`${name} -> ${error}`, async () => {
      expectOAuthError(await tokenRequest(form(tokenA)), error);
    });
  }

  const duplicated = ["grant_type", "subject_token", "subject_token_type", "scope", "requested_token_type"];
  for (const parameter of duplicated) {
    it(`duplicate ${parameter} -> invalid_request`, async () => {
      const fields: [string, string][] = [
        ["grant_type", TOKEN_EXCHANGE],
        ["subject_token", tokenA],
        ["subject_token_type", ACCESS_TOKEN_TYPE],
        ["resource", DOWNSTREAM],
        ["scope", "docs.read"],
        ["requested_token_type", ACCESS_TOKEN_TYPE],
      ];
      const original = fields.find(([field]) => field === parameter);
      if (!original) throw new Error(parameter);
      fields.push([...original]);
      expectOAuthError(await tokenRequest(fields), "invalid_request");
    });
  }

  it("a JSON body (not a form) -> invalid_request", async () => {
    expectOAuthError(
      await tokenRequest(exchangeForm(tokenA, { resource: DOWNSTREAM }), { contentType: "application/json" }),
      "invalid_request",
    );
  });
});

describe("subject token errors -> invalid_grant", () => {
  async function publicJwk(): Promise<JWK> {
    const { d: _d, ...pub } = await privateJwk("ES256");
    return pub;
  }

  const subjects: [string, () => Promise<string>][] = [
    ["a token for another audience", () => signRawToken({ aud: "https://other.test/mcp", tenant_id: A })],
    ["an admin token (admin audience)", () => mintAdminToken({ claims: { tenant_id: A } })],
    ["an expired token", () => mintToken({ tenant: A, scope: "mcp docs.read", ttl: -3600 })],
    ["a token from another issuer", () => signRawToken({ iss: "https://evil.test/", tenant_id: A })],
    ["a token without a tenant claim", () => mintToken({ tenant: A, scope: "mcp docs.read", omit: ["tenant_id"] })],
    [
      "alg confusion: HS256 keyed with the trusted public JWK",
      async () => {
        const secret = new TextEncoder().encode(JSON.stringify(await publicJwk()));
        return new SignJWT({ tenant_id: A, scope: "mcp docs.read" })
          .setProtectedHeader({ alg: "HS256", kid: "test-es256", typ: "at+jwt" })
          .setIssuer(ISSUER)
          .setAudience(RESOURCE)
          .setSubject("alice")
          .setIssuedAt()
          .setExpirationTime("10m")
          .sign(secret);
      },
    ],
    [
      "alg none",
      async () => {
        const now = Math.floor(Date.now() / 1000);
        const header = base64url.encode(JSON.stringify({ alg: "none", typ: "at+jwt" }));
        const payload = base64url.encode(
          JSON.stringify({
            iss: ISSUER,
            aud: RESOURCE,
            sub: "alice",
            tenant_id: A,
            exp: now + 600,
            scope: "docs.read",
          }),
        );
        return `${header}.${payload}.`;
      },
    ],
    [
      "signed by an unknown key that claims the trusted kid",
      async () => {
        const attacker = JSON.parse(env.TEST_ATTACKER_JWK) as JWK;
        return new SignJWT({ tenant_id: A, scope: "mcp docs.read" })
          .setProtectedHeader({ alg: "ES256", kid: "test-es256", typ: "at+jwt" })
          .setIssuer(ISSUER)
          .setAudience(RESOURCE)
          .setSubject("alice")
          .setIssuedAt()
          .setExpirationTime("10m")
          .sign(await importJWK(attacker, "ES256"));
      },
    ],
    [
      "signed by an unknown key with an unknown kid",
      async () => {
        const attacker = JSON.parse(env.TEST_ATTACKER_JWK) as JWK;
        return new SignJWT({ tenant_id: A, scope: "mcp docs.read" })
          .setProtectedHeader({ alg: "ES256", kid: "attacker-1", typ: "at+jwt" })
          .setIssuer(ISSUER)
          .setAudience(RESOURCE)
          .setSubject("alice")
          .setIssuedAt()
          .setExpirationTime("10m")
          .sign(await importJWK(attacker, "ES256"));
      },
    ],
    ["not a JWT", async () => "not-a-token"],
  ];

  for (const [name, make] of subjects) {
    it(name, async () => {
      expectOAuthError(await tokenRequest(exchangeForm(await make(), { resource: DOWNSTREAM })), "invalid_grant");
    });
  }

  it("an exchanged token presented as subject_token (wrong issuer and audience)", async () => {
    const exchanged = await exchangeOk(tokenA, { resource: DOWNSTREAM });
    expectOAuthError(await tokenRequest(exchangeForm(exchanged, { resource: DOWNSTREAM })), "invalid_grant");
    expectOAuthError(await tokenRequest(exchangeForm(exchanged, { audience: AUDIENCE })), "invalid_grant");
  });

  it("an exchanged token is not an access token for this server: /mcp answers 401", async () => {
    const exchanged = await exchangeOk(tokenA, { resource: DOWNSTREAM });
    const response = await mcpFetch({ method: "POST", token: exchanged, body: initializeBody() });
    expect(response.status).toBe(401);
    expect(response.headers.get("www-authenticate") ?? "").toContain('error="invalid_token"');
    const text = await response.text();
    expect(text).not.toContain(A);
    // The genuine token of the same caller is accepted (the 401 is about the exchanged token, not the request).
    const genuine = await mcpFetch({ method: "POST", token: tokenA, body: initializeBody() });
    expect(genuine.status).toBe(200);
    await genuine.body?.cancel();
  });

  it("an exchanged token is not an admin token either", async () => {
    const exchanged = await exchangeOk(tokenA, { resource: DOWNSTREAM });
    const response = await mcpFetch({ method: "GET", path: `/admin/tenants/${A}`, token: exchanged });
    expect(response.status).toBe(401);
    expect(await response.text()).not.toContain("egress");
  });
});

describe("policy errors", () => {
  it("a resource not on A's list -> invalid_target", async () => {
    for (const target of [
      { resource: "https://api.unknown.test/v1" },
      { resource: "https://api.downstream.test/v2" },
      { audience: "unknown-api" },
      // Both named, but they belong to different entries of A's list.
      { resource: DOWNSTREAM, audience: "reports-api" },
    ]) {
      expectOAuthError(await tokenRequest(exchangeForm(tokenA, target)), "invalid_target");
    }
  });

  it("B's resource or audience -> invalid_target for A (B got a token for it above)", async () => {
    expectOAuthError(await tokenRequest(exchangeForm(tokenA, { resource: B_RESOURCE })), "invalid_target");
    expectOAuthError(await tokenRequest(exchangeForm(tokenA, { audience: B_AUDIENCE })), "invalid_target");
    expectOAuthError(
      await tokenRequest(exchangeForm(tokenA, { resource: B_RESOURCE, audience: B_AUDIENCE, scope: "docs.read" })),
      "invalid_target",
    );
    // A token that names B as tenant can only be B's; an A token cannot be relabelled (its signature covers the claim).
    const [header, payload, signature] = tokenA.split(".");
    const relabelled = base64url.encode(JSON.stringify({ ...claimsOf(tokenA), tenant_id: B }));
    expect(payload).not.toBe(relabelled);
    expectOAuthError(
      await tokenRequest(exchangeForm(`${header}.${relabelled}.${signature}`, { resource: B_RESOURCE })),
      "invalid_grant",
    );
  });

  it("a tenant without an egress policy has no targets -> invalid_target", async () => {
    const loner = await mintToken({ tenant: uniqueTenant("xnone"), scope: "mcp docs.read" });
    expectOAuthError(await tokenRequest(exchangeForm(loner, { resource: DOWNSTREAM })), "invalid_target");
  });

  it("two resources or two audiences -> invalid_target", async () => {
    const base: [string, string][] = [
      ["grant_type", TOKEN_EXCHANGE],
      ["subject_token", tokenA],
      ["subject_token_type", ACCESS_TOKEN_TYPE],
    ];
    expectOAuthError(await tokenRequest([...base, ["resource", DOWNSTREAM], ["resource", OTHER]]), "invalid_target");
    expectOAuthError(
      await tokenRequest([...base, ["resource", DOWNSTREAM], ["resource", DOWNSTREAM]]),
      "invalid_target",
    );
    expectOAuthError(
      await tokenRequest([...base, ["audience", AUDIENCE], ["audience", "reports-api"]]),
      "invalid_target",
    );
  });

  it("scope widening -> invalid_scope: a target scope A's token lacks, or a scope not in the target's list", async () => {
    // A's token has docs.read but not docs.write.
    expectOAuthError(
      await tokenRequest(exchangeForm(tokenA, { resource: DOWNSTREAM, scope: "docs.write" })),
      "invalid_scope",
    );
    expectOAuthError(
      await tokenRequest(exchangeForm(tokenA, { resource: DOWNSTREAM, scope: "docs.read docs.write" })),
      "invalid_scope",
    );
    // reports.read is held by A's token and allowed for another target, but not for this one.
    expectOAuthError(
      await tokenRequest(exchangeForm(tokenA, { resource: DOWNSTREAM, scope: "reports.read" })),
      "invalid_scope",
    );
    // kb.read is held by A's token but is no scope of the downstream resource.
    expectOAuthError(
      await tokenRequest(exchangeForm(tokenA, { resource: DOWNSTREAM, scope: "docs.read kb.read" })),
      "invalid_scope",
    );
    // A caller holding none of the target's scopes gets nothing by default either.
    const plain = await mintToken({ tenant: A, scope: "mcp kb.read" });
    expectOAuthError(await tokenRequest(exchangeForm(plain, { resource: DOWNSTREAM })), "invalid_scope");
  });

  it("an offboarded tenant's still-valid token -> invalid_grant", async () => {
    const gone = uniqueTenant("xgone");
    await setEgress(gone, {
      origins: ["https://api.downstream.test"],
      resources: [{ resource: DOWNSTREAM, audience: AUDIENCE, scopes: ["docs.read"] }],
    });
    const token = await mintToken({ tenant: gone, scope: "mcp docs.read" });
    await exchangeOk(token, { resource: DOWNSTREAM });
    const admin = await mintAdminToken();
    const offboard = await mcpFetch({
      method: "POST",
      path: `/admin/tenants/${gone}/offboard`,
      token: admin,
      body: JSON.stringify({ confirm: gone }),
    });
    expect(offboard.status, await offboard.text()).toBe(202);
    expectOAuthError(await tokenRequest(exchangeForm(token, { resource: DOWNSTREAM })), "invalid_grant");
  });
});

describe("signing-key rotation", () => {
  it("needs an admin token", async () => {
    const response = await mcpFetch({ method: "POST", path: "/admin/signing-keys/rotate", token: tokenA });
    expect(response.status).toBe(401);
    await response.body?.cancel();
  });

  it("publishes old and new keys; tokens signed before still verify; new tokens carry the new kid", async () => {
    const before = await exchangeOk(tokenA, { resource: DOWNSTREAM });
    const oldKid = decodeProtectedHeader(before).kid;
    const jwksBefore = await publishedJwks();
    expect(jwksBefore.keys.map((key) => key.kid)).toContain(oldKid);

    const rotated = await rotateSigningKey();
    expect(rotated.status).toBe(200);
    const newKid = rotated.body.kid;
    expect(typeof newKid).toBe("string");
    expect(newKid).not.toBe(oldKid);

    const jwksAfter = await publishedJwks();
    expect(jwksAfter.keys).toHaveLength(jwksBefore.keys.length + 1);
    expect(jwksAfter.keys.length).toBeGreaterThanOrEqual(2);
    const kids = jwksAfter.keys.map((key) => key.kid);
    expect(kids).toContain(oldKid);
    expect(kids).toContain(newKid);
    expect(new Set(kids).size).toBe(kids.length);
    for (const key of jwksAfter.keys) {
      // Public halves only, for signatures only.
      expect(key).not.toHaveProperty("d");
      expect(key).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
    }

    const keys = await publishedKeySet();
    await expect(verifyExchanged(before, AUDIENCE, keys)).resolves.toBeDefined();

    const after = await exchangeOk(tokenA, { resource: DOWNSTREAM });
    expect(decodeProtectedHeader(after).kid).toBe(newKid);
    await expect(verifyExchanged(after, AUDIENCE, keys)).resolves.toBeDefined();

    // The two keys really differ: the new token does not verify with the old key alone.
    const oldOnly = jwksAfter.keys.filter((key) => key.kid === oldKid).map((key) => ({ ...key, kid: newKid }));
    await expect(
      verifyExchanged(after, AUDIENCE, createLocalJWKSet({ keys: oldOnly as JWK[] })),
    ).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
  });
});
