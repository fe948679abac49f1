import { DurableObject } from "cloudflare:workers";
import { type Identity, isTenantId, SUBJECT_PATTERN } from "../auth/identity";
import { serveDocumentRequest } from "../blob/document-http";
import type { DocumentMeta } from "../blob/encrypted-blobs";
import { type Config, loadConfig } from "../config";
import { MasterKeys } from "../crypto/master-keys";
import { type EgressPolicy, parseEgressPolicy } from "../egress/egress-policy";
import type { Env } from "../env";
import { KbError, toKbError } from "../errors";
import { decideExchange, type ExchangeOutcome, granted, refused } from "../exchange/exchange-decision";
import { errorResponse } from "../http/error-response";
import { requestFromWire, type WireRequest, type WireResponse, wireResponse } from "../http/mcp-wire";
import { type PlacementStatus, setPlacementChoice } from "../kb/tenant-placement";
import { log } from "../log";
import { HandleCodec } from "../mcp/handles";
import { serveMcpRequest } from "../mcp/mcp-endpoint";
import { createTenantMcpServer, prepareTenantMcpServer, serverShape } from "../mcp/server-factory";
import { ServerPool } from "../mcp/server-pool";
import { type RpcResult, settle } from "../util/rpc-result";
import { type Job, JobRunner } from "./jobs";
import { type RotationState, type ShredReceipt, TenantLifecycle } from "./lifecycle";
import { createRevocationsTable, parseRevocation, type Revocation, Revocations } from "./revocations";
import { migrate } from "./schema";
import { TenantContext } from "./tenant-context";
import { type TenantStatus, tenantStatus } from "./tenant-status";

/**
 * One instance per tenant (`idFromName(tenant)`): it hosts that tenant's MCP server and owns all of its storage.
 * The RPC surface is the methods below; everything else is #private. Tenant-facing methods take the verified
 * identity (from the edge, which verified the token); admin methods take the target tenant (from the admin API,
 * which verified an admin token). Either way the object first checks that the tenant is the one it was created
 * for, and refuses an offboarded tenant.
 */
