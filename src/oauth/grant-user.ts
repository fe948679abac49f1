import { type Identity, isTenantId, SUBJECT_PATTERN } from "../auth/identity";
import type { Config } from "../config";
import { KbError } from "../errors";

/**
 * How a grant of the built-in authorization server names its user, and how its access tokens become an Identity.
 * Pure: no I/O. Trust boundary: the tenant of a grant is fixed here, at authorization time, from a verified sign-in
 * (never from the client), and read back only from what the authorization server stored and validated.
 *
 * The library keys grants `grant:<userId>:<grantId>` and tokens `token:<userId>:<grantId>:<id>`, and its tokens are
 * `<userId>:<grantId>:<secret>`, so a userId may not contain ":". userId = `<tenant>/<subject digest>`: the tenant
 * leads every key of the tenant's grants and tokens (TENANT_PATTERN has no "/" or ":", so the prefix `grant:<tenant>/`
 * is exactly that tenant's grants), and the subject appears only as a SHA-256 digest bound to the tenant (base64url,
 * no ":"), so KV key names and the library's plaintext `userId` field never carry a subject in the clear (the
 * subject itself is inside the encrypted props).
 */
export interface GrantProps {
  readonly tenant: string;
  readonly subject: string;
}

export async function grantUserId(tenant: string, subject: string): Promise<string> {
  if (!isTenantId(tenant)) throw new KbError("ERR_BAD_REQUEST", "invalid tenant");
  if (!SUBJECT_PATTERN.test(subject)) throw new KbError("ERR_BAD_REQUEST", "invalid subject");
  const input = new TextEncoder().encode(`tenant-mcp-kb/oauth-user/v1\u0000${tenant}\u0000${subject}`);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", input));
  const encoded = btoa(String.fromCharCode(...digest))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");
  return `${tenant}/${encoded}`;
}

/** The KV key prefixes holding one tenant's grants and tokens. */
export function tenantKeyPrefixes(tenant: string): { readonly grants: string; readonly tokens: string } {
  if (!isTenantId(tenant)) throw new KbError("ERR_BAD_REQUEST", "invalid tenant");
  return { grants: `grant:${tenant}/`, tokens: `token:${tenant}/` };
}

/** The tenant a userId belongs to, or null when it is not one of ours. */
export function tenantOfUserId(userId: string): string | null {
  const slash = userId.indexOf("/");
  const tenant = slash > 0 ? userId.slice(0, slash) : "";
  return isTenantId(tenant) ? tenant : null;
}

/** Tokens of this authorization server are `<userId>:<grantId>:<secret>`; a compact JWS never contains ":". */
export function isAuthorizationServerToken(token: string): boolean {
  return /^[a-z0-9-]{2,63}\/[A-Za-z0-9_-]{43}:[A-Za-z0-9_-]{1,128}:[A-Za-z0-9_-]{1,256}$/.test(token);
}

/** What the library's validateToken reports about a valid access token (its ValidatedAccessToken). */
export interface ValidatedGrantToken {
  readonly props: unknown;
  readonly audience: string;
  readonly expiresAt: number;
  readonly scope: readonly string[];
  readonly userId: string;
}

/**
 * The Identity of a validated access token: the same shape as one from an external issuer's JWT, so everything
 * downstream (tenant routing, per-operation scopes, revocation by subject, expiry re-checks) is unchanged. The
 * props must agree with the userId the library keyed the grant under; any disagreement fails closed.
 */
export async function identityFromGrantToken(
  token: ValidatedGrantToken,
  config: Config,
  grantId: string,
): Promise<Identity> {
  const oauth = config.oauth;
  if (!oauth) throw new KbError("ERR_TOKEN_MALFORMED", "authorization server is off");
  if (token.audience !== config.resource) throw new KbError("ERR_TOKEN_AUDIENCE", "token is for another resource");
  const props = token.props as Partial<GrantProps> | null;
  const tenant = props?.tenant;
  const subject = props?.subject;
  if (!isTenantId(tenant) || typeof subject !== "string" || !SUBJECT_PATTERN.test(subject)) {
    throw new KbError("ERR_TOKEN_TENANT", "grant without a valid tenant or subject");
  }
  if ((await grantUserId(tenant, subject)) !== token.userId) {
    throw new KbError("ERR_TOKEN_TENANT", "grant props disagree with the grant's user");
  }
  if (!Number.isInteger(token.expiresAt)) throw new KbError("ERR_TOKEN_CLAIMS", "token without an expiry");
  // The library issues access tokens with a fixed lifetime, so the issue time follows from the expiry; never later
  // than now (a lowered OAUTH_ACCESS_TOKEN_TTL_S would otherwise date older tokens into the future, past a
  // revocation "by subject, issued before now").
  const issuedAt = Math.min(token.expiresAt - oauth.accessTokenTtlS, Math.floor(Date.now() / 1000));
  return {
    tenant,
    subject,
    scopes: [...new Set(token.scope)],
    tokenId: `grant:${grantId}`,
    expiresAt: Math.min(token.expiresAt, issuedAt + config.maxTokenAgeS),
    issuedAt,
  };
}
