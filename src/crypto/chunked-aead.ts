import {
  CHUNK_SIZE,
  chunkCountFor,
  ciphertextLength,
  ENCRYPTED_CHUNK_SIZE,
  HEADER_SIZE,
  plaintextLength,
} from "./chunked-format";
import { beginEncryption, openHeader } from "./chunked-keys";

/**
 * c2sp.org/chunked-encryption, instantiation Cobblestone-256 (HKDF-Expand-SHA-512, AES-256-GCM, 16 KiB chunks),
 * the format of encrypted objects at rest. This module is the public entry point; the pieces live in siblings:
 *
 * - chunked-format.ts         sizes and offsets (CHUNK_SIZE, TAG_SIZE, HEADER_SIZE, ciphertextLength, ...)
 * - chunked-keys.ts           key schedule, commitment check, per-chunk seal/open
 * - chunked-stream.ts         encryptingReadable / decryptingReadable (pull-based, the fast paths) and
 *                             encryptingStream / decryptingStream (TransformStreams), bounded memory
 * - chunked-coders.ts         the chunk state machines both stream shapes drive
 * - chunked-random-access.ts  openRandomAccess (ranged reads, HTTP Range recipe)
 * - chunked-gcm.ts, hkdf.ts   the AES-256-GCM and HKDF-Expand-SHA-512 primitives over WebCrypto
 *
 * Object = salt (24) || commitment (32) || chunks. The input key must be a uniformly random 32-byte key, and the
 * context binds the object to its place (e.g. tenant and object id): decrypting under another context fails.
 * Encryption errors on bad arguments are RangeError; every decryption failure is KbError ERR_DECRYPT with the same
 * message, whatever the cause.
 */

export {
  CHUNK_SIZE,
  ciphertextLength,
  ENCRYPTED_CHUNK_SIZE,
  HEADER_SIZE,
  MAX_CHUNKS,
  MAX_PLAINTEXT_LENGTH,
  plaintextLength,
  SALT_SIZE,
  TAG_SIZE,
} from "./chunked-format";
export { type ChunkSpan, openRandomAccess, type RandomAccessDecryptor } from "./chunked-random-access";
export {
  decryptingReadable,
  decryptingStream,
  encryptingReadable,
  encryptingStream,
  type ReadableOptions,
} from "./chunked-stream";

/** Encrypts a whole message. RangeError for a key that is not 32 bytes, a salt that is not 24, or > 4 PiB. */
export async function encrypt(
  inputKey: Uint8Array,
  context: Uint8Array,
  plaintext: Uint8Array,
  salt?: Uint8Array,
): Promise<Uint8Array> {
  const total = ciphertextLength(plaintext.byteLength);
  const { header, cipher } = await beginEncryption(inputKey, context, salt);
  const out = new Uint8Array(total);
  out.set(header, 0);
  const chunks = chunkCountFor(plaintext.byteLength);
  for (let index = 0; index < chunks; index++) {
    const isFinal = index === chunks - 1;
    const start = index * CHUNK_SIZE;
    const end = isFinal ? plaintext.byteLength : start + CHUNK_SIZE;
    out.set(
      await cipher.seal(index, plaintext.subarray(start, end), isFinal),
      HEADER_SIZE + index * ENCRYPTED_CHUNK_SIZE,
    );
  }
  return out;
}

/**
 * Decrypts a whole object. ERR_DECRYPT for a key that is not 32 bytes, an impossible length (checked first), a
 * commitment mismatch (wrong key, wrong context, modified header; checked before any chunk), or any chunk failing.
 * Returns the plaintext only if every chunk authenticated; nothing partial is ever returned.
 */
export async function decrypt(inputKey: Uint8Array, context: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array> {
  const length = plaintextLength(ciphertext.byteLength);
  const cipher = await openHeader(inputKey, context, ciphertext.subarray(0, HEADER_SIZE));
  const out = new Uint8Array(length);
  const chunks = chunkCountFor(length);
  try {
    for (let index = 0; index < chunks; index++) {
      const isFinal = index === chunks - 1;
      const start = HEADER_SIZE + index * ENCRYPTED_CHUNK_SIZE;
      const end = isFinal ? ciphertext.byteLength : start + ENCRYPTED_CHUNK_SIZE;
      out.set(await cipher.open(index, ciphertext.subarray(start, end), isFinal), index * CHUNK_SIZE);
    }
  } catch (error) {
    out.fill(0);
    throw error;
  }
  return out;
}
