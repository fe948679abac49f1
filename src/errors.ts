/**
 * One base error with stable codes. Every error thrown on purpose in src/ is a KbError; the edge maps codes to
 * HTTP statuses and bodies in one place (src/http/error-response.ts). Messages are safe to show to a client:
 * they never contain a token, a key, a tenant other than the caller's, or verification internals.
 */
export const ERROR_CODES = {
  // 401: no usable credential. Details stay in logs; the client sees `invalid_token` only.
  ERR_TOKEN_MISSING: 401,
  ERR_TOKEN_IN_QUERY: 401,
  ERR_TOKEN_MALFORMED: 401,
  ERR_TOKEN_TOO_LARGE: 401,
  ERR_TOKEN_ALG: 401,
  ERR_TOKEN_KEY: 401,
  ERR_TOKEN_SIGNATURE: 401,
  ERR_TOKEN_EXPIRED: 401,
  ERR_TOKEN_NOT_YET_VALID: 401,
  ERR_TOKEN_CLAIMS: 401,
  ERR_TOKEN_TENANT: 401,
  ERR_TOKEN_SUBJECT: 401,
  /** A token for one role also names the other (tenant vs platform admin): roles are exclusive. */
  ERR_TOKEN_AUDIENCE: 401,
  ERR_TOKEN_WRONG_AUDIENCE: 401,
  /** Older than AUTH_MAX_TOKEN_AGE_S (from `iat`), whatever its `exp`. */
  ERR_TOKEN_TOO_OLD: 401,
  /** Revoked through the admin API (by `jti`, or by subject for tokens issued before a time). */
  ERR_TOKEN_REVOKED: 401,
  // 403: authenticated but not allowed.
  ERR_INSUFFICIENT_SCOPE: 403,
  ERR_ORIGIN_FORBIDDEN: 403,
  ERR_HOST_FORBIDDEN: 403,
  ERR_TENANT_MISMATCH: 403,
  // 4xx transport errors.
  ERR_PROTOCOL_VERSION: 400,
  ERR_BAD_REQUEST: 400,
  // A change the resource's current state does not allow (e.g. moving a tenant's vectors while it has atoms).
  ERR_CONFLICT: 409,
  // Tool-level errors: returned as JSON-RPC invalid-params / not-found inside a 200 response.
  ERR_INVALID_PARAMS: 400,
  ERR_ATOM_NOT_FOUND: 404,
  ERR_LIMIT: 400,
  ERR_UNSUPPORTED_TYPE: 415,
  ERR_RUN_REFUSED: 409,
  ERR_SESSION_REQUIRED: 400,
  ERR_SESSION_NOT_FOUND: 404,
  ERR_NOT_FOUND: 404,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_BODY_TOO_LARGE: 413,
  ERR_LENGTH_REQUIRED: 411,
  ERR_RANGE: 416,
  ERR_TENANT_OFFBOARDED: 403,
  // 429: a per-tenant quota (src/tenant/quotas.ts); answered with Retry-After.
  ERR_RATE_LIMITED: 429,
  ERR_QUOTA: 429,
  // Egress (tool-level errors of import_url and other outbound calls).
  ERR_EGRESS_DENIED: 403,
  ERR_EGRESS_TOO_LARGE: 413,
  ERR_EGRESS_TIMEOUT: 504,
  ERR_EGRESS_FAILED: 502,
  ERR_CONTENT_TYPE: 415,
  // Crypto: a ciphertext or wrapped key failed authentication (tampered, truncated, wrong key or context).
  ERR_DECRYPT: 500,
  ERR_KEY_UNAVAILABLE: 503,
  // 5xx: fail closed without detail.
  ERR_AUTH_UNAVAILABLE: 503,
  ERR_CONFIG: 503,
  ERR_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class KbError extends Error {
  override readonly name = "KbError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  get status(): number {
    return ERROR_CODES[this.code];
  }
}

/**
 * 401 for a genuine token (trusted issuer, valid signature) issued for another audience: the client is told which
 * audience this endpoint expects (public: it is the resource in the RFC 9728 metadata), since the usual cause is a
 * client configured for another host or port. Nothing is said about any other failed check.
 */
export class WrongAudienceError extends KbError {
  readonly expected: string;

  constructor(expected: string, options?: { cause?: unknown }) {
    super("ERR_TOKEN_WRONG_AUDIENCE", "token audience is not this resource", options);
    this.expected = expected;
  }
}

/** 403 insufficient_scope, naming the scopes the request needs (RFC 6750 section 3.1). */
export class InsufficientScopeError extends KbError {
  readonly scopes: readonly string[];

  constructor(scopes: readonly string[]) {
    super("ERR_INSUFFICIENT_SCOPE", `This request requires scope: ${scopes.join(" ")}`);
    this.scopes = scopes;
  }
}

/** 429: a per-tenant quota or request rate; `retryAfterS` becomes the Retry-After header. */
export class QuotaError extends KbError {
  readonly retryAfterS: number;

  constructor(code: "ERR_RATE_LIMITED" | "ERR_QUOTA", message: string, retryAfterS: number) {
    super(code, message);
    this.retryAfterS = retryAfterS;
  }
}

/** 405 with the methods the resource does serve (the `Allow` header must list exactly those). */
export class MethodNotAllowedError extends KbError {
  readonly allow: readonly string[];

  constructor(allow: readonly string[]) {
    super("ERR_METHOD_NOT_ALLOWED", "Method not allowed.");
    this.allow = allow;
  }
}

export function isKbError(value: unknown): value is KbError {
  return value instanceof KbError;
}

/**
 * The KbError an error stands for, or null. A KbError thrown inside a Durable Object reaches its caller over Workers
 * RPC as a plain Error that keeps its own properties (name, code, message, scopes) but not its class; this restores
 * it, so a refusal made in another object (ERR_TENANT_OFFBOARDED, ERR_UNSUPPORTED_TYPE, ...) stays that refusal
 * instead of becoming an internal error or an "interruption". Only our own codes are accepted.
 */
export function kbErrorOf(error: unknown): KbError | null {
  if (isKbError(error)) return error;
  if (!(error instanceof Error) || error.name !== "KbError") return null;
  const { code, scopes, retryAfterS, allow } = error as Error & {
    code?: unknown;
    scopes?: unknown;
    retryAfterS?: unknown;
    allow?: unknown;
  };
  if (typeof code !== "string" || !Object.hasOwn(ERROR_CODES, code)) return null;
  if ((code === "ERR_RATE_LIMITED" || code === "ERR_QUOTA") && typeof retryAfterS === "number") {
    return new QuotaError(code, error.message, retryAfterS);
  }
  if (code === "ERR_INSUFFICIENT_SCOPE" && Array.isArray(scopes) && scopes.every((s) => typeof s === "string")) {
    return new InsufficientScopeError(scopes);
  }
  if (code === "ERR_METHOD_NOT_ALLOWED" && Array.isArray(allow) && allow.every((m) => typeof m === "string")) {
    return new MethodNotAllowedError(allow);
  }
  return new KbError(code as ErrorCode, error.message, { cause: error });
}

/** Any thrown value as a KbError: its own (also across RPC), or ERR_INTERNAL with no detail for the client. */
export function toKbError(error: unknown): KbError {
  return kbErrorOf(error) ?? new KbError("ERR_INTERNAL", "internal error", { cause: error });
}
