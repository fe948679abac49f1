// The attacker's embedder: the project's local feature hash as it was before it was keyed per tenant (public FNV-1a
// over words, word bigrams and character trigrams; src/kb/embedder.ts `hashEmbed` and src/kb/local-index.ts
// `quantize` at the time of writing). Reimplemented here on purpose, not imported: the forensics test must keep
// using the public, unkeyed hash whatever the product's embedder becomes, and must not know any tenant's key.
export const DIMENSIONS = 384;

const WORD = /[\p{L}\p{N}]+/gu;

export function words(text) {
  return text.normalize("NFKC").toLowerCase().match(WORD) ?? [];
}

/** Unit-length float32 vector of `text` under the public hash. */
export function publicEmbed(text, dimensions = DIMENSIONS) {
  const vector = new Float32Array(dimensions);
  const list = words(text);
  const add = (feature, weight) => {
    const hash = fnv1a(feature);
    vector[hash % dimensions] += (hash >>> 31) & 1 ? weight : -weight;
  };
  for (let i = 0; i < list.length; i++) {
    const word = list[i];
    add(`w:${word}`, 1);
    if (i + 1 < list.length) add(`b:${word} ${list[i + 1]}`, 0.5);
    const padded = `^${word}$`;
    for (let j = 0; j + 3 <= padded.length; j++) add(`c:${padded.slice(j, j + 3)}`, 0.25);
  }
  let sum = 0;
  for (const value of vector) sum += value * value;
  if (sum > 0) {
    const inverse = 1 / Math.sqrt(sum);
    for (let i = 0; i < dimensions; i++) vector[i] *= inverse;
  }
  return vector;
}

/** Symmetric per-vector int8 quantization, as the local index stores its rows: q = round(x / (max|x| / 127)). */
export function quantize(vector) {
  let max = 0;
  for (const value of vector) max = Math.max(max, Math.abs(value));
  const scale = max === 0 ? 1 : max / 127;
  const q8 = new Int8Array(vector.length);
  for (let i = 0; i < vector.length; i++) q8[i] = Math.round(vector[i] / scale);
  return q8;
}

function fnv1a(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
