/**
 * HKDF-Expand with HMAC-SHA-512 (RFC 5869 section 2.3). Pure, no I/O.
 *
 * WebCrypto's HKDF always runs Extract before Expand, so it cannot compute Expand alone; c2sp.org/chunked-encryption
 * (and NIST SP 800-108 feedback mode) needs Expand alone, so it is built here from WebCrypto HMAC:
 *
 *   T(0) = empty,  T(i) = HMAC-SHA-512(PRK, T(i-1) || info || i)  for i = 1..N,  N = ceil(L / 64)
 *   OKM  = first L bytes of T(1) || T(2) || ... || T(N)
 *
 * Invariants: 0 <= L <= 255 * 64 (so the counter i fits one byte, 1..255); the PRK is used as the HMAC key as is.
 */

export const SHA512_HASH_LENGTH = 64;
export const HKDF_SHA512_MAX_LENGTH = 255 * SHA512_HASH_LENGTH;

/**
 * Derives `length` bytes from `prk` and `info`. Throws RangeError for a length outside 0..16320 or an empty PRK
 * (WebCrypto refuses zero-length HMAC keys; a PRK is never empty in practice). RFC 5869 asks for a PRK of at least
 * HashLen bytes when it comes from Extract; Cobblestone uses its 32-byte uniformly random input key directly.
 */
export async function hkdfExpandSha512(prk: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  if (!Number.isSafeInteger(length) || length < 0 || length > HKDF_SHA512_MAX_LENGTH) {
    throw new RangeError(`HKDF-SHA-512 output length must be an integer in 0..${HKDF_SHA512_MAX_LENGTH}`);
  }
  if (prk.byteLength === 0) throw new RangeError("HKDF-Expand needs a non-empty PRK");

  const okm = new Uint8Array(length);
  if (length === 0) return okm;
  const key = await crypto.subtle.importKey("raw", prk, { name: "HMAC", hash: "SHA-512" }, false, ["sign"]);

  // `input` is laid out as T(i-1) || info || i. For i = 1 T(0) is empty, so the first block starts at offset 64.
  const input = new Uint8Array(SHA512_HASH_LENGTH + info.byteLength + 1);
  input.set(info, SHA512_HASH_LENGTH);
  const blocks = Math.ceil(length / SHA512_HASH_LENGTH);
  for (let i = 1; i <= blocks; i++) {
    input[input.length - 1] = i;
    const message = i === 1 ? input.subarray(SHA512_HASH_LENGTH) : input;
    const block = new Uint8Array(await crypto.subtle.sign("HMAC", key, message));
    const offset = (i - 1) * SHA512_HASH_LENGTH;
    okm.set(block.subarray(0, Math.min(SHA512_HASH_LENGTH, length - offset)), offset);
    input.set(block, 0); // T(i) becomes the prefix of the next block's input.
  }
  return okm;
}
