import { Batch, type ChunkCoder, ChunkOpener, ChunkSealer } from "./chunked-coders";

/**
 * Streaming Cobblestone-256 with bounded memory, over the coders of chunked-coders.ts. Pure, no I/O.
 *
 * Two shapes of the same streams:
 * - `encryptingReadable` / `decryptingReadable` (the hot paths, EncryptedBlobs): one ReadableStream whose pull reads
 *   `source` itself and codes what it read. One stream stage per direction, and one output per BATCH_CHUNKS chunks
 *   (or at the end), so the per-chunk cost is the WebCrypto call plus one copy of its result into the output, and
 *   a stream round trip (pull, enqueue, read) is shared by 16 chunks. A batch fills before anything is released.
 * - `encryptingStream` / `decryptingStream` (and their transformers): TransformStreams, for callers that hold a
 *   writable; each transform() emits the chunks of its piece in outputs of at most BATCH_CHUNKS chunks.
 *
 * Release and failure rules (both shapes):
 * - decryption releases only authenticated chunks, in order, so the released bytes are always an authenticated
 *   prefix of the message; any tampering, truncation or trailing data errors the stream with ERR_DECRYPT, possibly
 *   after such a prefix, so a consumer must treat the output as complete only when the stream closes without error;
 * - a readable that fails after coding part of a batch releases that part first and errors on the next read;
 * - once failed, a stream stays failed; a readable cancels its source on failure, and cancelling it cancels the
 *   source.
 *
 * Memory and backpressure: a readable has a high-water mark of 0, so a pull runs only for a pending read; it holds
 * at most one source piece, one batch (at most 16 chunks, 262,400 bytes, plus the header) and the coder's fixed
 * buffer (one chunk), whatever the message or piece size. A transformer holds the piece it is given, the batches
 * made from it, and its fixed buffer.
 */

/** Test hook: high-water marks observed by a stream. */
export interface StreamStats {
  /** Largest number of bytes held in the coder's own buffers between calls. */
  maxBufferedBytes: number;
  /** Largest single output enqueued. */
  maxEnqueuedBytes: number;
}

export interface ReadableOptions {
  /**
   * Sees each source piece before it is coded, and null when the source has ended (before the final chunk is
   * coded). A throw errors the stream with that error and cancels the source (EncryptedBlobs' length check).
   */
  readonly inspect?: (piece: Uint8Array | null) => void;
  readonly stats?: StreamStats;
}

function asBytes(piece: unknown): Uint8Array {
  if (!(piece instanceof Uint8Array)) throw new TypeError("chunked encryption streams take Uint8Array pieces");
  return piece;
}

function record(stats: StreamStats | undefined, coder: ChunkCoder, output: Uint8Array | null): void {
  if (!stats) return;
  stats.maxBufferedBytes = Math.max(stats.maxBufferedBytes, coder.buffered);
  if (output) stats.maxEnqueuedBytes = Math.max(stats.maxEnqueuedBytes, output.byteLength);
}

const EMPTY: Uint8Array = new Uint8Array(0);

