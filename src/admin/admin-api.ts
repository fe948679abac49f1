import type { Context, Hono } from "hono";
import { isTenantId } from "../auth/identity";
import { keyResolver } from "../auth/keys";
import { type AdminIdentity, bearerFromRequest, verifyAdminToken } from "../auth/verify-token";
import type { Config } from "../config";
import { KbError } from "../errors";
import { forgetCachedJwks } from "../exchange/token-route";
import { type AppEnv, requireConfig } from "../http/context";
import { checkOriginAndHost } from "../http/origin-guard";
import { parsePlacementRequest } from "../kb/tenant-placement";
import { log } from "../log";
import { revokeTenantGrants } from "../oauth/tenant-grants";
import { EMAIL_DOMAIN } from "../oauth/upstream-oidc";
import { parseRevocation } from "../tenant/revocations";
import { unwrap } from "../util/rpc-result";

/**
 * Platform-admin API. Tokens must be issued for the admin audience (ADMIN_AUDIENCE, default `<origin>/admin`) and
 * carry the `platform:admin` scope; tenant tokens are refused (wrong audience). Here, and only here, a path names
 * a tenant: the caller is the platform operator, not a tenant, and every call is logged with the operator's subject.
 *
 *   GET  /admin/tenants                    the registry (tenant ids and lifecycle states)
 *   GET  /admin/tenants/:tenant            status: key versions and epochs, counts, rotation, shred receipt
 *   POST /admin/tenants/:tenant/offboard   crypto-shred; body {"confirm": "<tenant>"}
 *   POST /admin/tenants/:tenant/rotate     new data key version; re-encryption runs in the background
 *   PUT  /admin/tenants/:tenant/egress     egress policy: {"origins": [...], "resources": [{resource, audience?, scopes}]}
 *   PUT  /admin/tenants/:tenant/placement  vector placement: {"placement": "local" | "vectorize" | "default"}
 *   POST /admin/tenants/:tenant/revocations  revoke tokens: {"jti": "..."} or {"subject": "...", "before": <epoch s>}
 *   GET  /admin/tenants/:tenant/revocations  live revocations
 *   POST /admin/signing-keys/rotate        new signing key for exchanged tokens (the old one stays published a day)
 *   POST /admin/master/rewrap              rewrap every tenant's data keys under MASTER_KEY_EPOCH
 *   GET  /admin/master                     rewrap progress
 *   GET  /admin/oauth/email-domains        verified email domain -> tenant (upstream sign-in, docs/auth.md)
 *   PUT  /admin/oauth/email-domains/:domain  {"tenant": "<tenant>"}; DELETE removes the mapping
 */
