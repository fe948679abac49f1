import { loadConfig } from "../config";
import type { Env } from "../env";
import { ERROR_CODES, KbError, kbErrorOf } from "../errors";
import { LIMITS } from "../kb/limits";
import { log } from "../log";
import { checkQuota } from "../tenant/quotas";
import type { TenantContext } from "../tenant/tenant-context";
import { base64url } from "../util/bytes";
import { unwrap } from "../util/rpc-result";
import { yieldToEventLoop } from "../util/yield";
import { RunLedger } from "./run-ledger";
import { kindFor } from "./segmenter";
import { WriteBackChannel } from "./write-back-channel";

export { atomIdFor, documentSource, EXTRACTOR_VERSION } from "./write-back-channel";

/**
 * The tenant side of extraction runs (inside the tenant object). Each attempt of a run gets a brand-new
 * ExtractionRun object and a write-back channel (write-back-channel.ts) bound to this tenant, this run and this
 * document. A run is atomic (docs/extraction.md, "Atomicity"): it ends `done` with every atom of the document, or
 * `failed` with none of the atoms it created (they are rolled back, resumably, in bounded batches); its counts are
 * written in the same transactions as its atoms (run-ledger.ts), so they are exact at any crash point.
 */
const MAX_ATTEMPTS = 3;
/**
 * Before driving a run, the tenant object's alarm is made due within this delay: if the object dies while driving
 * (crash, eviction, deploy), the alarm of the next instance resumes the run (a new attempt, or the roll-back).
 * While this instance is still driving it, the alarm renews the delay instead (see `run`).
 */
export const RESUME_AFTER_MS = 30_000;
/** Atoms deleted per roll-back step, and ledger rows dropped per statement (each one short transaction). */
const ROLLBACK_BATCH = LIMITS.idsPerCall;
const DROP_BATCH = 1000;

export interface RunStatus {
  readonly runId: string;
  readonly documentId: string;
  /** A run rolling back its atoms after a final error is still `running` (its `error` is already set). */
  readonly status: "queued" | "running" | "done" | "failed";
  readonly attempt: number;
  readonly objectIds: string[];
  readonly segments: number;
  readonly written: number;
  readonly flagged: number;
  readonly error: string | null;
}

type RunRow = {
  run_id: string;
  subject: string;
  document_id: string;
  object_ids: string;
  /** `failing`: failed for good, its atoms being rolled back (shown as `running`). */
  status: "queued" | "running" | "failing" | "done" | "failed";
  attempt: number;
  segments: number;
  written: number;
  flagged: number;
  error: string | null;
};

export class RunManager {
  readonly #sql: SqlStorage;
  readonly #env: Env;
  readonly #tenant: TenantContext;
  readonly #ledger: RunLedger;

  constructor(sql: SqlStorage, env: Env, tenant: TenantContext) {
    this.#sql = sql;
    this.#env = env;
    this.#tenant = tenant;
    this.#ledger = new RunLedger(sql, tenant.tenant);
  }

  /** Records a new run for `subject` on `documentId` (checked to exist and to be extractable). */
  create(subject: string, documentId: string, now = Date.now()): string {
    const meta = this.#tenant.blobs.head(documentId);
    if (!meta) throw new KbError("ERR_NOT_FOUND", "document not found");
    if (meta.size === 0) throw new KbError("ERR_INVALID_PARAMS", "the document is empty");
    kindFor(meta.contentType); // ERR_UNSUPPORTED_TYPE now, not after a run object was started
    const unfinished = this.#sql
      .exec<{ n: number }>(
        `SELECT COUNT(*) AS n FROM extraction_runs WHERE tenant = ? AND status IN ('queued', 'running', 'failing')`,
        this.#tenant.tenant,
      )
      .one().n;
    // Queued and running (synchronous or not) together: one tenant cannot fill the extraction pool.
    checkQuota("extraction runs", unfinished, 1, this.#tenant.quotaLimits().runsQueued, 30);
    const runId = base64url(crypto.getRandomValues(new Uint8Array(16)));
    this.#sql.exec(
      `INSERT INTO extraction_runs (tenant, run_id, subject, document_id, object_ids, status, attempt, segments, written,
         flagged, error, created_at, updated_at) VALUES (?, ?, ?, ?, '[]', 'queued', 0, 0, 0, 0, NULL, ?, ?)`,
      this.#tenant.tenant,
      runId,
      subject,
      documentId,
      now,
      now,
    );
    return runId;
  }

