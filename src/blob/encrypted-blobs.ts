import { decryptingReadable, HEADER_SIZE, openRandomAccess } from "../crypto/chunked-aead";
import type { TenantKeyring } from "../crypto/tenant-keyring";
import { KbError } from "../errors";
import { LIMITS } from "../kb/limits";
import { log } from "../log";
import { checkQuota, type QuotaLimits } from "../tenant/quotas";
import { BlobCustody } from "./blob-custody";
import { documentObjectKey, newGeneration, type Transaction } from "./blob-gc";
import { putEncrypted } from "./blob-stream";
import { rangeReadable } from "./range-stream";
import { type ByteRange, type RangeRequest, resolveRange } from "./ranges";

/**
 * One tenant's documents in R2, encrypted with c2sp.org/chunked-encryption (Cobblestone-256) under the tenant's
 * data key. Every write stores a new object `t/<tenant>/docs/<id>/<generation>` (src/blob/blob-gc.ts: the key is
 * built here from the verified tenant, a validated id and a random generation; no client-supplied path reaches
 * R2). The encryption context binds tenant, full object key and key version, so an object copied under another
 * tenant's prefix, renamed (another id or generation), or relabelled with another key version fails to decrypt
 * before any plaintext is released (the key commitment is checked first).
 *
 * The `documents` table (tenant SQLite) is the index of what exists, under which generation and key version; R2
 * holds bytes; `blob_gc` lists objects that may exist without a row (collected by `collectGarbage`). The order in
 * which the two stores change is described, with its invariant, in blob-custody.ts.
 */
