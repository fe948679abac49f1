import {
  type CompactJWSHeaderParameters,
  compactVerify,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from "jose";
import { type Config, MAX_TOKEN_BYTES } from "../config";
import { type ErrorCode, InsufficientScopeError, KbError, WrongAudienceError } from "../errors";
import { type Identity, isTenantId, JTI_PATTERN, SUBJECT_PATTERN } from "./identity";

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const KID_PATTERN = /^[\x21-\x7e]{1,256}$/;
const SCOPE_PATTERN = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/;
const MAX_SCOPES = 64;

export interface VerifyOptions {
  /** Clock for tests; defaults to now. */
  readonly currentDate?: Date;
}

/**
 * Verifies a bearer access token and derives the identity from it. Trust boundary: this is the only function
 * that turns client input into a tenant. It pins the algorithm allow-list (asymmetric only), issuer, audience
 * (this server's canonical resource URL, RFC 8707), lifetime and optional `typ`; key material comes only from the
 * configured JWKS, never from the token (`jku`, `x5u`, `jwk` and `x5c` headers are ignored). Every failure is a
 * KbError whose code says why (for logs and tests); the HTTP layer shows clients only `invalid_token`.
 */
export async function verifyAccessToken(
  token: string,
  config: Config,
  keys: JWTVerifyGetKey,
  options: VerifyOptions = {},
): Promise<Identity> {
  const payload = await verifyJwt(token, config, keys, config.resource, options);
  // Exclusive audiences: a tenant token may not also be an admin token (issue 11 item 3).
  if (audiences(payload).includes(config.adminAudience)) {
    throw fail("ERR_TOKEN_AUDIENCE", "tenant token also names the admin audience");
  }
  const tenant = claimAtPath(payload, config.tenantClaim);
  if (!isTenantId(tenant)) throw fail("ERR_TOKEN_TENANT", "missing, invalid or reserved tenant claim");
  const identity = { ...principal(payload, config), tenant };
  if (identity.scopes.includes(ADMIN_SCOPE)) throw fail("ERR_TOKEN_AUDIENCE", "tenant token carries the admin scope");
  return identity;
}

/** A platform operator verified for the admin API: a token for the admin audience with the admin scope. */
export interface AdminIdentity {
  readonly subject: string;
  readonly scopes: readonly string[];
  readonly tokenId: string | null;
  readonly expiresAt: number;
  readonly issuedAt: number;
}

export const ADMIN_SCOPE = "platform:admin";

/**
 * Verifies a platform-admin token: same issuer, keys and algorithm policy as tenant tokens, but the audience is
 * the admin API's (ADMIN_AUDIENCE) and the `platform:admin` scope is required. The roles are exclusive: an admin
 * token whose `aud` also names the MCP resource, or that carries a tenant claim, is refused here; a tenant token
 * whose `aud` also names the admin audience, or that carries `platform:admin`, is refused by verifyAccessToken.
 */
export async function verifyAdminToken(
  token: string,
  config: Config,
  keys: JWTVerifyGetKey,
  options: VerifyOptions = {},
): Promise<AdminIdentity> {
  const payload = await verifyJwt(token, config, keys, config.adminAudience, options);
  // Exclusive audiences: an admin token names no tenant and is not also an access token for /mcp.
  if (audiences(payload).includes(config.resource)) {
    throw fail("ERR_TOKEN_AUDIENCE", "admin token also names the MCP resource");
  }
  if (claimAtPath(payload, config.tenantClaim) !== undefined) {
    throw fail("ERR_TOKEN_AUDIENCE", "admin token carries a tenant claim");
  }
  const admin = principal(payload, config);
  if (!admin.scopes.includes(ADMIN_SCOPE)) throw new InsufficientScopeError([ADMIN_SCOPE]);
  return admin;
}

async function verifyJwt(
  token: string,
  config: Config,
  keys: JWTVerifyGetKey,
  audience: string,
  options: VerifyOptions,
): Promise<JWTPayload> {
  checkJwsPolicy(token, config.algorithms);
  try {
    // jwtVerify runs the same compact JWS verification as verifyJwsSignature (jose's compactVerify), then the claims.
    const { payload } = await jwtVerify(token, keys, {
      issuer: config.issuer,
      audience,
      algorithms: [...config.algorithms],
      clockTolerance: config.clockToleranceS,
      // Token age (issue 11 item 4): jose then requires `iat`, refuses an age above the maximum (ERR_TOKEN_TOO_OLD)
      // and an `iat` in the future beyond the tolerance (ERR_TOKEN_NOT_YET_VALID).
      maxTokenAge: config.maxTokenAgeS,
      requiredClaims: ["exp", "sub", "iat"],
      ...(config.tokenTyp ? { typ: config.tokenTyp } : {}),
      ...(options.currentDate ? { currentDate: options.currentDate } : {}),
    });
    return payload;
  } catch (error) {
    // jose checks claims only after the signature, so this is said only to holders of a genuine token.
    if (error instanceof errors.JWTClaimValidationFailed && error.claim === "aud" && error.reason === "check_failed") {
      throw new WrongAudienceError(audience, { cause: error });
    }
    throw mapJoseError(error, config.jwks.kind === "remote");
  }
}

function principal(payload: JWTPayload, config: Config): Omit<Identity, "tenant"> {
  if (typeof payload.sub !== "string" || !SUBJECT_PATTERN.test(payload.sub)) {
    throw fail("ERR_TOKEN_SUBJECT", "missing or invalid subject");
  }
  if (typeof payload.exp !== "number") throw fail("ERR_TOKEN_CLAIMS", "missing exp");
  if (typeof payload.iat !== "number") throw fail("ERR_TOKEN_CLAIMS", "missing iat");
  const jti = payload.jti;
  if (jti !== undefined && (typeof jti !== "string" || !JTI_PATTERN.test(jti))) {
    throw fail("ERR_TOKEN_CLAIMS", "invalid jti");
  }
  return {
    subject: payload.sub,
    scopes: parseScopes(payload),
    tokenId: jti ?? null,
    // The tenant object re-checks this bound, so the age limit holds there too (e.g. for a long SSE stream).
    expiresAt: Math.min(payload.exp, payload.iat + config.maxTokenAgeS),
    issuedAt: payload.iat,
  };
}

/**
 * The JWS layer of the verifier on its own: the header policy (checkJwsPolicy) and the signature, nothing about
 * claims. verifyAccessToken applies the same policy and the same jose verification; this entry point exists so that
 * generic JWS test vectors (Wycheproof), whose payloads are not JWT claim sets, exercise that layer directly.
 */
export async function verifyJwsSignature(
  token: string,
  algorithms: readonly string[],
  keys: JWTVerifyGetKey,
  options: { readonly remoteKeys?: boolean } = {},
): Promise<{ readonly payload: Uint8Array; readonly protectedHeader: CompactJWSHeaderParameters }> {
  checkJwsPolicy(token, algorithms);
  try {
    const { payload, protectedHeader } = await compactVerify(token, keys, { algorithms: [...algorithms] });
    return { payload, protectedHeader };
  } catch (error) {
    throw mapJoseError(error, options.remoteKeys ?? false);
  }
}

/**
 * Checks what can be checked before any key is looked up: size, compact serialization (JSON serialization and
 * unencoded payloads are refused), the algorithm allow-list, a sane `kid`, and no `crit`. Throws a KbError.
 */
export function checkJwsPolicy(token: string, algorithms: readonly string[]): void {
  if (!token) throw fail("ERR_TOKEN_MISSING", "no access token");
  if (token.length > MAX_TOKEN_BYTES) throw fail("ERR_TOKEN_TOO_LARGE", "access token too large");
  if (!COMPACT_JWS.test(token)) throw fail("ERR_TOKEN_MALFORMED", "not a compact JWS");

  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw fail("ERR_TOKEN_MALFORMED", "unreadable JWS header");
  }
  if (typeof header.alg !== "string" || !algorithms.includes(header.alg)) {
    throw fail("ERR_TOKEN_ALG", "algorithm not allowed");
  }
  if (header.kid !== undefined && (typeof header.kid !== "string" || !KID_PATTERN.test(header.kid))) {
    throw fail("ERR_TOKEN_KEY", "unusable key id");
  }
  // No JWS extensions are understood here, so any `crit` makes the token unverifiable (RFC 7515 section 4.1.11).
  if (header.crit !== undefined) throw fail("ERR_TOKEN_MALFORMED", "critical header extensions are not supported");
}

