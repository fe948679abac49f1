import { type DownstreamResource, type EgressPolicy, findTarget } from "../egress/egress-policy";
import { ACCESS_TOKEN_TYPE } from "./token-exchange";

/**
 * The policy decision of an RFC 8693 exchange inside the tenant object (pure): the target must be one of this
 * tenant's downstream resources (its egress policy), and the scopes can only narrow, to target scopes the caller
 * also holds. The caller (src/tenant/tenant-server.ts) has already verified the subject, the tenant's state and
 * the rate; it signs the token only for an `ok` decision.
 */
export type ExchangeDecision =
  | { readonly ok: true; readonly target: DownstreamResource; readonly scopes: string[] }
  | { readonly ok: false; readonly error: "invalid_target" | "invalid_scope"; readonly description: string };

export function decideExchange(
  policy: EgressPolicy,
  callerScopes: readonly string[],
  request: { readonly resource: string | null; readonly audience: string | null; readonly scope: string[] | null },
): ExchangeDecision {
  const target = findTarget(policy, request.resource, request.audience);
  if (!target) return { ok: false, error: "invalid_target", description: "not a downstream resource of this tenant" };
  const allowed = target.scopes.filter((scope) => callerScopes.includes(scope));
  const scopes = request.scope ?? allowed;
  if (scopes.length === 0 || scopes.some((scope) => !allowed.includes(scope))) {
    return { ok: false, error: "invalid_scope", description: "scope must narrow the caller's scopes for this target" };
  }
  return { ok: true, target, scopes };
}

/** Either an RFC 8693 success body or an OAuth error (RPC results are plain data). */
export interface ExchangeOutcome {
  readonly response: {
    readonly access_token: string;
    readonly issued_token_type: string;
    readonly token_type: "Bearer";
    readonly expires_in: number;
    readonly scope: string;
  } | null;
  readonly error: "invalid_target" | "invalid_scope" | "invalid_grant" | null;
  readonly description: string;
}

export function refused(
  error: "invalid_target" | "invalid_scope" | "invalid_grant",
  description: string,
): ExchangeOutcome {
  return { response: null, error, description };
}

export function granted(token: string, expiresIn: number, scopes: readonly string[]): ExchangeOutcome {
  return {
    error: null,
    description: "",
    response: {
      access_token: token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: "Bearer",
      expires_in: expiresIn,
      scope: scopes.join(" "),
    },
  };
}
