import { CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, HEADER_SIZE } from "./chunked-format";
import { decryptError } from "./chunked-gcm";
import { beginEncryption, INPUT_KEY_SIZE, type MessageCipher, openHeader } from "./chunked-keys";

/**
 * The two chunk state machines of streaming Cobblestone-256, apart from any stream API (chunked-stream.ts drives
 * them). Pure apart from WebCrypto. A coder is fed input pieces and adds the chunks it codes to a Batch; one output
 * takes the whole batch.
 *
 * Per chunk: one WebCrypto call, in order, awaited before the next (workerd does the AES-GCM work inside the call,
 * so there is nothing for concurrency to overlap). A chunk lying whole inside a piece is coded from a view of it;
 * only a chunk straddling two pieces is first copied into the coder's one fixed buffer. WebCrypto copies its input
 * when called, so that buffer is refilled as soon as the call has been made.
 *
 * Memory: the fixed buffer (one chunk), plus at most BATCH_CHUNKS coded chunks (and the header) in the batch: feed()
 * returns as soon as the batch is full, wherever it stands in the piece.
 */

/** Chunks one batch holds at most: 16 chunks = 256 KiB of plaintext, 262,400 bytes of ciphertext. */
export const BATCH_CHUNKS = 16;

/** Coded chunks waiting to leave as one output. */
export class Batch {
  #parts: Uint8Array[] = [];
  #bytes = 0;
  #chunks = 0;

  get full(): boolean {
    return this.#chunks >= BATCH_CHUNKS;
  }

  /** Number of coded chunks held (the header does not count). */
  get chunks(): number {
    return this.#chunks;
  }

  add(part: Uint8Array, isChunk = true): void {
    this.#parts.push(part);
    this.#bytes += part.byteLength;
    if (isChunk) this.#chunks++;
  }

  /** Everything held as one output (the part itself if there is one, else one copy), and empties the batch. */
  take(): Uint8Array | null {
    const parts = this.#parts;
    const bytes = this.#bytes;
    this.#parts = [];
    this.#bytes = 0;
    this.#chunks = 0;
    if (parts.length <= 1) return parts[0] ?? null;
    const out = new Uint8Array(bytes);
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.byteLength;
    }
    return out;
  }
}

/** What chunked-stream.ts drives: start once, feed pieces in order, finish at the end of the input. */
export interface ChunkCoder {
  /** Bytes held in the coder's own buffers (a partial chunk or header). */
  readonly buffered: number;
  start(out: Batch): Promise<void>;
  /** Codes from `piece[offset..]` until the piece is used up or `out` is full; returns where it stopped. */
  feed(piece: Uint8Array, offset: number, out: Batch): Promise<number>;
  /** The input ended: codes the final chunk into `out`. */
  finish(out: Batch): Promise<void>;
  /** Zeroes the buffers after a failure or a cancel. */
  wipe(): void;
}

/**
 * Encryption: the header first, then each full 16 KiB chunk as soon as it is complete (a full chunk is never
 * final), and in finish() the final short chunk, possibly empty. RangeError (synchronously) for a key that is not
 * 32 bytes. `salt` is for tests; omit it in production.
 */
export class ChunkSealer implements ChunkCoder {
  readonly #key: Uint8Array;
  readonly #context: Uint8Array;
  readonly #salt: Uint8Array | undefined;
  readonly #buffer = new Uint8Array(CHUNK_SIZE); // [0, fill) is the plaintext of chunk `index`; fill < CHUNK_SIZE.
  #fill = 0;
  #index = 0;
  #cipher: MessageCipher | undefined;

  constructor(inputKey: Uint8Array, context: Uint8Array, salt?: Uint8Array) {
    if (inputKey.byteLength !== INPUT_KEY_SIZE) throw new RangeError("input key must be 32 bytes");
    this.#key = Uint8Array.from(inputKey); // The caller may reuse its buffers before start() runs.
    this.#context = Uint8Array.from(context);
    this.#salt = salt;
  }

  get buffered(): number {
    return this.#fill;
  }

