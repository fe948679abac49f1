import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DEV_ISSUER, loadConfig } from "../../src/config";
import type { Env } from "../../src/env";
import { KbError } from "../../src/errors";
import { createApp } from "../../src/http/app";
import { initializeBody } from "../helpers/mcp-http";
import { BASE, bearer, mintToken } from "../helpers/tokens";

const PUBLIC_EC_KEY = {
  kty: "EC",
  crv: "P-256",
  x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
  y: "x_FEzRu9m36HLN_tUhiyaAaGbfgUuXmjv3o6JyjXsxE",
  kid: "pub",
  alg: "ES256",
};

/** A complete, valid configuration; each test bends one variable. */
function baseEnv(
  overrides: Partial<Omit<Env, "TENANT_SERVER" | "TENANT_REGISTRY" | "DOCS" | "EXTRACTION_RUN" | "OAUTH_KV">> = {},
): Env {
  return {
    TENANT_SERVER: env.TENANT_SERVER,
    EXTRACTION_RUN: env.EXTRACTION_RUN,
    TENANT_REGISTRY: env.TENANT_REGISTRY,
    DOCS: env.DOCS,
    OAUTH_KV: env.OAUTH_KV,
    ENVIRONMENT: "test",
    MCP_RESOURCE: "https://kb.test/mcp",
    AUTH_ISSUER: "https://issuer.test/",
    AUTH_JWKS: JSON.stringify({ keys: [PUBLIC_EC_KEY] }),
    ALLOWED_ORIGINS: "https://app.kb.test",
    ALLOWED_HOSTS: "kb.test",
    ...overrides,
  };
}

function prodEnv(overrides: Partial<Omit<Env, "TENANT_SERVER">> = {}): Env {
  return baseEnv({ ENVIRONMENT: "production", ...overrides });
}