export function registerAdminRoutes(app: Hono<AppEnv>): void {
  app.get("/admin/tenants", async (c) => {
    await authenticateAdmin(c);
    const after = c.req.query("after") ?? "";
    return json(c, { tenants: await registry(c).list(after, 500) });
  });

  app.get("/admin/tenants/:tenant", async (c) => {
    await authenticateAdmin(c);
    return json(c, unwrap(await (await knownTenantServer(c)).adminStatus(tenantParam(c))));
  });

  app.post("/admin/tenants/:tenant/offboard", async (c) => {
    const admin = await authenticateAdmin(c);
    const tenant = tenantParam(c);
    const body = (await c.req.json().catch(() => null)) as { confirm?: unknown } | null;
    if (body?.confirm !== tenant) {
      throw new KbError("ERR_BAD_REQUEST", 'confirm by sending {"confirm": "<tenant>"}');
    }
    const receipt = unwrap(await (await knownTenantServer(c)).adminOffboard(tenant, admin.subject));
    // The tenant's grants and tokens of the built-in authorization server go with it (the registry already says
    // "offboarding", so a concurrent authorization or refresh is refused too; this call is idempotent).
    const oauthGrants = await revokeTenantGrants(c.env, requireConfig(c.var.config), tenant);
    log("warn", { event: "admin.offboard", requestId: c.var.requestId, tenant, subject: admin.subject, outcome: "ok" });
    return json(c, { receipt, oauthGrants }, 202);
  });

  app.post("/admin/tenants/:tenant/rotate", async (c) => {
    const admin = await authenticateAdmin(c);
    const tenant = tenantParam(c);
    const rotation = unwrap(await (await knownTenantServer(c)).adminRotate(tenant));
    log("info", { event: "admin.rotate", requestId: c.var.requestId, tenant, subject: admin.subject, outcome: "ok" });
    return json(c, { rotation }, 202);
  });

  app.put("/admin/tenants/:tenant/egress", async (c) => {
    const admin = await authenticateAdmin(c);
    const tenant = tenantParam(c);
    const body = await c.req.json().catch(() => null);
    const egress = unwrap(await (await knownTenantServer(c)).adminSetEgress(tenant, body));
    log("info", { event: "admin.egress", requestId: c.var.requestId, tenant, subject: admin.subject, outcome: "ok" });
    return json(c, { egress });
  });

  app.put("/admin/tenants/:tenant/placement", async (c) => {
    const admin = await authenticateAdmin(c);
    const tenant = tenantParam(c);
    const body = await c.req.json().catch(() => null);
    // Validated here (400 before any object is reached) and again by the tenant object, which applies it.
    parsePlacementRequest(body, requireConfig(c.var.config).vectorPlacement, tenant);
    const placement = unwrap(await (await knownTenantServer(c)).adminSetPlacement(tenant, body));
    log("info", {
      event: "admin.placement",
      requestId: c.var.requestId,
      tenant,
      subject: admin.subject,
      outcome: "ok",
    });
    return json(c, { placement });
  });

  app.post("/admin/tenants/:tenant/revocations", async (c) => {
    const admin = await authenticateAdmin(c);
    const tenant = tenantParam(c);
    const body = await c.req.json().catch(() => null);
    // Validated here (400 before any object is reached) and again by the tenant object, which stores it.
    parseRevocation(body, requireConfig(c.var.config), Math.floor(Date.now() / 1000));
    const revocation = unwrap(await (await knownTenantServer(c)).adminRevoke(tenant, body, admin.subject));
    log("warn", { event: "admin.revoke", requestId: c.var.requestId, tenant, subject: admin.subject, outcome: "ok" });
    return c.json({ revocation }, 201, { "cache-control": "no-store" });
  });

  app.get("/admin/tenants/:tenant/revocations", async (c) => {
    await authenticateAdmin(c);
    return json(c, { revocations: unwrap(await (await knownTenantServer(c)).adminRevocations(tenantParam(c))) });
  });

  app.post("/admin/signing-keys/rotate", async (c) => {
    const admin = await authenticateAdmin(c);
    const key = await registry(c).rotateSigningKey();
    // The new key signs at once: publish it here now (other locations follow within the JWKS max-age).
    await forgetCachedJwks(c.req.url);
    log("info", { event: "admin.signing.rotate", requestId: c.var.requestId, subject: admin.subject, outcome: "ok" });
    return json(c, key);
  });

  app.post("/admin/master/rewrap", async (c) => {
    const admin = await authenticateAdmin(c);
    const job = await registry(c).startRewrap();
    log("info", { event: "admin.master.rewrap", requestId: c.var.requestId, subject: admin.subject, outcome: "ok" });
    return json(c, { job }, 202);
  });

  app.get("/admin/master", async (c) => {
    await authenticateAdmin(c);
    return json(c, { job: await registry(c).rewrapStatus() });
  });

  app.get("/admin/oauth/email-domains", async (c) => {
    await authenticateAdmin(c);
    return json(c, { domains: await registry(c).listEmailDomains(c.req.query("after") ?? "") });
  });

  app.put("/admin/oauth/email-domains/:domain", async (c) => {
    const admin = await authenticateAdmin(c);
    const domain = domainParam(c);
    const body = (await c.req.json().catch(() => null)) as { tenant?: unknown } | null;
    if (!isTenantId(body?.tenant)) throw new KbError("ERR_BAD_REQUEST", 'send {"tenant": "<tenant id>"}');
    await registry(c).setEmailDomain(domain, body.tenant);
    log("info", {
      event: "admin.email-domain.set",
      requestId: c.var.requestId,
      tenant: body.tenant,
      subject: admin.subject,
    });
    return json(c, { domain, tenant: body.tenant });
  });

  app.delete("/admin/oauth/email-domains/:domain", async (c) => {
    const admin = await authenticateAdmin(c);
    const domain = domainParam(c);
    if (!(await registry(c).setEmailDomain(domain, null))) throw new KbError("ERR_NOT_FOUND", "no such domain");
    log("info", { event: "admin.email-domain.removed", requestId: c.var.requestId, subject: admin.subject });
    return json(c, { domain, tenant: null });
  });
}

function domainParam(c: Context<AppEnv>): string {
  const domain = (c.req.param("domain") ?? "").toLowerCase();
  if (!EMAIL_DOMAIN.test(domain)) throw new KbError("ERR_BAD_REQUEST", "invalid email domain");
  return domain;
}

async function authenticateAdmin(c: Context<AppEnv>): Promise<AdminIdentity> {
  const config: Config = requireConfig(c.var.config);
  const request = c.req.raw;
  checkOriginAndHost(request, config);
  c.set("tokenSent", request.headers.has("authorization"));
  return verifyAdminToken(bearerFromRequest(request), config, keyResolver(config));
}

function tenantParam(c: Context<AppEnv>): string {
  const tenant = c.req.param("tenant") ?? "";
  if (!isTenantId(tenant)) throw new KbError("ERR_BAD_REQUEST", "invalid tenant id");
  return tenant;
}

/**
 * The tenant object of a tenant the registry knows, else 404 without reaching (and so creating) any tenant object.
 * Tenants register on their first served request; the object re-checks that it is bound to this tenant.
 */
async function knownTenantServer(c: Context<AppEnv>) {
  const tenant = tenantParam(c);
  if ((await registry(c).known(tenant)) === null) throw new KbError("ERR_NOT_FOUND", "unknown tenant");
  return c.env.TENANT_SERVER.get(c.env.TENANT_SERVER.idFromName(tenant));
}

function registry(c: Context<AppEnv>) {
  return c.env.TENANT_REGISTRY.get(c.env.TENANT_REGISTRY.idFromName("registry"));
}

function json(c: Context<AppEnv>, body: unknown, status: 200 | 202 = 200): Response {
  return c.json(body, status, { "cache-control": "no-store" });
}