  async start(out: Batch): Promise<void> {
    const begun = await beginEncryption(this.#key, this.#context, this.#salt);
    this.#key.fill(0);
    this.#cipher = begun.cipher;
    out.add(begun.header, false);
  }

  async feed(piece: Uint8Array, offset: number, out: Batch): Promise<number> {
    const cipher = this.#started();
    let at = offset;
    while (at < piece.byteLength && !out.full) {
      if (this.#fill === 0 && piece.byteLength - at >= CHUNK_SIZE) {
        out.add(await cipher.seal(this.#index, piece.subarray(at, at + CHUNK_SIZE), false));
        this.#index++;
        at += CHUNK_SIZE;
        continue;
      }
      const take = Math.min(CHUNK_SIZE - this.#fill, piece.byteLength - at);
      this.#buffer.set(piece.subarray(at, at + take), this.#fill);
      this.#fill += take;
      at += take;
      if (this.#fill === CHUNK_SIZE) {
        out.add(await cipher.seal(this.#index, this.#buffer, false));
        this.#index++;
        this.#fill = 0;
      }
    }
    return at;
  }

  async finish(out: Batch): Promise<void> {
    out.add(await this.#started().seal(this.#index, this.#buffer.subarray(0, this.#fill), true));
    this.wipe();
  }

  wipe(): void {
    this.#buffer.fill(0);
    this.#key.fill(0);
  }

  #started(): MessageCipher {
    if (!this.#cipher) throw new Error("encrypting stream used before start");
    return this.#cipher;
  }
}

/**
 * Decryption. Every failure is ERR_DECRYPT (a wrong-size key included). Invariants:
 * - the commitment is checked as soon as the 56-byte header is complete, before any chunk is opened;
 * - a chunk is added to the batch only after its tag verified, in order, so a batch (and everything released
 *   before it) is always an authenticated prefix of the message;
 * - a buffered full chunk is treated as non-final only once at least one byte after it has arrived, and as final
 *   only in finish(), when the input has ended; so truncation at a chunk boundary, a missing short final chunk,
 *   trailing data, reordered/duplicated chunks all fail (the final chunk's index and length bind the length);
 * - after the first failure every later call fails (a `failed` latch), and the buffers are zeroed.
 */
export class ChunkOpener implements ChunkCoder {
  readonly #key: Uint8Array;
  readonly #context: Uint8Array;
  readonly #header = new Uint8Array(HEADER_SIZE); // [0, headerFill) until the commitment is checked.
  #headerFill = 0;
  #cipher: MessageCipher | undefined; // Set once the commitment matched; never set on failure.
  // pending[0, fill) is the start of encrypted chunk `index`; 0 <= fill <= ENCRYPTED_CHUNK_SIZE.
  readonly #pending = new Uint8Array(ENCRYPTED_CHUNK_SIZE);
  #fill = 0;
  #index = 0;
  #failed = false;

  constructor(inputKey: Uint8Array, context: Uint8Array) {
    this.#key = Uint8Array.from(inputKey);
    this.#context = Uint8Array.from(context);
  }

  get buffered(): number {
    return this.#cipher ? this.#fill : this.#headerFill;
  }

  async start(): Promise<void> {
    if (this.#key.byteLength !== INPUT_KEY_SIZE) this.#fail();
  }

  async feed(piece: Uint8Array, offset: number, out: Batch): Promise<number> {
    if (this.#failed) throw decryptError();
    try {
      return await this.#feed(piece, offset, out);
    } catch (error) {
      this.#fail(error);
    }
  }

  async finish(out: Batch): Promise<void> {
    if (this.#failed) throw decryptError();
    try {
      // The input ended: pending holds the whole final chunk. Too short (missing or cut tag), empty (ends on a
      // chunk boundary) or full-size (no short final chunk) are all rejected by open(..., true).
      if (!this.#cipher) throw decryptError();
      out.add(await this.#cipher.open(this.#index, this.#pending.subarray(0, this.#fill), true));
      this.wipe();
    } catch (error) {
      this.#fail(error);
    }
  }

  wipe(): void {
    this.#key.fill(0);
    this.#pending.fill(0);
  }

  async #feed(piece: Uint8Array, offset: number, out: Batch): Promise<number> {
    let at = offset;
    if (!this.#cipher) {
      const take = Math.min(HEADER_SIZE - this.#headerFill, piece.byteLength - at);
      this.#header.set(piece.subarray(at, at + take), this.#headerFill);
      this.#headerFill += take;
      at += take;
      if (this.#headerFill < HEADER_SIZE) return at;
      // ERR_DECRYPT on a commitment mismatch: nothing opened yet.
      this.#cipher = await openHeader(this.#key, this.#context, this.#header);
      this.#key.fill(0);
    }
    const cipher = this.#cipher;
    while (at < piece.byteLength && !out.full) {
      // More bytes follow, so a full pending chunk is not the final one: open it now.
      if (this.#fill === ENCRYPTED_CHUNK_SIZE) {
        out.add(await cipher.open(this.#index, this.#pending, false));
        this.#index++;
        this.#fill = 0;
        continue;
      }
      // A whole chunk inside the piece, followed by at least one more byte, is opened from a view.
      if (this.#fill === 0 && piece.byteLength - at > ENCRYPTED_CHUNK_SIZE) {
        out.add(await cipher.open(this.#index, piece.subarray(at, at + ENCRYPTED_CHUNK_SIZE), false));
        this.#index++;
        at += ENCRYPTED_CHUNK_SIZE;
        continue;
      }
      const take = Math.min(ENCRYPTED_CHUNK_SIZE - this.#fill, piece.byteLength - at);
      this.#pending.set(piece.subarray(at, at + take), this.#fill);
      this.#fill += take;
      at += take;
    }
    return at;
  }

  #fail(error: unknown = decryptError()): never {
    this.#failed = true;
    this.#cipher = undefined;
    this.wipe();
    throw error;
  }
}
