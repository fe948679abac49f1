import type { OAuthHelpers } from "@cloudflare/workers-oauth-provider";
import type { Context } from "hono";
import { isTenantId, SUBJECT_PATTERN } from "../auth/identity";
import { claimAtPath } from "../auth/verify-token";
import type { Config, UpstreamOidcConfig } from "../config";
import { KbError } from "../errors";
import type { AppEnv } from "../http/context";
import { log } from "../log";
import { AUTHORIZE_PATH } from "./authorization-server";
import type { GrantProps } from "./grant-user";
import { openRecord, sealRecord } from "./sealed-record";
import { authorizationUrl, discover, redeemCode, verifiedEmailDomain, verifyIdToken } from "./upstream-oidc";

export const UPSTREAM_START_PATH = "/authorize/upstream";
export const UPSTREAM_CALLBACK_PATH = "/authorize/callback";
const UPSTREAM_TTL_S = 600;
const BINDING_COOKIE = "__Host-kb-upstream";

interface PendingUpstream {
  /** The client's authorization request (query string of /authorize), re-validated by the library at the callback. */
  readonly query: string;
  readonly nonce: string;
  readonly verifier: string;
  /** SHA-256 of the browser binding cookie: only the browser that started the sign-in can finish it. */
  readonly binding: string;
}

/** The outcome of the upstream sign-in: the identity to show on the consent page, or why there is none. */
export type UpstreamOutcome =
  | {
      readonly kind: "signed-in";
      readonly request: Awaited<ReturnType<OAuthHelpers["parseAuthRequest"]>>;
      readonly who: GrantProps;
    }
  | { readonly kind: "no-tenant" };

/**
 * GET /authorize/upstream?<the client's authorization query>: the request is validated by the library first, then
 * the browser goes to the operator's OpenID Connect provider (code + PKCE S256 + nonce; state bound to this browser
 * by a __Host- cookie and kept server-side in KV for ten minutes, single use).
 */
export async function startUpstream(c: Context<AppEnv>, oauth: OAuthHelpers, config: Config): Promise<Response> {
  const upstream = requireUpstream(config);
  const url = new URL(c.req.url);
  await oauth.parseAuthRequest(new Request(`${url.origin}${AUTHORIZE_PATH}${url.search}`));
  const metadata = await discover(upstream);
  const state = randomToken();
  const nonce = randomToken();
  const verifier = randomToken();
  const cookie = randomToken();
  const pending: PendingUpstream = { query: url.search, nonce, verifier, binding: await sha256(cookie) };
  const sealed = await sealRecord(state, PENDING_PURPOSE, pending);
  await c.env.OAUTH_KV.put(await pendingKey(state), sealed, { expirationTtl: UPSTREAM_TTL_S });
  const location = authorizationUrl(metadata, upstream, {
    redirectUri: `${config.resourceOrigin}${UPSTREAM_CALLBACK_PATH}`,
    state,
    nonce,
    challenge: await s256(verifier),
  });
  const headers = new Headers({ location, "cache-control": "no-store" });
  // SameSite=Lax: the callback is a top-level GET navigation from the provider, which Lax cookies accompany.
  headers.append(
    "set-cookie",
    `${BINDING_COOKIE}=${cookie}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=${UPSTREAM_TTL_S}`,
  );
  return new Response(null, { status: 302, headers });
}

/**
 * GET /authorize/callback?code&state: single-use state, browser binding, code redemption, ID token verification
 * (iss, aud, signature, exp, nonce), then the tenant: from OAUTH_UPSTREAM_TENANT_CLAIM, or from the verified email's
 * domain through the platform's mapping (admin API). No tenant: a refusal, and no grant.
 */
export async function finishUpstream(
  c: Context<AppEnv>,
  oauth: OAuthHelpers,
  config: Config,
): Promise<UpstreamOutcome> {
  const upstream = requireUpstream(config);
  const url = new URL(c.req.url);
  const state = url.searchParams.get("state") ?? "";
  const key = await pendingKey(state);
  const pending = state
    ? await openRecord<PendingUpstream>(state, PENDING_PURPOSE, await c.env.OAUTH_KV.get(key))
    : null;
  if (!pending) throw new KbError("ERR_BAD_REQUEST", "This sign-in expired or was already used; start again.");
  // The browser binding is checked before the state is spent: someone who learnt a state value cannot burn it.
  const cookie = cookieValue(c.req.header("cookie") ?? "", BINDING_COOKIE);
  if (!cookie || (await sha256(cookie)) !== pending.binding) {
    throw new KbError("ERR_BAD_REQUEST", "This sign-in was started in another browser; start again.");
  }
  await c.env.OAUTH_KV.delete(key);
  if (url.searchParams.has("error")) throw new KbError("ERR_BAD_REQUEST", "The identity provider refused the sign-in.");
  const code = url.searchParams.get("code");
  if (!code) throw new KbError("ERR_BAD_REQUEST", "The identity provider returned no code.");
  const request = await oauth.parseAuthRequest(new Request(`${url.origin}${AUTHORIZE_PATH}${pending.query}`));
  const metadata = await discover(upstream);
  const redirectUri = `${config.resourceOrigin}${UPSTREAM_CALLBACK_PATH}`;
  const idToken = await redeemCode(metadata, upstream, { code, redirectUri, verifier: pending.verifier });
  const claims = await verifyIdToken(idToken, metadata, upstream, pending.nonce);
  const tenant = await tenantOf(c, upstream, claims);
  if (!tenant) {
    log("warn", { event: "oauth.upstream.no-tenant", requestId: c.var.requestId, code: "ERR_TOKEN_TENANT" });
    return { kind: "no-tenant" };
  }
  if (!SUBJECT_PATTERN.test(claims.sub)) throw new KbError("ERR_TOKEN_SUBJECT", "unusable subject from the provider");
  return { kind: "signed-in", request, who: { tenant, subject: claims.sub } };
}

async function tenantOf(c: Context<AppEnv>, upstream: UpstreamOidcConfig, claims: Record<string, unknown>) {
  if (upstream.tenantClaim) {
    const value = claimAtPath(claims, upstream.tenantClaim);
    return isTenantId(value) ? value : null;
  }
  const domain = verifiedEmailDomain(claims);
  if (!domain) return null;
  const tenant = await c.env.TENANT_REGISTRY.get(c.env.TENANT_REGISTRY.idFromName("registry")).emailDomainTenant(
    domain,
  );
  return isTenantId(tenant) ? tenant : null;
}

function requireUpstream(config: Config): UpstreamOidcConfig {
  const upstream = config.oauth?.upstream;
  if (!upstream) throw new KbError("ERR_NOT_FOUND", "No identity provider is configured.");
  return upstream;
}

function cookieValue(header: string, name: string): string | null {
  for (const part of header.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return rest.join("=");
  }
  return null;
}

function randomToken(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

async function s256(value: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(value))));
}

async function sha256(value: string): Promise<string> {
  return s256(value);
}

const PENDING_PURPOSE = "tenant-mcp-kb oauth upstream v1";

async function pendingKey(state: string): Promise<string> {
  return `upstream:${await sha256(`state:${state}`)}`;
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
}