export interface DocumentMeta {
  readonly id: string;
  readonly size: number;
  readonly contentType: string;
  readonly keyVersion: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export type { ByteRange, RangeRequest } from "./ranges";
export { resolveRange } from "./ranges";

/** Largest document accepted (the format allows 4 PiB; this bounds one tenant's single object). */
export const MAX_DOCUMENT_BYTES = 1024 * 1024 * 1024;
const CONTENT_TYPE = /^[a-z0-9!#$&^_.+-]{1,64}\/[a-z0-9!#$&^_.+-]{1,64}(;\s?[a-z0-9_-]{1,32}=[a-z0-9._-]{1,64})?$/i;
const COLUMNS = "id, generation, key_version, size, content_type, created_at, updated_at";

type DocumentRow = {
  id: string;
  /** null: the legacy object key `t/<tenant>/docs/<id>` (rows written before generations). */
  generation: string | null;
  key_version: number;
  size: number;
  content_type: string;
  created_at: number;
  updated_at: number;
};

export class EncryptedBlobs {
  readonly #bucket: R2Bucket;
  readonly #tenant: string;
  readonly #keyring: TenantKeyring;
  readonly #sql: SqlStorage;
  readonly #custody: BlobCustody;
  /**
   * Writes to one document (put, delete, re-encryption, collection of its garbage), one at a time. Each awaits R2
   * between reading and writing; without this a re-encryption could commit the bytes it had read over a newer PUT
   * (a lost update) or resurrect a document a DELETE had just removed.
   */
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Key versions held by uploads still streaming in: a rotation must not retire them before their rows land. */
  readonly #inFlight = new Map<number, number>();

  /** Per-tenant document quotas (count and bytes); none in unit tests that build blobs alone. */
  readonly #limits: () => Pick<QuotaLimits, "documents" | "documentBytes"> | null;

  constructor(
    bucket: R2Bucket,
    tenant: string,
    keyring: TenantKeyring,
    sql: SqlStorage,
    transaction: Transaction,
    limits: () => Pick<QuotaLimits, "documents" | "documentBytes"> | null = () => null,
  ) {
    this.#limits = limits;
    this.#bucket = bucket;
    this.#tenant = tenant;
    this.#keyring = keyring;
    this.#sql = sql;
    this.#custody = new BlobCustody(bucket, sql, tenant, transaction);
  }

  /** The object key of one generation of document `id` (null: the legacy key of rows without a generation). */
  objectKey(id: string, generation: string | null = null): string {
    checkId(id);
    return documentObjectKey(this.#tenant, id, generation);
  }

  /** The object key the document's row names, or null if there is no such document. */
  storedObjectKey(id: string): string | null {
    const row = this.#row(id);
    return row ? this.#keyOf(row) : null;
  }

  /** The prefix of everything this tenant owns in R2 (offboarding purges it). */
  get prefix(): string {
    return `t/${this.#tenant}/`;
  }

  context(objectKey: string, version: number): Uint8Array {
    return new TextEncoder().encode(`tenant-mcp-kb/blob/v1\0${this.#tenant}\0${objectKey}\0${version}`);
  }

  /**
   * Stores a document, streaming: plaintext is encrypted chunk by chunk into a FixedLengthStream of the exact
   * ciphertext length, so memory stays bounded whatever the size. The body must be exactly `length` bytes.
   * Resolves once the row names the new object (the commit point); the old object is deleted afterwards.
   */
  async put(
    id: string,
    body: ReadableStream<Uint8Array> | Uint8Array,
    length: number,
    contentType: string,
    now = Date.now(),
  ): Promise<DocumentMeta> {
    checkId(id);
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_DOCUMENT_BYTES) {
      throw new KbError("ERR_LIMIT", `documents are at most ${MAX_DOCUMENT_BYTES} bytes`);
    }
    if (!CONTENT_TYPE.test(contentType)) throw new KbError("ERR_INVALID_PARAMS", "invalid content type");
    return this.#exclusive(id, async () => {
      this.#checkQuota(id, length); // before any byte is uploaded
      const { version, key: dataKey } = await this.#keyring.current();
      this.#inFlight.set(version, (this.#inFlight.get(version) ?? 0) + 1);
      try {
        const generation = newGeneration();
        let meta: DocumentMeta | undefined;
        const upload = async (key: string) => {
          await putEncrypted(this.#bucket, key, body, length, dataKey, this.context(key, version), {
            keyVersion: version,
            contentType,
          });
          if (!this.#keyring.list().some((info) => info.version === version)) {
            // The key was destroyed while the body streamed in (offboarding): nothing may land after the shred.
            throw new KbError("ERR_TENANT_OFFBOARDED", "This tenant has been offboarded.");
          }
        };
        await this.#custody.replace(id, generation, now, upload, () => {
          // Again at the commit point (other documents may have landed meanwhile); a refusal here rolls the
          // transaction back and the uploaded object is collected as garbage.
          this.#checkQuota(id, length);
          const existing = this.#row(id) ?? null;
          const row: DocumentRow = {
            id,
            generation,
            key_version: version,
            size: length,
            content_type: contentType,
            created_at: existing?.created_at ?? now,
            updated_at: now,
          };
          this.#sql.exec(
            `INSERT INTO documents (tenant, id, generation, key_version, size, content_type, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, id) DO UPDATE SET generation = excluded.generation,
               key_version = excluded.key_version, size = excluded.size, content_type = excluded.content_type,
               updated_at = excluded.updated_at`,
            this.#tenant,
            row.id,
            row.generation,
            row.key_version,
            row.size,
            row.content_type,
            row.created_at,
            row.updated_at,
          );
          meta = toMeta(row);
          return existing;
        });
        return meta as DocumentMeta;
      } finally {
        const held = (this.#inFlight.get(version) ?? 1) - 1;
        if (held > 0) this.#inFlight.set(version, held);
        else this.#inFlight.delete(version);
      }
    });
  }

  /** 429 ERR_QUOTA if storing `length` bytes as document `id` (new, or replacing it) exceeds a quota. */
  #checkQuota(id: string, length: number): void {
    const limits = this.#limits();
    if (!limits) return;
    const { n, bytes } = this.#sql
      .exec<{ n: number; bytes: number }>(
        `SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM documents WHERE tenant = ? AND id != ?`,
        this.#tenant,
        id,
      )
      .one();
    checkQuota("documents", n, 1, limits.documents);
    checkQuota("document bytes", bytes, length, limits.documentBytes);
  }

  head(id: string): DocumentMeta | null {
    const row = this.#row(id);
    return row ? toMeta(row) : null;
  }

  /** Whole document as a decrypting stream (bounded memory), or a byte range decrypted chunk-wise. */
  async get(
    id: string,
    range?: RangeRequest,
  ): Promise<{ meta: DocumentMeta; body: ReadableStream<Uint8Array>; range: ByteRange | null } | null> {
    const row = this.#row(id);
    if (!row) return null;
    const key = this.#keyOf(row);
    const dataKey = await this.#keyring.key(row.key_version);
    const context = this.context(key, row.key_version);
    const header = await this.#bucket.get(key, { range: { offset: 0, length: HEADER_SIZE } });
    if (!header) throw new KbError("ERR_DECRYPT", "decryption failed");
    // The object's length and key commitment (wrong key, tenant, object key or version) are checked here, before
    // any response exists: such an object fails the request (5xx) instead of becoming a 200 whose body breaks.
    const reader = await openRandomAccess(dataKey, context, new Uint8Array(await header.arrayBuffer()), header.size);
    if (!range) {
      // Pinned to the object whose header was checked; a concurrent replacement fails closed.
      const object = await this.#bucket.get(key, { onlyIf: { etagMatches: header.etag } });
      if (!object || !("body" in object)) throw new KbError("ERR_DECRYPT", "decryption failed");
      return { meta: toMeta(row), body: decryptingReadable(object.body, dataKey, context), range: null };
    }
    const size = reader.plaintextLength;
    const wanted = resolveRange(range, size);
    const span = reader.chunkSpan(wanted.start, wanted.end);
    const slice = await this.#bucket.get(key, {
      range: { offset: span.ciphertextStart, length: span.ciphertextEnd - span.ciphertextStart },
      onlyIf: { etagMatches: header.etag },
    });
    if (!slice || !("body" in slice)) throw new KbError("ERR_DECRYPT", "decryption failed");
    // Streamed chunk by chunk (bounded memory, like a whole GET), never buffered whole.
    return { meta: toMeta(row), body: rangeReadable(reader, span, wanted, slice.body), range: wanted };
  }

  /** Removes the row and records its object as garbage in one transaction (the commit point), then deletes it. */
  async delete(id: string, now = Date.now()): Promise<boolean> {
    checkId(id);
    return this.#exclusive(id, async () => {
      const gone = await this.#custody.remove(now, () => {
        const row = this.#row(id);
        if (row) this.#sql.exec(`DELETE FROM documents WHERE tenant = ? AND id = ?`, this.#tenant, id);
        return row ?? null;
      });
      return gone !== null;
    });
  }

  list(limit = 100, after = ""): DocumentMeta[] {
    return this.#sql
      .exec<DocumentRow>(
        `SELECT ${COLUMNS} FROM documents WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?`,
        this.#tenant,
        after,
        limit,
      )
      .toArray()
      .map(toMeta);
  }

  count(): number {
    return this.#sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM documents WHERE tenant = ?`, this.#tenant).one().n;
  }

  /**
   * Rotation: re-encrypts up to `limit` documents still under a version older than `target` (stream in, stream
   * out, to a new generation, by the same ordering as put). Idempotent and resumable. Returns how many it
   * re-encrypted.
   */
  async reencryptBatch(
    target: number,
    limit: number,
    inTransaction: (reencrypted: number) => void = () => {},
    now = Date.now(),
  ): Promise<number> {
    const rows = this.#sql
      .exec<DocumentRow>(
        `SELECT ${COLUMNS} FROM documents WHERE tenant = ? AND key_version < ? ORDER BY id LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray();
    const newKey = await this.#keyring.key(target);
    let done = 0;
    for (const row of rows) {
      await this.#exclusive(row.id, async () => {
        // Re-read under the lock: a write or a delete of this document may have come first.
        const current = this.#row(row.id);
        if (!current || current.key_version >= target) return;
        const key = this.#keyOf(current);
        const object = await this.#bucket.get(key);
        if (!object) {
          // The row names bytes that are gone (left by versions before the ordering of blob-custody.ts): they can never
          // be read or re-encrypted, and keeping the row would keep the rotation, and the old key, alive forever.
          this.#sql.exec(
            `DELETE FROM documents WHERE tenant = ? AND id = ? AND generation IS ? AND key_version = ?`,
            this.#tenant,
            current.id,
            current.generation,
            current.key_version,
          );
          log("warn", { event: "document.dangling", tenant: this.#tenant, outcome: "error" });
          return;
        }
        const sealed = await this.#sealedVersion(current, key, object);
        const plaintext = decryptingReadable(object.body, await this.#keyring.key(sealed), this.context(key, sealed));
        const generation = newGeneration();
        const upload = (next: string) =>
          putEncrypted(this.#bucket, next, plaintext, current.size, newKey, this.context(next, target), {
            keyVersion: target,
            contentType: current.content_type,
          });
        const commit = () => {
          // Commits only if the row still names the generation that was read (a concurrent write wins).
          const updated = this.#sql.exec(
            `UPDATE documents SET generation = ?, key_version = ?
             WHERE tenant = ? AND id = ? AND generation IS ? AND key_version = ?`,
            generation,
            target,
            this.#tenant,
            current.id,
            current.generation,
            current.key_version,
          ).rowsWritten;
          if (updated === 0) return undefined;
          // Counted inside the commit transaction (blob-custody.ts): a crash cannot separate the two.
          inTransaction(1);
          return current;
        };
        try {
          if (await this.#custody.replace(current.id, generation, now, upload, commit)) done++;
        } finally {
          await plaintext.cancel().catch(() => undefined); // releases the old object's body if it was not read
        }
      });
    }
    return done;
  }

  /** Versions of stored documents and of uploads still in flight. */
  keyVersionsInUse(): number[] {
    const stored = this.#sql
      .exec<{ v: number }>(`SELECT DISTINCT key_version AS v FROM documents WHERE tenant = ?`, this.#tenant)
      .toArray()
      .map((row) => row.v);
    return [...new Set([...stored, ...this.#inFlight.keys()])];
  }

  /** Offboarding: up to `limit` keys of this tenant's R2 objects (everything under its prefix). Needs no keys. */
  async listPrefix(limit: number): Promise<string[]> {
    const listed = await this.#bucket.list({ prefix: this.prefix, limit });
    return listed.objects.map((object) => object.key).filter((key) => key.startsWith(this.prefix));
  }

  /** Offboarding: deletes these objects (idempotent; keys outside this tenant's prefix are refused). */
  async deleteObjects(keys: readonly string[]): Promise<void> {
    if (keys.some((key) => !key.startsWith(this.prefix))) throw new KbError("ERR_INTERNAL", "foreign object key");
    if (keys.length) await this.#bucket.delete([...keys]);
  }

  /**
   * A clean-up job step: deletes up to `limit` objects that no row names (left by a crash or a failed R2 call
   * between the steps of blob-custody.ts) and their candidate rows. Idempotent; returns how many it collected.
   */
  async collectGarbage(limit = 100): Promise<number> {
    return this.#custody.collect(limit, (id, fn) => this.#exclusive(id, fn));
  }

  /** Garbage candidates still recorded (uploads in progress included). */
  pendingGarbage(): number {
    return this.#custody.pending();
  }

  /** Offboarding: drops every garbage candidate row (the purge deletes the whole prefix anyway). */
  forgetGarbage(): number {
    return this.#custody.purgeAll();
  }

  /**
   * The key version the row's object is sealed under: the row's own. A legacy row (no generation) may be one
   * rotation behind its object, left by the R2-then-row order of schema 3 (a crash between the two made it
   * unreadable): then the version the object's metadata names is used, only if the key commitment confirms it,
   * so that the rotation repairs the row instead of failing on it forever.
   */
  async #sealedVersion(row: DocumentRow, key: string, object: R2Object): Promise<number> {
    const labelled = Number(object.customMetadata?.keyVersion);
    const known = this.#keyring.list().some((info) => info.version === labelled);
    if (row.generation !== null || labelled === row.key_version || !known) return row.key_version;
    const header = await this.#bucket.get(key, { range: { offset: 0, length: HEADER_SIZE } });
    if (!header) return row.key_version;
    const bytes = new Uint8Array(await header.arrayBuffer());
    const opens = async (version: number) =>
      openRandomAccess(await this.#keyring.key(version), this.context(key, version), bytes, header.size).then(
        () => true,
        () => false,
      );
    if ((await opens(row.key_version)) || !(await opens(labelled))) return row.key_version;
    log("warn", { event: "document.version_repaired", tenant: this.#tenant, outcome: "ok" });
    return labelled;
  }

  #keyOf(row: DocumentRow): string {
    return documentObjectKey(this.#tenant, row.id, row.generation);
  }

  async #exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(id) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (this.#locks.get(id) === tail) this.#locks.delete(id);
    }
  }

  #row(id: string): DocumentRow | undefined {
    return this.#sql
      .exec<DocumentRow>(`SELECT ${COLUMNS} FROM documents WHERE tenant = ? AND id = ?`, this.#tenant, id)
      .toArray()[0];
  }
}

function checkId(id: string): void {
  if (typeof id !== "string" || !LIMITS.idPattern.test(id)) {
    throw new KbError("ERR_INVALID_PARAMS", `document id must match ${LIMITS.idPattern.source}`);
  }
}

function toMeta(row: DocumentRow): DocumentMeta {
  return {
    id: row.id,
    size: row.size,
    contentType: row.content_type,
    keyVersion: row.key_version,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}