/** Asserts loadConfig refuses `input` with ERR_CONFIG, and that the message names the offending setting. */
function expectConfigError(input: Env, message: RegExp): void {
  let thrown: unknown;
  try {
    loadConfig(input);
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(KbError);
  const error = thrown as KbError;
  expect(error.code).toBe("ERR_CONFIG");
  expect(error.status).toBe(503);
  expect(error.message).toMatch(message);
}

describe("loadConfig accepts a valid configuration (controls)", () => {
  it("accepts the base test configuration", () => {
    const config = loadConfig(baseEnv());
    expect(config.production).toBe(false);
    expect(config.resource).toBe("https://kb.test/mcp");
    expect(config.resourceOrigin).toBe("https://kb.test");
    expect(config.issuer).toBe("https://issuer.test/");
    // The built-in authorization server (on outside production) is listed first, then the external issuer.
    expect(config.authorizationServers).toEqual(["https://kb.test", "https://issuer.test/"]);
    expect(loadConfig(baseEnv({ OAUTH_SERVER: "off" })).authorizationServers).toEqual(["https://issuer.test/"]);
    expect(config.jwks).toEqual({ kind: "inline", keys: { keys: [PUBLIC_EC_KEY] } });
    expect(config.tenantClaim).toEqual(["tenant_id"]);
    expect(config.maxBodyBytes).toBe(1_048_576);
  });

  it("accepts a production configuration with a real issuer and an https resource", () => {
    const config = loadConfig(prodEnv());
    expect(config.production).toBe(true);
  });

  it("accepts the dev issuer outside production", () => {
    expect(loadConfig(baseEnv({ AUTH_ISSUER: DEV_ISSUER })).issuer).toBe(DEV_ISSUER);
  });

  it("accepts an http resource outside production (local dev)", () => {
    expect(loadConfig(baseEnv({ MCP_RESOURCE: "http://localhost:8787/mcp" })).resource).toBe(
      "http://localhost:8787/mcp",
    );
  });

  it("accepts a remote JWKS URL instead of an inline JWKS", () => {
    const config = loadConfig(
      prodEnv({ AUTH_JWKS: undefined, AUTH_JWKS_URL: "https://issuer.test/.well-known/jwks.json" }),
    );
    expect(config.jwks).toEqual({ kind: "remote", url: "https://issuer.test/.well-known/jwks.json" });
  });

  it("accepts a dotted TENANT_CLAIM as a claim path", () => {
    expect(loadConfig(baseEnv({ TENANT_CLAIM: "org.tenant_id" })).tenantClaim).toEqual(["org", "tenant_id"]);
    expect(loadConfig(baseEnv({ TENANT_CLAIM: "a.b.c.d.e" })).tenantClaim).toEqual(["a", "b", "c", "d", "e"]);
    expect(loadConfig(baseEnv({ TENANT_CLAIM: "urn:kb:tenant" })).tenantClaim).toEqual(["urn:kb:tenant"]);
  });

  it("derives allowedHosts: the configured hosts, lower-cased, plus the resource host", () => {
    const config = loadConfig(baseEnv({ ALLOWED_HOSTS: "Localhost, 127.0.0.1", MCP_RESOURCE: "https://KB.Test/mcp" }));
    expect(config.allowedHosts).toEqual(["localhost", "127.0.0.1", "kb.test"]);
    expect(loadConfig(baseEnv({ ALLOWED_HOSTS: undefined })).allowedHosts).toEqual(["kb.test"]);
    // Not duplicated when already listed.
    expect(loadConfig(baseEnv({ ALLOWED_HOSTS: "kb.test" })).allowedHosts).toEqual(["kb.test"]);
  });

  it("accepts numbers at the edges of their ranges", () => {
    const config = loadConfig(
      baseEnv({
        MAX_BODY_BYTES: "1024",
        AUTH_CLOCK_TOLERANCE_S: "300",
        SESSION_IDLE_TTL_S: "60",
        MAX_SESSIONS_PER_SUBJECT: "1000",
      }),
    );
    expect(config.maxBodyBytes).toBe(1024);
    expect(config.clockToleranceS).toBe(300);
    expect(config.sessionIdleTtlS).toBe(60);
    expect(config.maxSessionsPerSubject).toBe(1000);
    expect(loadConfig(baseEnv({ MAX_BODY_BYTES: "4194304", AUTH_CLOCK_TOLERANCE_S: "0" })).maxBodyBytes).toBe(
      4_194_304,
    );
  });

  it("accepts an explicit list of asymmetric algorithms", () => {
    expect(loadConfig(baseEnv({ AUTH_ALGORITHMS: "ES256, EdDSA" })).algorithms).toEqual(["ES256", "EdDSA"]);
  });
});

describe("loadConfig refuses an unsafe configuration with ERR_CONFIG", () => {
  it("refuses the dev issuer in production", () => {
    expectConfigError(prodEnv({ AUTH_ISSUER: DEV_ISSUER }), /dev issuer/);
    expectConfigError(prodEnv({ AUTH_ISSUER: "https://dev-issuer.invalid" }), /dev issuer/);
  });

  it("refuses a missing issuer", () => {
    expectConfigError(baseEnv({ AUTH_ISSUER: undefined }), /AUTH_ISSUER/);
    expectConfigError(baseEnv({ AUTH_ISSUER: "" }), /AUTH_ISSUER/);
  });

  it("refuses a missing MCP_RESOURCE", () => {
    expectConfigError(baseEnv({ MCP_RESOURCE: undefined }), /MCP_RESOURCE/);
  });

  // Regression: a string that is not an absolute URL must give ERR_CONFIG (503), not a TypeError (500).
  it.each(["", "/mcp", "mcp", "kb.test/mcp"])("refuses a relative MCP_RESOURCE %j with ERR_CONFIG", (resource) => {
    expectConfigError(baseEnv({ MCP_RESOURCE: resource }), /MCP_RESOURCE/);
  });

  it("refuses an AUTH_JWKS_URL that is not a URL with ERR_CONFIG", () => {
    expectConfigError(baseEnv({ AUTH_JWKS: undefined, AUTH_JWKS_URL: "jwks.json" }), /AUTH_JWKS_URL/);
  });

  it.each(["", "/mcp", "mcp", "kb.test/mcp"])("never accepts a relative MCP_RESOURCE %j", (resource) => {
    expect(() => loadConfig(baseEnv({ MCP_RESOURCE: resource }))).toThrow();
  });

  it("refuses an MCP_RESOURCE with a query or fragment", () => {
    expectConfigError(baseEnv({ MCP_RESOURCE: "https://kb.test/mcp?x=1" }), /MCP_RESOURCE/);
    expectConfigError(baseEnv({ MCP_RESOURCE: "https://kb.test/mcp#frag" }), /MCP_RESOURCE/);
  });

  it("refuses an http resource in production", () => {
    expectConfigError(prodEnv({ MCP_RESOURCE: "http://kb.test/mcp" }), /MCP_RESOURCE/);
  });

  it("refuses an http JWKS URL in production", () => {
    expectConfigError(
      prodEnv({ AUTH_JWKS: undefined, AUTH_JWKS_URL: "http://issuer.test/jwks.json" }),
      /AUTH_JWKS_URL/,
    );
  });

  it("refuses a JWKS holding a private key (d)", () => {
    const jwks = JSON.stringify({
      keys: [PUBLIC_EC_KEY, { ...PUBLIC_EC_KEY, kid: "priv", d: "c29tZS1wcml2YXRlLWtleQ" }],
    });
    expectConfigError(baseEnv({ AUTH_JWKS: jwks }), /public asymmetric keys only/);
  });

  it("refuses a JWKS holding a symmetric key (k)", () => {
    const jwks = JSON.stringify({ keys: [{ kty: "oct", k: "c2hhcmVkLXNlY3JldA", alg: "HS256", kid: "hmac" }] });
    expectConfigError(baseEnv({ AUTH_JWKS: jwks }), /public asymmetric keys only/);
  });

  it.each(["not json", "{", "'keys'"])("refuses AUTH_JWKS that is not JSON (%j)", (raw) => {
    expectConfigError(baseEnv({ AUTH_JWKS: raw }), /not JSON/);
  });

  it.each([
    ["an empty key set", JSON.stringify({ keys: [] })],
    ["a bare key", JSON.stringify(PUBLIC_EC_KEY)],
    ["an array", JSON.stringify([PUBLIC_EC_KEY])],
  ])("refuses AUTH_JWKS that is %s", (_name, raw) => {
    expectConfigError(baseEnv({ AUTH_JWKS: raw }), /AUTH_JWKS must be a JWK set/);
  });

  it("refuses a configuration with neither AUTH_JWKS nor AUTH_JWKS_URL", () => {
    expectConfigError(baseEnv({ AUTH_JWKS: undefined, AUTH_JWKS_URL: undefined }), /AUTH_JWKS_URL or AUTH_JWKS/);
    expectConfigError(baseEnv({ AUTH_JWKS: "", AUTH_JWKS_URL: "" }), /AUTH_JWKS_URL or AUTH_JWKS/);
  });

  it.each(["HS256", "ES256,HS256", "none", "ES256 none", "RS256 HS512", "es256"])(
    "refuses AUTH_ALGORITHMS %j",
    (algorithms) => {
      expectConfigError(baseEnv({ AUTH_ALGORITHMS: algorithms }), /AUTH_ALGORITHMS/);
    },
  );

  it.each(["a..b", ".tenant", "tenant.", "tenant id", "tenant$", "a.b.c.d.e.f", "x".repeat(65)])(
    "refuses TENANT_CLAIM %j",
    (claim) => {
      expectConfigError(baseEnv({ TENANT_CLAIM: claim }), /TENANT_CLAIM/);
    },
  );

  it.each([
    ["MAX_BODY_BYTES", "1023"],
    ["MAX_BODY_BYTES", "4194305"],
    ["MAX_BODY_BYTES", "0"],
    ["MAX_BODY_BYTES", "-1"],
    ["MAX_BODY_BYTES", "abc"],
    ["MAX_BODY_BYTES", "2048.5"],
    ["AUTH_CLOCK_TOLERANCE_S", "301"],
    ["AUTH_CLOCK_TOLERANCE_S", "-1"],
    ["SESSION_IDLE_TTL_S", "59"],
    ["SESSION_IDLE_TTL_S", "86401"],
    ["MAX_SESSIONS_PER_SUBJECT", "0"],
    ["MAX_SESSIONS_PER_SUBJECT", "1001"],
    ["MAX_SESSIONS_PER_SUBJECT", "Infinity"],
    ["QUOTA_DOCUMENTS", "0"],
    ["QUOTA_DOCUMENT_BYTES", "1023"],
    ["QUOTA_RUNS_QUEUED", "1.5"],
    ["QUOTA_SESSIONS", "-1"],
    ["QUOTA_EXCHANGED_TOKENS", "abc"],
    ["RATE_LIMIT_PER_MINUTE", "0"],
    ["RATE_LIMIT_SUBJECT_PER_MINUTE", "10000001"],
  ] as const)("refuses %s=%s (out of range)", (name, value) => {
    expectConfigError(baseEnv({ [name]: value }), new RegExp(name));
  });
});

describe("the edge fails closed on an invalid configuration", () => {
  const badEnv = () => ({ ...env, ENVIRONMENT: "production", AUTH_ISSUER: DEV_ISSUER });

  async function serve(request: Request, bindings: Env): Promise<Response> {
    const ctx = createExecutionContext();
    const response = await createApp().fetch(request, bindings, ctx);
    await waitOnExecutionContext(ctx);
    return response;
  }

  it("serves the same requests under a valid production configuration (control)", async () => {
    const good = { ...env, ENVIRONMENT: "production" };
    const metadata = await serve(new Request(`${BASE}/.well-known/oauth-protected-resource/mcp`), good);
    expect(metadata.status).toBe(200);
    const unauthenticated = await serve(
      new Request(`${BASE}/mcp`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }),
      good,
    );
    expect(unauthenticated.status).toBe(401);
  });

  it("still fails closed, without detail, on a relative MCP_RESOURCE (status is 500 today, see known bug)", async () => {
    const response = await serve(new Request(`${BASE}/.well-known/oauth-protected-resource/mcp`), {
      ...env,
      MCP_RESOURCE: "/mcp",
    });
    expect([500, 503]).toContain(response.status);
    const text = await response.text();
    expect(text).not.toContain("MCP_RESOURCE");
    expect(text).not.toContain("Invalid URL");
    expect(JSON.parse(text)).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32603 } });
  });

  it.each([
    ["/mcp", "POST"],
    ["/mcp", "GET"],
    ["/.well-known/oauth-protected-resource", "GET"],
    ["/.well-known/oauth-protected-resource/mcp", "GET"],
    ["/healthz", "GET"],
  ])("answers %s (%s) with a 503 that carries no detail", async (path, method) => {
    const token = await mintToken({ tenant: "config-bad" });
    const request = new Request(`${BASE}${path}`, {
      method,
      headers: { ...bearer(token), "content-type": "application/json", accept: "application/json, text/event-stream" },
      ...(method === "POST" ? { body: initializeBody() } : {}),
    });
    const response = await serve(request, badEnv());
    expect(response.status).toBe(503);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(response.headers.get("cache-control")).toBe("no-store");
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    const text = await response.text();
    expect(text.toLowerCase()).not.toContain("issuer");
    expect(text).not.toContain("dev-issuer");
    expect(text).not.toContain("production");
    expect(text).not.toContain("AUTH_");
    expect(JSON.parse(text)).toEqual({
      jsonrpc: "2.0",
      id: null,
      error: { code: -32603, message: "Service unavailable", data: { code: "ERR_CONFIG" } },
    });
  });
});

