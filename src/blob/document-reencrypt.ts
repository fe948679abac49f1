import { decryptingReadable, HEADER_SIZE, openRandomAccess } from "../crypto/chunked-aead";
import type { TenantKeyring } from "../crypto/tenant-keyring";
import { log } from "../log";
import type { BlobCustody, Exclusive } from "./blob-custody";
import { newGeneration } from "./blob-gc";
import { putEncrypted } from "./blob-stream";
import type { DocumentRow, DocumentRows } from "./document-rows";

/**
 * Rotation of one tenant's documents to a newer data key version: each document is re-encrypted to a new
 * generation by the ordering of blob-custody.ts (new bytes under a new object key, the row switched in one
 * transaction, old bytes collected after), whose invariant it keeps: a row never points at bytes it cannot open.
 * The switch commits only if the row still names the generation that was read (a concurrent write wins), under
 * the document's lock.
 */

/** What re-encryption needs of one tenant's EncryptedBlobs (all bound to that tenant). */
export interface ReencryptionScope {
  readonly bucket: R2Bucket;
  readonly tenant: string;
  readonly keyring: TenantKeyring;
  readonly rows: DocumentRows;
  readonly custody: BlobCustody;
  /** The per-document lock (EncryptedBlobs): a re-encryption never commits the bytes it read over a newer write. */
  readonly exclusive: Exclusive;
  /** The encryption context of one object key and key version. */
  readonly context: (objectKey: string, version: number) => Uint8Array;
}

/**
 * Re-encrypts up to `limit` documents still under a version older than `target` (stream in, stream out, to a new
 * generation, by the same ordering as put). Idempotent and resumable. Returns how many it re-encrypted.
 */
export async function reencryptBatch(
  scope: ReencryptionScope,
  target: number,
  limit: number,
  inTransaction: (reencrypted: number) => void,
  now: number,
): Promise<number> {
  const { bucket, rows } = scope;
  const stale = rows.olderThan(target, limit);
  const newKey = await scope.keyring.key(target);
  let done = 0;
  for (const row of stale) {
    await scope.exclusive(row.id, async () => {
      // Re-read under the lock: a write or a delete of this document may have come first.
      const current = rows.get(row.id);
      if (!current || current.key_version >= target) return;
      const key = rows.objectKey(current);
      const object = await bucket.get(key);
      if (!object) {
        // The row names bytes that are gone (left by versions before the ordering of blob-custody.ts): they can never
        // be read or re-encrypted, and keeping the row would keep the rotation, and the old key, alive forever.
        rows.deleteIfUnchanged(current);
        log("warn", { event: "document.dangling", tenant: scope.tenant, outcome: "error" });
        return;
      }
      const sealed = await sealedVersion(scope, current, key, object);
      const plaintext = decryptingReadable(object.body, await scope.keyring.key(sealed), scope.context(key, sealed));
      const generation = newGeneration();
      const upload = (next: string) =>
        putEncrypted(bucket, next, plaintext, current.size, newKey, scope.context(next, target), {
          keyVersion: target,
          contentType: current.content_type,
        });
      const commit = () => {
        // Commits only if the row still names the generation that was read (a concurrent write wins).
        if (!rows.switchIfUnchanged(current, generation, target)) return undefined;
        // Counted inside the commit transaction (blob-custody.ts): a crash cannot separate the two.
        inTransaction(1);
        return current;
      };
      try {
        if (await scope.custody.replace(current.id, generation, now, upload, commit)) done++;
      } finally {
        await plaintext.cancel().catch(() => undefined); // releases the old object's body if it was not read
      }
    });
  }
  return done;
}

/**
 * The key version the row's object is sealed under: the row's own. A legacy row (no generation) may be one
 * rotation behind its object, left by the R2-then-row order of schema 3 (a crash between the two made it
 * unreadable): then the version the object's metadata names is used, only if the key commitment confirms it,
 * so that the rotation repairs the row instead of failing on it forever.
 */
async function sealedVersion(
  scope: ReencryptionScope,
  row: DocumentRow,
  key: string,
  object: R2Object,
): Promise<number> {
  const labelled = Number(object.customMetadata?.keyVersion);
  const known = scope.keyring.list().some((info) => info.version === labelled);
  if (row.generation !== null || labelled === row.key_version || !known) return row.key_version;
  const header = await scope.bucket.get(key, { range: { offset: 0, length: HEADER_SIZE } });
  if (!header) return row.key_version;
  const bytes = new Uint8Array(await header.arrayBuffer());
  const opens = async (version: number) =>
    openRandomAccess(await scope.keyring.key(version), scope.context(key, version), bytes, header.size).then(
      () => true,
      () => false,
    );
  if ((await opens(row.key_version)) || !(await opens(labelled))) return row.key_version;
  log("warn", { event: "document.version_repaired", tenant: scope.tenant, outcome: "ok" });
  return labelled;
}
