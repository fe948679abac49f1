import { KbError } from "../errors";
import type { TenantContext } from "./tenant-context";

/**
 * Key rotation and offboarding for one tenant, as resumable jobs driven by the object's alarm. Progress lives in
 * `tenant_meta` (SQLite), so a job survives eviction and restarts; each step is idempotent (it only ever picks
 * what is still to do).
 *
 * Offboarding = crypto-shred: the data keys and sessions are destroyed at once, in the request that asks for it,
 * and the tenant is refused from then on. Purging what the keys protected (and the vectors, which are not
 * encrypted) follows in batches. docs/crypto.md explains why this is final even against backups.
 */
export type TenantState = "active" | "offboarding" | "offboarded";

export interface ShredReceipt {
  readonly tenant: string;
  readonly requestedBy: string;
  readonly requestedAt: string;
  readonly keysDestroyedAt: string;
  readonly keyVersionsDestroyed: number[];
  readonly masterEpochsAtShred: string[];
  readonly sessionsEnded: number;
  purged: { atoms: number; vectors: number; documents: number; r2Objects: number; cacheRows: number };
  purgeBatches: number;
  completedAt: string | null;
}

export interface RotationState {
  readonly from: number[];
  readonly to: number;
  readonly startedAt: string;
  resealedAtoms: number;
  reencryptedDocuments: number;
  completedAt: string | null;
  destroyedVersions: number[];
}

const BATCH = 200;
const DOC_BATCH = 10;

export class TenantLifecycle {
  readonly #sql: SqlStorage;
  readonly #ctx: TenantContext;

  constructor(sql: SqlStorage, ctx: TenantContext) {
    this.#sql = sql;
    this.#ctx = ctx;
  }

