import type { TenantKeyring } from "../crypto/tenant-keyring";
import { KbError } from "../errors";
import { checkQuota, type QuotaLimits } from "../tenant/quotas";
import { BlobCustody } from "./blob-custody";
import { documentObjectKey, newGeneration, type Transaction } from "./blob-gc";
import { putEncrypted } from "./blob-stream";
import { readDocumentObject } from "./document-read";
import { reencryptBatch } from "./document-reencrypt";
import { checkId, type DocumentMeta, type DocumentRow, DocumentRows, toMeta } from "./document-rows";
import type { ByteRange, RangeRequest } from "./ranges";

/**
 * One tenant's documents in R2, encrypted with c2sp.org/chunked-encryption (Cobblestone-256) under the tenant's
 * data key. Every write stores a new object `t/<tenant>/docs/<id>/<generation>` (src/blob/blob-gc.ts: the key is
 * built here from the verified tenant, a validated id and a random generation; no client-supplied path reaches
 * R2). The encryption context binds tenant, full object key and key version, so an object copied under another
 * tenant's prefix, renamed (another id or generation), or relabelled with another key version fails to decrypt
 * before any plaintext is released (the key commitment is checked first).
 *
 * The `documents` table (tenant SQLite, src/blob/document-rows.ts) is the index of what exists, under which
 * generation and key version; R2 holds bytes; `blob_gc` lists objects that may exist without a row (collected by
 * `collectGarbage`). The order in which the two stores change is described, with its invariant, in
 * blob-custody.ts. Reads: src/blob/document-read.ts; rotation: src/blob/document-reencrypt.ts.
 */
export type { DocumentMeta } from "./document-rows";

/** Largest document accepted (the format allows 4 PiB; this bounds one tenant's single object). */
const MAX_DOCUMENT_BYTES = 1024 * 1024 * 1024;
const CONTENT_TYPE = /^[a-z0-9!#$&^_.+-]{1,64}\/[a-z0-9!#$&^_.+-]{1,64}(;\s?[a-z0-9_-]{1,32}=[a-z0-9._-]{1,64})?$/i;

export class EncryptedBlobs {
  readonly #bucket: R2Bucket;
  readonly #tenant: string;
  readonly #keyring: TenantKeyring;
  readonly #rows: DocumentRows;
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
    this.#rows = new DocumentRows(sql, tenant);
    this.#custody = new BlobCustody(bucket, sql, tenant, transaction);
  }

  /** The object key of one generation of document `id` (null: the legacy key of rows without a generation). */
  objectKey(id: string, generation: string | null = null): string {
    checkId(id);
    return documentObjectKey(this.#tenant, id, generation);
  }

  /** The object key the document's row names, or null if there is no such document. */
  storedObjectKey(id: string): string | null {
    const row = this.#rows.get(id);
    return row ? this.#rows.objectKey(row) : null;
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
          const existing = this.#rows.get(id) ?? null;
          const row: DocumentRow = {
            id,
            generation,
            key_version: version,
            size: length,
            content_type: contentType,
            created_at: existing?.created_at ?? now,
            updated_at: now,
          };
          this.#rows.upsert(row);
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
    const { n, bytes } = this.#rows.usageExcept(id);
    checkQuota("documents", n, 1, limits.documents);
    checkQuota("document bytes", bytes, length, limits.documentBytes);
  }

  head(id: string): DocumentMeta | null {
    const row = this.#rows.get(id);
    return row ? toMeta(row) : null;
  }

  /** Whole document as a decrypting stream (bounded memory), or a byte range decrypted chunk-wise. */
  async get(
    id: string,
    range?: RangeRequest,
  ): Promise<{ meta: DocumentMeta; body: ReadableStream<Uint8Array>; range: ByteRange | null } | null> {
    const row = this.#rows.get(id);
    if (!row) return null;
    const key = this.#rows.objectKey(row);
    const dataKey = await this.#keyring.key(row.key_version);
    const read = await readDocumentObject(this.#bucket, key, dataKey, this.context(key, row.key_version), range);
    return { meta: toMeta(row), ...read };
  }

  /** Removes the row and records its object as garbage in one transaction (the commit point), then deletes it. */
  async delete(id: string, now = Date.now()): Promise<boolean> {
    checkId(id);
    return this.#exclusive(id, async () => {
      const gone = await this.#custody.remove(now, () => {
        const row = this.#rows.get(id);
        if (row) this.#rows.delete(id);
        return row ?? null;
      });
      return gone !== null;
    });
  }

  list(limit = 100, after = ""): DocumentMeta[] {
    return this.#rows.list(limit, after).map(toMeta);
  }

  count(): number {
    return this.#rows.count();
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
    const scope = {
      bucket: this.#bucket,
      tenant: this.#tenant,
      keyring: this.#keyring,
      rows: this.#rows,
      custody: this.#custody,
      exclusive: <T>(id: string, fn: () => Promise<T>) => this.#exclusive(id, fn),
      context: (objectKey: string, version: number) => this.context(objectKey, version),
    };
    return reencryptBatch(scope, target, limit, inTransaction, now);
  }

  /** Versions of stored documents and of uploads still in flight. */
  keyVersionsInUse(): number[] {
    return [...new Set([...this.#rows.keyVersions(), ...this.#inFlight.keys()])];
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
}
