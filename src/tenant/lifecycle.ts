import { KbError } from "../errors";
import { SQL_IDS_PER_STATEMENT } from "../kb/limits";
import type { Placement } from "../kb/placement";
import type { StepResult } from "./jobs";
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
  /** Whether the tenant had a local embedder key (destroyed with the data keys). Absent in older receipts. */
  readonly embedderKeyDestroyed?: boolean;
  /**
   * Whose vectors the purge deletes: local (sealed rows and pages in this object), the tenant's namespace of a
   * pooled Vectorize index (by id), or a dedicated Vectorize index (emptied; deleting the index is an operator
   * step, docs/crypto.md). Absent in older receipts.
   */
  readonly vectorPlacement?:
    | { readonly kind: "local" }
    | { readonly kind: "pooled"; readonly binding: string; readonly namespace: string }
    | { readonly kind: "dedicated"; readonly binding: string };
  readonly masterEpochsAtShred: string[];
  readonly sessionsEnded: number;
  purged: {
    atoms: number;
    vectors: number;
    documents: number;
    r2Objects: number;
    cacheRows: number;
    /** ExtractionRun objects wiped (each attempt of each run had its own object). */
    runObjects: number;
  };
  /** When the tenant's configuration (egress policy) and run records were deleted: the end of the purge. */
  residuePurgedAt: string | null;
  purgeBatches: number;
  completedAt: string | null;
  /** When the object's storage was dropped wholesale (set with completedAt; see purgeStep). */
  storageDroppedAt?: string;
}

/** What a shredded tenant's object keeps after its storage is dropped: the tombstone (docs/crypto.md). */
const TOMBSTONE_KEYS = ["tenant", "registered", "schema_version", "state", "shred_receipt"] as const;

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
const RUN_BATCH = 25;

export class TenantLifecycle {
  readonly #sql: SqlStorage;
  readonly #ctx: TenantContext;

  constructor(sql: SqlStorage, ctx: TenantContext) {
    this.#sql = sql;
    this.#ctx = ctx;
  }

