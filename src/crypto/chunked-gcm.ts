import { KbError } from "../errors";

/**
 * The AEAD of Cobblestone-256: AES-256-GCM through WebCrypto with a 12-byte nonce, a 16-byte tag and empty AAD
 * (c2sp.org/chunked-encryption: "The AEAD's AAD is not used and MUST be empty"). Pure, no I/O.
 *
 * Invariants enforced here rather than trusted from callers:
 * - keys are exactly 32 bytes (RangeError otherwise: a programming error, never attacker input);
 * - nonces are exactly 12 bytes (RangeError otherwise; WebCrypto itself would accept other IV lengths);
 * - every authentication failure, including a ciphertext shorter than the tag, is the one generic ERR_DECRYPT.
 */

export const AES_256_KEY_SIZE = 32;
export const GCM_NONCE_SIZE = 12;
export const GCM_TAG_SIZE = 16;

const DECRYPT_MESSAGE = "decryption failed";

/** The only error a decryption or authentication failure produces: fixed code and message, no cause attached. */
export function decryptError(): KbError {
  return new KbError("ERR_DECRYPT", DECRYPT_MESSAGE);
}

export function importAes256GcmKey(raw: Uint8Array): Promise<CryptoKey> {
  if (raw.byteLength !== AES_256_KEY_SIZE) throw new RangeError("AES-256-GCM keys are 32 bytes");
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

function checkNonce(nonce: Uint8Array): void {
  if (nonce.byteLength !== GCM_NONCE_SIZE) throw new RangeError("AES-GCM nonces are 12 bytes");
}

/** Returns ciphertext || tag (plaintext length + 16 bytes). */
export async function aesGcmSeal(key: CryptoKey, nonce: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  checkNonce(nonce);
  const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce, tagLength: 128 }, key, plaintext);
  return new Uint8Array(sealed);
}

/** Opens ciphertext || tag. Throws ERR_DECRYPT unless the tag authenticates; never returns unauthenticated bytes. */
export async function aesGcmOpen(key: CryptoKey, nonce: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
  checkNonce(nonce);
  if (sealed.byteLength < GCM_TAG_SIZE) throw decryptError();
  try {
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce, tagLength: 128 }, key, sealed));
  } catch {
    throw decryptError();
  }
}