  state(): TenantState {
    return (this.#meta("state") as TenantState | null) ?? "active";
  }

  receipt(): ShredReceipt | null {
    return this.#json<ShredReceipt>("shred_receipt");
  }

  rotation(): RotationState | null {
    return this.#json<RotationState>("rotation");
  }

  /** Throws unless the tenant may be served. */
  assertActive(): void {
    if (this.state() !== "active") throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
  }

  /**
   * Step 1 of offboarding, synchronous with the request: destroy every data key version (wrapped copies and the
   * in-memory keys) and every session, and refuse the tenant from now on. Returns the receipt (purge pending).
   */
  offboard(requestedBy: string, masterEpochs: string[], now = Date.now()): ShredReceipt {
    const existing = this.receipt();
    if (existing) return existing;
    const versions = this.#ctx.keyring.list().map((info) => info.version);
    const receipt: ShredReceipt = {
      tenant: this.#ctx.tenant,
      requestedBy,
      requestedAt: new Date(now).toISOString(),
      keysDestroyedAt: new Date(now).toISOString(),
      keyVersionsDestroyed: versions,
      masterEpochsAtShred: masterEpochs,
      sessionsEnded: 0,
      purged: { atoms: 0, vectors: 0, documents: 0, r2Objects: 0, cacheRows: 0 },
      purgeBatches: 0,
      completedAt: null,
    };
    this.#ctx.keyring.destroyAll();
    const sessionsEnded = this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM mcp_sessions WHERE tenant = ?`, this.#ctx.tenant)
      .one().n;
    this.#sql.exec(`DELETE FROM mcp_sessions WHERE tenant = ?`, this.#ctx.tenant);
    this.#sql.exec(`DELETE FROM tenant_meta WHERE key = 'rotation'`);
    this.#setMeta("state", "offboarding");
    this.#setJson("shred_receipt", { ...receipt, sessionsEnded });
    return { ...receipt, sessionsEnded };
  }

  /** One purge batch of each kind. Returns true when everything is gone (receipt completed). */
  async purgeStep(now = Date.now()): Promise<boolean> {
    const receipt = this.receipt();
    if (!receipt || receipt.completedAt) return true;
    const vectorsBefore = this.#count("local_vectors") + this.#count("vectorize_ids");
    const atoms = await this.#ctx.kb.purgeBatch(BATCH);
    const vectorsAfterAtoms = this.#count("local_vectors") + this.#count("vectorize_ids");
    const { r2Objects, documents } = await this.#ctx.blobs.purgeBatch();
    const cacheRows = this.#deleteSome("embedding_cache");
    // Rows whose atom is already gone (none are expected; a failed write could leave one).
    const strayVectors = this.#deleteSome("local_vectors");
    receipt.purged.atoms += atoms;
    receipt.purged.vectors += vectorsBefore - vectorsAfterAtoms + strayVectors;
    receipt.purged.documents += documents;
    receipt.purged.r2Objects += r2Objects;
    receipt.purged.cacheRows += cacheRows;
    receipt.purgeBatches += 1;
    const done =
      atoms + r2Objects + documents + cacheRows + strayVectors === 0 &&
      this.#count("atoms") + this.#count("documents") + this.#count("embedding_cache") === 0;
    if (done) {
      this.#sql.exec(`DELETE FROM vectorize_ids WHERE tenant = ?`, this.#ctx.tenant);
      this.#sql.exec(`DELETE FROM atom_tags WHERE tenant = ?`, this.#ctx.tenant);
      this.#sql.exec(`DELETE FROM extraction_runs WHERE tenant = ?`, this.#ctx.tenant);
      receipt.completedAt = new Date(now).toISOString();
      this.#setMeta("state", "offboarded");
    }
    this.#setJson("shred_receipt", receipt);
    return done;
  }

  /** Starts a data key rotation: a new version for new writes; older data is re-encrypted by rotationStep. */
  async startRotation(now = Date.now()): Promise<RotationState> {
    this.assertActive();
    const current = this.rotation();
    if (current && !current.completedAt) return current;
    const from = this.#ctx.keyring.list().map((info) => info.version);
    const to = await this.#ctx.keyring.rotate(now);
    const state: RotationState = {
      from,
      to,
      startedAt: new Date(now).toISOString(),
      resealedAtoms: 0,
      reencryptedDocuments: 0,
      completedAt: null,
      destroyedVersions: [],
    };
    this.#setJson("rotation", state);
    return state;
  }

  /**
   * One batch of re-encryption towards the rotation target. When no atom or document is left under an older
   * version, the older versions are destroyed. Returns true when the rotation is complete.
   */
  async rotationStep(now = Date.now()): Promise<boolean> {
    const state = this.rotation();
    if (!state || state.completedAt || this.state() !== "active") return true;
    state.resealedAtoms += await this.#ctx.kb.resealBatch(state.to, BATCH, now);
    state.reencryptedDocuments += await this.#ctx.blobs.reencryptBatch(state.to, DOC_BATCH);
    const inUse = new Set([...this.#ctx.kb.keyVersionsInUse(), ...this.#ctx.blobs.keyVersionsInUse()]);
    const pending = [...inUse].some((version) => version < state.to);
    if (!pending) {
      for (const info of this.#ctx.keyring.list()) {
        if (info.version < state.to && !inUse.has(info.version)) {
          this.#ctx.keyring.destroy(info.version);
          state.destroyedVersions.push(info.version);
        }
      }
      state.completedAt = new Date(now).toISOString();
    }
    this.#setJson("rotation", state);
    return !pending;
  }

  #count(table: "atoms" | "documents" | "embedding_cache" | "local_vectors" | "vectorize_ids"): number {
    return this.#sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE tenant = ?`, this.#ctx.tenant).one()
      .n;
  }

  #deleteSome(table: "embedding_cache" | "local_vectors"): number {
    const before = this.#count(table);
    this.#sql.exec(
      `DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE tenant = ? LIMIT ?)`,
      this.#ctx.tenant,
      BATCH * 5,
    );
    return before - this.#count(table);
  }

  #meta(key: string): string | null {
    return (
      this.#sql.exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = ?`, key).toArray()[0]?.value ?? null
    );
  }

  #setMeta(key: string, value: string): void {
    this.#sql.exec(
      `INSERT INTO tenant_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      key,
      value,
    );
  }

  #json<T>(key: string): T | null {
    const value = this.#meta(key);
    return value === null ? null : (JSON.parse(value) as T);
  }

  #setJson(key: string, value: unknown): void {
    this.#setMeta(key, JSON.stringify(value));
  }
}