  /**
   * Runs (or re-runs, or finishes rolling back) one run to completion, each attempt in a fresh ExtractionRun object.
   * An attempt that fails because its object went away (eviction, crash) is retried with a new object; the
   * deterministic atom ids make the retry idempotent. Content errors (unsupported type, malformed JSON, empty,
   * limits) are final. A final failure rolls back the atoms the run created.
   */
  async run(
    runId: string,
    onProgress: (segments: number, bytes: number) => Promise<void> = async () => {},
  ): Promise<RunStatus> {
    const active = this.#tenant.activeRuns;
    if (active.has(runId)) {
      // This instance is already driving this run (a synchronous ingest awaiting its run object while the alarm
      // fires): never start a second, concurrent attempt; renew the resume alarm instead, so that a crash of this
      // object later in the run is still followed by an alarm.
      await this.#tenant.alarmWithin(RESUME_AFTER_MS, { renew: true });
      const row = this.#row(runId);
      if (!row) throw new KbError("ERR_NOT_FOUND", "run not found");
      return toStatus(row);
    }
    active.add(runId);
    try {
      // Invariant: while a run is queued, running or rolling back, an alarm is due that will drive it if this
      // instance dies. Armed before any work, so a synchronous ingest resumes like a queued one.
      await this.#tenant.alarmWithin(RESUME_AFTER_MS, { renew: false });
      return await this.#drive(runId, onProgress);
    } finally {
      active.delete(runId);
    }
  }

