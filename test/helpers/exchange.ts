import { env, exports } from "cloudflare:workers";
import { createLocalJWKSet, decodeJwt, type JSONWebKeySet } from "jose";
import { expect, vi } from "vitest";
import { mintAdminToken } from "./admin";
import { modernRequest } from "./clients";
import { mcpFetch } from "./mcp-http";
import { BASE, mintToken } from "./tokens";

/**
 * Helpers for the token-exchange and egress tests: the admin egress-policy call (PUT, which the shared admin helper
 * does not send), POST /oauth/token as a form, the published JWKS, and an outbound-fetch recorder that answers every
 * request the server makes from a handler (nothing ever reaches the network).
 */

export const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
export const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
export const EXCHANGE_ISSUER = BASE;

export interface PolicyInput {
  readonly origins: string[];
  readonly resources: { resource: string; audience?: string; scopes: string[] }[];
}

/** PUT /admin/tenants/:tenant/egress with an admin token; returns the status and parsed body. */
export async function putEgress(
  tenant: string,
  policy: PolicyInput | unknown,
): Promise<{ status: number; body: Record<string, unknown>; text: string }> {
  // Admin routes never create a tenant (404 for a name never served): the tenant's first request does.
  await servedOnce(tenant);
  const token = await mintAdminToken();
  const response = await exports.default.fetch(
    new Request(`${BASE}/admin/tenants/${tenant}/egress`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(policy),
    }),
  );
  const text = await response.text();
  return { status: response.status, body: parseJson(text), text };
}

/** Sets the policy and fails the test unless the admin API accepted it. */
export async function setEgress(tenant: string, policy: PolicyInput): Promise<void> {
  const answer = await putEgress(tenant, policy);
  expect(answer.status, answer.text).toBe(200);
}

export async function rotateSigningKey(): Promise<{ status: number; body: Record<string, unknown> }> {
  const token = await mintAdminToken();
  const response = await exports.default.fetch(
    new Request(`${BASE}/admin/signing-keys/rotate`, { method: "POST", headers: { authorization: `Bearer ${token}` } }),
  );
  return { status: response.status, body: parseJson(await response.text()) };
}

export interface TokenAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly body: Record<string, unknown>;
}

/**
 * POST /oauth/token. `fields` is sent form-encoded in order (an array allows duplicates); null values are left out.
 */
export async function tokenRequest(
  fields: Record<string, string | null> | [string, string][],
  init: { contentType?: string; headers?: Record<string, string> } = {},
): Promise<TokenAnswer> {
  const form = new URLSearchParams();
  const entries = Array.isArray(fields) ? fields : Object.entries(fields);
  for (const [name, value] of entries) if (value !== null) form.append(name, value);
  const response = await exports.default.fetch(
    new Request(`${BASE}/oauth/token`, {
      method: "POST",
      headers: { "content-type": init.contentType ?? "application/x-www-form-urlencoded", ...init.headers },
      body: form.toString(),
    }),
  );
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, body: parseJson(text) };
}

/** The usual exchange form for a subject token and one target. */
export function exchangeForm(
  subjectToken: string,
  target: { resource?: string; audience?: string; scope?: string } = {},
): Record<string, string | null> {
  return {
    grant_type: TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: ACCESS_TOKEN_TYPE,
    resource: target.resource ?? null,
    audience: target.audience ?? null,
    scope: target.scope ?? null,
  };
}

/** Exchanges and fails the test unless a token was issued; returns the access token. */
export async function exchangeOk(
  subjectToken: string,
  target: { resource?: string; audience?: string; scope?: string },
): Promise<string> {
  const answer = await tokenRequest(exchangeForm(subjectToken, target));
  expect(answer.status, answer.text).toBe(200);
  const token = answer.body.access_token;
  expect(typeof token).toBe("string");
  return token as string;
}

export async function publishedJwks(): Promise<JSONWebKeySet> {
  const response = await exports.default.fetch(new Request(`${BASE}/.well-known/jwks.json`));
  expect(response.status).toBe(200);
  return (await response.json()) as JSONWebKeySet;
}

export async function publishedKeySet() {
  return createLocalJWKSet(await publishedJwks());
}

/** An RFC 8693 / RFC 6749 error answer: the code, no-store, and nothing issued. */
export function expectOAuthError(answer: TokenAnswer, error: string): void {
  expect(answer.status, answer.text).toBe(400);
  expect(answer.headers.get("cache-control")).toBe("no-store");
  expect(answer.headers.get("content-type") ?? "").toMatch(/^application\/json/);
  expect(answer.body.error, answer.text).toBe(error);
  expect(answer.body).not.toHaveProperty("access_token");
  expect(answer.text).not.toContain("access_token");
  expect(typeof answer.body.error_description).toBe("string");
}

/** One outbound request as the server made it. */
export interface Outbound {
  readonly url: string;
  readonly method: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

export type Responder = (request: Request, init: RequestInit | undefined) => Response | Promise<Response>;

/**
 * Replaces globalThis.fetch (shared by the test isolate and the Durable Objects in this pool) with a recorder that
 * answers from `responder`; nothing reaches the network. `restore` puts the real fetch back.
 */
export function interceptFetch(responder: Responder): { calls: Outbound[]; restore: () => void } {
  const calls: Outbound[] = [];
  const spy = vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const request = new Request(input, init);
    const body = request.body ? new TextDecoder().decode(await request.clone().arrayBuffer()) : "";
    calls.push({ url: request.url, method: request.method, headers: Object.fromEntries(request.headers), body });
    return responder(request, init);
  });
  return { calls, restore: () => spy.mockRestore() };
}

/** The decoded payload of a compact JWT (no verification). */
export function claimsOf(token: string): Record<string, unknown> {
  return decodeJwt(token) as Record<string, unknown>;
}

export function bearerOf(headers: Record<string, string>): string | null {
  const match = /^Bearer (\S+)$/.exec(headers.authorization ?? "");
  return match?.[1] ?? null;
}

function parseJson(text: string): Record<string, unknown> {
  try {
    const parsed = JSON.parse(text) as unknown;
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

export function tenantStub(tenant: string) {
  return env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
}

/** Every R2 object key under a tenant's prefix (this test file's storage only). */
export async function tenantObjectKeys(tenant: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  for (;;) {
    const listed = await env.DOCS.list({ prefix: `t/${tenant}/`, limit: 1000, ...(cursor ? { cursor } : {}) });
    keys.push(...listed.objects.map((object) => object.key));
    if (!listed.truncated) return keys;
    cursor = listed.cursor;
  }
}

export async function r2Bytes(key: string): Promise<Uint8Array | null> {
  const object = await env.DOCS.get(key);
  return object ? new Uint8Array(await object.arrayBuffer()) : null;
}

/** Random bytes of any length (getRandomValues is limited to 65 536 bytes per call). */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65_536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65_536)));
  }
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((byte, index) => byte === b[index]);
}

/** Makes sure the tenant has served one request (an offboarded tenant's refusal is fine: it exists). */
async function servedOnce(tenant: string): Promise<void> {
  const token = await mintToken({ tenant, sub: "egress-setup" });
  const raw = modernRequest(1, "tools/call", { name: "whoami", arguments: {} });
  await (await mcpFetch({ method: "POST", token, headers: raw.headers, body: raw.body })).text();
}
