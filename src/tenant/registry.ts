import { DurableObject } from "cloudflare:workers";
import { MasterKeys } from "../crypto/master-keys";
import type { Env } from "../env";
import { EXCHANGED_TOKEN_MAX_TTL_S, SigningKeys } from "../exchange/signing-keys";
import { log } from "../log";
import { unwrap } from "../util/rpc-result";

/**
 * The platform's list of tenants (one singleton object, `idFromName("registry")`), for operator tasks that span
 * tenants: the master epoch rewrap. It holds tenant ids and lifecycle states only, never tenant data. Tenants
 * register themselves on first use.
 */
export interface RewrapJob {
  readonly epoch: string;
  readonly startedAt: string;
  cursor: string;
  tenantsDone: number;
  keysRewrapped: number;
  failures: string[];
  completedAt: string | null;
}

const REWRAP_BATCH = 25;

export class TenantRegistry extends DurableObject<Env> {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.blockConcurrencyWhile(async () => {
      ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS tenants (
        tenant     TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      )`);
      ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`);
      // Verified email domain -> tenant, for the built-in authorization server's upstream sign-in (admin API).
      ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS email_domains (
        domain     TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL,
        updated_at INTEGER NOT NULL
      )`);
    });
  }

  /** The tenant a verified email domain signs in to, or null. */
  async emailDomainTenant(domain: string): Promise<string | null> {
    return (
      this.ctx.storage.sql
        .exec<{ tenant: string }>(`SELECT tenant FROM email_domains WHERE domain = ?`, domain)
        .toArray()[0]?.tenant ?? null
    );
  }

  /** Maps a domain to a tenant, or removes the mapping (tenant null). Returns whether a row changed. */
  async setEmailDomain(domain: string, tenant: string | null): Promise<boolean> {
    if (tenant === null) {
      return this.ctx.storage.sql.exec(`DELETE FROM email_domains WHERE domain = ?`, domain).rowsWritten > 0;
    }
    this.ctx.storage.sql.exec(
      `INSERT INTO email_domains (domain, tenant, updated_at) VALUES (?, ?, ?)
       ON CONFLICT (domain) DO UPDATE SET tenant = excluded.tenant, updated_at = excluded.updated_at`,
      domain,
      tenant,
      Date.now(),
    );
    return true;
  }

  async listEmailDomains(after = "", limit = 500): Promise<{ domain: string; tenant: string }[]> {
    return this.ctx.storage.sql
      .exec<{ domain: string; tenant: string }>(
        `SELECT domain, tenant FROM email_domains WHERE domain > ? ORDER BY domain LIMIT ?`,
        after,
        Math.min(Math.max(limit, 1), 1000),
      )
      .toArray()
      .map((row) => ({ domain: row.domain, tenant: row.tenant }));
  }

  /** Public keys of the server's token-signing keys (published at /.well-known/jwks.json). */
  async jwks(): Promise<{ keys: unknown[] }> {
    return this.#signing().jwks();
  }

  /**
   * Signs an exchanged token (RFC 8693). Claims are built by the tenant object for its own verified caller; this
   * object only holds the keys. Lifetime is capped at 5 minutes.
   */
  async signExchangeToken(claims: Record<string, unknown>, issuer: string, ttlSeconds: number): Promise<string> {
    return this.#signing().sign(claims, issuer, Math.min(ttlSeconds, EXCHANGED_TOKEN_MAX_TTL_S));
  }

  async rotateSigningKey(): Promise<{ kid: string }> {
    const row = await this.#signing().rotate();
    return { kid: row.kid };
  }

  async register(tenant: string): Promise<void> {
    const now = Date.now();
    this.ctx.storage.sql.exec(
      `INSERT INTO tenants (tenant, state, first_seen, updated_at) VALUES (?, 'active', ?, ?) ON CONFLICT DO NOTHING`,
      tenant,
      now,
      now,
    );
  }

  /** The tenant's lifecycle state, or null for a name no tenant object ever registered. Read-only. */
  async known(tenant: string): Promise<string | null> {
    return (
      this.ctx.storage.sql.exec<{ state: string }>(`SELECT state FROM tenants WHERE tenant = ?`, tenant).toArray()[0]
        ?.state ?? null
    );
  }

  async setState(tenant: string, state: string): Promise<void> {
    this.ctx.storage.sql.exec(
      `INSERT INTO tenants (tenant, state, first_seen, updated_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (tenant) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
      tenant,
      state,
      Date.now(),
      Date.now(),
    );
  }

  async list(after = "", limit = 100): Promise<{ tenant: string; state: string; firstSeen: string }[]> {
    return this.ctx.storage.sql
      .exec<{ tenant: string; state: string; first_seen: number }>(
        `SELECT tenant, state, first_seen FROM tenants WHERE tenant > ? ORDER BY tenant LIMIT ?`,
        after,
        Math.min(Math.max(limit, 1), 1000),
      )
      .toArray()
      .map((row) => ({ tenant: row.tenant, state: row.state, firstSeen: new Date(row.first_seen).toISOString() }));
  }

  /** Starts (or returns) the rewrap of every live tenant's data keys under the configured current epoch. */
  async startRewrap(): Promise<RewrapJob> {
    const epoch = MasterKeys.fromEnv(this.env).current;
    const existing = this.#job();
    if (existing && !existing.completedAt && existing.epoch === epoch) return existing;
    const job: RewrapJob = {
      epoch,
      startedAt: new Date().toISOString(),
      cursor: "",
      tenantsDone: 0,
      keysRewrapped: 0,
      failures: [],
      completedAt: null,
    };
    this.#save(job);
    await this.ctx.storage.setAlarm(Date.now());
    return job;
  }

  async rewrapStatus(): Promise<RewrapJob | null> {
    return this.#job();
  }

  /** Runs one batch of the rewrap job; reschedules itself until every tenant is done. */
  override async alarm(): Promise<void> {
    const job = this.#job();
    if (!job || job.completedAt) return;
    if (job.cursor === "") job.keysRewrapped += await this.#signing().rewrap();
    const batch = await this.list(job.cursor, REWRAP_BATCH);
    for (const { tenant, state } of batch) {
      job.cursor = tenant;
      if (state !== "active") continue;
      try {
        const stub = this.env.TENANT_SERVER.get(this.env.TENANT_SERVER.idFromName(tenant));
        job.keysRewrapped += unwrap(await stub.rewrapKeys(tenant));
        job.tenantsDone += 1;
      } catch {
        job.failures.push(tenant);
        log("error", { event: "master.rewrap.failed", tenant, outcome: "error" });
      }
    }
    if (batch.length < REWRAP_BATCH) job.completedAt = new Date().toISOString();
    this.#save(job);
    if (!job.completedAt) await this.ctx.storage.setAlarm(Date.now());
  }

  /** One SigningKeys per object lifetime, so its imported private key is reused across exchanges. */
  #signingKeys: SigningKeys | null = null;

  #signing(): SigningKeys {
    this.#signingKeys ??= new SigningKeys(this.ctx.storage.sql, MasterKeys.fromEnv(this.env));
    return this.#signingKeys;
  }

  #job(): RewrapJob | null {
    const row = this.ctx.storage.sql
      .exec<{ value: string }>(`SELECT value FROM registry_meta WHERE key = 'rewrap'`)
      .toArray()[0];
    return row ? (JSON.parse(row.value) as RewrapJob) : null;
  }

  #save(job: RewrapJob): void {
    this.ctx.storage.sql.exec(
      `INSERT INTO registry_meta (key, value) VALUES ('rewrap', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      JSON.stringify(job),
    );
  }
}
