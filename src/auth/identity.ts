/**
 * The verified identity of one request. It is built only by verifyAccessToken (src/auth/verify-token.ts) from a
 * token whose signature, issuer, audience and lifetime were checked; nothing else constructs it from client input.
 * It never carries the raw token (invariant: no token passthrough, no token at rest).
 */
export interface Identity {
  readonly tenant: string;
  readonly subject: string;
  readonly scopes: readonly string[];
  /** `jti` of the access token, when present (for audit and revocation; never the token itself). */
  readonly tokenId: string | null;
  /** When the access token stops being accepted, epoch seconds: `exp`, or `iat` + AUTH_MAX_TOKEN_AGE_S if earlier. */
  readonly expiresAt: number;
  /** `iat` of the access token, epoch seconds (required; revocation by subject compares it). */
  readonly issuedAt: number;
}

/** Tenant ids are lower-case DNS-label-like names: safe in storage keys, object names, R2 prefixes and logs. */
export const TENANT_PATTERN = /^[a-z0-9][a-z0-9-]{1,62}$/;

/**
 * Names no tenant may have (issue 11 item 6): names of platform objects and key domains ("registry" is the registry
 * object's name, "platform-signing" was the signing keys' wrapping label), route words, and values that read as
 * "no tenant" in logs. Refused at token verification and wherever a tenant id is checked (isTenantId). A constant
 * (never mutated, tenant-neutral).
 */
export const RESERVED_TENANTS: ReadonlySet<string> = new Set([
  "platform-signing",
  "platform",
  "registry",
  "admin",
  "administrator",
  "root",
  "system",
  "internal",
  "operator",
  "signing",
  "master",
  "well-known",
  "oauth",
  "jwks",
  "mcp",
  "healthz",
  "null",
  "undefined",
  "default",
]);

/** A valid tenant id: TENANT_PATTERN-shaped and not reserved. */
export function isTenantId(value: unknown): value is string {
  return typeof value === "string" && TENANT_PATTERN.test(value) && !RESERVED_TENANTS.has(value);
}

/** Subjects are opaque but bounded and printable (they appear in storage keys and log lines). */
export const SUBJECT_PATTERN = /^[\x21-\x7e]{1,255}$/;

/** `jti` values are printable and bounded: they are stored (revocations) and logged. */
export const JTI_PATTERN = /^[\x21-\x7e]{1,256}$/;

export function hasScopes(identity: Identity, required: readonly string[]): string[] {
  return required.filter((scope) => !identity.scopes.includes(scope));
}
