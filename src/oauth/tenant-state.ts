import type { Env } from "../env";

/**
 * Whether a tenant may receive (or keep using) grants: not offboarding or offboarded. A name the registry has
 * never seen is a tenant that does not exist yet; like a first JWT for it, a first grant may create it.
 */
export async function tenantAcceptsGrants(env: Env, tenant: string): Promise<boolean> {
  const state = await env.TENANT_REGISTRY.get(env.TENANT_REGISTRY.idFromName("registry")).known(tenant);
  return state === null || state === "active";
}