/** One pull-based stage: reads `source`, codes it with `coder`, one output per batch (see above). */
function codingReadable(
  source: ReadableStream<Uint8Array>,
  coder: ChunkCoder,
  options: ReadableOptions,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  const batch = new Batch();
  // piece[offset..] is input not coded yet; a piece is dropped once used up.
  let piece: Uint8Array = EMPTY;
  let offset = 0;
  let started = false;
  let ended = false;
  let failure: { readonly error: unknown } | null = null;

  const fail = (error: unknown): void => {
    failure = { error };
    piece = EMPTY;
    coder.wipe();
    reader.cancel(error).catch(() => {});
  };

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (failure) throw failure.error;
        try {
          if (!started) {
            started = true;
            await coder.start(batch);
          }
          // One output per full batch (or at the end): a pull must enqueue or close anyway (it is not called
          // again for a read still pending), and each output costs a stream round trip, which a batch shares.
          while (!batch.full) {
            if (offset < piece.byteLength) {
              offset = await coder.feed(piece, offset, batch);
              continue;
            }
            piece = EMPTY;
            const { done, value } = await reader.read();
            if (done) {
              options.inspect?.(null);
              await coder.finish(batch);
              ended = true;
              break;
            }
            piece = asBytes(value);
            offset = 0;
            options.inspect?.(piece);
          }
        } catch (error) {
          fail(error);
          // The chunks of this batch coded before the failure (authenticated, when decrypting) leave first.
          const prefix = batch.take();
          if (!prefix) throw error;
          record(options.stats, coder, prefix);
          controller.enqueue(prefix);
          return;
        }
        const output = batch.take();
        record(options.stats, coder, output);
        if (output) controller.enqueue(output);
        if (ended) controller.close();
      },
      cancel(reason) {
        piece = EMPTY;
        coder.wipe();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** A transformer over `coder`: each piece is coded whole, in outputs of at most BATCH_CHUNKS chunks. */
function codingTransformer(coder: ChunkCoder, stats?: StreamStats): Transformer<Uint8Array, Uint8Array> {
  const batch = new Batch();
  const emit = (controller: TransformStreamDefaultController<Uint8Array>): void => {
    const output = batch.take();
    record(stats, coder, output);
    if (output) controller.enqueue(output);
  };
  const guarded = async (controller: TransformStreamDefaultController<Uint8Array>, step: () => Promise<void>) => {
    try {
      await step();
    } catch (error) {
      coder.wipe();
      emit(controller); // Coded (authenticated) before the failure; the stream errors right after.
      throw error;
    }
    emit(controller);
  };
  return {
    start: (controller) => guarded(controller, () => coder.start(batch)),
    transform: (piece, controller) =>
      guarded(controller, async () => {
        const bytes = asBytes(piece);
        for (let at = 0; at < bytes.byteLength; ) {
          at = await coder.feed(bytes, at, batch);
          if (batch.full) emit(controller);
        }
      }),
    flush: (controller) => guarded(controller, () => coder.finish(batch)),
  };
}

/** Encrypting transformer; RangeError now for a key that is not 32 bytes. `salt` is for tests. */
export function encryptingTransformer(
  inputKey: Uint8Array,
  context: Uint8Array,
  stats?: StreamStats,
  salt?: Uint8Array,
): Transformer<Uint8Array, Uint8Array> {
  return codingTransformer(new ChunkSealer(inputKey, context, salt), stats);
}

/**
 * Decrypting transformer; see the release and failure rules above. Every failure is ERR_DECRYPT (a wrong-size key
 * included), except a non-Uint8Array piece (TypeError).
 */
export function decryptingTransformer(
  inputKey: Uint8Array,
  context: Uint8Array,
  stats?: StreamStats,
): Transformer<Uint8Array, Uint8Array> {
  return codingTransformer(new ChunkOpener(inputKey, context), stats);
}

/** Encrypts a byte stream. RangeError (synchronously) if the input key is not 32 bytes. */
export function encryptingStream(inputKey: Uint8Array, context: Uint8Array): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream(encryptingTransformer(inputKey, context));
}

/** Decrypts a byte stream; see the release and failure rules above. */
export function decryptingStream(inputKey: Uint8Array, context: Uint8Array): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream(decryptingTransformer(inputKey, context));
}

/** `source` encrypted, as one pull-based stage. RangeError (synchronously) for a key that is not 32 bytes. */
export function encryptingReadable(
  source: ReadableStream<Uint8Array>,
  inputKey: Uint8Array,
  context: Uint8Array,
  options: ReadableOptions & { readonly salt?: Uint8Array } = {},
): ReadableStream<Uint8Array> {
  return codingReadable(source, new ChunkSealer(inputKey, context, options.salt), options);
}

/** `source` decrypted, as one pull-based stage; see the release and failure rules above. */
export function decryptingReadable(
  source: ReadableStream<Uint8Array>,
  inputKey: Uint8Array,
  context: Uint8Array,
  options: ReadableOptions = {},
): ReadableStream<Uint8Array> {
  return codingReadable(source, new ChunkOpener(inputKey, context), options);
}
