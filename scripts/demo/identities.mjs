// Who plays the story. Locally: tokens minted by the demo's own throwaway dev issuer. Against a deployment
// (--url): tokens the operator supplies from their identity provider, read from the environment:
//   DEMO_TOKEN_A, DEMO_TOKEN_A2 (a second subject of A's tenant), DEMO_TOKEN_B, DEMO_ADMIN_TOKEN,
//   optionally DEMO_TOKEN_CONTROL (a third, fresh tenant for the extraction control run).
// Tenants and subjects are read from the tokens' claims (unverified here; the server verifies them).
import { decodeJwt } from "jose";
import { mintDevToken } from "../token.mjs";

export const SCOPES = "mcp kb.read kb.write docs.read";

export async function localIdentities({ keysDir, resource, adminAudience, runId }) {
  const mint = (tenant, sub) => mintDevToken({ tenant, sub, scope: SCOPES, ttl: 1800, aud: resource, keysDir });
  const tenants = { a: `demo-a-${runId}`, b: `demo-b-${runId}`, control: `demo-c-${runId}` };
  return {
    tenants,
    a: { label: "A", tenant: tenants.a, subject: "alice", token: await mint(tenants.a, "alice") },
    a2: { label: "A2", tenant: tenants.a, subject: "mallory", token: await mint(tenants.a, "mallory") },
    b: { label: "B", tenant: tenants.b, subject: "bob", token: await mint(tenants.b, "bob") },
    control: { label: "C", tenant: tenants.control, subject: "carol", token: await mint(tenants.control, "carol") },
    admin: await mintDevToken({ admin: true, sub: "demo-operator", ttl: 1800, aud: adminAudience, keysDir }),
  };
}

export function suppliedIdentities(env = process.env, tenantClaim = env.DEMO_TENANT_CLAIM ?? "tenant_id") {
  const missing = ["DEMO_TOKEN_A", "DEMO_TOKEN_A2", "DEMO_TOKEN_B", "DEMO_ADMIN_TOKEN"].filter((name) => !env[name]);
  if (missing.length) throw new Error(`--url needs operator-supplied tokens: set ${missing.join(", ")} (docs/demo.md)`);
  const who = (label, token) => {
    const claims = decodeJwt(token);
    const tenant = tenantClaim.split(".").reduce((value, key) => value?.[key], claims);
    if (typeof tenant !== "string" || typeof claims.sub !== "string") {
      throw new Error(`the token for ${label} has no ${tenantClaim} or sub claim`);
    }
    return { label, tenant, subject: claims.sub, token };
  };
  const ids = {
    a: who("A", env.DEMO_TOKEN_A),
    a2: who("A2", env.DEMO_TOKEN_A2),
    b: who("B", env.DEMO_TOKEN_B),
    control: env.DEMO_TOKEN_CONTROL ? who("C", env.DEMO_TOKEN_CONTROL) : null,
    admin: env.DEMO_ADMIN_TOKEN,
  };
  if (ids.a.tenant !== ids.a2.tenant) throw new Error("DEMO_TOKEN_A2 must be of the same tenant as DEMO_TOKEN_A");
  if (ids.a.subject === ids.a2.subject) throw new Error("DEMO_TOKEN_A2 must be of another subject than DEMO_TOKEN_A");
  const distinct = new Set([ids.a.tenant, ids.b.tenant, ids.control?.tenant].filter(Boolean));
  if (distinct.size !== (ids.control ? 3 : 2)) throw new Error("the probe tenants must be distinct");
  ids.tenants = { a: ids.a.tenant, b: ids.b.tenant, control: ids.control?.tenant ?? null };
  return ids;
}
