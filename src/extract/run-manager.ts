import { RpcTarget } from "cloudflare:workers";
import type { Env } from "../env";
import { ERROR_CODES, KbError, kbErrorOf } from "../errors";
import { contentHash } from "../kb/embedding-cache";
import type { AtomInput } from "../kb/knowledge-base";
import { LIMITS } from "../kb/limits";
import { log } from "../log";
import type { TenantContext } from "../tenant/tenant-context";
import { base64url } from "../util/bytes";
import type { RunChannel, RunResult } from "./extraction-run";
import { kindFor, type Segment } from "./segmenter";

/**
 * The tenant side of extraction runs (inside the tenant object). Each attempt of a run gets a brand-new
 * ExtractionRun object and a write-back channel bound to this tenant, this run and this document: the channel
 * decides atom ids (SHA-256 of document, position and content hash, so a retried run rewrites the same atoms
 * instead of duplicating them), provenance and source; the run object cannot write anything else anywhere else.
 */
export const EXTRACTOR_VERSION = "segmenter-v2";
const MAX_ATTEMPTS = 3;

export interface RunStatus {
  readonly runId: string;
  readonly documentId: string;
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
  status: RunStatus["status"];
  attempt: number;
  segments: number;
  written: number;
  flagged: number;
  error: string | null;
};

export function atomIdFor(documentId: string, position: number, text: string): string {
  const digest = contentHash(`${documentId}\0${position}\0${contentHash(text)}`);
  return `x-${digest.slice(0, 40)}`;
}

export function documentSource(documentId: string): string {
  return `doc:${documentId}`;
}

class WriteBackChannel extends RpcTarget implements RunChannel {
  readonly #tenant: TenantContext;
  readonly #runId: string;
  readonly #documentId: string;
  readonly #onProgress: (segments: number, bytes: number) => Promise<void>;

  constructor(
    tenant: TenantContext,
    runId: string,
    documentId: string,
    onProgress: (segments: number, bytes: number) => Promise<void>,
  ) {
    super();
    this.#tenant = tenant;
    this.#runId = runId;
    this.#documentId = documentId;
    this.#onProgress = onProgress;
  }

  async readDocument(): Promise<ReadableStream<Uint8Array>> {
    const got = await this.#tenant.blobs.get(this.#documentId);
    if (!got) throw new KbError("ERR_NOT_FOUND", "document not found");
    return got.body;
  }

