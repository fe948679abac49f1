/**
 * Patched copies of the streaming code of src/crypto/chunked-stream.ts (and of the whole-object encrypt/decrypt of
 * chunked-aead.ts), measured by bench/crypto.bench.test.ts next to the originals. Not used by the Worker. The format,
 * the key schedule and the per-chunk seal/open are the project's own, imported from src. Two candidate patches:
 *
 * A. Pull-based adapters (`encryptingReadable`, `decryptingReadable`; proposed as
 *    /tmp/bench-patches/chunked-stream-pull.patch): the project's own transformers, unchanged, driven from the
 *    `pull` of one ReadableStream that reads the source itself, instead of `source.pipeThrough(new
 *    TransformStream(...))`. That removes a pipe loop and a writable side per stage; in EncryptedBlobs#write it also
 *    folds the separate exactLength TransformStream into the same stage (`checkedLength`). Memory is unchanged: a
 *    pull runs only when the consumer has a read pending (high-water mark 0), reads one source piece and transforms
 *    it, so at most one piece and the chunks made from it are held, as with the TransformStream.
 * B. Batching with bounded concurrency (measured, not proposed): every whole chunk a piece completes is started at
 *    once (up to `maxInFlight`, 8 by default) and awaited once, results enqueued in index order; decryption releases,
 *    in order, the chunks of a batch before the first failed one and then fails, as the sequential original does.
 *    Optionally (`coalesce`) one output per batch (an extra copy). WebCrypto copies its input when called, so the
 *    fixed buffer can be refilled as soon as a call has been made (the original relies on the same property).
 *    In workerd the AES-GCM work happens synchronously inside the crypto.subtle call (issuing 4,096 calls costs as
 *    much as awaiting them), so there is nothing for concurrency to overlap; the bench shows no gain.
 */
import { ciphertextLength, plaintextLength } from "../src/crypto/chunked-aead";
import { CHUNK_SIZE, chunkCountFor, ENCRYPTED_CHUNK_SIZE, HEADER_SIZE } from "../src/crypto/chunked-format";
import { decryptError } from "../src/crypto/chunked-gcm";
import { beginEncryption, INPUT_KEY_SIZE, type MessageCipher, openHeader } from "../src/crypto/chunked-keys";
import {
  decryptingReadable,
  encryptingTransformer,
  pullThrough,
  type StreamStats,
  encryptingReadable as srcEncryptingReadable,
} from "../src/crypto/chunked-stream";

// ---------------------------------------------------------------------------------------------------------------
// B. Batching with bounded concurrency.

export interface PatchOptions {
  /** Chunks started before the transformer awaits them (default 8 = 128 KiB of plaintext). */
  readonly maxInFlight?: number;
  /** One enqueue per batch (extra copy) instead of one per chunk. Default false. */
  readonly coalesce?: boolean;
}

const DEFAULT_IN_FLIGHT = 8;

function asBytes(piece: unknown): Uint8Array {
  if (!(piece instanceof Uint8Array)) throw new TypeError("chunked encryption streams take Uint8Array pieces");
  return piece;
}

