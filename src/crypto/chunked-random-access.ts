import {
  CHUNK_SIZE,
  chunkCountFor,
  chunkOffset,
  ENCRYPTED_CHUNK_SIZE,
  plaintextLength,
  TAG_SIZE,
} from "./chunked-format";
import { decryptError } from "./chunked-gcm";
import { type MessageCipher, openHeader } from "./chunked-keys";

/**
 * Authenticated random access to a Cobblestone-256 object whose bytes the caller fetches (e.g. R2 ranged GETs).
 * Pure, no I/O.
 *
 * Plaintext byte i lives in chunk i // 16384 at offset i % 16384; chunk k starts at object offset 56 + k * 16400.
 * The total object length comes from storage metadata and is therefore only a claim until the final chunk has
 * been decrypted at the index and with the length that claim implies (authenticateFinalChunk, or decryptChunks on a
 * slice that reaches the end). Every chunk is decrypted knowing whether it is the final one.
 *
 * Serving an HTTP Range with it (P = decryptor.plaintextLength, Content-Length/Content-Range in plaintext bytes):
 *
 *   const header = await r2.get(key, { range: { offset: 0, length: HEADER_SIZE } });
 *   const d = await openRandomAccess(inputKey, context, header, object.size); // commitment checked here
 *   // bytes=a-b  -> start = a, end = min(b + 1, P)      (a >= P: 416; P = 0: no range is satisfiable)
 *   // bytes=a-   -> start = a, end = P
 *   // bytes=-n   -> start = max(0, P - n), end = P      (relative to the end: the length must be authenticated)
 *   const span = d.chunkSpan(start, end);
 *   const bytes = await r2.get(key, { range: { offset: span.ciphertextStart,
 *                                              length: span.ciphertextEnd - span.ciphertextStart } });
 *   const plain = await d.decryptChunks(span.firstChunk, bytes);
 *   const body = plain.subarray(start - span.plaintextStart, end - span.plaintextStart);
 *   // 206, Content-Range: bytes ${start}-${end - 1}/${P}
 *
 * A span whose end is P always includes the final chunk (at most 16 bytes more when P is a multiple of 16 KiB), so
 * open-ended and suffix ranges authenticate the length automatically. For any other use of P that must be
 * trusted (e.g. a Content-Length on a HEAD or a full GET streamed later), fetch `finalChunkSpan()` and call
 * authenticateFinalChunk first. Any ERR_DECRYPT means the object (or its metadata) was tampered with: fail the
 * request (5xx), never serve the bytes.
 */

export interface ChunkSpan {
  /** First and last chunk index (inclusive) covering the requested plaintext range. */
  readonly firstChunk: number;
  readonly lastChunk: number;
  /** Object byte range to fetch: [ciphertextStart, ciphertextEnd). */
  readonly ciphertextStart: number;
  readonly ciphertextEnd: number;
  /** Plaintext offset of firstChunk: the decrypted slice starts at this message offset. */
  readonly plaintextStart: number;
}

export interface RandomAccessDecryptor {
  /** Plaintext size implied by the total length (authenticated once the final chunk has been decrypted). */
  readonly plaintextLength: number;
  readonly chunkCount: number;
  readonly ciphertextLength: number;
  /** Chunks covering plaintext [start, endExclusive); RangeError unless 0 <= start < endExclusive <= P. */
  chunkSpan(start: number, endExclusive: number): ChunkSpan;
  /** Object byte range of the final chunk (16..16399 bytes). */
  finalChunkSpan(): ChunkSpan;
  /**
   * Decrypts whole consecutive chunks starting at `firstChunk`. `bytes` must be exactly those chunks as stored:
   * full 16 400-byte chunks, plus the final chunk with its implied length if the slice reaches it. ERR_DECRYPT for
   * any other length, trailing bytes, or a failed tag; RangeError for an index outside 0..chunkCount-1.
   */
  decryptChunks(firstChunk: number, bytes: Uint8Array): Promise<Uint8Array>;
  /** Decrypts the final chunk (returning its plaintext), authenticating plaintextLength. ERR_DECRYPT otherwise. */
  authenticateFinalChunk(finalChunkBytes: Uint8Array): Promise<Uint8Array>;
}

class Decryptor implements RandomAccessDecryptor {
  readonly plaintextLength: number;
  readonly chunkCount: number;
  readonly ciphertextLength: number;
  readonly #cipher: MessageCipher;
  /** Encrypted size of the final chunk, TAG_SIZE..ENCRYPTED_CHUNK_SIZE-1 (guaranteed by plaintextLength()). */
  readonly #finalSize: number;