describe("embedding, placement and extraction settings (parsed by loadConfig only)", () => {
  const fakeAi = { run: async () => ({ data: [] }) };
  const fakeIndex = { query: async () => ({ matches: [], count: 0 }) };

  it("defaults: local embedder, local placement, deterministic extraction", () => {
    const config = loadConfig(baseEnv());
    expect(config.embedder).toEqual({ kind: "local", cacheable: false });
    expect(loadConfig(baseEnv({ EMBEDDER: "local-cached" })).embedder).toEqual({ kind: "local", cacheable: true });
    expect(config.vectorPlacement.default).toEqual({ kind: "local" });
    expect(Object.keys(config.vectorPlacement.tenants)).toEqual([]);
    expect(config.extractor).toBe("deterministic");
  });

  it("accepts Workers AI with a model and dimensions at the edges, a placement map, and EXTRACTOR=model", () => {
    for (const dimensions of ["1", "1536"]) {
      const config = loadConfig(
        baseEnv({
          EMBEDDER: "workers-ai",
          AI: fakeAi,
          AI_MODEL: "@cf/baai/bge-base-en-v1.5",
          AI_DIMENSIONS: dimensions,
        }),
      );
      expect(config.embedder).toEqual({
        kind: "workers-ai",
        model: "@cf/baai/bge-base-en-v1.5",
        dimensions: Number(dimensions),
      });
    }
    expect(loadConfig(baseEnv({ EMBEDDER: "workers-ai", AI: fakeAi })).embedder).toMatchObject({ dimensions: 384 });
    const placed = loadConfig({
      ...baseEnv({
        VECTOR_PLACEMENT: JSON.stringify({
          default: "local",
          tenants: { acme: { dedicated: "VECTORIZE_ACME" }, beta: { pooled: "VECTORIZE_POOL" } },
        }),
      }),
      VECTORIZE_ACME: fakeIndex,
      VECTORIZE_POOL: fakeIndex,
    } as Env);
    expect(placed.vectorPlacement.tenants.acme).toEqual({ kind: "dedicated", binding: "VECTORIZE_ACME" });
    expect(placed.vectorPlacement.tenants.beta).toEqual({ kind: "pooled", binding: "VECTORIZE_POOL" });
    // Only own entries count: an inherited name is no tenant entry.
    expect(Object.hasOwn(placed.vectorPlacement.tenants, "constructor")).toBe(false);
    expect(loadConfig(baseEnv({ EXTRACTOR: "model", AI: fakeAi })).extractor).toBe("model");
  });

  it.each([
    [{ EMBEDDER: "openai" }, /EMBEDDER must be local, local-cached or workers-ai/],
    [{ EMBEDDER: "LOCAL" }, /EMBEDDER must be/],
    [{ EMBEDDER: "workers-ai" }, /needs the AI binding/],
    [{ EMBEDDER: "workers-ai", AI: fakeAi, AI_DIMENSIONS: "0" }, /AI_DIMENSIONS/],
    [{ EMBEDDER: "workers-ai", AI: fakeAi, AI_DIMENSIONS: "1537" }, /AI_DIMENSIONS/],
    [{ EMBEDDER: "workers-ai", AI: fakeAi, AI_DIMENSIONS: "384.5" }, /AI_DIMENSIONS/],
    [{ EMBEDDER: "workers-ai", AI: fakeAi, AI_DIMENSIONS: "abc" }, /AI_DIMENSIONS/],
    [{ EMBEDDER: "workers-ai", AI: fakeAi, AI_MODEL: "bad model id" }, /AI_MODEL/],
    [{ EXTRACTOR: "llm" }, /EXTRACTOR must be/],
    [{ EXTRACTOR: "Model" }, /EXTRACTOR must be/],
    [{ EXTRACTOR: "model" }, /EXTRACTOR=model needs the AI binding/],
    [{ VECTOR_PLACEMENT: "{not json" }, /VECTOR_PLACEMENT is not JSON/],
    [{ VECTOR_PLACEMENT: JSON.stringify({ default: "vectorize" }) }, /VECTOR_PLACEMENT must be/],
    [{ VECTOR_PLACEMENT: JSON.stringify({ defaults: "local" }) }, /VECTOR_PLACEMENT must be/],
    [{ VECTOR_PLACEMENT: JSON.stringify({ tenants: { acme: { pooled: "" } } }) }, /VECTOR_PLACEMENT must be/],
    [{ VECTOR_PLACEMENT: JSON.stringify({ tenants: { acme: { pooled: "A", dedicated: "B" } } }) }, /must be/],
    [{ VECTOR_PLACEMENT: JSON.stringify({ tenants: { acme: { dedicated: "VECTORIZE_NONE" } } }) }, /missing Vectorize/],
    [{ VECTOR_PLACEMENT: JSON.stringify({ default: { pooled: "DOCS" } }) }, /missing Vectorize/],
    [{ VECTOR_PLACEMENT: "[]" }, /VECTOR_PLACEMENT must be/],
  ] as const)("refuses %j", (overrides, message) => {
    expectConfigError(baseEnv(overrides as Partial<Env>), message);
  });

  it("the edge answers 503 ERR_CONFIG for an unknown EMBEDDER or EXTRACTOR (no silent fallback)", async () => {
    const serve = async (bindings: Env) => {
      const ctx = createExecutionContext();
      const response = await createApp().fetch(new Request(`${BASE}/healthz`), bindings, ctx);
      await waitOnExecutionContext(ctx);
      return response;
    };
    expect((await serve({ ...env })).status).toBe(200);
    for (const bad of [
      { EMBEDDER: "local-hash" },
      { EXTRACTOR: "llm" },
      { AI_DIMENSIONS: "x", EMBEDDER: "workers-ai" },
    ]) {
      const response = await serve({ ...env, ...bad });
      expect(response.status).toBe(503);
      expect(await response.json()).toMatchObject({ error: { data: { code: "ERR_CONFIG" } } });
    }
  });
});

