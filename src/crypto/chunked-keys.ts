import { timingSafeEqual } from "../util/bytes";
import {
  CHUNK_SIZE,
  COMMITMENT_SIZE,
  ENCRYPTED_CHUNK_SIZE,
  HEADER_SIZE,
  MAX_CHUNKS,
  SALT_SIZE,
  TAG_SIZE,
  writeChunkNonce,
} from "./chunked-format";
import {
  AES_256_KEY_SIZE,
  aesGcmOpen,
  aesGcmSeal,
  decryptError,
  GCM_NONCE_SIZE,
  importAes256GcmKey,
} from "./chunked-gcm";
import { hkdfExpandSha512 } from "./hkdf";

/**
 * Per-message key schedule and chunk cipher of Cobblestone-256. Pure, no I/O.
 *
 *   key (32) || base nonce (12) || commitment (32) = HKDF-Expand-SHA-512(prk = input key,
 *       info = "c2sp.org/chunked-encryption@v1+" || "AEAD_AES_256_GCM" || 0x00 || salt (24) || context)
 *
 * Invariants: the input key is exactly 32 bytes; the salt exactly 24 (random, never reused under one input key);
 * on decryption the commitment in the header is compared (constant time) before any chunk is opened, so a wrong
 * key, a wrong context or a modified salt/commitment fails here, with no AEAD call at all.
 */

const INFO_PREFIX = new TextEncoder().encode("c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\0");
const DERIVED_SIZE = AES_256_KEY_SIZE + GCM_NONCE_SIZE + COMMITMENT_SIZE; // 76

export const INPUT_KEY_SIZE = AES_256_KEY_SIZE;

export interface KeyMaterial {
  readonly key: Uint8Array;
  readonly baseNonce: Uint8Array;
  readonly commitment: Uint8Array;
}

/** The raw HKDF output split into its three parts. Exposed for known-answer tests; callers use the functions below. */
export async function deriveKeyMaterial(
  inputKey: Uint8Array,
  salt: Uint8Array,
  context: Uint8Array,
): Promise<KeyMaterial> {
  if (inputKey.byteLength !== INPUT_KEY_SIZE) throw new RangeError("input key must be 32 bytes");
  if (salt.byteLength !== SALT_SIZE) throw new RangeError("salt must be 24 bytes");
  const info = new Uint8Array(INFO_PREFIX.byteLength + SALT_SIZE + context.byteLength);
  info.set(INFO_PREFIX, 0);
  info.set(salt, INFO_PREFIX.byteLength);
  info.set(context, INFO_PREFIX.byteLength + SALT_SIZE);
  const okm = await hkdfExpandSha512(inputKey, info, DERIVED_SIZE);
  return {
    key: okm.subarray(0, AES_256_KEY_SIZE),
    baseNonce: okm.slice(AES_256_KEY_SIZE, AES_256_KEY_SIZE + GCM_NONCE_SIZE),
    commitment: okm.slice(AES_256_KEY_SIZE + GCM_NONCE_SIZE),
  };
}

/**
 * Seals and opens the chunks of one message. `isFinal` is decided by the caller from the layout (the stream end,
 * or the total length) and is checked against the chunk's size: a non-final chunk is exactly 16 KiB of plaintext
 * (ENCRYPTED_CHUNK_SIZE sealed), the final one strictly less. Chunk indices must stay below 2^38.
 *
 * One nonce buffer serves every call: the nonce is written and the WebCrypto call made in the same synchronous step,
 * and WebCrypto copies the IV and the input when called (normalizing the algorithm copies the IV), so calls in
 * flight at once never see each other's nonce.
 */
export class MessageCipher {
  readonly #key: CryptoKey;
  readonly #baseNonce: Uint8Array;
  readonly #nonce = new Uint8Array(GCM_NONCE_SIZE);

  constructor(key: CryptoKey, baseNonce: Uint8Array) {
    this.#key = key;
    this.#baseNonce = baseNonce;
  }

  /** RangeError if the chunk size does not match `isFinal` or the counter reached 2^38 (abort, per the spec). */
  async seal(index: number, plaintext: Uint8Array, isFinal: boolean): Promise<Uint8Array> {
    const sizeOk = isFinal ? plaintext.byteLength < CHUNK_SIZE : plaintext.byteLength === CHUNK_SIZE;
    if (!sizeOk) throw new RangeError("chunk size does not match its position");
    return aesGcmSeal(this.#key, writeChunkNonce(this.#nonce, this.#baseNonce, index), plaintext);
  }

  /** ERR_DECRYPT for a wrong size for the position, a counter at or past 2^38, or a failed tag. */
  async open(index: number, sealed: Uint8Array, isFinal: boolean): Promise<Uint8Array> {
    const sizeOk = isFinal
      ? sealed.byteLength >= TAG_SIZE && sealed.byteLength < ENCRYPTED_CHUNK_SIZE
      : sealed.byteLength === ENCRYPTED_CHUNK_SIZE;
    if (!sizeOk || !Number.isSafeInteger(index) || index < 0 || index >= MAX_CHUNKS) throw decryptError();
    return aesGcmOpen(this.#key, writeChunkNonce(this.#nonce, this.#baseNonce, index), sealed);
  }
}

async function cipherFrom(material: KeyMaterial): Promise<MessageCipher> {
  try {
    return new MessageCipher(await importAes256GcmKey(material.key), material.baseNonce);
  } finally {
    material.key.fill(0); // The raw AES key is not needed once imported (non-extractable).
  }
}

/** Starts a message: RangeError for a key that is not 32 bytes or a salt that is not 24; random salt by default. */
export async function beginEncryption(
  inputKey: Uint8Array,
  context: Uint8Array,
  salt: Uint8Array = crypto.getRandomValues(new Uint8Array(SALT_SIZE)),
): Promise<{ readonly header: Uint8Array; readonly cipher: MessageCipher }> {
  const material = await deriveKeyMaterial(inputKey, salt, context);
  const header = new Uint8Array(HEADER_SIZE);
  header.set(salt, 0);
  header.set(material.commitment, SALT_SIZE);
  return { header, cipher: await cipherFrom(material) };
}

/**
 * Checks a header (salt || commitment) against the input key and context. Every failure - key not 32 bytes, header
 * not 56 bytes, commitment mismatch - is the same ERR_DECRYPT, raised before any chunk is touched.
 */
export async function openHeader(
  inputKey: Uint8Array,
  context: Uint8Array,
  header: Uint8Array,
): Promise<MessageCipher> {
  if (inputKey.byteLength !== INPUT_KEY_SIZE || header.byteLength !== HEADER_SIZE) throw decryptError();
  const material = await deriveKeyMaterial(inputKey, header.subarray(0, SALT_SIZE), context);
  if (!timingSafeEqual(material.commitment, header.subarray(SALT_SIZE, HEADER_SIZE))) {
    material.key.fill(0);
    throw decryptError();
  }
  return cipherFrom(material);
}