function joined(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array;
  let total = 0;
  for (const part of parts) total += part.byteLength;
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

export function patchedEncryptingTransformer(
  inputKey: Uint8Array,
  context: Uint8Array,
  stats?: StreamStats,
  options: PatchOptions = {},
): Transformer<Uint8Array, Uint8Array> {
  if (inputKey.byteLength !== INPUT_KEY_SIZE) throw new RangeError("input key must be 32 bytes");
  const maxInFlight = Math.max(1, options.maxInFlight ?? DEFAULT_IN_FLIGHT);
  const key = Uint8Array.from(inputKey);
  const ctx = Uint8Array.from(context);
  const buffer = new Uint8Array(CHUNK_SIZE);
  let fill = 0;
  let index = 0;
  let cipher: MessageCipher | undefined;
  const batch: Promise<Uint8Array>[] = [];

  const emit = (controller: TransformStreamDefaultController<Uint8Array>, bytes: Uint8Array): void => {
    if (stats) stats.maxEnqueuedBytes = Math.max(stats.maxEnqueuedBytes, bytes.byteLength);
    controller.enqueue(bytes);
  };
  const settle = async (controller: TransformStreamDefaultController<Uint8Array>): Promise<void> => {
    if (batch.length === 0) return;
    const sealed = await Promise.all(batch);
    batch.length = 0;
    if (options.coalesce) emit(controller, joined(sealed));
    else for (const chunk of sealed) emit(controller, chunk);
  };
  const started = (): MessageCipher => {
    if (!cipher) throw new Error("encrypting stream used before start");
    return cipher;
  };

  return {
    start: async (controller) => {
      const begun = await beginEncryption(key, ctx);
      key.fill(0);
      cipher = begun.cipher;
      emit(controller, begun.header);
    },
    transform: async (piece, controller) => {
      const bytes = asBytes(piece);
      const chunks = started();
      let offset = 0;
      try {
        while (offset < bytes.byteLength) {
          if (fill === 0 && bytes.byteLength - offset >= CHUNK_SIZE) {
            batch.push(chunks.seal(index, bytes.subarray(offset, offset + CHUNK_SIZE), false));
            index++;
            offset += CHUNK_SIZE;
          } else {
            const take = Math.min(CHUNK_SIZE - fill, bytes.byteLength - offset);
            buffer.set(bytes.subarray(offset, offset + take), fill);
            fill += take;
            offset += take;
            if (fill < CHUNK_SIZE) continue;
            batch.push(chunks.seal(index, buffer, false)); // WebCrypto copied `buffer` during this call.
            index++;
            fill = 0;
          }
          if (batch.length >= maxInFlight) await settle(controller);
        }
        await settle(controller);
      } catch (error) {
        batch.length = 0;
        throw error;
      }
      if (stats) stats.maxBufferedBytes = Math.max(stats.maxBufferedBytes, fill);
    },
    flush: async (controller) => {
      emit(controller, await started().seal(index, buffer.subarray(0, fill), true));
      buffer.fill(0);
    },
  };
}

export function patchedDecryptingTransformer(
  inputKey: Uint8Array,
  context: Uint8Array,
  stats?: StreamStats,
  options: PatchOptions = {},
): Transformer<Uint8Array, Uint8Array> {
  const maxInFlight = Math.max(1, options.maxInFlight ?? DEFAULT_IN_FLIGHT);
  const key = Uint8Array.from(inputKey);
  const ctx = Uint8Array.from(context);
  const header = new Uint8Array(HEADER_SIZE);
  let headerFill = 0;
  let cipher: MessageCipher | undefined;
  const pending = new Uint8Array(ENCRYPTED_CHUNK_SIZE);
  let fill = 0;
  let index = 0;
  let failed = false;
  const batch: Promise<Uint8Array>[] = [];

  const emit = (controller: TransformStreamDefaultController<Uint8Array>, bytes: Uint8Array): void => {
    if (stats) stats.maxEnqueuedBytes = Math.max(stats.maxEnqueuedBytes, bytes.byteLength);
    controller.enqueue(bytes);
  };
  const fail = (error: unknown): never => {
    failed = true;
    cipher = undefined;
    batch.length = 0;
    key.fill(0);
    pending.fill(0);
    throw error;
  };
  /** Releases the batch in index order up to its first failure, then rethrows that failure. */
  const settle = async (controller: TransformStreamDefaultController<Uint8Array>): Promise<void> => {
    if (batch.length === 0) return;
    const results = await Promise.allSettled(batch);
    batch.length = 0;
    const opened: Uint8Array[] = [];
    let failure: { reason: unknown } | null = null;
    for (const result of results) {
      if (result.status === "rejected") {
        failure = { reason: result.reason };
        break;
      }
      opened.push(result.value);
    }
    if (opened.length) {
      if (options.coalesce) emit(controller, joined(opened));
      else for (const chunk of opened) emit(controller, chunk);
    }
    if (failure) throw failure.reason;
  };

  const consume = async (bytes: Uint8Array, controller: TransformStreamDefaultController<Uint8Array>) => {
    let offset = 0;
    if (!cipher) {
      const take = Math.min(HEADER_SIZE - headerFill, bytes.byteLength);
      header.set(bytes.subarray(0, take), headerFill);
      headerFill += take;
      offset = take;
      if (headerFill < HEADER_SIZE) return;
      cipher = await openHeader(key, ctx, header);
      key.fill(0);
    }
    const chunks = cipher;
    while (offset < bytes.byteLength) {
      if (fill === ENCRYPTED_CHUNK_SIZE) {
        batch.push(chunks.open(index, pending, false)); // WebCrypto copied `pending` during this call.
        index++;
        fill = 0;
      } else if (fill === 0 && bytes.byteLength - offset > ENCRYPTED_CHUNK_SIZE) {
        batch.push(chunks.open(index, bytes.subarray(offset, offset + ENCRYPTED_CHUNK_SIZE), false));
        index++;
        offset += ENCRYPTED_CHUNK_SIZE;
      } else {
        const take = Math.min(ENCRYPTED_CHUNK_SIZE - fill, bytes.byteLength - offset);
        pending.set(bytes.subarray(offset, offset + take), fill);
        fill += take;
        offset += take;
        continue;
      }
      if (batch.length >= maxInFlight) await settle(controller);
    }
    await settle(controller);
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
        if (!cipher) throw decryptError();
        emit(controller, await cipher.open(index, pending.subarray(0, fill), true));
        pending.fill(0);
      } catch (error) {
        fail(error);
      }
    },
  };
}