describe("the built-in OAuth authorization server settings", () => {
  it("is on with the dev sign-in outside production, and off in production unless asked for", () => {
    expect(loadConfig(baseEnv()).oauth).toMatchObject({ issuer: "https://kb.test", devSignIn: true });
    expect(loadConfig(prodEnv()).oauth).toBeNull();
    const on = loadConfig(prodEnv({ OAUTH_SERVER: "on" })).oauth;
    expect(on).toMatchObject({ issuer: "https://kb.test", devSignIn: false, accessTokenTtlS: 3600 });
  });

  it("an ENVIRONMENT that is not exactly production, development or test is a configuration error", () => {
    for (const value of ["prod", "Production", "staging", "", undefined]) {
      expectConfigError(baseEnv({ ENVIRONMENT: value as string }), /ENVIRONMENT/);
    }
  });

  it("the dev sign-in is on by default only for a local resource; elsewhere only when asked for by name", () => {
    const remote = { MCP_RESOURCE: "https://kb.example.com/mcp", ALLOWED_HOSTS: "kb.example.com" };
    expect(loadConfig(baseEnv({ ENVIRONMENT: "development", ...remote })).oauth?.devSignIn).toBe(false);
    expect(
      loadConfig(baseEnv({ ENVIRONMENT: "development", ...remote, OAUTH_DEV_SIGN_IN: "on" })).oauth?.devSignIn,
    ).toBe(true);
    for (const resource of ["http://localhost:8787/mcp", "http://127.0.0.1:9000/mcp", "https://kb.test/mcp"]) {
      expect(loadConfig(baseEnv({ ENVIRONMENT: "development", MCP_RESOURCE: resource })).oauth?.devSignIn).toBe(true);
    }
  });

  it("refuses the dev sign-in in production and out-of-range lifetimes", () => {
    expectConfigError(prodEnv({ OAUTH_SERVER: "on", OAUTH_DEV_SIGN_IN: "on" }), /OAUTH_DEV_SIGN_IN/);
    expectConfigError(baseEnv({ OAUTH_SERVER: "yes" }), /OAUTH_SERVER/);
    expectConfigError(baseEnv({ OAUTH_ACCESS_TOKEN_TTL_S: "10" }), /OAUTH_ACCESS_TOKEN_TTL_S/);
    expectConfigError(baseEnv({ OAUTH_REFRESH_TOKEN_TTL_S: "0" }), /OAUTH_REFRESH_TOKEN_TTL_S/);
  });
});
