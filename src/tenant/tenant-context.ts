import { EncryptedBlobs } from "../blob/encrypted-blobs";
import { type Config, loadConfig } from "../config";
import { MasterKeys } from "../crypto/master-keys";
import { TenantKeyring } from "../crypto/tenant-keyring";
import { type EgressPolicy, EMPTY_POLICY } from "../egress/egress-policy";
import { ExchangedTokens } from "../egress/token-provider";
import type { Env } from "../env";
import { RunManager } from "../extract/run-manager";
import { AtomCipher } from "../kb/atom-cipher";
import { type Embedder, LOCAL_DIMENSIONS } from "../kb/embedder";
import { resolveHashMode } from "../kb/embedder-key";
import { EmbeddingCache } from "../kb/embedding-cache";
import { KnowledgeBase } from "../kb/knowledge-base";
import { LIMITS } from "../kb/limits";
import { LocalVectorIndex } from "../kb/local-index";
import { embedderFor, type Placement, placementOf } from "../kb/placement";
import { effectivePlacement, placementChoice } from "../kb/tenant-placement";
import { VectorSealer } from "../kb/vector-pages";
import { VectorizeVectorStore } from "../kb/vectorize-index";
import { SessionStore } from "../mcp/sessions";
import { type QuotaLimits, RequestRate } from "./quotas";

export interface QuotaUsage {
  readonly documents: { used: number; limit: number };
  readonly documentBytes: { used: number; limit: number };
  readonly runsQueued: { used: number; limit: number };
  readonly sessions: { used: number; limit: number };
  readonly exchangedTokens: { used: number; limit: number };
  readonly requestsPerMinute: number;
  readonly subjectRequestsPerMinute: number;
}

import { migrate } from "./schema";

/**
 * Everything one tenant owns, wired for that tenant only: its keyring (data keys wrapped under the master epoch),
 * its knowledge base (atoms sealed under the data key, vectors in the local index or Vectorize), its documents in
 * R2. Built by the tenant object for its own tenant; unwrapped keys and the loaded vector index live here, in the
 * object's memory, for the object's lifetime.
 */
export class TenantContext {
  readonly tenant: string;
  readonly keyring: TenantKeyring;
  readonly kb: KnowledgeBase;
  /** This tenant's embedder (the local one is keyed under the tenant's embedder key; src/kb/embedder-key.ts). */
  readonly embedder: Embedder;
  readonly blobs: EncryptedBlobs;
  /** Where this tenant's vectors are (configuration and the admin's per-tenant choice; src/kb/tenant-placement.ts). */
  readonly placement: Placement;
  /** The local vector index when this tenant's vectors are placed locally (sealed pages), else null. */
  readonly localIndex: LocalVectorIndex | null;
  /** Remote embeddings of this tenant, sealed like the vector pages. */
  readonly cache: EmbeddingCache;
  /** Seals atoms and makes their blind tokens; holds imported keys and kept tag/source tokens in memory. */
  readonly cipher: AtomCipher;
  /** Runs `fn` as one SQLite transaction of this object's storage. */
  readonly transaction: <T>(fn: () => T) => T;
  /** Extraction runs this object instance is driving right now (in memory: gone with the instance). */
  readonly activeRuns = new Set<string>();
  readonly #sql: SqlStorage;
  readonly #storage: DurableObjectStorage;
  readonly #env: Env;
  #tokens: ExchangedTokens | null = null;
  #rate: RequestRate | null = null;

  constructor(state: DurableObjectState, env: Env, tenant: string) {
    this.#env = env;
    const sql = state.storage.sql;
    this.tenant = tenant;
    this.#sql = sql;
    this.#storage = state.storage;
    this.transaction = (fn) => state.storage.transactionSync(fn);
    this.keyring = new TenantKeyring(sql, tenant, MasterKeys.fromEnv(env));
    const config = loadConfig(env);
    const embedder = embedderFor(config.embedder, env.AI, () =>
      resolveHashMode(sql, tenant, this.keyring, LOCAL_DIMENSIONS),
    );
    this.embedder = embedder;
    const placement = placementOf(effectivePlacement(config.vectorPlacement, placementChoice(sql), tenant), env);
    this.placement = placement;
    const sealer = new VectorSealer(this.keyring, tenant);
    const local = placement.kind === "local" ? new LocalVectorIndex(sql, tenant, embedder.dimensions, sealer) : null;
    this.cache = new EmbeddingCache(sql, tenant, sealer);
    this.cipher = new AtomCipher(this.keyring, tenant);
    this.localIndex = local;
    const store =
      placement.kind === "local"
        ? (local as LocalVectorIndex)
        : new VectorizeVectorStore(sql, tenant, placement.vectorize, embedder.dimensions);
    this.kb = new KnowledgeBase({
      sql,
      transaction: this.transaction,
      tenant,
      store,
      embedder,
      cache: this.cache,
      cipher: this.cipher,
      maxAtoms: placement.kind === "local" ? LIMITS.localAtomsPerTenant : 5_000_000,
    });
    this.blobs = new EncryptedBlobs(env.DOCS, tenant, this.keyring, sql, this.transaction, () => this.quotaLimits());
  }

