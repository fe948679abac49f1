import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import { initializeBody, mcpFetch, rpcResult } from "./mcp-http";
import { BASE, RESOURCE } from "./tokens";

/** In-process driver of the built-in authorization server, posting its forms as a browser would. */
export const REDIRECT = "http://127.0.0.1:9999/callback";

export function asFetch(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(`${BASE}${path}`, { redirect: "manual", ...init }));
}

export function form(values: Record<string, string | string[]>): URLSearchParams {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    for (const item of Array.isArray(value) ? value : [value]) params.append(key, item);
  }
  return params;
}

export async function postForm(path: string, values: Record<string, string | string[]>, headers: HeadersInit = {}) {
  return asFetch(path, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: form(values).toString(),
  });
}

export async function registerClient(metadata: Record<string, unknown> = {}): Promise<string> {
  const response = await asFetch("/register", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      client_name: "Test Client",
      redirect_uris: [REDIRECT],
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"],
      ...metadata,
    }),
  });
  expect(response.status).toBe(201);
  const body = (await response.json()) as { client_id: string };
  return body.client_id;
}

export interface Pkce {
  readonly verifier: string;
  readonly challenge: string;
}

export async function pkce(): Promise<Pkce> {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  return { verifier, challenge: b64url(digest) };
}

function b64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}

export interface AuthorizeOptions {
  readonly clientId: string;
  readonly pkce: Pkce;
  readonly scope?: string;
  readonly state?: string;
  readonly redirectUri?: string;
  readonly resource?: string;
}

export function authorizeQuery(options: AuthorizeOptions): string {
  return new URLSearchParams({
    response_type: "code",
    client_id: options.clientId,
    redirect_uri: options.redirectUri ?? REDIRECT,
    scope: options.scope ?? "mcp kb.read",
    state: options.state ?? "state-123",
    code_challenge: options.pkce.challenge,
    code_challenge_method: "S256",
    resource: options.resource ?? RESOURCE,
  }).toString();
}

/** The consent page reached after the dev sign-in, with its handle and binding cookie. */
export async function signIn(query: string, tenant: string, subject: string) {
  const page = await postForm(`/authorize?${query}`, { step: "signin", tenant, subject });
  const html = await page.text();
  const handle = /name="handle" value="([^"]+)"/.exec(html)?.[1] ?? "";
  const cookie = (page.headers.getSetCookie?.() ?? [])
    .map((line) => line.split(";")[0])
    .filter(Boolean)
    .join("; ");
  return { status: page.status, html, handle, cookie, headers: page.headers };
}

/** Full authorization: sign-in, Allow with the given scopes; returns the redirect's code and state. */
export async function authorize(options: AuthorizeOptions & { tenant: string; subject?: string; grant?: string[] }) {
  const query = authorizeQuery(options);
  const consent = await signIn(query, options.tenant, options.subject ?? "alice");
  expect(consent.status).toBe(200);
  const decision = await postForm(
    "/authorize",
    {
      step: "consent",
      handle: consent.handle,
      decision: "approve",
      scope: options.grant ?? (options.scope ?? "mcp kb.read").split(" "),
    },
    { cookie: consent.cookie },
  );
  expect(decision.status).toBe(302);
  const location = new URL(decision.headers.get("location") ?? "");
  return { location, code: location.searchParams.get("code") ?? "", state: location.searchParams.get("state") };
}

export async function redeem(
  values: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await postForm("/token", values);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

export async function tokensFor(options: AuthorizeOptions & { tenant: string; subject?: string; grant?: string[] }) {
  const { code } = await authorize(options);
  const { status, body } = await redeem({
    grant_type: "authorization_code",
    code,
    redirect_uri: options.redirectUri ?? REDIRECT,
    client_id: options.clientId,
    code_verifier: options.pkce.verifier,
    resource: RESOURCE,
  });
  expect(status).toBe(200);
  return body as { access_token: string; refresh_token: string; scope: string; expires_in: number };
}

/** whoami through /mcp with a bearer token: the identity the server derived, or the HTTP status. */
export async function whoami(token: string): Promise<{ status: number; identity?: Record<string, unknown> }> {
  const init = await mcpFetch({ method: "POST", token, body: initializeBody() });
  if (init.status !== 200) return { status: init.status };
  const sid = init.headers.get("mcp-session-id") ?? "";
  const call = await mcpFetch({
    method: "POST",
    token,
    headers: { "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "whoami", arguments: {} } }),
  });
  if (call.status !== 200) return { status: call.status };
  const result = (await rpcResult(call)) as { result?: { structuredContent?: Record<string, unknown> } };
  return { status: 200, identity: result.result?.structuredContent ?? {} };
}

/** KV keys under a prefix (grants `grant:<tenant>/`, tokens `token:<tenant>/`). */
export async function kvKeys(prefix: string): Promise<string[]> {
  const listing = await env.OAUTH_KV.list({ prefix });
  return listing.keys.map((key) => key.name);
}
