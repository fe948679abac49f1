import { z } from "zod";
import { KbError } from "../errors";

/**
 * A tenant's egress policy, set by the platform admin (PUT /admin/tenants/:t/egress), stored in the tenant's own
 * SQLite (tenant_meta "egress_policy"): the origins server code may fetch for this tenant, and the downstream
 * resources it may obtain exchanged tokens for (with the scopes each may carry).
 */
export interface DownstreamResource {
  readonly resource: string;
  readonly audience: string;
  readonly scopes: readonly string[];
}

export interface EgressPolicy {
  readonly origins: readonly string[];
  readonly resources: readonly DownstreamResource[];
}

export const EMPTY_POLICY: EgressPolicy = { origins: [], resources: [] };

const scope = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/);
const httpsUrl = z
  .string()
  .max(2048)
  .refine((value) => URL.canParse(value) && new URL(value).protocol === "https:" && !new URL(value).hash, "https URL");

export const egressPolicySchema = z
  .object({
    origins: z.array(httpsUrl).max(50),
    resources: z
      .array(
        z
          .object({
            resource: httpsUrl,
            audience: z.string().min(1).max(256).optional(),
            scopes: z.array(scope).max(32),
          })
          .strict(),
      )
      .max(50),
  })
  .strict();

export function parseEgressPolicy(input: unknown): EgressPolicy {
  const parsed = egressPolicySchema.safeParse(input);
  if (!parsed.success) throw new KbError("ERR_INVALID_PARAMS", "invalid egress policy");
  return {
    origins: [...new Set(parsed.data.origins.map((origin) => new URL(origin).origin))],
    resources: parsed.data.resources.map((entry) => ({
      resource: entry.resource,
      audience: entry.audience ?? entry.resource,
      scopes: [...new Set(entry.scopes)],
    })),
  };
}

/** The downstream resource an exchange request names, or null (invalid_target). */
export function findTarget(
  policy: EgressPolicy,
  resource: string | null,
  audience: string | null,
): DownstreamResource | null {
  return (
    policy.resources.find(
      (entry) =>
        (resource === null || entry.resource === resource) && (audience === null || entry.audience === audience),
    ) ?? null
  );
}

/** The downstream resource whose URL covers `url` (same origin, path prefix), for attaching exchanged tokens. */
export function resourceForUrl(policy: EgressPolicy, url: URL): DownstreamResource | null {
  return (
    policy.resources.find((entry) => {
      const target = new URL(entry.resource);
      // Whole path segments only: /v1 covers /v1 and /v1/..., never /v1beta.
      const base = target.pathname.replace(/\/+$/, "");
      return (
        target.origin === url.origin && (base === "" || url.pathname === base || url.pathname.startsWith(`${base}/`))
      );
    }) ?? null
  );
}
