/**
 * RFC 8693 token exchange: request parsing and error responses (pure). The policy decisions (which downstream
 * resources a tenant may get tokens for, which scopes) are made by the tenant object (src/egress/egress-policy.ts).
 */
export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";
export const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
export const JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt";

export type OAuthErrorCode =
  | "invalid_request"
  | "invalid_grant"
  | "invalid_target"
  | "invalid_scope"
  | "unsupported_grant_type"
  | "invalid_client";

/** An OAuth error (RFC 6749 section 5.2 / RFC 8693 section 2.2.2). The description never carries secrets. */
export class OAuthError extends Error {
  readonly error: OAuthErrorCode;
  readonly status: number;

  constructor(error: OAuthErrorCode, description: string, status = 400) {
    super(description);
    this.error = error;
    this.status = status;
  }
}

export interface ExchangeRequest {
  readonly subjectToken: string;
  readonly subjectTokenType: string;
  /** `resource` (absolute URI, RFC 8707) and/or `audience` (logical name): together they name one target. */
  readonly resource: string | null;
  readonly audience: string | null;
  /** Requested scopes, or null for "the target's default, narrowed to the subject's". */
  readonly scope: string[] | null;
}

const SINGLE = ["grant_type", "subject_token", "subject_token_type", "requested_token_type", "scope"];

export function parseExchangeForm(form: URLSearchParams): ExchangeRequest {
  for (const name of SINGLE) {
    if (form.getAll(name).length > 1) throw new OAuthError("invalid_request", `${name} must appear once`);
  }
  const grantType = form.get("grant_type");
  if (!grantType) throw new OAuthError("invalid_request", "grant_type is required");
  if (grantType !== TOKEN_EXCHANGE_GRANT)
    throw new OAuthError("unsupported_grant_type", "only token exchange is supported");
  const subjectToken = form.get("subject_token");
  if (!subjectToken) throw new OAuthError("invalid_request", "subject_token is required");
  const subjectTokenType = form.get("subject_token_type");
  if (!subjectTokenType) throw new OAuthError("invalid_request", "subject_token_type is required");
  if (subjectTokenType !== ACCESS_TOKEN_TYPE && subjectTokenType !== JWT_TOKEN_TYPE) {
    throw new OAuthError("invalid_request", "unsupported subject_token_type");
  }
  if (form.has("actor_token") || form.has("actor_token_type")) {
    throw new OAuthError("invalid_request", "actor tokens are not supported");
  }
  const requested = form.get("requested_token_type");
  if (requested !== null && requested !== ACCESS_TOKEN_TYPE && requested !== JWT_TOKEN_TYPE) {
    throw new OAuthError("invalid_request", "unsupported requested_token_type");
  }
  const resources = form.getAll("resource");
  const audiences = form.getAll("audience");
  if (resources.length > 1 || audiences.length > 1) {
    throw new OAuthError("invalid_target", "one target (resource and/or audience) per exchange");
  }
  const resource = resources[0] ?? null;
  if (resource !== null && (!URL.canParse(resource) || new URL(resource).hash)) {
    throw new OAuthError("invalid_target", "resource must be an absolute URI without a fragment");
  }
  const audience = audiences[0] ?? null;
  if (resource === null && audience === null)
    throw new OAuthError("invalid_target", "resource or audience is required");
  const scopeText = form.get("scope");
  const scope = scopeText === null ? null : [...new Set(scopeText.split(" ").filter(Boolean))];
  if (scope !== null && scope.length === 0) throw new OAuthError("invalid_scope", "scope is empty");
  return { subjectToken, subjectTokenType, resource, audience, scope };
}

export function oauthErrorResponse(error: OAuthError, requestId: string): Response {
  return new Response(JSON.stringify({ error: error.error, error_description: error.message }), {
    status: error.status,
    headers: {
      "content-type": "application/json",
      "cache-control": "no-store",
      pragma: "no-cache",
      "x-request-id": requestId,
    },
  });
}