export class TenantServer extends DurableObject<Env> {
  #tenant: TenantContext | null = null;
  /** This tenant's prepared MCP servers (both eras), reused across requests for the object's lifetime. */
  readonly #servers = new ServerPool();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      migrate(ctx.storage.sql);
      createRevocationsTable(ctx.storage.sql);
      // After a crash, work may be left that no alarm is set for (garbage objects of an interrupted write, a run
      // whose synchronous driver died): make sure the jobs look at it.
      if (hasPendingWork(ctx.storage.sql) && (await ctx.storage.getAlarm()) === null) {
        await ctx.storage.setAlarm(Date.now() + 1000);
      }
    });
  }

  /** serveMcp with the request and the answer as plain RPC data (src/http/mcp-wire.ts): what the edge calls. */
  async serveMcpWire(request: WireRequest, identity: Identity, requestId: string): Promise<WireResponse> {
    return wireResponse(await this.serveMcp(requestFromWire(request), identity, requestId));
  }

  async serveMcp(request: Request, identity: Identity, requestId: string): Promise<Response> {
    return this.#serve(identity, requestId, async (tenant, config) =>
      serveMcpRequest(request, {
        identity,
        requestId,
        config,
        sessions: tenant.sessions(config),
        serverFor: async (era, protocolVersion, fresh) => {
          // Handles and requestState are minted under the current key version and accepted under every live one,
          // so a rotation does not break what clients hold; once a version is destroyed, its handles fail cleanly.
          const versions = await tenant.keyring.liveVersions();
          const subkeys = (purpose: "handles" | "request-state") =>
            Promise.all(versions.map((version) => tenant.keyring.subkey(version, purpose)));
          const handles = await HandleCodec.create(await subkeys("handles"), identity);
          const scope = { identity, era, protocolVersion, requestId, handles };
          const keys = await subkeys("request-state");
          const schedule = () => this.ctx.storage.setAlarm(Date.now());
          // A 2025 handshake gets an instance of its own, never reused: it leaves the client's state in it.
          if (fresh) return createTenantMcpServer(scope, keys, tenant, config, schedule);
          const prepared = this.#servers.take(serverShape(scope), versions.join(","), () =>
            prepareTenantMcpServer(scope, keys, tenant, config, schedule),
          );
          prepared.bind(scope);
          return prepared.server;
        },
      }),
    );
  }

  async serveDocument(request: Request, identity: Identity, requestId: string, documentId: string): Promise<Response> {
    return this.#serve(identity, requestId, async (tenant) =>
      serveDocumentRequest(request, identity, tenant, documentId),
    );
  }

  /**
   * RFC 8693 exchange for the verified caller (the edge verified the subject token); the policy decision is
   * src/exchange/exchange-decision.ts.
   */
  async exchange(
    identity: Identity,
    requestId: string,
    request: { resource: string | null; audience: string | null; scope: string[] | null },
  ): Promise<ExchangeOutcome> {
    try {
      const config = loadConfig(this.env);
      const tenant = this.#checkIdentity(identity, requestId, config);
      if (this.#lifecycle(tenant).state() !== "active") return refused("invalid_grant", "tenant offboarded");
      tenant.rate(config).admit(identity.subject);
      const decision = decideExchange(tenant.egressPolicy(), identity.scopes, request);
      if (!decision.ok) return refused(decision.error, decision.description);
      const token = await this.#registry().signExchangeToken(
        tenant.tokens(config).claims(identity, decision.target, decision.scopes),
        config.exchangeIssuer,
        config.exchangeTtlS,
      );
      log("info", {
        event: "token.exchanged",
        requestId,
        tenant: identity.tenant,
        subject: identity.subject,
        outcome: "ok",
      });
      return granted(token, config.exchangeTtlS, decision.scopes);
    } catch (error) {
      const code = toKbError(error).code;
      log("warn", { event: "token.exchange.refused", requestId, tenant: identity.tenant, code, outcome: "rejected" });
      return refused("invalid_grant", "the subject token cannot be exchanged");
    }
  }

  // ---- platform admin (called by the admin API after verifying an admin token) ----

  async adminStatus(tenant: string): Promise<RpcResult<TenantStatus>> {
    return settle(async () => {
      const ctx = this.#knownContext(tenant);
      return tenantStatus(ctx, this.#lifecycle(ctx), this.ctx.storage.sql, loadConfig(this.env));
    });
  }

  /** Crypto-shred: keys and sessions are destroyed before this returns; the purge continues in the alarm. */
  async adminOffboard(tenant: string, requestedBy: string): Promise<RpcResult<ShredReceipt>> {
    return settle(async () => {
      const ctx = this.#knownContext(tenant);
      this.#servers.clear();
      const receipt = this.#lifecycle(ctx).offboard(requestedBy, MasterKeys.fromEnv(this.env).epochs());
      log("warn", { event: "tenant.offboarded", tenant, subject: requestedBy, outcome: "ok" });
      await this.#registry().setState(tenant, "offboarding");
      await this.ctx.storage.setAlarm(Date.now());
      return receipt;
    });
  }

  async adminSetEgress(tenant: string, policy: unknown): Promise<RpcResult<EgressPolicy>> {
    return settle(async () => {
      const ctx = this.#knownContext(tenant);
      this.#lifecycle(ctx).assertActive();
      const parsed = parseEgressPolicy(policy);
      ctx.setEgressPolicy(parsed);
      return parsed;
    });
  }

  /**
   * Sets the tenant's vector placement choice (src/kb/tenant-placement.ts). When the placement changes (only
   * possible with no atom and no run in progress), the tenant's context is rebuilt so the new store serves next.
   */
  async adminSetPlacement(tenant: string, body: unknown): Promise<RpcResult<PlacementStatus>> {
    return settle(async () => {
      // Not through #knownContext: a tenant whose placement no longer resolves (ERR_CONFIG) has no context, and this
      // route is how the operator puts it right.
      if (this.#boundTenant() !== tenant) throw new KbError("ERR_NOT_FOUND", "unknown tenant");
      const sql = this.ctx.storage.sql;
      const state = sql.exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'state'`).toArray()[0];
      if (state && state.value !== "active") {
        throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
      }
      const { status, changed } = setPlacementChoice(sql, loadConfig(this.env).vectorPlacement, tenant, body);
      if (changed) this.#dropContext();
      return status;
    });
  }

  async adminRotate(tenant: string): Promise<RpcResult<RotationState>> {
    return settle(async () => {
      const ctx = this.#knownContext(tenant);
      await this.#ensureRegistered(tenant);
      const state = await this.#lifecycle(ctx).startRotation();
      await this.ctx.storage.setAlarm(Date.now());
      return state;
    });
  }

  /** Revokes access tokens of this tenant, by `jti` or by subject (issued before a time); see revocations.ts. */
  async adminRevoke(tenant: string, body: unknown, requestedBy: string): Promise<RpcResult<Revocation>> {
    return settle(async () => {
      const ctx = this.#knownContext(tenant);
      this.#lifecycle(ctx).assertActive();
      const nowS = Math.floor(Date.now() / 1000);
      const revocation = parseRevocation(body, loadConfig(this.env), nowS);
      return new Revocations(this.ctx.storage.sql, tenant).add(revocation, requestedBy, nowS);
    });
  }

  async adminRevocations(tenant: string): Promise<RpcResult<Revocation[]>> {
    return settle(async () => {
      this.#knownContext(tenant);
      return new Revocations(this.ctx.storage.sql, tenant).list(Math.floor(Date.now() / 1000));
    });
  }

  /** Master epoch rotation, per tenant: rewrap every data key under the current epoch (data untouched). */
  async rewrapKeys(tenant: string): Promise<RpcResult<number>> {
    return settle(async () => {
      const ctx = this.#knownContext(tenant);
      if (this.#lifecycle(ctx).state() !== "active") return 0;
      return ctx.keyring.rewrapAll();
    });
  }

  /**
   * Runs one step of every background job (src/tenant/jobs.ts): re-encryption after a key rotation, queued or
   * interrupted extraction runs, the purge after offboarding. Each job is isolated: one that fails is retried with
   * backoff and never stops the others.
   */
  override async alarm(): Promise<void> {
    const tenant = this.#boundTenant();
    if (!tenant) return;
    const context = this.#context(tenant);
    const lifecycle = this.#lifecycle(context);
    const jobs: Job[] = [];
    if (lifecycle.state() === "active") {
      jobs.push({ name: "rotation", step: () => lifecycle.rotationStep() });
      // R2 objects no row names (a crash between the steps of src/blob/blob-custody.ts): collected, a batch a step.
      jobs.push({
        name: "blob-gc",
        step: async () => ((await context.blobs.collectGarbage(100)) > 0 ? "more" : "idle"),
      });
      const runs = context.runs();
      for (const runId of runs.pending()) {
        // Each queued (or interrupted) run is its own job, driven in a fresh run object per attempt.
        jobs.push({
          name: `run:${runId}`,
          step: async () => {
            await runs.run(runId);
            return "idle";
          },
        });
      }
    } else {
      jobs.push({ name: "purge", step: () => lifecycle.purgeStep() });
      jobs.push({
        name: "registry-state",
        step: async () => {
          if (lifecycle.state() === "offboarded") await this.#registry().setState(tenant, "offboarded");
          return "idle";
        },
      });
    }
    const started = Date.now();
    const next = await new JobRunner(this.ctx.storage.sql, tenant).runDue(jobs);
    if (next !== null) {
      // An alarm set while this one ran (a request queued an ingest) is kept if it is earlier. An alarm time not
      // after this run started is this very alarm (workerd also clamps past times to now): re-arming at it would
      // fire again at once, a busy loop while a job backs off, so it is replaced.
      const current = await this.ctx.storage.getAlarm();
      await this.ctx.storage.setAlarm(current !== null && current > started ? Math.min(current, next) : next);
    }
    if (lifecycle.state() === "offboarded") this.#dropContext();
  }

  async #serve(
    identity: Identity,
    requestId: string,
    handler: (tenant: TenantContext, config: Config) => Promise<Response>,
  ): Promise<Response> {
    let config: Config | null = null;
    try {
      config = loadConfig(this.env);
      const tenant = this.#checkIdentity(identity, requestId, config);
      this.#lifecycle(tenant).assertActive();
      tenant.rate(config).admit(identity.subject);
      await this.#ensureRegistered(identity.tenant);
      return await handler(tenant, config);
    } catch (error) {
      const kbError = toKbError(error);
      if (kbError.status >= 500) {
        log("error", { event: "tenant.error", requestId, tenant: identity.tenant, code: kbError.code });
      }
      return errorResponse(kbError, { requestId, config, tokenSent: true, heldScopes: identity.scopes });
    }
  }

  /**
   * Defence in depth: the edge chose this object by `idFromName(identity.tenant)`, so a mismatch means a routing
   * bug or a forged call. The object also remembers the first tenant it served and refuses any other.
   */
  #checkIdentity(identity: Identity, requestId: string, config: Config): TenantContext {
    const valid =
      typeof identity?.subject === "string" &&
      SUBJECT_PATTERN.test(identity.subject) &&
      typeof identity.expiresAt === "number" &&
      typeof identity.issuedAt === "number";
    if (!valid) {
      log("warn", { event: "tenant.mismatch", requestId, outcome: "rejected" });
      throw new KbError("ERR_TENANT_MISMATCH", "Forbidden");
    }
    const context = this.#context(identity.tenant, requestId);
    if ((identity.expiresAt + config.clockToleranceS) * 1000 <= Date.now()) {
      throw new KbError("ERR_TOKEN_EXPIRED", "token expired");
    }
    try {
      new Revocations(this.ctx.storage.sql, identity.tenant).assertNotRevoked(identity, Math.floor(Date.now() / 1000));
    } catch (error) {
      log("warn", { event: "token.revoked", requestId, tenant: identity.tenant, code: "ERR_TOKEN_REVOKED" });
      throw error;
    }
    return context;
  }

  /** This object's tenant context, after checking that `tenant` is this object's tenant. */
  #context(tenant: string, requestId?: string): TenantContext {
    const ours =
      isTenantId(tenant) &&
      this.env.TENANT_SERVER.idFromName(tenant).equals(this.ctx.id) &&
      this.#bindTenant(tenant) === tenant;
    if (!ours) {
      log("warn", {
        event: "tenant.mismatch",
        requestId,
        tenant: this.#boundTenant() ?? undefined,
        outcome: "rejected",
      });
      throw new KbError("ERR_TENANT_MISMATCH", "Forbidden");
    }
    this.#tenant ??= new TenantContext(this.ctx, this.env, tenant);
    return this.#tenant;
  }

  /** Forgets the tenant context and every server prepared with it (they hold its stores and keys). */
  #dropContext(): void {
    this.#tenant = null;
    this.#servers.clear();
  }

  #lifecycle(ctx: TenantContext): TenantLifecycle {
    return new TenantLifecycle(this.ctx.storage.sql, ctx);
  }

  #bindTenant(tenant: string): string {
    const sql = this.ctx.storage.sql;
    const bound = this.#boundTenant();
    if (bound) return bound;
    sql.exec(`INSERT INTO tenant_meta (key, value) VALUES ('tenant', ?) ON CONFLICT (key) DO NOTHING`, tenant);
    return this.#boundTenant() ?? tenant;
  }

  /**
   * The context of a tenant this object already serves, for admin calls: an admin call never binds a tenant (an
   * admin read or an offboard of a never-seen name would otherwise create it, and burn the name for good).
   */
  #knownContext(tenant: string): TenantContext {
    if (this.#boundTenant() !== tenant) throw new KbError("ERR_NOT_FOUND", "unknown tenant");
    return this.#context(tenant);
  }

  /** Tells the registry about this tenant once (it drives platform-wide jobs such as the master epoch rewrap). */
  async #ensureRegistered(tenant: string): Promise<void> {
    const sql = this.ctx.storage.sql;
    if (sql.exec(`SELECT 1 FROM tenant_meta WHERE key = 'registered'`).toArray().length) return;
    await this.#registry().register(tenant);
    sql.exec(`INSERT INTO tenant_meta (key, value) VALUES ('registered', '1') ON CONFLICT (key) DO NOTHING`);
  }

  #boundTenant(): string | null {
    return (
      this.ctx.storage.sql.exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'tenant'`).toArray()[0]
        ?.value ?? null
    );
  }

  #registry() {
    return this.env.TENANT_REGISTRY.get(this.env.TENANT_REGISTRY.idFromName("registry"));
  }
}

export type { DocumentMeta };

/** Whether a background job has something to do (checked when the object starts). */
function hasPendingWork(sql: SqlStorage): boolean {
  const one = (query: string) => sql.exec(query).toArray().length > 0;
  return (
    one(`SELECT 1 FROM blob_gc LIMIT 1`) ||
    one(`SELECT 1 FROM extraction_runs WHERE status IN ('queued', 'running', 'failing') LIMIT 1`) ||
    one(`SELECT 1 FROM job_state LIMIT 1`) ||
    one(`SELECT 1 FROM tenant_meta WHERE key = 'state' AND value = 'offboarding'`)
  );
}
