import { toKbError } from "../errors";
import { log } from "../log";

/**
 * The tenant object's background jobs (key rotation, crypto-shred purge, queued extraction runs, blob clean-up),
 * driven by its alarm. Invariants:
 * - Each job is an independent step function; every step is idempotent and resumable (its progress is in SQLite),
 *   so a crash at any instruction only means the step runs again.
 * - One job's failure never blocks another: a step that throws is recorded in `job_state` (error code, failures,
 *   next retry) and retried with exponential backoff; the alarm itself never throws because of a job.
 * - The alarm is re-armed for the earliest moment any job has work: at once while a job reports more work, at the
 *   next retry time while a job is backing off, not at all when every job is idle.
 */
export type StepResult = "idle" | "more";

export interface Job {
  /** Stable name; a per-run job is `run:<run id>`. */
  readonly name: string;
  step(): Promise<StepResult>;
}

export interface JobFailure {
  readonly job: string;
  readonly failures: number;
  readonly lastCode: string;
  readonly lastFailedAt: string;
  readonly nextAttemptAt: string;
}

/** Backoff after the n-th consecutive failure: 1 s, 2 s, 4 s ... capped at 10 minutes. */
export function backoffMs(failures: number): number {
  return Math.min(1000 * 2 ** Math.max(0, failures - 1), 10 * 60_000);
}

/** Delay before the next alarm while some job still has work (lets requests in between). */
export const MORE_WORK_DELAY_MS = 10;

type JobRow = { job: string; failures: number; last_code: string; last_failed_at: number; next_at: number };

export class JobRunner {
  readonly #sql: SqlStorage;
  readonly #tenant: string;

  constructor(sql: SqlStorage, tenant: string) {
    this.#sql = sql;
    this.#tenant = tenant;
  }

  /**
   * Runs one step of every job that is not backing off, in order, each isolated from the others. Returns when the
   * alarm should fire next (epoch ms), or null when no job has anything left to do.
   */
  async runDue(jobs: readonly Job[], now = Date.now()): Promise<number | null> {
    const backoff = new Map(this.#rows().map((row) => [row.job, row]));
    let next: number | null = null;
    const wake = (at: number) => {
      next = next === null ? at : Math.min(next, at);
    };
    for (const job of jobs) {
      const failed = backoff.get(job.name);
      if (failed && failed.next_at > now) {
        wake(failed.next_at);
        continue;
      }
      try {
        const result = await job.step();
        if (failed) this.#clear(job.name);
        if (result === "more") wake(Date.now() + MORE_WORK_DELAY_MS);
      } catch (error) {
        const code = toKbError(error).code;
        const failures = (failed?.failures ?? 0) + 1;
        const at = Date.now();
        this.#record(job.name, failures, code, at, at + backoffMs(failures));
        log("error", { event: "job.failed", tenant: this.#tenant, code, detail: jobKind(job.name), outcome: "error" });
        wake(at + backoffMs(failures));
      }
    }
    // Failure records of jobs that no longer exist (a run that finished another way) go.
    const live = new Set(jobs.map((job) => job.name));
    for (const name of backoff.keys()) if (!live.has(name)) this.#clear(name);
    return next;
  }

  failures(): JobFailure[] {
    return this.#rows().map((row) => ({
      job: row.job,
      failures: row.failures,
      lastCode: row.last_code,
      lastFailedAt: new Date(row.last_failed_at).toISOString(),
      nextAttemptAt: new Date(row.next_at).toISOString(),
    }));
  }

  #rows(): JobRow[] {
    return this.#sql
      .exec<JobRow>(
        `SELECT job, failures, last_code, last_failed_at, next_at FROM job_state WHERE tenant = ? ORDER BY job`,
        this.#tenant,
      )
      .toArray();
  }

  #record(job: string, failures: number, code: string, at: number, nextAt: number): void {
    this.#sql.exec(
      `INSERT INTO job_state (tenant, job, failures, last_code, last_failed_at, next_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant, job) DO UPDATE SET failures = excluded.failures, last_code = excluded.last_code,
         last_failed_at = excluded.last_failed_at, next_at = excluded.next_at`,
      this.#tenant,
      job,
      failures,
      code,
      at,
      nextAt,
    );
  }

  #clear(job: string): void {
    this.#sql.exec(`DELETE FROM job_state WHERE tenant = ? AND job = ?`, this.#tenant, job);
  }
}

/** The job's kind for logs (a run id is not logged). */
function jobKind(name: string): string {
  return name.startsWith("run:") ? "run" : name;
}