/** Extracts the bearer token from the Authorization header only (RFC 6750 section 2.1). */
export function bearerFromRequest(request: Request): string {
  const url = new URL(request.url);
  // Tokens in URLs end up in logs and caches; a request that carries one is refused even if a header is present.
  if (url.searchParams.has("access_token")) throw fail("ERR_TOKEN_IN_QUERY", "access token in the query string");
  const header = request.headers.get("authorization");
  if (!header) throw fail("ERR_TOKEN_MISSING", "no access token");
  const match = /^Bearer ([^\s]+)$/i.exec(header.trim());
  if (!match?.[1]) throw fail("ERR_TOKEN_MALFORMED", "authorization header is not a bearer token");
  return match[1];
}

/** The `aud` claim as a list (jose has already checked it is a string or an array of strings). */
function audiences(payload: JWTPayload): readonly string[] {
  const aud = payload.aud;
  return typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud : [];
}

/** A claim at a dotted path of own properties (no arrays, no prototype): the tenant claim, upstream claims. */
export function claimAtPath(payload: JWTPayload, path: readonly string[]): unknown {
  let value: unknown = payload;
  for (const part of path) {
    if (typeof value !== "object" || value === null || Array.isArray(value) || !Object.hasOwn(value, part)) {
      return undefined;
    }
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function parseScopes(payload: JWTPayload): string[] {
  const raw = payload.scope ?? payload.scp;
  let scopes: unknown[];
  if (raw === undefined) scopes = [];
  else if (typeof raw === "string") scopes = raw.split(" ").filter(Boolean);
  else if (Array.isArray(raw)) scopes = raw;
  else throw fail("ERR_TOKEN_CLAIMS", "invalid scope claim");
  if (scopes.length > MAX_SCOPES || scopes.some((scope) => typeof scope !== "string" || !SCOPE_PATTERN.test(scope))) {
    throw fail("ERR_TOKEN_CLAIMS", "invalid scope claim");
  }
  return [...new Set(scopes as string[])];
}

function mapJoseError(error: unknown, remoteKeys: boolean): KbError {
  if (error instanceof KbError) return error;
  if (!(error instanceof errors.JOSEError)) {
    // Remote key sets fail with network errors; never treat that as "valid", never leak it.
    return remoteKeys
      ? fail("ERR_AUTH_UNAVAILABLE", "key set unavailable", error)
      : fail("ERR_TOKEN_MALFORMED", "token could not be verified", error);
  }
  switch (error.code) {
    case "ERR_JWT_EXPIRED":
      // jose reports a token older than maxTokenAge as expired on the `iat` claim.
      if ((error as errors.JWTExpired).claim === "iat") return fail("ERR_TOKEN_TOO_OLD", "token too old", error);
      return fail("ERR_TOKEN_EXPIRED", "token expired", error);
    case "ERR_JWT_CLAIM_VALIDATION_FAILED": {
      const { claim, reason } = error as errors.JWTClaimValidationFailed;
      // Only a failed time check means "not yet valid"; an `nbf` that is not a number is a malformed claim.
      if ((claim === "nbf" || claim === "iat") && reason === "check_failed") {
        return fail("ERR_TOKEN_NOT_YET_VALID", "token not yet valid", error);
      }
      return fail("ERR_TOKEN_CLAIMS", `claim check failed: ${claim}`, error);
    }
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return fail("ERR_TOKEN_ALG", "algorithm not allowed", error);
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
    case "ERR_JWKS_INVALID":
      return fail("ERR_TOKEN_KEY", "no unique verification key", error);
    case "ERR_JWKS_TIMEOUT":
      return fail("ERR_AUTH_UNAVAILABLE", "key set unavailable", error);
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return fail("ERR_TOKEN_SIGNATURE", "signature verification failed", error);
    default:
      return fail("ERR_TOKEN_MALFORMED", "token could not be verified", error);
  }
}

function fail(code: ErrorCode, message: string, cause?: unknown): KbError {
  return new KbError(code, message, cause === undefined ? undefined : { cause });
}