  constructor(cipher: MessageCipher, ciphertextLength: number, plaintext: number) {
    this.#cipher = cipher;
    this.ciphertextLength = ciphertextLength;
    this.plaintextLength = plaintext;
    this.chunkCount = chunkCountFor(plaintext);
    this.#finalSize = plaintext - (this.chunkCount - 1) * CHUNK_SIZE + TAG_SIZE;
  }

  #span(firstChunk: number, lastChunk: number): ChunkSpan {
    const isFinal = lastChunk === this.chunkCount - 1;
    return {
      firstChunk,
      lastChunk,
      ciphertextStart: chunkOffset(firstChunk),
      ciphertextEnd: isFinal ? this.ciphertextLength : chunkOffset(lastChunk + 1),
      plaintextStart: firstChunk * CHUNK_SIZE,
    };
  }

  chunkSpan(start: number, endExclusive: number): ChunkSpan {
    const valid =
      Number.isSafeInteger(start) &&
      Number.isSafeInteger(endExclusive) &&
      start >= 0 &&
      start < endExclusive &&
      endExclusive <= this.plaintextLength;
    if (!valid) throw new RangeError("plaintext range out of bounds");
    const firstChunk = Math.floor(start / CHUNK_SIZE);
    // A range reaching the end includes the final chunk, even when it is empty, so the length gets authenticated.
    const lastChunk =
      endExclusive === this.plaintextLength ? this.chunkCount - 1 : Math.floor((endExclusive - 1) / CHUNK_SIZE);
    return this.#span(firstChunk, lastChunk);
  }

  finalChunkSpan(): ChunkSpan {
    return this.#span(this.chunkCount - 1, this.chunkCount - 1);
  }

  async decryptChunks(firstChunk: number, bytes: Uint8Array): Promise<Uint8Array> {
    if (!Number.isSafeInteger(firstChunk) || firstChunk < 0 || firstChunk >= this.chunkCount) {
      throw new RangeError("chunk index out of range");
    }
    // The slice is either n full chunks (none of them final), or all full chunks up to the final one plus it.
    const fullAvailable = this.chunkCount - 1 - firstChunk;
    const reachesEnd = bytes.byteLength > fullAvailable * ENCRYPTED_CHUNK_SIZE;
    const lengthOk = reachesEnd
      ? bytes.byteLength === fullAvailable * ENCRYPTED_CHUNK_SIZE + this.#finalSize
      : bytes.byteLength > 0 && bytes.byteLength % ENCRYPTED_CHUNK_SIZE === 0;
    if (!lengthOk) throw decryptError();
    const chunks = reachesEnd ? fullAvailable + 1 : bytes.byteLength / ENCRYPTED_CHUNK_SIZE;

    const out = new Uint8Array(bytes.byteLength - chunks * TAG_SIZE);
    try {
      for (let i = 0; i < chunks; i++) {
        const index = firstChunk + i;
        const isFinal = index === this.chunkCount - 1;
        const start = i * ENCRYPTED_CHUNK_SIZE;
        const end = isFinal ? bytes.byteLength : start + ENCRYPTED_CHUNK_SIZE;
        out.set(await this.#cipher.open(index, bytes.subarray(start, end), isFinal), i * CHUNK_SIZE);
      }
    } catch (error) {
      out.fill(0); // Never leave a partially decrypted range behind.
      throw error;
    }
    return out;
  }

  async authenticateFinalChunk(finalChunkBytes: Uint8Array): Promise<Uint8Array> {
    // A validly encrypted final chunk of another length would authenticate a different message length.
    if (finalChunkBytes.byteLength !== this.#finalSize) throw decryptError();
    return this.#cipher.open(this.chunkCount - 1, finalChunkBytes, true);
  }
}

/**
 * Opens an object for random access: checks the input key size, that the total length is one an honest encryption
 * produces, and the commitment in `header` (the object's first 56 bytes). All failures are ERR_DECRYPT.
 */
export async function openRandomAccess(
  inputKey: Uint8Array,
  context: Uint8Array,
  header: Uint8Array,
  totalCiphertextLength: number,
): Promise<RandomAccessDecryptor> {
  const plaintext = plaintextLength(totalCiphertextLength);
  const cipher = await openHeader(inputKey, context, header);
  return new Decryptor(cipher, totalCiphertextLength, plaintext);
}