export function patchedEncryptingStream(
  inputKey: Uint8Array,
  context: Uint8Array,
  options?: PatchOptions,
): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream(patchedEncryptingTransformer(inputKey, context, undefined, options));
}

export function patchedDecryptingStream(
  inputKey: Uint8Array,
  context: Uint8Array,
  options?: PatchOptions,
): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream(patchedDecryptingTransformer(inputKey, context, undefined, options));
}

/** Whole-object encrypt of chunked-aead.ts with the chunks sealed in batches of `maxInFlight`. */
export async function patchedEncrypt(
  inputKey: Uint8Array,
  context: Uint8Array,
  plaintext: Uint8Array,
  maxInFlight = DEFAULT_IN_FLIGHT,
): Promise<Uint8Array> {
  const total = ciphertextLength(plaintext.byteLength);
  const { header, cipher } = await beginEncryption(inputKey, context);
  const out = new Uint8Array(total);
  out.set(header, 0);
  const chunks = chunkCountFor(plaintext.byteLength);
  for (let first = 0; first < chunks; first += maxInFlight) {
    const last = Math.min(chunks, first + maxInFlight);
    const batch: Promise<Uint8Array>[] = [];
    for (let index = first; index < last; index++) {
      const isFinal = index === chunks - 1;
      const start = index * CHUNK_SIZE;
      batch.push(
        cipher.seal(index, plaintext.subarray(start, isFinal ? plaintext.byteLength : start + CHUNK_SIZE), isFinal),
      );
    }
    const sealed = await Promise.all(batch);
    for (const [i, chunk] of sealed.entries()) out.set(chunk, HEADER_SIZE + (first + i) * ENCRYPTED_CHUNK_SIZE);
  }
  return out;
}

/** Whole-object decrypt of chunked-aead.ts with the chunks opened in batches of `maxInFlight`. */
export async function patchedDecrypt(
  inputKey: Uint8Array,
  context: Uint8Array,
  ciphertext: Uint8Array,
  maxInFlight = DEFAULT_IN_FLIGHT,
): Promise<Uint8Array> {
  const length = plaintextLength(ciphertext.byteLength);
  const cipher = await openHeader(inputKey, context, ciphertext.subarray(0, HEADER_SIZE));
  const out = new Uint8Array(length);
  const chunks = chunkCountFor(length);
  try {
    for (let first = 0; first < chunks; first += maxInFlight) {
      const last = Math.min(chunks, first + maxInFlight);
      const batch: Promise<Uint8Array>[] = [];
      for (let index = first; index < last; index++) {
        const isFinal = index === chunks - 1;
        const start = HEADER_SIZE + index * ENCRYPTED_CHUNK_SIZE;
        const end = isFinal ? ciphertext.byteLength : start + ENCRYPTED_CHUNK_SIZE;
        batch.push(cipher.open(index, ciphertext.subarray(start, end), isFinal));
      }
      const opened = await Promise.all(batch);
      for (const [i, chunk] of opened.entries()) out.set(chunk, (first + i) * CHUNK_SIZE);
    }
  } catch (error) {
    out.fill(0);
    throw error;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// A. Pull-based adapters.

/** Fails a transformer's input that is longer or shorter than `length` (EncryptedBlobs' exactLength, folded in). */
export function checkedLength(
  inner: Transformer<Uint8Array, Uint8Array>,
  length: number,
  tooLong: () => unknown = () => new RangeError("body is longer than its declared length"),
  tooShort: () => unknown = () => new RangeError("body is shorter than its declared length"),
): Transformer<Uint8Array, Uint8Array> {
  let seen = 0;
  return {
    start: (controller) => inner.start?.(controller),
    transform: (chunk, controller) => {
      seen += chunk.byteLength;
      if (seen > length) throw tooLong();
      return inner.transform?.(chunk, controller);
    },
    flush: (controller) => {
      if (seen !== length) throw tooShort();
      return inner.flush?.(controller);
    },
  };
}

/** Patch A as it landed (src/crypto/chunked-stream.ts), plus EncryptedBlobs' length check in the same stage. */
export function encryptingReadable(
  source: ReadableStream<Uint8Array>,
  inputKey: Uint8Array,
  context: Uint8Array,
  length?: number,
): ReadableStream<Uint8Array> {
  if (length === undefined) return srcEncryptingReadable(source, inputKey, context);
  return pullThrough(source, checkedLength(encryptingTransformer(inputKey, context), length));
}

export { decryptingReadable, pullThrough };
