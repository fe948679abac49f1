import { CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, HEADER_SIZE } from "./chunked-format";
import { decryptError } from "./chunked-gcm";
import { beginEncryption, INPUT_KEY_SIZE, type MessageCipher, openHeader } from "./chunked-keys";

/**
 * Streaming Cobblestone-256 with bounded memory. Pure, no I/O: the caller pipes bytes through.
 *
 * Each transformer owns one fixed buffer of at most one encrypted chunk (16 400 bytes) plus the 56-byte header;
 * an incoming piece is consumed in place and never retained, so memory is about one chunk plus one piece
 * regardless of the message size. Outputs are single chunks (at most 16 400 bytes each).
 *
 * Decryption invariants:
 * - the commitment is checked as soon as the 56-byte header is complete, before any chunk is opened;
 * - a chunk's plaintext is enqueued only after its tag verified, in order, so the released bytes are always an
 *   authenticated prefix of the message;
 * - a buffered chunk is treated as non-final only once at least one byte after it has arrived, and as final only in
 *   flush(), when the stream has ended; so truncation at a chunk boundary, a missing short final chunk, trailing
 *   data, reordered/duplicated chunks all fail (the final chunk's index and length bind the message length);
 * - after the first failure every later call fails (the stream is errored, and a `failed` latch backs that up).
 */

/** Test hook: high-water marks observed by a transformer. */
export interface StreamStats {
  /** Largest number of bytes held in the transformer's own buffers between calls. */
  maxBufferedBytes: number;
  /** Largest single output enqueued. */
  maxEnqueuedBytes: number;
}

function asBytes(piece: unknown): Uint8Array {
  if (!(piece instanceof Uint8Array)) throw new TypeError("chunked encryption streams take Uint8Array pieces");
  return piece;
}

function checkEncryptionKey(inputKey: Uint8Array): void {
  if (inputKey.byteLength !== INPUT_KEY_SIZE) throw new RangeError("input key must be 32 bytes");
}

/**
 * Encrypting transformer: header first, then each full 16 KiB chunk as soon as it is complete (a full chunk is
 * never final), and in flush() the final short chunk, possibly empty. `salt` is for tests; omit it in production.
 */
export function encryptingTransformer(
  inputKey: Uint8Array,
  context: Uint8Array,
  stats?: StreamStats,
  salt?: Uint8Array,
): Transformer<Uint8Array, Uint8Array> {
  checkEncryptionKey(inputKey);
  const key = Uint8Array.from(inputKey); // The caller may reuse its buffers before start() runs.
  const ctx = Uint8Array.from(context);
  const buffer = new Uint8Array(CHUNK_SIZE); // buffer[0, fill) is the plaintext of chunk `index`; fill < CHUNK_SIZE.
  let fill = 0;
  let index = 0;
  let cipher: MessageCipher | undefined;

  const emit = (controller: TransformStreamDefaultController<Uint8Array>, bytes: Uint8Array): void => {
    if (stats) stats.maxEnqueuedBytes = Math.max(stats.maxEnqueuedBytes, bytes.byteLength);
    controller.enqueue(bytes);
  };
  const started = (): MessageCipher => {
    if (!cipher) throw new Error("encrypting stream used before start");
    return cipher;
  };

  return {
    start: async (controller) => {
      const begun = await beginEncryption(key, ctx, salt);
      key.fill(0);
      cipher = begun.cipher;
      emit(controller, begun.header);
    },
    transform: async (piece, controller) => {
      const bytes = asBytes(piece);
      const chunks = started();
      let offset = 0;
      while (offset < bytes.byteLength) {
        if (fill === 0 && bytes.byteLength - offset >= CHUNK_SIZE) {
          // Fast path: a whole chunk inside the piece is sealed in place.
          emit(controller, await chunks.seal(index, bytes.subarray(offset, offset + CHUNK_SIZE), false));
          index++;
          offset += CHUNK_SIZE;
          continue;
        }
        const take = Math.min(CHUNK_SIZE - fill, bytes.byteLength - offset);
        buffer.set(bytes.subarray(offset, offset + take), fill);
        fill += take;
        offset += take;
        if (fill === CHUNK_SIZE) {
          emit(controller, await chunks.seal(index, buffer, false)); // WebCrypto copies its input on call.
          index++;
          fill = 0;
        }
      }
      if (stats) stats.maxBufferedBytes = Math.max(stats.maxBufferedBytes, fill);
    },
    flush: async (controller) => {
      emit(controller, await started().seal(index, buffer.subarray(0, fill), true));
      buffer.fill(0);
    },
  };
}

/**
 * Decrypting transformer; see the invariants above. Every failure is ERR_DECRYPT (a wrong-size key included),
 * except a non-Uint8Array piece (TypeError).
 */
