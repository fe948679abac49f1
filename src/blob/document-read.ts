import { decryptingReadable, HEADER_SIZE, openRandomAccess } from "../crypto/chunked-aead";
import { KbError } from "../errors";
import { rangeReadable } from "./range-stream";
import { type ByteRange, type RangeRequest, resolveRange } from "./ranges";

/**
 * Reading one stored document object: the whole object as a decrypting stream, or a byte range decrypted
 * chunk-wise, both with bounded memory. The object's length and key commitment (wrong key, tenant, object key or
 * version) are checked first, before any plaintext is released and before any response exists; every later read
 * is pinned to the object whose header was checked, so a concurrent replacement fails closed (ERR_DECRYPT).
 */
export async function readDocumentObject(
  bucket: R2Bucket,
  key: string,
  dataKey: Uint8Array,
  context: Uint8Array,
  range: RangeRequest | undefined,
): Promise<{ body: ReadableStream<Uint8Array>; range: ByteRange | null }> {
  const header = await bucket.get(key, { range: { offset: 0, length: HEADER_SIZE } });
  if (!header) throw new KbError("ERR_DECRYPT", "decryption failed");
  // Checked here, before any response exists: such an object fails the request (5xx) instead of becoming a 200
  // whose body breaks.
  const reader = await openRandomAccess(dataKey, context, new Uint8Array(await header.arrayBuffer()), header.size);
  if (!range) {
    // Pinned to the object whose header was checked; a concurrent replacement fails closed.
    const object = await bucket.get(key, { onlyIf: { etagMatches: header.etag } });
    if (!object || !("body" in object)) throw new KbError("ERR_DECRYPT", "decryption failed");
    return { body: decryptingReadable(object.body, dataKey, context), range: null };
  }
  const size = reader.plaintextLength;
  const wanted = resolveRange(range, size);
  const span = reader.chunkSpan(wanted.start, wanted.end);
  const slice = await bucket.get(key, {
    range: { offset: span.ciphertextStart, length: span.ciphertextEnd - span.ciphertextStart },
    onlyIf: { etagMatches: header.etag },
  });
  if (!slice || !("body" in slice)) throw new KbError("ERR_DECRYPT", "decryption failed");
  // Streamed chunk by chunk (bounded memory, like a whole GET), never buffered whole.
  return { body: rangeReadable(reader, span, wanted, slice.body), range: wanted };
}