  /**
   * Shred, last step: drops this object's whole storage (every table, freed pages included, and the alarm) and
   * writes back only `tombstone` (tenant_meta rows). Synchronous on purpose: with SQLite storage deleteAll() takes
   * effect at once, and the deletion and the tombstone are written in one run with no await between them, which
   * the object commits atomically. A crash cannot leave the object empty (an empty object would accept the name
   * as a new tenant). Returns the promise of the deletion's confirmation.
   */
  dropStorage(tombstone: readonly { key: string; value: string }[]): Promise<void> {
    const dropped = this.#storage.deleteAll();
    migrate(this.#sql);
    for (const { key, value } of tombstone) {
      this.#sql.exec(
        `INSERT INTO tenant_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
        key,
        value,
      );
    }
    return dropped;
  }

  /** The tenant's egress policy (allowed origins, downstream resources), set by the platform admin. */
  egressPolicy(): EgressPolicy {
    const row = this.#sql
      .exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'egress_policy'`)
      .toArray()[0];
    return row ? (JSON.parse(row.value) as EgressPolicy) : EMPTY_POLICY;
  }

  setEgressPolicy(policy: EgressPolicy): void {
    this.#sql.exec(
      `INSERT INTO tenant_meta (key, value) VALUES ('egress_policy', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      JSON.stringify(policy),
    );
  }

  /** Exchanged tokens for this tenant's downstream calls (cache lives with this object). */
  tokens(config: Config): ExchangedTokens {
    const registry = this.#env.TENANT_REGISTRY.get(this.#env.TENANT_REGISTRY.idFromName("registry"));
    this.#tokens ??= new ExchangedTokens(this.tenant, config, {
      sign: (claims, ttl) => registry.signExchangeToken(claims, config.exchangeIssuer, ttl),
    });
    return this.#tokens;
  }

  /** The ExtractionRun object of one attempt (ids come from this tenant's own extraction_runs rows). */
  runObject(objectId: string) {
    return this.#env.EXTRACTION_RUN.get(this.#env.EXTRACTION_RUN.idFromString(objectId));
  }

  /** What this tenant uses of its quotas (admin status; the checks themselves sit where each thing is written). */
  usage(config: Config): QuotaUsage {
    const one = (query: string) => this.#sql.exec<{ n: number }>(query, this.tenant).one().n;
    const limits = config.quotas;
    return {
      documents: { used: one(`SELECT COUNT(*) AS n FROM documents WHERE tenant = ?`), limit: limits.documents },
      documentBytes: {
        used: one(`SELECT COALESCE(SUM(size), 0) AS n FROM documents WHERE tenant = ?`),
        limit: limits.documentBytes,
      },
      runsQueued: {
        used: one(
          `SELECT COUNT(*) AS n FROM extraction_runs WHERE tenant = ? AND status IN ('queued', 'running', 'failing')`,
        ),
        limit: limits.runsQueued,
      },
      sessions: { used: one(`SELECT COUNT(*) AS n FROM mcp_sessions WHERE tenant = ?`), limit: limits.sessions },
      exchangedTokens: { used: this.#tokens?.size ?? 0, limit: limits.exchangedTokens },
      requestsPerMinute: limits.requestsPerMinute,
      subjectRequestsPerMinute: limits.subjectRequestsPerMinute,
    };
  }

  /** The deployment's per-tenant quota limits (validated configuration; ERR_CONFIG fails closed). */
  quotaLimits(): QuotaLimits {
    return loadConfig(this.#env).quotas;
  }

  /** This tenant's request-rate buckets (for the object's lifetime). */
  rate(config: Config): RequestRate {
    this.#rate ??= new RequestRate(config.quotas);
    return this.#rate;
  }

  /**
   * Makes the object's alarm due within `delayMs` without postponing an earlier one. With `renew` (called from
   * inside the alarm handler), an alarm time already past is the alarm now running, so it is replaced too.
   */
  async alarmWithin(delayMs: number, options: { renew: boolean }): Promise<void> {
    const now = Date.now();
    const at = now + delayMs;
    const current = await this.#storage.getAlarm();
    if (current === null || current > at || (options.renew && current <= now)) await this.#storage.setAlarm(at);
  }

  runs(): RunManager {
    return new RunManager(this.#sql, this.#env, this);
  }

  sessions(config: Config): SessionStore {
    return new SessionStore(this.#sql, this.tenant, {
      idleTtlMs: config.sessionIdleTtlS * 1000,
      maxPerSubject: config.maxSessionsPerSubject,
      maxPerTenant: config.quotas.sessions,
    });
  }
}
