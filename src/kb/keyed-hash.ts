/**
 * SipHash-2-4 (Aumasson and Bernstein, a PRF with a 128-bit key) over a string's UTF-16LE code units, in 32-bit
 * halves so that it runs as plain JS integer arithmetic: the local embedder calls it once per feature (about 250
 * times per atom), where a WebCrypto call per feature would cost more than the whole embedding. Pure; no I/O.
 *
 * Output: the 64-bit tag as two unsigned 32-bit halves written to `out` (low, high).
 */
export interface SipKey {
  /** k0 and k1 as little-endian 32-bit words: k0 low, k0 high, k1 low, k1 high. */
  readonly words: Uint32Array;
}

export function sipKey(bytes: Uint8Array): SipKey {
  if (bytes.byteLength !== 16) throw new RangeError("SipHash keys are 128 bits");
  const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
  return {
    words: Uint32Array.of(
      view.getUint32(0, true),
      view.getUint32(4, true),
      view.getUint32(8, true),
      view.getUint32(12, true),
    ),
  };
}

/** SipHash-2-4 of the UTF-16LE bytes of `text` under `key`; writes [low, high] of the tag to `out`. */
export function sipHashString(key: SipKey, text: string, out: Uint32Array): void {
  const k = key.words;
  const k0l = k[0] as number;
  const k0h = k[1] as number;
  const k1l = k[2] as number;
  const k1h = k[3] as number;
  // v0 = k0 ^ "somepseu", v1 = k1 ^ "dorandom", v2 = k0 ^ "lygenera", v3 = k1 ^ "tedbytes".
  let v0l = k0l ^ 0x70736575;
  let v0h = k0h ^ 0x736f6d65;
  let v1l = k1l ^ 0x6e646f6d;
  let v1h = k1h ^ 0x646f7261;
  let v2l = k0l ^ 0x6e657261;
  let v2h = k0h ^ 0x6c796765;
  let v3l = k1l ^ 0x79746573;
  let v3h = k1h ^ 0x74656462;
  const units = text.length;
  const bytes = units * 2;
  // Whole 8-byte blocks, then one last block carrying the tail and the length byte (bytes mod 256, top byte).
  const blocks = bytes >>> 3;
  let ml = 0;
  let mh = 0;
  let t = 0;
  // One pass over every block, then the finalization: the same SipRound, 2 times per block and 4 at the end
  // (c = 2, d = 4), kept in one loop body so that the round is written once and stays in local variables.
  for (let step = 0; step <= blocks + 1; step++) {
    const final = step > blocks;
    if (final) {
      v2l ^= 0xff;
    } else {
      const at = step * 4;
      if (step < blocks) {
        ml = (text.charCodeAt(at) | (text.charCodeAt(at + 1) << 16)) >>> 0;
        mh = (text.charCodeAt(at + 2) | (text.charCodeAt(at + 3) << 16)) >>> 0;
      } else {
        const left = units - at; // 0..3 code units
        ml = left > 0 ? text.charCodeAt(at) : 0;
        if (left > 1) ml |= text.charCodeAt(at + 1) << 16;
        mh = left > 2 ? text.charCodeAt(at + 2) : 0;
        mh = (mh | ((bytes & 0xff) << 24)) >>> 0;
        ml >>>= 0;
      }
      v3l ^= ml;
      v3h ^= mh;
    }
    for (let round = 0, rounds = final ? 4 : 2; round < rounds; round++) {
      // v0 += v1; v1 <<<= 13; v1 ^= v0; v0 <<<= 32
      t = (v0l + v1l) >>> 0;
      v0h = (v0h + v1h + (t < v0l >>> 0 ? 1 : 0)) >>> 0;
      v0l = t;
      t = (v1h << 13) | (v1l >>> 19);
      v1l = ((v1l << 13) | (v1h >>> 19)) ^ v0l;
      v1h = t ^ v0h;
      t = v0l;
      v0l = v0h;
      v0h = t;
      // v2 += v3; v3 <<<= 16; v3 ^= v2
      t = (v2l + v3l) >>> 0;
      v2h = (v2h + v3h + (t < v2l >>> 0 ? 1 : 0)) >>> 0;
      v2l = t;
      t = (v3h << 16) | (v3l >>> 16);
      v3l = ((v3l << 16) | (v3h >>> 16)) ^ v2l;
      v3h = t ^ v2h;
      // v0 += v3; v3 <<<= 21; v3 ^= v0
      t = (v0l + v3l) >>> 0;
      v0h = (v0h + v3h + (t < v0l >>> 0 ? 1 : 0)) >>> 0;
      v0l = t;
      t = (v3h << 21) | (v3l >>> 11);
      v3l = ((v3l << 21) | (v3h >>> 11)) ^ v0l;
      v3h = t ^ v0h;
      // v2 += v1; v1 <<<= 17; v1 ^= v2; v2 <<<= 32
      t = (v2l + v1l) >>> 0;
      v2h = (v2h + v1h + (t < v2l >>> 0 ? 1 : 0)) >>> 0;
      v2l = t;
      t = (v1h << 17) | (v1l >>> 15);
      v1l = ((v1l << 17) | (v1h >>> 15)) ^ v2l;
      v1h = t ^ v2h;
      t = v2l;
      v2l = v2h;
      v2h = t;
    }
    if (!final) {
      v0l ^= ml;
      v0h ^= mh;
    }
  }
  out[0] = v0l ^ v1l ^ v2l ^ v3l;
  out[1] = v0h ^ v1h ^ v2h ^ v3h;
}
