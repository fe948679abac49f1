import { env, exports } from "cloudflare:workers";
import { decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Identity } from "../../src/auth/identity";
import { loadConfig } from "../../src/config";
import { ExchangedTokens } from "../../src/egress/token-provider";
import { modernRequest } from "../helpers/clients";
import {
  bearerOf,
  claimsOf,
  EXCHANGE_ISSUER,
  exchangeForm,
  interceptFetch,
  type Outbound,
  publishedKeySet,
  setEgress,
  tokenRequest,
} from "../helpers/exchange";
import { uniqueTenant } from "../helpers/kb-client";
import { initializeBody, LEGACY_VERSION, mcpFetch, rpcResult } from "../helpers/mcp-http";
import { BASE, mintToken } from "../helpers/tokens";

/**
 * No token passthrough: with every outbound fetch of the server intercepted (globalThis.fetch is shared by the test
 * isolate and the Durable Objects), every tool of both protocol eras, resources/read, the token endpoint and the
 * document endpoint are driven with a client that also sends credentials-looking headers. No outbound request may
 * carry the client's bearer token or any part of it, or any of the client's headers; a downstream resource gets an
 * exchanged token (this server's issuer, the downstream audience) and nothing else does.
 */

const TENANT = uniqueTenant("np");
const DOWNSTREAM = "https://api.downstream.test/v1";
const AUDIENCE = "downstream-api";
const PUBLIC = "https://public.example.test";

/** Unusual client headers: none of them (names or values) may ever appear outbound. */
const CLIENT_HEADERS: Record<string, string> = {
  "x-client-secret": "s3cret",
  cookie: "a=b; session=client-cookie-value",
  "x-api-key": "client-api-key-123",
  "proxy-authorization": "Basic Y2xpZW50OnByb3h5",
  "x-forwarded-for": "10.9.8.7",
  "user-agent": "evil-client-agent/9.9",
  "x-amz-security-token": "client-aws-session",
};
const ALLOWED_OUTBOUND_HEADERS = new Set(["accept", "user-agent", "authorization"]);

let token: string;
let jti: string;
let outbound: Outbound[];
let restore: () => void;
const legacy: { sessionId: string } = { sessionId: "" };

beforeAll(async () => {
  await setEgress(TENANT, {
    origins: ["https://api.downstream.test", PUBLIC],
    resources: [{ resource: DOWNSTREAM, audience: AUDIENCE, scopes: ["docs.read", "docs.write"] }],
  });
  token = await mintToken({ tenant: TENANT, sub: "alice", scope: "mcp kb.read kb.write docs.read" });
  jti = claimsOf(token).jti as string;
  const spy = interceptFetch((request) => {
    const url = new URL(request.url);
    if (url.origin === "https://api.downstream.test" && url.pathname === "/v1/moved") {
      return new Response(null, { status: 302, headers: { location: `${PUBLIC}/landing` } });
    }
    if (url.origin === "https://api.downstream.test" || url.origin === PUBLIC) {
      return new Response(`downstream body for ${url.pathname}`, { headers: { "content-type": "text/plain" } });
    }
    return new Response("unexpected", { status: 599 });
  });
  outbound = spy.calls;
  restore = spy.restore;
});

afterAll(() => restore());

/** Distinctive parts of the client's headers (whole values and the secret inside each). */
const CLIENT_SECRETS = [
  ...Object.values(CLIENT_HEADERS),
  "s3cret",
  "a=b",
  "client-cookie-value",
  "client-api-key-123",
  "Y2xpZW50OnByb3h5",
  "10.9.8.7",
  "evil-client-agent",
  "client-aws-session",
];

/** Every form the client's credentials could take on the wire. */
function secrets(): string[] {
  const [header, payload, signature] = token.split(".");
  return [
    token,
    header as string,
    payload as string,
    signature as string,
    jti,
    ...CLIENT_SECRETS,
    ...(legacy.sessionId ? [legacy.sessionId] : []),
  ];
}

function expectClean(call: Outbound): void {
  const wire = [call.url, ...Object.entries(call.headers).flat(), call.body].join("\n");
  for (const secret of secrets())
    expect(wire, `outbound ${call.url} leaks ${secret.slice(0, 12)}`).not.toContain(secret);
  for (const name of Object.keys(call.headers)) expect(ALLOWED_OUTBOUND_HEADERS, name).toContain(name);
  expect(call.headers.cookie).toBeUndefined();
  expect(call.headers["x-client-secret"]).toBeUndefined();
  expect(call.headers["user-agent"]).toBe("tenant-mcp-kb/0.1");
}

