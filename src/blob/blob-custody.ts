/**
 * Custody of document objects across two stores (R2 holds bytes, the tenant's SQLite names them). R2 and SQLite
 * cannot commit together, so every write goes to a NEW object key and the stores change in this order:
 *
 *   1. record the new object key as a garbage candidate (`blob_gc`, reason `write`): from now on, whatever
 *      happens, the collector knows the object may exist;
 *   2. stream the ciphertext to R2 under that key (nothing names it yet, so a crash leaves only garbage);
 *   3. one SQLite transaction — the commit point: the `documents` row names the new key and key version, the old
 *      key becomes a candidate (reason `replaced` / `deleted`), the new key's candidate row is dropped;
 *   4. delete the old object from R2, then its candidate row (a crash here leaves a candidate: collected later).
 *
 * Invariant (holds at every instruction, hence after a crash at any of them): *a row never points at bytes it
 * cannot open, and an acknowledged write is readable after a crash at any instruction.* A row only ever names an
 * object whose upload completed before the row's transaction, and no object a row names is ever a candidate the
 * collector deletes (it re-checks, under the document's lock, that no row names the key).
 *
 * Table and key helpers: blob-gc.ts. EncryptedBlobs supplies the bytes and the row changes; this class the order.
 */

import { log } from "../log";
import { BlobGarbage, documentObjectKey, type GarbageCandidate, type Transaction } from "./blob-gc";

/** What custody needs to know of a documents row: which object it names. */
export interface Named {
  readonly id: string;
  readonly generation: string | null;
}

/** Runs `fn` while holding the lock of document `id` (EncryptedBlobs' per-document lock). */
export type Exclusive = <T>(id: string, fn: () => Promise<T>) => Promise<T>;

export class BlobCustody {
  readonly #bucket: R2Bucket;
  readonly #tenant: string;
  readonly #transaction: Transaction;
  readonly #garbage: BlobGarbage;
  /**
   * Object keys this instance is uploading right now (step 2): their `write` candidates are not garbage yet. After
   * a restart nothing is uploading, so every `write` candidate left by a crash is collectable.
   */
  readonly #writing = new Set<string>();

  constructor(bucket: R2Bucket, sql: SqlStorage, tenant: string, transaction: Transaction) {
    this.#bucket = bucket;
    this.#tenant = tenant;
    this.#transaction = transaction;
    this.#garbage = new BlobGarbage(sql, tenant);
  }

  /**
   * Steps 1-4 for one new generation of document `id`: `upload` streams the bytes to the new key; `commit` runs
   * inside the commit transaction, points the row at the new key and returns the row it replaced (null: none;
   * undefined: it did not commit, so the new object is garbage). Whatever fails before the commit leaves the row
   * as it was; what fails after it (deleting the old object) is left to `collect` and never fails the call, so a
   * call that throws never changed the document and a call that returns is durable.
   */
  async replace<R extends Named>(
    id: string,
    generation: string,
    now: number,
    upload: (key: string) => Promise<void>,
    commit: () => R | null | undefined,
  ): Promise<R | null | undefined> {
    const key = documentObjectKey(this.#tenant, id, generation);
    this.#writing.add(key);
    let replaced: R | null | undefined;
    try {
      this.#garbage.record(id, generation, "write", now); // (1) the intent, before any byte exists
      await upload(key); // (2) no row names `key` yet: a crash here leaves garbage only
      replaced = this.#transaction(() => {
        // (3) the commit point. Invariant: the row names `key` only now, after all of its bytes were stored.
        const old = commit();
        if (old === undefined) return undefined;
        if (old) this.#garbage.record(old.id, old.generation, "replaced", now);
        this.#garbage.drop(key);
        return old;
      });
    } catch (error) {
      this.#writing.delete(key);
      await this.release(id, generation); // no row names the new object: discard it now, or `collect` will
      throw error;
    }
    this.#writing.delete(key);
    // (4) the object no row names any more (the old one, or the new one if the commit was refused).
    if (replaced === undefined) await this.release(id, generation);
    else if (replaced) await this.release(replaced.id, replaced.generation);
    return replaced;
  }

  /**
   * A delete: `commit` removes the row and returns it (null: there was none); in the same transaction its object
   * becomes a candidate (the commit point), then the object is deleted (step 4).
   */
  async remove<R extends Named>(now: number, commit: () => R | null): Promise<R | null> {
    const gone = this.#transaction(() => {
      const row = commit();
      if (row) this.#garbage.record(row.id, row.generation, "deleted", now);
      return row;
    });
    if (gone) await this.release(gone.id, gone.generation);
    return gone;
  }

  /**
   * Best effort: deletes an object no row names, then its candidate row; a failure leaves the candidate for
   * `collect`. Re-checks that no row names the object (never delete what a row points at).
   */
  async release(id: string, generation: string | null): Promise<void> {
    const candidate = candidateOf(this.#tenant, id, generation);
    try {
      if (this.#garbage.isReferenced(candidate)) return;
      await this.#bucket.delete(candidate.objectKey);
      this.#garbage.drop(candidate.objectKey);
    } catch {
      log("warn", { event: "document.gc_deferred", tenant: this.#tenant, outcome: "error" });
    }
  }

  /**
   * A clean-up job step: deletes up to `limit` objects that no row names (left by a crash or a failed R2 call
   * between the steps above) and their candidate rows. Idempotent; returns how many it collected. Each candidate
   * is handled under its document's lock, so no upload of that document is streaming and no row can start
   * naming the key while it is checked and deleted.
   */
  async collect(limit: number, exclusive: Exclusive): Promise<number> {
    let collected = 0;
    for (const candidate of this.#garbage.candidates(limit, this.#writing)) {
      collected += await exclusive(candidate.documentId, async () => {
        if (this.#writing.has(candidate.objectKey) || !this.#garbage.has(candidate.objectKey)) return 0;
        if (this.#garbage.isReferenced(candidate)) {
          // Never delete an object a row names (not expected: a commit drops the candidate of the key it names).
          this.#garbage.drop(candidate.objectKey);
          return 0;
        }
        await this.#bucket.delete(candidate.objectKey);
        this.#garbage.drop(candidate.objectKey);
        return 1;
      });
    }
    return collected;
  }

  /** Candidates still recorded (uploads in progress included). */
  pending(): number {
    return this.#garbage.pending();
  }
}

function candidateOf(tenant: string, id: string, generation: string | null): GarbageCandidate {
  return { objectKey: documentObjectKey(tenant, id, generation), documentId: id, generation, reason: "write" };
}
