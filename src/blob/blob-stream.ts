import { ciphertextLength, encryptingReadable } from "../crypto/chunked-aead";
import { KbError } from "../errors";

/**
 * Streams `body` (exactly `length` plaintext bytes) encrypted into R2 at `key`: plaintext -> exact-length check ->
 * encrypting stream -> FixedLengthStream of the exact ciphertext length -> R2. Memory is one chunk, whatever the
 * size. A body that fails (too short, too long, client gone) errors the fixed-length stream, so R2 stores nothing.
 */
export async function putEncrypted(
  bucket: R2Bucket,
  key: string,
  body: ReadableStream<Uint8Array> | Uint8Array,
  length: number,
  dataKey: Uint8Array,
  context: Uint8Array,
  metadata: { readonly keyVersion: number; readonly contentType: string },
): Promise<void> {
  const source = body instanceof Uint8Array ? (new Response(body).body as ReadableStream<Uint8Array>) : body;
  const fixed = new FixedLengthStream(ciphertextLength(length));
  // One pull-based stage: the length check runs on each piece as the encrypting stream reads it.
  const pumped = encryptingReadable(source, dataKey, context, { inspect: exactLength(length) }).pipeTo(fixed.writable);
  const stored = bucket.put(key, fixed.readable, {
    httpMetadata: { contentType: "application/octet-stream" },
    customMetadata: {
      format: "c2sp-chunked-aes256gcm-v1",
      keyVersion: String(metadata.keyVersion),
      contentType: metadata.contentType,
    },
  });
  const [pump, put] = await Promise.allSettled([pumped, stored]);
  if (pump.status === "rejected") {
    throw pump.reason instanceof KbError
      ? pump.reason
      : new KbError("ERR_BAD_REQUEST", "document body could not be read");
  }
  if (put.status === "rejected") throw new KbError("ERR_INTERNAL", "document could not be stored");
}

/** A piece inspector that fails a body longer or shorter than declared (checked before the piece is encrypted). */
function exactLength(length: number): (piece: Uint8Array | null) => void {
  let seen = 0;
  return (piece) => {
    if (piece === null) {
      if (seen !== length) throw new KbError("ERR_BAD_REQUEST", "document body is shorter than its declared length");
      return;
    }
    seen += piece.byteLength;
    if (seen > length) throw new KbError("ERR_BAD_REQUEST", "document body is longer than its declared length");
  };
}