  async writeSegments(segments: Segment[]): Promise<number> {
    const atoms: AtomInput[] = segments.slice(0, 1000).map((segment) => {
      const hash = contentHash(segment.text);
      return {
        id: atomIdFor(this.#documentId, segment.position, segment.text),
        text: segment.text,
        ...(segment.title ? { title: segment.title.slice(0, LIMITS.titleChars) } : {}),
        source: documentSource(this.#documentId),
        tags: ["extracted"],
        flags: segment.flags,
        provenance: {
          document: this.#documentId,
          run: this.#runId,
          contentHash: hash,
          extractor: EXTRACTOR_VERSION,
          position: segment.position,
        },
      };
    });
    let written = 0;
    for (let i = 0; i < atoms.length; i += LIMITS.batchSize) {
      const result = await this.#tenant.kb.add(atoms.slice(i, i + LIMITS.batchSize));
      written += result.added.length + result.replaced.length;
    }
    return written;
  }

  async progress(segments: number, bytes: number): Promise<void> {
    await this.#onProgress(segments, bytes);
  }
}

export class RunManager {
  readonly #sql: SqlStorage;
  readonly #env: Env;
  readonly #tenant: TenantContext;

  constructor(sql: SqlStorage, env: Env, tenant: TenantContext) {
    this.#sql = sql;
    this.#env = env;
    this.#tenant = tenant;
  }

  /** Records a new run for `subject` on `documentId` (checked to exist and to be extractable). */
  create(subject: string, documentId: string, now = Date.now()): string {
    const meta = this.#tenant.blobs.head(documentId);
    if (!meta) throw new KbError("ERR_NOT_FOUND", "document not found");
    if (meta.size === 0) throw new KbError("ERR_INVALID_PARAMS", "the document is empty");
    kindFor(meta.contentType); // ERR_UNSUPPORTED_TYPE now, not after a run object was started
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
   * Runs (or re-runs) one run to completion, each attempt in a fresh ExtractionRun object. An attempt that fails
   * because its object went away (eviction, crash) is retried with a new object; the deterministic atom ids make
   * the retry idempotent. Content errors (unsupported type, malformed JSON, empty) are final.
   */
  async run(
    runId: string,
    onProgress: (segments: number, bytes: number) => Promise<void> = async () => {},
  ): Promise<RunStatus> {
    // This object instance is already driving this run (a synchronous ingest awaiting its run object while the
    // alarm fires): never start a second, concurrent attempt of it.
    const active = this.#tenant.activeRuns;
    if (active.has(runId)) {
      const row = this.#row(runId);
      if (!row) throw new KbError("ERR_NOT_FOUND", "run not found");
      return toStatus(row);
    }
    active.add(runId);
    try {
      return await this.#drive(runId, onProgress);
    } finally {
      active.delete(runId);
    }
  }

  async #drive(runId: string, onProgress: (segments: number, bytes: number) => Promise<void>): Promise<RunStatus> {
    for (;;) {
      const row = this.#row(runId);
      if (!row) throw new KbError("ERR_NOT_FOUND", "run not found");
      if (row.status === "done" || row.status === "failed") return toStatus(row);
      const meta = this.#tenant.blobs.head(row.document_id);
      if (!meta) return this.#finish(runId, "failed", null, "ERR_NOT_FOUND");
      const id = this.#env.EXTRACTION_RUN.newUniqueId();
      const objectIds = [...(JSON.parse(row.object_ids) as string[]), id.toString()];
      this.#update(runId, { status: "running", attempt: row.attempt + 1, object_ids: JSON.stringify(objectIds) });
      const channel = new WriteBackChannel(this.#tenant, runId, row.document_id, onProgress);
      try {
        const result = await this.#env.EXTRACTION_RUN.get(id).execute(
          {
            tenant: this.#tenant.tenant,
            runId,
            documentId: row.document_id,
            contentType: meta.contentType,
            extractor: this.#env.EXTRACTOR === "model" ? "model" : "deterministic",
          },
          channel,
        );
        return this.#finish(runId, "done", result, null);
      } catch (error) {
        const known = kbErrorOf(error)?.code ?? null;
        const code = known ?? "ERR_RUN_INTERRUPTED";
        const retryable = known === null || ERROR_CODES[known] >= 500;
        log("warn", { event: "extraction.attempt.failed", tenant: this.#tenant.tenant, code, outcome: "error" });
        if (!retryable || row.attempt + 1 >= MAX_ATTEMPTS) return this.#finish(runId, "failed", null, code);
      }
    }
  }

  status(runId: string, subject: string): RunStatus | null {
    const row = this.#row(runId);
    return row && row.subject === subject ? toStatus(row) : null;
  }

  /**
   * Runs waiting to be driven by the alarm (asynchronous ingests, and runs interrupted by an eviction), except the
   * ones this object instance is driving right now.
   */
  pending(): string[] {
    const active = this.#tenant.activeRuns;
    return this.#sql
      .exec<{ run_id: string }>(
        `SELECT run_id FROM extraction_runs WHERE tenant = ? AND status IN ('queued', 'running') ORDER BY created_at`,
        this.#tenant.tenant,
      )
      .toArray()
      .map((row) => row.run_id)
      .filter((runId) => !active.has(runId));
  }

  #finish(runId: string, status: "done" | "failed", result: RunResult | null, error: string | null): RunStatus {
    this.#update(runId, {
      status,
      error,
      ...(result ? { segments: result.segments, written: result.written, flagged: result.flagged } : {}),
    });
    return toStatus(this.#row(runId) as RunRow);
  }

  #update(runId: string, fields: Partial<RunRow>): void {
    for (const [column, value] of Object.entries(fields)) {
      this.#sql.exec(
        `UPDATE extraction_runs SET ${column} = ?, updated_at = ? WHERE tenant = ? AND run_id = ?`,
        value as SqlStorageValue,
        Date.now(),
        this.#tenant.tenant,
        runId,
      );
    }
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
    status: row.status,
    attempt: row.attempt,
    objectIds: JSON.parse(row.object_ids) as string[],
    segments: row.segments,
    written: row.written,
    flagged: row.flagged,
    error: row.error,
  };
}