async function modernCall(method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
  const raw = modernRequest(crypto.randomUUID(), method, params);
  if (typeof params.uri === "string") raw.headers["mcp-name"] = params.uri;
  const response = await mcpFetch({
    method: "POST",
    token,
    headers: { ...CLIENT_HEADERS, ...raw.headers },
    body: raw.body,
  });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  const message = await rpcResult(new Response(text, { headers: response.headers }));
  expect(message.error, text).toBeUndefined();
  return message.result as Record<string, unknown>;
}

async function legacyCall(method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
  const response = await mcpFetch({
    method: "POST",
    token,
    headers: { ...CLIENT_HEADERS, "mcp-session-id": legacy.sessionId, "mcp-protocol-version": LEGACY_VERSION },
    body: JSON.stringify({ jsonrpc: "2.0", id: crypto.randomUUID(), method, params }),
  });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  const message = await rpcResult(new Response(text, { headers: response.headers }));
  expect(message.error, text).toBeUndefined();
  return message.result as Record<string, unknown>;
}

function toolOk(result: Record<string, unknown>): Record<string, unknown> {
  expect(result.isError, JSON.stringify(result)).not.toBe(true);
  return result.structuredContent as Record<string, unknown>;
}

/** Runs `step` and returns the outbound requests it caused. */
async function during(step: () => Promise<unknown>): Promise<Outbound[]> {
  const before = outbound.length;
  await step();
  return outbound.slice(before);
}

async function expectExchangedFor(call: Outbound): Promise<Record<string, unknown>> {
  const presented = bearerOf(call.headers);
  expect(presented, `${call.url} carries no bearer`).not.toBeNull();
  const exchanged = presented as string;
  expect(exchanged).not.toBe(token);
  // Decoded: this server's issuer and the downstream audience, the caller's subject and tenant, a narrowed scope.
  const claims = claimsOf(exchanged);
  expect(claims.iss).toBe("https://kb.test");
  expect(claims.aud).toBe(AUDIENCE);
  expect(claims.sub).toBe("alice");
  expect(claims.tenant_id).toBe(TENANT);
  expect(claims.scope).toBe("docs.read");
  expect(claims.jti).not.toBe(jti);
  expect(decodeProtectedHeader(exchanged).kid).not.toBe("test-es256");
  // And verifiable by the downstream with the published keys.
  const { payload } = await jwtVerify(exchanged, await publishedKeySet(), {
    issuer: EXCHANGE_ISSUER,
    audience: AUDIENCE,
    algorithms: ["ES256"],
  });
  return payload as Record<string, unknown>;
}

/** The tools this file drives; a new tool fails the first test until it is driven here too. */
const DRIVEN_TOOLS = [
  "whoami",
  "add_atoms",
  "search",
  "get_atom",
  "list_atoms",
  "delete_atoms",
  "kb_stats",
  "put_document",
  "get_document",
  "ingest_document",
  "ingest_status",
  "purge_source",
  "import_url",
];

