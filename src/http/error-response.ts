import type { Config } from "../config";
import {
  type ErrorCode,
  InsufficientScopeError,
  type KbError,
  MethodNotAllowedError,
  QuotaError,
  WrongAudienceError,
} from "../errors";

/** The one place that turns an error into an HTTP response. Bodies never carry stack traces or secrets. */
export interface ErrorContext {
  readonly requestId: string;
  readonly config: Config | null;
  /** Whether the client sent a token (RFC 6750: `error="invalid_token"` only then). */
  readonly tokenSent: boolean;
  /** Scopes the caller's token already has (for the step-up challenge), when a token was verified. */
  readonly heldScopes?: readonly string[];
}

export const PROTECTED_RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource";

export function resourceMetadataUrl(config: Config): string {
  const resource = new URL(config.resource);
  const path = resource.pathname === "/" ? "" : resource.pathname;
  return `${resource.origin}${PROTECTED_RESOURCE_METADATA_PATH}${path}`;
}

const JSON_RPC_CODES: Partial<Record<ErrorCode, number>> = {
  ERR_PROTOCOL_VERSION: -32602,
  ERR_BAD_REQUEST: -32600,
  ERR_SESSION_REQUIRED: -32600,
  ERR_CONTENT_TYPE: -32600,
  ERR_BODY_TOO_LARGE: -32600,
};

export function errorResponse(error: KbError, context: ErrorContext): Response {
  const status = error.status;
  const headers = new Headers({
    "content-type": "application/json",
    "cache-control": "no-store",
    "x-request-id": context.requestId,
  });
  let body: unknown;
  if (status === 401 && context.config) {
    const challenge = [`Bearer resource_metadata="${resourceMetadataUrl(context.config)}"`];
    if (context.config.requiredScopes.length) challenge.push(`scope="${context.config.requiredScopes.join(" ")}"`);
    if (context.tokenSent) challenge.push(`error="invalid_token"`);
    headers.set("www-authenticate", challenge.join(", "));
    if (error instanceof WrongAudienceError) {
      // A genuine token for another resource (usually a client set up for another host or port): say which one.
      const description = `The access token is for another audience; this endpoint accepts tokens for ${error.expected}.`;
      headers.set("www-authenticate", `${challenge.join(", ")}, error_description="${description}"`);
      body = { error: "invalid_token", error_description: description };
    } else {
      // Deliberately no detail: which check failed is logged, never told to the client.
      body = context.tokenSent
        ? { error: "invalid_token", error_description: "The access token is invalid." }
        : { error: "invalid_request", error_description: "An access token is required." };
    }
  } else if (error.code === "ERR_INSUFFICIENT_SCOPE" && context.config) {
    const missing = error instanceof InsufficientScopeError ? error.scopes : context.config.requiredScopes;
    const scope = missing.join(" ");
    // Step-up: the challenge names every scope the client needs (what its token holds plus what is missing),
    // because clients re-authorize with exactly the challenge's scope (the TypeScript SDK does) and would otherwise
    // trade the scopes they have for the one they lack. The body's `scope` names only the missing ones.
    const challengeScope = [...new Set([...(context.heldScopes ?? []), ...missing])].join(" ");
    headers.set(
      "www-authenticate",
      `Bearer error="insufficient_scope", scope="${challengeScope}", resource_metadata="${resourceMetadataUrl(context.config)}"`,
    );
    body = { error: "insufficient_scope", error_description: `This request requires scope: ${scope}`, scope };
  } else if (status >= 500) {
    const message = status === 503 ? "Service unavailable" : "Internal error";
    body = { jsonrpc: "2.0", id: null, error: { code: -32603, message, data: { code: error.code } } };
  } else {
    if (error instanceof MethodNotAllowedError) headers.set("allow", error.allow.join(", "));
    if (error instanceof QuotaError) headers.set("retry-after", String(error.retryAfterS));
    body = {
      jsonrpc: "2.0",
      id: null,
      error: { code: JSON_RPC_CODES[error.code] ?? -32000, message: error.message, data: { code: error.code } },
    };
  }
  return new Response(JSON.stringify(body), { status, headers });
}