  async #drive(runId: string, onProgress: (segments: number, bytes: number) => Promise<void>): Promise<RunStatus> {
    await this.#dropSettled(); // ledger rows a crash left behind after an earlier run finished
    for (;;) {
      const row = this.#row(runId);
      if (!row) throw new KbError("ERR_NOT_FOUND", "run not found");
      if (row.status === "done" || row.status === "failed") return toStatus(row);
      if (row.status === "failing") return this.#rollback(runId);
      const meta = this.#tenant.blobs.head(row.document_id);
      if (!meta) return this.#fail(runId, "ERR_NOT_FOUND");
      const id = this.#env.EXTRACTION_RUN.newUniqueId();
      const objectIds = [...(JSON.parse(row.object_ids) as string[]), id.toString()];
      this.#update(runId, { status: "running", attempt: row.attempt + 1, object_ids: JSON.stringify(objectIds) });
      const channel = new WriteBackChannel(this.#tenant, this.#ledger, runId, row.document_id, onProgress);
      try {
        const answer = await this.#env.EXTRACTION_RUN.get(id).execute(
          {
            tenant: this.#tenant.tenant,
            runId,
            documentId: row.document_id,
            contentType: meta.contentType,
            extractor: loadConfig(this.#env).extractor,
          },
          channel,
        );
        unwrap(answer); // a refusal is thrown here, as the KbError it was
        // The counts are the ledger's (committed with the atoms), not the run object's report.
        return this.#succeed(runId);
      } catch (error) {
        const known = kbErrorOf(error)?.code ?? null;
        const code = known ?? "ERR_RUN_INTERRUPTED";
        const retryable = known === null || ERROR_CODES[known] >= 500;
        log("warn", { event: "extraction.attempt.failed", tenant: this.#tenant.tenant, code, outcome: "error" });
        if (!retryable || row.attempt + 1 >= MAX_ATTEMPTS) return this.#fail(runId, code);
      }
    }
  }

  status(runId: string, subject: string): RunStatus | null {
    const row = this.#row(runId);
    return row && row.subject === subject ? toStatus(row) : null;
  }

  /**
   * Runs the alarm should drive: asynchronous ingests, runs whose driver died (running), failed runs whose
   * roll-back was cut short (failing). Runs this object instance is driving right now come last: the alarm reaches
   * them only when nothing else is waiting, and `run` then just renews the resume alarm for them.
   */
  pending(): string[] {
    const active = this.#tenant.activeRuns;
    const ids = this.#sql
      .exec<{ run_id: string }>(
        `SELECT run_id FROM extraction_runs WHERE tenant = ? AND status IN ('queued', 'running', 'failing')
         ORDER BY created_at`,
        this.#tenant.tenant,
      )
      .toArray()
      .map((row) => row.run_id);
    return [...ids.filter((runId) => !active.has(runId)), ...ids.filter((runId) => active.has(runId))];
  }

  async #succeed(runId: string): Promise<RunStatus> {
    this.#update(runId, { status: "done", error: null });
    await this.#dropSettled();
    return toStatus(this.#row(runId) as RunRow);
  }

  /** A final failure: from here on the run only rolls back (resumable: `failing` is picked up by the alarm). */
  async #fail(runId: string, code: string): Promise<RunStatus> {
    this.#update(runId, { status: "failing", error: code });
    return this.#rollback(runId);
  }

  /**
   * Deletes the atoms the run created, through the knowledge base's delete path, in bounded batches with a yield in
   * between. Each step is idempotent (an atom already deleted is just not found), so a roll-back cut short by a
   * crash is finished by the next driver; the counts are recounted exactly when it starts.
   */
  async #rollback(runId: string): Promise<RunStatus> {
    this.#tenant.transaction(() => this.#ledger.beginRollback(runId));
    for (;;) {
      const ids = this.#ledger.addedAtoms(runId, ROLLBACK_BATCH);
      if (ids.length === 0) break;
      await this.#tenant.kb.delete(ids);
      this.#tenant.transaction(() => this.#ledger.forgetDeleted(runId, ids));
      await yieldToEventLoop();
    }
    // Nothing of the run's own is left: atoms_written and flagged are 0 (atoms that existed before it stay).
    this.#update(runId, { status: "failed", written: 0, flagged: 0 });
    return toStatus(this.#row(runId) as RunRow);
  }

  async #dropSettled(): Promise<void> {
    while (this.#ledger.dropSettled(DROP_BATCH) > 0) await yieldToEventLoop();
  }

  /** One statement, so the fields change together (column names come from RunRow's keys, never from input). */
  #update(runId: string, fields: Partial<RunRow>): void {
    const entries = Object.entries(fields);
    this.#sql.exec(
      `UPDATE extraction_runs SET ${entries.map(([column]) => `${column} = ?`).join(", ")}, updated_at = ?
       WHERE tenant = ? AND run_id = ?`,
      ...entries.map(([, value]) => value as SqlStorageValue),
      Date.now(),
      this.#tenant.tenant,
      runId,
    );
  }

  #row(runId: string): RunRow | undefined {
    return this.#sql
      .exec<RunRow>(
        `SELECT run_id, subject, document_id, object_ids, status, attempt, segments, written, flagged, error
         FROM extraction_runs WHERE tenant = ? AND run_id = ?`,
        this.#tenant.tenant,
        runId,
      )
      .toArray()[0];
  }
}

function toStatus(row: RunRow): RunStatus {
  return {
    runId: row.run_id,
    documentId: row.document_id,
    status: row.status === "failing" ? "running" : row.status,
    attempt: row.attempt,
    objectIds: JSON.parse(row.object_ids) as string[],
    segments: row.segments,
    written: row.written,
    flagged: row.flagged,
    error: row.error,
  };
}
