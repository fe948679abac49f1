import type { Config } from "../config";
import type { Env } from "../env";
import { authorizationServer } from "./authorization-server";
import { tenantKeyPrefixes } from "./grant-user";

/** KV list pages read per call (1,000 keys each); more grants than that need another call (it is idempotent). */
const MAX_PAGES = 50;

/**
 * Revokes every grant of one tenant, with its refresh and access tokens (offboarding). Grants are found by the key
 * prefix `grant:<tenant>/` (grant-user.ts), so no other tenant's grant can be listed or touched. Returns how many
 * were revoked and whether the listing was complete. A grant created concurrently is refused at its first token
 * request anyway (tokenExchangeCallback checks the tenant's state), and the tenant object refuses the tenant.
 */
export async function revokeTenantGrants(
  env: Env,
  config: Config,
  tenant: string,
): Promise<{ revoked: number; complete: boolean }> {
  if (!config.oauth) return { revoked: 0, complete: true };
  const helpers = authorizationServer(config).getOAuthApi(env);
  const { grants } = tenantKeyPrefixes(tenant);
  let revoked = 0;
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const listing = await env.OAUTH_KV.list({ prefix: grants, ...(cursor ? { cursor } : {}) });
    for (const { name } of listing.keys) {
      // grant:<tenant>/<subject>:<grantId>; the userId has no ":" (grant-user.ts).
      const rest = name.slice("grant:".length);
      const colon = rest.lastIndexOf(":");
      if (colon <= 0) continue;
      await helpers.revokeGrant(rest.slice(colon + 1), rest.slice(0, colon));
      revoked++;
    }
    if (listing.list_complete) return { revoked, complete: true };
    cursor = listing.cursor;
  }
  return { revoked, complete: false };
}