export function decryptingTransformer(
  inputKey: Uint8Array,
  context: Uint8Array,
  stats?: StreamStats,
): Transformer<Uint8Array, Uint8Array> {
  const key = Uint8Array.from(inputKey);
  const ctx = Uint8Array.from(context);
  const header = new Uint8Array(HEADER_SIZE); // header[0, headerFill) until the commitment is checked.
  let headerFill = 0;
  let cipher: MessageCipher | undefined; // Set once the commitment matched; never set on failure.
  // pending[0, fill) is the start of encrypted chunk `index`; 0 <= fill <= ENCRYPTED_CHUNK_SIZE.
  const pending = new Uint8Array(ENCRYPTED_CHUNK_SIZE);
  let fill = 0;
  let index = 0;
  let failed = false;

  const emit = (controller: TransformStreamDefaultController<Uint8Array>, bytes: Uint8Array): void => {
    if (stats) stats.maxEnqueuedBytes = Math.max(stats.maxEnqueuedBytes, bytes.byteLength);
    controller.enqueue(bytes);
  };
  const fail = (error: unknown): never => {
    failed = true;
    cipher = undefined;
    key.fill(0);
    pending.fill(0);
    throw error;
  };

  const consume = async (bytes: Uint8Array, controller: TransformStreamDefaultController<Uint8Array>) => {
    let offset = 0;
    if (!cipher) {
      const take = Math.min(HEADER_SIZE - headerFill, bytes.byteLength);
      header.set(bytes.subarray(0, take), headerFill);
      headerFill += take;
      offset = take;
      if (headerFill < HEADER_SIZE) return;
      cipher = await openHeader(key, ctx, header); // ERR_DECRYPT on a commitment mismatch: nothing opened yet.
      key.fill(0);
    }
    while (offset < bytes.byteLength) {
      // More bytes follow, so a full pending chunk is not the final one: open it now.
      if (fill === ENCRYPTED_CHUNK_SIZE) {
        emit(controller, await cipher.open(index, pending, false));
        index++;
        fill = 0;
        continue;
      }
      // Fast path: a whole chunk inside the piece, followed by at least one more byte, is opened in place.
      if (fill === 0 && bytes.byteLength - offset > ENCRYPTED_CHUNK_SIZE) {
        emit(controller, await cipher.open(index, bytes.subarray(offset, offset + ENCRYPTED_CHUNK_SIZE), false));
        index++;
        offset += ENCRYPTED_CHUNK_SIZE;
        continue;
      }
      const take = Math.min(ENCRYPTED_CHUNK_SIZE - fill, bytes.byteLength - offset);
      pending.set(bytes.subarray(offset, offset + take), fill);
      fill += take;
      offset += take;
    }
  };

  return {
    start: () => {
      if (key.byteLength !== INPUT_KEY_SIZE) fail(decryptError());
    },
    transform: async (piece, controller) => {
      if (failed) throw decryptError();
      try {
        await consume(asBytes(piece), controller);
      } catch (error) {
        fail(error);
      }
      if (stats) stats.maxBufferedBytes = Math.max(stats.maxBufferedBytes, cipher ? fill : headerFill);
    },
    flush: async (controller) => {
      if (failed) throw decryptError();
      try {
        // The stream ended: pending holds the whole final chunk. Too short (missing or cut tag), empty (ends on a
        // chunk boundary) or full-size (no short final chunk) are all rejected by open(..., true).
        if (!cipher) throw decryptError();
        emit(controller, await cipher.open(index, pending.subarray(0, fill), true));
        pending.fill(0);
      } catch (error) {
        fail(error);
      }
    },
  };
}

/** Encrypts a byte stream. RangeError (synchronously) if the input key is not 32 bytes. */
export function encryptingStream(inputKey: Uint8Array, context: Uint8Array): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream(encryptingTransformer(inputKey, context));
}

/**
 * Decrypts a byte stream. Released bytes are always an authenticated prefix of the message; the stream errors
 * with ERR_DECRYPT on any tampering, truncation or trailing data, possibly after releasing such a prefix, so a
 * consumer must treat the output as complete only when the stream closes without error.
 */
export function decryptingStream(inputKey: Uint8Array, context: Uint8Array): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream(decryptingTransformer(inputKey, context));
}

/**
 * Pull-based equivalents of the streams above, for the hot paths (EncryptedBlobs): the same transformers, driven
 * from the `pull` of one ReadableStream that reads `source` itself, instead of `source.pipeThrough(new
 * TransformStream(...))`. One stream stage instead of a pipe loop plus a TransformStream's two sides: about 1.3x the
 * throughput in workerd (BENCHMARKS.md, crypto section). Same memory bound: with a high-water mark of 0 a pull runs
 * only for a pending read, reads one piece and transforms it, so at most one piece and the chunks made from it are
 * held. Errors from the transformer error the stream and cancel the source; cancelling the stream cancels the
 * source. The transformer's start() runs in the first pull (key derivation is async and must finish first).
 */
export function pullThrough(
  source: ReadableStream<Uint8Array>,
  transformer: Transformer<Uint8Array, Uint8Array>,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let started: Promise<void> | null = null;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        // A pull must enqueue something or close: the stream does not pull again by itself for a read that is
        // still pending. So read pieces until the transformer emits (a piece may only fill a buffer or a header).
        let emitted = false;
        const shim = {
          get desiredSize() {
            return controller.desiredSize;
          },
          enqueue: (chunk: Uint8Array) => {
            emitted = true;
            controller.enqueue(chunk);
          },
          error: (reason: unknown) => controller.error(reason),
          terminate: () => controller.close(),
        } as TransformStreamDefaultController<Uint8Array>;
        try {
          started ??= Promise.resolve(transformer.start?.(shim));
          await started;
          while (!emitted) {
            const { done, value } = await reader.read();
            if (done) {
              await transformer.flush?.(shim);
              controller.close();
              return;
            }
            await transformer.transform?.(value, shim);
          }
        } catch (error) {
          reader.cancel(error).catch(() => {});
          throw error;
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** encryptingStream as one pull-based stage over `source` (see pullThrough). RangeError now for a bad key. */
export function encryptingReadable(
  source: ReadableStream<Uint8Array>,
  inputKey: Uint8Array,
  context: Uint8Array,
): ReadableStream<Uint8Array> {
  return pullThrough(source, encryptingTransformer(inputKey, context));
}

/** decryptingStream as one pull-based stage over `source` (see pullThrough); same release and failure rules. */
export function decryptingReadable(
  source: ReadableStream<Uint8Array>,
  inputKey: Uint8Array,
  context: Uint8Array,
): ReadableStream<Uint8Array> {
  return pullThrough(source, decryptingTransformer(inputKey, context));
}
