import { decryptError, GCM_NONCE_SIZE, GCM_TAG_SIZE } from "./chunked-gcm";

/**
 * Layout arithmetic of c2sp.org/chunked-encryption (Cobblestone-256). Pure, no I/O, no crypto.
 *
 *   object = salt (24) || commitment (32) || chunk 0 || chunk 1 || ... || chunk n-1
 *   chunk k = AES-256-GCM(plaintext[k * 16384 .. (k+1) * 16384)) = body || tag (16)
 *
 * Invariants: every chunk but the last holds exactly CHUNK_SIZE plaintext bytes; the last holds 0..CHUNK_SIZE-1
 * (so a message whose length is a multiple of 16 KiB, including the empty one, ends with an empty chunk). Hence
 * each plaintext length has exactly one ciphertext length and vice versa, and a message has at most 2^38 chunks.
 * All lengths stay below 2^53, so plain numbers are exact.
 */

export const CHUNK_SIZE = 16384;
export const TAG_SIZE = GCM_TAG_SIZE;
export const SALT_SIZE = 24;
export const COMMITMENT_SIZE = 32;
export const HEADER_SIZE = SALT_SIZE + COMMITMENT_SIZE; // 56
/** Encrypted size of every non-final chunk; a final chunk is strictly shorter (TAG_SIZE..ENCRYPTED_CHUNK_SIZE-1). */
export const ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE; // 16400
/** Chunk indices are < 2^38; encryption and decryption abort when the counter would reach it. */
export const MAX_CHUNKS = 2 ** 38;
/** 4 PiB - 1 byte: 2^38 chunks, the last one short. */
export const MAX_PLAINTEXT_LENGTH = MAX_CHUNKS * CHUNK_SIZE - 1;

/** Number of chunks (including the possibly empty final one) for a plaintext of `length` bytes. */
export function chunkCountFor(length: number): number {
  return Math.floor(length / CHUNK_SIZE) + 1;
}

/** Total object size for a plaintext of `length` bytes. RangeError for a negative, fractional or too large length. */
export function ciphertextLength(length: number): number {
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_PLAINTEXT_LENGTH) {
    throw new RangeError("plaintext length out of range for chunked encryption");
  }
  return HEADER_SIZE + length + chunkCountFor(length) * TAG_SIZE;
}

/**
 * Plaintext size of an object of `length` bytes. Throws ERR_DECRYPT for lengths no honest encryption produces:
 * shorter than header + one tag; a body that ends exactly on a full-chunk boundary (the short final chunk is
 * missing: truncation); a final remainder shorter than a tag; more than 2^38 chunks.
 */
export function plaintextLength(length: number): number {
  if (!Number.isSafeInteger(length) || length < HEADER_SIZE + TAG_SIZE) throw decryptError();
  const body = length - HEADER_SIZE;
  const fullChunks = Math.floor(body / ENCRYPTED_CHUNK_SIZE);
  const finalEncrypted = body - fullChunks * ENCRYPTED_CHUNK_SIZE; // 0..ENCRYPTED_CHUNK_SIZE-1
  if (finalEncrypted < TAG_SIZE || fullChunks + 1 > MAX_CHUNKS) throw decryptError();
  return fullChunks * CHUNK_SIZE + finalEncrypted - TAG_SIZE;
}

/** Byte offset of chunk `index` in the object. */
export function chunkOffset(index: number): number {
  return HEADER_SIZE + index * ENCRYPTED_CHUNK_SIZE;
}

/**
 * Nonce of chunk `index`: the base nonce XOR the index as a big-endian integer as wide as the nonce. The index is
 * below 2^38, so only the last five bytes change. RangeError for an index outside 0..2^38-1 (callers on the
 * decryption side check first and fail with ERR_DECRYPT).
 */
export function chunkNonce(baseNonce: Uint8Array, index: number): Uint8Array {
  return writeChunkNonce(new Uint8Array(GCM_NONCE_SIZE), baseNonce, index);
}

/** chunkNonce written into `out` (12 bytes, reused by a caller that seals or opens one chunk at a time); returns it. */
export function writeChunkNonce(out: Uint8Array, baseNonce: Uint8Array, index: number): Uint8Array {
  if (baseNonce.byteLength !== GCM_NONCE_SIZE || out.byteLength !== GCM_NONCE_SIZE) {
    throw new RangeError("base nonce must be 12 bytes");
  }
  if (!Number.isSafeInteger(index) || index < 0 || index >= MAX_CHUNKS) {
    throw new RangeError("chunk index out of range");
  }
  out.set(baseNonce);
  let counter = index;
  for (let i = GCM_NONCE_SIZE - 1; counter > 0; i--) {
    out[i] = (out[i] ?? 0) ^ (counter % 256);
    counter = Math.floor(counter / 256);
  }
  return out;
}