  #transaction<T>(fn: () => T): T {
    return this.#ctx.transaction(fn);
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
      embedderKeyDestroyed: this.#ctx.keyring.embedderKeyInfo() !== null,
      vectorPlacement: receiptPlacement(this.#ctx.placement, this.#ctx.tenant),
      masterEpochsAtShred: masterEpochs,
      sessionsEnded: 0,
      purged: { atoms: 0, vectors: 0, documents: 0, r2Objects: 0, cacheRows: 0, runObjects: 0 },
      purgeBatches: 0,
      residuePurgedAt: null,
      completedAt: null,
    };
    this.#ctx.keyring.destroyAll(); // the data keys and the embedder key
    this.#ctx.embedder.forget?.(); // the keyed hasher's keys in this object's memory go too
    this.#ctx.localIndex?.wipe(); // plaintext vectors in this object's memory go with the keys
    this.#ctx.cipher.forget(); // and the kept tag and source tokens (their plaintext values are the cache keys)
    const sessionsEnded = this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM mcp_sessions WHERE tenant = ?`, this.#ctx.tenant)
      .one().n;
    this.#sql.exec(`DELETE FROM mcp_sessions WHERE tenant = ?`, this.#ctx.tenant);
    this.#sql.exec(`DELETE FROM tenant_meta WHERE key = 'rotation'`);
    this.#setMeta("state", "offboarding");
    this.#setJson("shred_receipt", { ...receipt, sessionsEnded });
    return { ...receipt, sessionsEnded };
  }

  /**
   * One purge batch of each kind. Every count in the receipt is written in the same SQLite transaction as the
   * deletions it counts, so a crash at any point leaves the receipt exact. R2 deletions cannot join a SQLite
   * transaction: the keys of a batch are recorded first (`purge_r2_pending`), deleted (idempotent), and counted in
   * the transaction that clears the record, so a batch interrupted after its delete is counted exactly once.
   */
  async purgeStep(now = Date.now()): Promise<StepResult> {
    const receipt = this.receipt();
    if (!receipt || receipt.completedAt) return "idle";
    const tenant = this.#ctx.tenant;
    await this.#ctx.kb.purgeBatch(BATCH, (ids) =>
      this.#bumpPurged({ atoms: ids.length, vectors: this.#vectorsOf(ids) }),
    );
    const r2Objects = await this.#purgeR2Batch();
    this.#transaction(() => {
      const documents = this.#deleted(
        `DELETE FROM documents WHERE rowid IN (SELECT rowid FROM documents WHERE tenant = ? LIMIT ?) RETURNING 1`,
        tenant,
        BATCH * 5,
      );
      const cacheRows = this.#deleted(
        `DELETE FROM embedding_cache WHERE rowid IN (SELECT rowid FROM embedding_cache WHERE tenant = ? LIMIT ?) RETURNING 1`,
        tenant,
        BATCH * 5,
      );
      // Vector rows whose atom is gone (none are expected; an interrupted write of an older version could leave one).
      const strays = this.#deleted(
        `DELETE FROM vector_rows WHERE rowid IN (SELECT rowid FROM vector_rows AS v WHERE v.tenant = ?
           AND NOT EXISTS (SELECT 1 FROM atoms AS a WHERE a.tenant = v.tenant AND a.id = v.atom_id) LIMIT ?)
         RETURNING 1`,
        tenant,
        BATCH * 5,
      );
      this.#bumpPurged({ documents, cacheRows, vectors: strays, batches: 1 });
    });
    const left =
      r2Objects +
      this.#count("atoms") +
      this.#count("documents") +
      this.#count("embedding_cache") +
      this.#count("vector_rows");
    if (left > 0) return "more";
    // The run objects keep {tenant, run, document} until their clean-up alarm: wipe them now, a batch per step.
    if ((await this.#wipeRunObjects()) > 0) return "more";
    // Completion: everything counted is gone. What is left (atom_tags, vectorize_ids, extraction_runs, job state,
    // vector pages under destroyed keys, freed SQLite pages holding old bytes) goes with the whole storage: it is
    // dropped and only the tombstone is written back, in one synchronous, atomic step (TenantContext.dropStorage).
    const done = this.receipt() as ShredReceipt;
    done.completedAt = new Date(now).toISOString();
    done.storageDroppedAt = done.completedAt;
    done.residuePurgedAt = done.completedAt;
    const values: Record<(typeof TOMBSTONE_KEYS)[number], string | null> = {
      tenant: this.#meta("tenant") ?? tenant,
      registered: this.#meta("registered"),
      schema_version: this.#meta("schema_version"),
      state: "offboarded",
      shred_receipt: JSON.stringify(done),
    };
    await this.#ctx.dropStorage(
      TOMBSTONE_KEYS.flatMap((key) => (values[key] === null ? [] : [{ key, value: values[key] as string }])),
    );
    return "idle";
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
   * One batch of re-encryption towards the rotation target; counts are written in the transactions that re-seal.
   * When no atom or document is left under an older version, the older versions are destroyed in the same
   * transaction that completes the job. Returns "more" until the rotation is complete.
   */
  async rotationStep(now = Date.now()): Promise<StepResult> {
    const state = this.rotation();
    if (!state || state.completedAt || this.state() !== "active") return "idle";
    await this.#ctx.kb.resealBatch(state.to, BATCH, now, (n) => this.#bumpRotation({ resealedAtoms: n }));
    await this.#ctx.blobs.reencryptBatch(state.to, DOC_BATCH, (n) => this.#bumpRotation({ reencryptedDocuments: n }));
    await this.#ctx.localIndex?.resealBatch(state.to, BATCH, this.#ctx.transaction);
    await this.#ctx.cache.resealBatch(state.to, BATCH, this.#ctx.transaction);
    const inUse = new Set([
      ...this.#ctx.kb.keyVersionsInUse(),
      ...this.#ctx.blobs.keyVersionsInUse(),
      ...(this.#ctx.localIndex?.keyVersionsInUse() ?? []),
      ...this.#ctx.cache.keyVersionsInUse(),
    ]);
    if ([...inUse].some((version) => version < state.to)) return "more";
    this.#transaction(() => {
      const done = this.rotation() as RotationState;
      for (const info of this.#ctx.keyring.list()) {
        if (info.version < done.to && !inUse.has(info.version)) {
          this.#ctx.keyring.destroy(info.version);
          done.destroyedVersions.push(info.version);
        }
      }
      if (done.destroyedVersions.length) this.#ctx.cipher.forget();
      done.completedAt = new Date(now).toISOString();
      this.#setJson("rotation", done);
    });
    return "idle";
  }

  /**
   * Wipes the ExtractionRun objects of up to RUN_BATCH runs (every attempt's object; idempotent), then deletes
   * those run rows and counts the objects in one transaction. Returns how many runs it handled.
   */
  async #wipeRunObjects(): Promise<number> {
    const rows = this.#sql
      .exec<{ run_id: string; object_ids: string }>(
        `SELECT run_id, object_ids FROM extraction_runs WHERE tenant = ? LIMIT ?`,
        this.#ctx.tenant,
        RUN_BATCH,
      )
      .toArray();
    let objects = 0;
    for (const row of rows) {
      const ids = JSON.parse(row.object_ids) as string[];
      await Promise.all(ids.map((id) => this.#ctx.runObject(id).wipe()));
      objects += ids.length;
    }
    if (rows.length) {
      this.#transaction(() => {
        for (const row of rows) {
          this.#sql.exec(`DELETE FROM extraction_runs WHERE tenant = ? AND run_id = ?`, this.#ctx.tenant, row.run_id);
        }
        this.#bumpPurged({ runObjects: objects });
      });
    }
    return rows.length;
  }

  /** Deletes one batch of the tenant's R2 objects (everything under its prefix, named by a row or not). */
  async #purgeR2Batch(): Promise<number> {
    const recorded = this.#json<string[]>("purge_r2_pending");
    const keys = recorded ?? (await this.#ctx.blobs.listPrefix(1000));
    if (keys.length === 0) return 0;
    if (!recorded) this.#setJson("purge_r2_pending", keys);
    await this.#ctx.blobs.deleteObjects(keys);
    this.#transaction(() => {
      this.#bumpPurged({ r2Objects: keys.length });
      this.#sql.exec(`DELETE FROM tenant_meta WHERE key = 'purge_r2_pending'`);
    });
    return keys.length;
  }

  /** Vector rows (local or Vectorize id map) of these atoms; called inside the deleting transaction. */
  #vectorsOf(ids: readonly string[]): number {
    let n = 0;
    for (let i = 0; i < ids.length; i += SQL_IDS_PER_STATEMENT) {
      const chunk = ids.slice(i, i + SQL_IDS_PER_STATEMENT);
      const list = chunk.map(() => "?").join(",");
      for (const table of ["vector_rows", "vectorize_ids"] as const) {
        n += this.#sql
          .exec<{ n: number }>(
            `SELECT COUNT(*) AS n FROM ${table} WHERE tenant = ? AND atom_id IN (${list})`,
            this.#ctx.tenant,
            ...chunk,
          )
          .one().n;
      }
    }
    return n;
  }

  /** Adds to the receipt's counts; synchronous, so it joins the caller's transaction. */
  #bumpPurged(add: Partial<ShredReceipt["purged"]> & { batches?: number }): void {
    const receipt = this.receipt();
    if (!receipt) return;
    for (const [field, n] of Object.entries(add) as [keyof ShredReceipt["purged"] | "batches", number][]) {
      if (field === "batches") receipt.purgeBatches += n;
      else receipt.purged[field] += n;
    }
    this.#setJson("shred_receipt", receipt);
  }

  #bumpRotation(add: { resealedAtoms?: number; reencryptedDocuments?: number }): void {
    const state = this.rotation();
    if (!state) return;
    state.resealedAtoms += add.resealedAtoms ?? 0;
    state.reencryptedDocuments += add.reencryptedDocuments ?? 0;
    this.#setJson("rotation", state);
  }

  /** Rows a `DELETE … RETURNING 1` removed (`rowsWritten` also counts index rows, so it is not a row count). */
  #deleted(statement: string, ...bindings: SqlStorageValue[]): number {
    return this.#sql.exec(statement, ...bindings).toArray().length;
  }

  #count(table: "atoms" | "documents" | "embedding_cache" | "vector_rows"): number {
    return this.#sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE tenant = ?`, this.#ctx.tenant).one()
      .n;
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

function receiptPlacement(placement: Placement, tenant: string): NonNullable<ShredReceipt["vectorPlacement"]> {
  if (placement.kind === "local") return { kind: "local" };
  return placement.vectorize.mode === "pooled"
    ? { kind: "pooled", binding: placement.binding, namespace: tenant }
    : { kind: "dedicated", binding: placement.binding };
}