describe("2026-07-28 (stateless)", () => {
  it("drives every tool the server lists", async () => {
    const listed = (await modernCall("tools/list", {})).tools as { name: string }[];
    expect(listed.map((tool) => tool.name).sort()).toEqual([...DRIVEN_TOOLS].sort());
  });

  it("knowledge-base tools, documents and resources/read make no outbound request at all", async () => {
    const calls = await during(async () => {
      const who = toolOk(await modernCall("tools/call", { name: "whoami", arguments: {} }));
      expect(JSON.stringify(who)).not.toContain(token);
      toolOk(
        await modernCall("tools/call", {
          name: "add_atoms",
          arguments: { atoms: [{ id: "np-1", text: "no passthrough of bearer tokens", tags: ["auth"] }] },
        }),
      );
      toolOk(await modernCall("tools/call", { name: "search", arguments: { query: "bearer tokens" } }));
      toolOk(await modernCall("tools/call", { name: "get_atom", arguments: { id: "np-1" } }));
      toolOk(await modernCall("tools/call", { name: "list_atoms", arguments: {} }));
      toolOk(await modernCall("tools/call", { name: "kb_stats", arguments: {} }));
      toolOk(
        await modernCall("tools/call", {
          name: "put_document",
          arguments: { id: "np-doc", text: "a small document" },
        }),
      );
      const doc = toolOk(await modernCall("tools/call", { name: "get_document", arguments: { id: "np-doc" } }));
      expect(doc.text).toBe("a small document");
      const ingested = toolOk(
        await modernCall("tools/call", { name: "ingest_document", arguments: { document_id: "np-doc" } }),
      );
      expect(ingested.status).toBe("done");
      toolOk(await modernCall("tools/call", { name: "ingest_status", arguments: { run: ingested.run } }));
      toolOk(await modernCall("tools/call", { name: "purge_source", arguments: { source: "doc:np-doc" } }));
      const read = await modernCall("resources/read", { uri: "atom://np-1" });
      expect(JSON.stringify(read)).toContain("no passthrough of bearer tokens");
      toolOk(await modernCall("tools/call", { name: "delete_atoms", arguments: { ids: ["np-1"] } }));
    });
    expect(calls).toEqual([]);
  });

  it("import_url of a downstream resource sends an exchanged token, never the client's", async () => {
    const calls = await during(async () => {
      const result = toolOk(
        await modernCall("tools/call", {
          name: "import_url",
          arguments: { url: `${DOWNSTREAM}/report.txt`, id: "np-import" },
        }),
      );
      expect(result.source).toBe(`${DOWNSTREAM}/report.txt`);
    });
    expect(calls).toHaveLength(1);
    const [call] = calls;
    if (!call) throw new Error("no outbound call");
    expect(call.method).toBe("GET");
    expect(call.url).toBe(`${DOWNSTREAM}/report.txt`);
    expect(call.body).toBe("");
    expectClean(call);
    await expectExchangedFor(call);
  });

  it("an allowed origin that is not a downstream resource gets no Authorization at all", async () => {
    const calls = await during(async () => {
      toolOk(await modernCall("tools/call", { name: "import_url", arguments: { url: `${PUBLIC}/page` } }));
    });
    expect(calls).toHaveLength(1);
    for (const call of calls) {
      expectClean(call);
      expect(call.headers.authorization).toBeUndefined();
    }
  });

  it("a redirect from the downstream resource to another origin drops the exchanged token", async () => {
    const calls = await during(async () => {
      const result = toolOk(
        await modernCall("tools/call", { name: "import_url", arguments: { url: `${DOWNSTREAM}/moved` } }),
      );
      expect(result.source).toBe(`${PUBLIC}/landing`);
    });
    expect(calls.map((call) => call.url)).toEqual([`${DOWNSTREAM}/moved`, `${PUBLIC}/landing`]);
    const [first, second] = calls;
    if (!first || !second) throw new Error("expected two hops");
    for (const call of calls) expectClean(call);
    await expectExchangedFor(first);
    expect(second.headers.authorization).toBeUndefined();
  });
});

describe("2025-11-25 (sessionful)", () => {
  it("initialize, tools and resources/read: only import_url goes out, with an exchanged token", async () => {
    const calls = await during(async () => {
      const response = await mcpFetch({ method: "POST", token, headers: CLIENT_HEADERS, body: initializeBody() });
      expect(response.status).toBe(200);
      expect(await rpcResult(response)).toMatchObject({ result: { protocolVersion: LEGACY_VERSION } });
      legacy.sessionId = response.headers.get("mcp-session-id") ?? "";
      expect(legacy.sessionId).not.toBe("");
      toolOk(await legacyCall("tools/call", { name: "whoami", arguments: {} }));
      toolOk(
        await legacyCall("tools/call", {
          name: "add_atoms",
          arguments: { atoms: [{ id: "np-2", text: "legacy era atom" }] },
        }),
      );
      toolOk(await legacyCall("tools/call", { name: "search", arguments: { query: "legacy" } }));
      const read = await legacyCall("resources/read", { uri: "atom://np-2" });
      expect(JSON.stringify(read)).toContain("legacy era atom");
      toolOk(await legacyCall("tools/call", { name: "get_document", arguments: { id: "np-doc" } }));
    });
    expect(calls).toEqual([]);

    const imports = await during(async () => {
      toolOk(
        await legacyCall("tools/call", {
          name: "import_url",
          arguments: { url: `${DOWNSTREAM}/legacy.txt`, id: "np-legacy", ingest: true },
        }),
      );
    });
    expect(imports).toHaveLength(1);
    const [call] = imports;
    if (!call) throw new Error("no outbound call");
    expectClean(call);
    await expectExchangedFor(call);
  });
});

