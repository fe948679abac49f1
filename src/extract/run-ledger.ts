import type { AddResult } from "../kb/knowledge-base";

/**
 * The ledger of one tenant's unfinished extraction runs: which atoms each run stored (`run_atoms`), and the run's
 * counts in `extraction_runs`. Every method that changes them is synchronous and meant to run inside the SQLite
 * transaction that changes the atoms, so that at any crash point:
 *
 *   extraction_runs.written = rows of the run in run_atoms = atoms of the run that are stored
 *   extraction_runs.flagged = those rows with flagged = 1
 *
 * (while nobody else deletes those atoms mid-run). Rows are per run, not per attempt: a retried attempt rewrites
 * the same deterministic ids, finds their rows and adds nothing, so the counts of a retried run end where a clean
 * run's do. `added = 1` marks atoms the run created (a failed run deletes them); `added = 0` atoms that existed
 * before the run (an earlier ingest of the same document): a failed run leaves those alone.
 */
export class RunLedger {
  readonly #sql: SqlStorage;
  readonly #tenant: string;

  constructor(sql: SqlStorage, tenant: string) {
    this.#sql = sql;
    this.#tenant = tenant;
  }

  /**
   * Records a committed `kb.add` batch of run `runId` (call from its onCommit hook, inside the transaction).
   * `segments` is how many segments the current attempt has handed back so far, including this batch.
   */
  recordBatch(runId: string, result: AddResult, flaggedIds: ReadonlySet<string>, segments: number | null): void {
    let written = 0;
    let flagged = 0;
    const insert = (atomId: string, added: 0 | 1) => {
      const isFlagged = flaggedIds.has(atomId) ? 1 : 0;
      const cursor = this.#sql.exec(
        `INSERT INTO run_atoms (tenant, run_id, atom_id, added, flagged) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant, run_id, atom_id) DO NOTHING`,
        this.#tenant,
        runId,
        atomId,
        added,
        isFlagged,
      );
      if (cursor.rowsWritten > 0) {
        written++;
        flagged += isFlagged;
      }
    };
    for (const id of result.added) insert(id, 1);
    for (const id of result.replaced) insert(id, 0);
    this.#sql.exec(
      `UPDATE extraction_runs SET written = written + ?, flagged = flagged + ?, segments = MAX(segments, ?),
         updated_at = ? WHERE tenant = ? AND run_id = ?`,
      written,
      flagged,
      segments ?? 0,
      Date.now(),
      this.#tenant,
      runId,
    );
  }

  /**
   * Start of a roll-back: forgets the atoms the run did not create (they stay) and recounts from the rows that are
   * left, joined with the atoms actually stored (exact even after a crash in the middle of an earlier roll-back).
   */
  beginRollback(runId: string): void {
    this.#sql.exec(`DELETE FROM run_atoms WHERE tenant = ? AND run_id = ? AND added = 0`, this.#tenant, runId);
    const { n, f } = this.#sql
      .exec<{ n: number; f: number | null }>(
        `SELECT COUNT(*) AS n, SUM(r.flagged) AS f FROM run_atoms r
         JOIN atoms a ON a.tenant = r.tenant AND a.id = r.atom_id WHERE r.tenant = ? AND r.run_id = ?`,
        this.#tenant,
        runId,
      )
      .one();
    this.#setCounts(runId, n, f ?? 0);
  }

  /** Up to `limit` atoms the run created that are still to be deleted. */
  addedAtoms(runId: string, limit: number): string[] {
    return this.#sql
      .exec<{ atom_id: string }>(
        `SELECT atom_id FROM run_atoms WHERE tenant = ? AND run_id = ? AND added = 1 ORDER BY atom_id LIMIT ?`,
        this.#tenant,
        runId,
        limit,
      )
      .toArray()
      .map((row) => row.atom_id);
  }

  /** After `kb.delete(ids)` committed: drops their rows and their share of the counts. */
  forgetDeleted(runId: string, ids: readonly string[]): void {
    let written = 0;
    let flagged = 0;
    for (const id of ids) {
      const row = this.#sql
        .exec<{ flagged: number }>(
          `DELETE FROM run_atoms WHERE tenant = ? AND run_id = ? AND atom_id = ? RETURNING flagged`,
          this.#tenant,
          runId,
          id,
        )
        .toArray()[0];
      if (row) {
        written++;
        flagged += row.flagged;
      }
    }
    this.#sql.exec(
      `UPDATE extraction_runs SET written = MAX(written - ?, 0), flagged = MAX(flagged - ?, 0), updated_at = ?
       WHERE tenant = ? AND run_id = ?`,
      written,
      flagged,
      Date.now(),
      this.#tenant,
      runId,
    );
  }

  /**
   * Drops up to `limit` rows of runs that are finished (done, or failed and rolled back). Returns how many: the
   * caller repeats (with yields) until 0. Rows left by a crash after a run finished are dropped by the next call.
   */
  dropSettled(limit: number): number {
    return this.#sql.exec(
      `DELETE FROM run_atoms WHERE rowid IN (
         SELECT r.rowid FROM run_atoms r JOIN extraction_runs e ON e.tenant = r.tenant AND e.run_id = r.run_id
         WHERE r.tenant = ? AND e.status IN ('done', 'failed') LIMIT ?)`,
      this.#tenant,
      limit,
    ).rowsWritten;
  }

  #setCounts(runId: string, written: number, flagged: number): void {
    this.#sql.exec(
      `UPDATE extraction_runs SET written = ?, flagged = ?, updated_at = ? WHERE tenant = ? AND run_id = ?`,
      written,
      flagged,
      Date.now(),
      this.#tenant,
      runId,
    );
  }
}
