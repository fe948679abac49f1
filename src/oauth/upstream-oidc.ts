import { createRemoteJWKSet, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from "jose";
import { ASYMMETRIC_ALGORITHMS, type UpstreamOidcConfig } from "../config";
import { KbError } from "../errors";

/**
 * The operator's OpenID Connect provider as the identity step of the built-in authorization server: discovery,
 * the authorization request (code + PKCE S256 + nonce), the code redemption and the ID token verification (jose:
 * signature from the provider's JWKS, iss, aud = our client id, exp, iat, nonce). No tenant logic here.
 *
 * Tenant-neutral caches (server configuration only, identical for every tenant): the provider's discovery document
 * and its key set, per issuer, bounded.
 */
export interface ProviderMetadata {
  readonly issuer: string;
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  readonly jwksUri: string;
}

const DISCOVERY_TTL_MS = 10 * 60_000;
const TIMEOUT_MS = 10_000;
// Tenant-neutral caches: the operator's provider metadata and its key set, keyed by the configured issuer (server
// configuration only, never a request or a tenant), identical for every tenant; bounded by MAX_ENTRIES.
const discovered = new Map<string, { readonly at: number; readonly metadata: ProviderMetadata }>();
const keySets = new Map<string, JWTVerifyGetKey>();
const MAX_ENTRIES = 8;

export async function discover(upstream: UpstreamOidcConfig, now = Date.now()): Promise<ProviderMetadata> {
  const cached = discovered.get(upstream.issuer);
  if (cached && now - cached.at < DISCOVERY_TTL_MS) return cached.metadata;
  const url = `${upstream.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const response = await providerFetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) throw new KbError("ERR_AUTH_UNAVAILABLE", "identity provider discovery failed");
  const body = (await response.json().catch(() => null)) as Record<string, unknown> | null;
  if (body === null || typeof body !== "object") {
    throw new KbError("ERR_AUTH_UNAVAILABLE", "identity provider metadata is not JSON");
  }
  const strings = ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"].map((key) => body[key]);
  if (strings.some((value) => typeof value !== "string") || body.issuer !== upstream.issuer) {
    throw new KbError("ERR_AUTH_UNAVAILABLE", "identity provider metadata is invalid or names another issuer");
  }
  const [issuer, authorizationEndpoint, tokenEndpoint, jwksUri] = strings as string[];
  const metadata = { issuer, authorizationEndpoint, tokenEndpoint, jwksUri } as ProviderMetadata;
  if (discovered.size >= MAX_ENTRIES) discovered.clear();
  discovered.set(upstream.issuer, { at: now, metadata });
  return metadata;
}

/** A request to the provider; a network failure or time-out is 503 ERR_AUTH_UNAVAILABLE, not an internal error. */
async function providerFetch(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {
    throw new KbError("ERR_AUTH_UNAVAILABLE", "identity provider unreachable", { cause: error });
  }
}

export function authorizationUrl(
  metadata: ProviderMetadata,
  upstream: UpstreamOidcConfig,
  params: { readonly redirectUri: string; readonly state: string; readonly nonce: string; readonly challenge: string },
): string {
  const url = new URL(metadata.authorizationEndpoint);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("client_id", upstream.clientId);
  url.searchParams.set("redirect_uri", params.redirectUri);
  url.searchParams.set("scope", upstream.scopes);
  url.searchParams.set("state", params.state);
  url.searchParams.set("nonce", params.nonce);
  url.searchParams.set("code_challenge", params.challenge);
  url.searchParams.set("code_challenge_method", "S256");
  return url.toString();
}

/** Redeems the upstream code (client_secret_basic when a secret is configured) and returns the ID token. */
export async function redeemCode(
  metadata: ProviderMetadata,
  upstream: UpstreamOidcConfig,
  params: { readonly code: string; readonly redirectUri: string; readonly verifier: string },
): Promise<string> {
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    code: params.code,
    redirect_uri: params.redirectUri,
    code_verifier: params.verifier,
  });
  const headers = new Headers({ "content-type": "application/x-www-form-urlencoded", accept: "application/json" });
  if (upstream.clientSecret) {
    const pair = `${encodeURIComponent(upstream.clientId)}:${encodeURIComponent(upstream.clientSecret)}`;
    headers.set("authorization", `Basic ${btoa(pair)}`);
  } else {
    body.set("client_id", upstream.clientId);
  }
  const response = await providerFetch(metadata.tokenEndpoint, { method: "POST", headers, body });
  const answer = (await response.json().catch(() => ({}))) as { id_token?: unknown };
  if (!response.ok || typeof answer.id_token !== "string") {
    throw new KbError("ERR_TOKEN_CLAIMS", "the identity provider did not issue an ID token");
  }
  return answer.id_token;
}

/** Verifies an ID token: signature (provider's JWKS, asymmetric algorithms only), iss, aud, exp, iat, nonce. */
export async function verifyIdToken(
  idToken: string,
  metadata: ProviderMetadata,
  upstream: UpstreamOidcConfig,
  nonce: string,
  keys: JWTVerifyGetKey = remoteKeys(metadata.jwksUri),
): Promise<JWTPayload & { sub: string }> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(idToken, keys, {
      issuer: upstream.issuer,
      audience: upstream.clientId,
      algorithms: [...ASYMMETRIC_ALGORITHMS],
      requiredClaims: ["sub", "exp", "iat", "nonce"],
      clockTolerance: 30,
      maxTokenAge: 600,
    }));
  } catch (error) {
    throw new KbError("ERR_TOKEN_SIGNATURE", "ID token verification failed", { cause: error });
  }
  if (payload.nonce !== nonce) throw new KbError("ERR_TOKEN_CLAIMS", "ID token nonce mismatch");
  if (typeof payload.sub !== "string") throw new KbError("ERR_TOKEN_SUBJECT", "ID token without a subject");
  return payload as JWTPayload & { sub: string };
}

function remoteKeys(jwksUri: string): JWTVerifyGetKey {
  const cached = keySets.get(jwksUri);
  if (cached) return cached;
  const keys = createRemoteJWKSet(new URL(jwksUri), { cooldownDuration: 30_000, timeoutDuration: TIMEOUT_MS });
  if (keySets.size >= MAX_ENTRIES) keySets.clear();
  keySets.set(jwksUri, keys);
  return keys;
}

/** The verified email's domain (lower case), only when the provider says the email is verified. */
export function verifiedEmailDomain(claims: JWTPayload): string | null {
  const email = claims.email;
  if (claims.email_verified !== true || typeof email !== "string") return null;
  const at = email.lastIndexOf("@");
  const raw = at > 0 ? email.slice(at + 1) : "";
  // Printable ASCII before lower-casing: toLowerCase folds look-alikes (the Kelvin sign K becomes k).
  if (!/^[\x21-\x7e]+$/.test(raw)) return null;
  const domain = raw.toLowerCase();
  return EMAIL_DOMAIN.test(domain) ? domain : null;
}

/** Lower-case DNS names: what the email-domain mapping (admin API) accepts as keys. */
export const EMAIL_DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;