describe("other endpoints", () => {
  it("POST /oauth/token and /v1/documents make no outbound request", async () => {
    const calls = await during(async () => {
      const exchanged = await tokenRequest(exchangeForm(token, { resource: DOWNSTREAM }), { headers: CLIENT_HEADERS });
      expect(exchanged.status, exchanged.text).toBe(200);
      const put = await exports.default.fetch(
        new Request(`${BASE}/v1/documents/np-http`, {
          method: "PUT",
          headers: { ...CLIENT_HEADERS, authorization: `Bearer ${token}`, "content-type": "text/plain" },
          body: "over http",
        }),
      );
      expect(put.status, await put.text()).toBe(201);
      const get = await exports.default.fetch(
        new Request(`${BASE}/v1/documents/np-http`, {
          headers: { ...CLIENT_HEADERS, authorization: `Bearer ${token}` },
        }),
      );
      expect(get.status).toBe(200);
      expect(await get.text()).toBe("over http");
    });
    expect(calls).toEqual([]);
  });

  it("every outbound request of this file was clean, and there were some", async () => {
    expect(outbound.length).toBeGreaterThanOrEqual(4);
    for (const call of outbound) expectClean(call);
    const toDownstream = outbound.filter((call) => call.url.startsWith(`${DOWNSTREAM}/`));
    expect(toDownstream.length).toBeGreaterThanOrEqual(3);
    for (const call of toDownstream) await expectExchangedFor(call);
    for (const call of outbound.filter((call) => !call.url.startsWith(`${DOWNSTREAM}/`))) {
      expect(call.headers.authorization).toBeUndefined();
    }
  });
});

describe("external token exchange (EXCHANGE_TOKEN_URL)", () => {
  it("the subject_token sent to the identity provider is this server's own assertion, not the client's token", async () => {
    const config = {
      ...loadConfig(env),
      externalExchange: {
        tokenUrl: "https://idp.test/oauth/token",
        clientId: "kb-server",
        clientSecret: "server-secret",
      },
    };
    const registry = env.TENANT_REGISTRY.get(env.TENANT_REGISTRY.idFromName("registry"));
    const sent: Request[] = [];
    const fetcher = (async (input: RequestInfo | URL, init?: RequestInit) => {
      sent.push(new Request(input, init));
      return Response.json({ access_token: "idp-issued-token", expires_in: 120, token_type: "Bearer" });
    }) as typeof fetch;
    const tokens = new ExchangedTokens(
      TENANT,
      config,
      { sign: (claims, ttl) => registry.signExchangeToken(claims, config.exchangeIssuer, ttl) },
      fetcher,
    );
    const identity: Identity = {
      tenant: TENANT,
      subject: "alice",
      scopes: ["mcp", "docs.read"],
      tokenId: jti,
      expiresAt: Math.floor(Date.now() / 1000) + 600,
      issuedAt: Math.floor(Date.now() / 1000),
    };
    const target = { resource: DOWNSTREAM, audience: AUDIENCE, scopes: ["docs.read", "docs.write"] };
    expect(await tokens.tokenFor(identity, target)).toBe("idp-issued-token");
    expect(await tokens.tokenFor(identity, target)).toBe("idp-issued-token");
    expect(sent).toHaveLength(1);
    const [request] = sent;
    if (!request) throw new Error("nothing sent");
    expect(request.method).toBe("POST");
    expect(request.url).toBe("https://idp.test/oauth/token");
    const body = new TextDecoder().decode(await request.arrayBuffer());
    for (const secret of secrets()) expect(body).not.toContain(secret);
    for (const [, value] of request.headers) for (const secret of secrets()) expect(value).not.toContain(secret);
    const form = new URLSearchParams(body);
    expect(form.get("grant_type")).toBe("urn:ietf:params:oauth:grant-type:token-exchange");
    expect(form.get("subject_token_type")).toBe("urn:ietf:params:oauth:token-type:jwt");
    expect(form.get("resource")).toBe(DOWNSTREAM);
    expect(form.get("audience")).toBe(AUDIENCE);
    expect(form.get("scope")).toBe("docs.read");
    const assertion = form.get("subject_token") ?? "";
    const { payload } = await jwtVerify(assertion, await publishedKeySet(), {
      issuer: EXCHANGE_ISSUER,
      audience: "https://idp.test/oauth/token",
      algorithms: ["ES256"],
    });
    expect(payload).toMatchObject({ sub: "alice", tenant_id: TENANT, act: { sub: EXCHANGE_ISSUER } });
    expect((payload.exp as number) - (payload.iat as number)).toBeLessThanOrEqual(60);
  });
});
