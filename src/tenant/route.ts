import type { Identity } from "../auth/identity";
import type { Env } from "../env";

/**
 * The only place where a tenant id selects a Durable Object. The tenant comes from a verified identity, so a
 * client can reach only its own tenant's object.
 */
export function tenantStub(env: Env, identity: Identity) {
  return env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(identity.tenant));
}
