import { KbError } from "../errors";
import { normalize, words } from "./embedder";
import { type SipKey, sipHashString } from "./keyed-hash";

/**
 * The keyed local embedding (model local-keyed-v2): the features of local-hash-v1 (each word, each word bigram,
 * each character trigram of `^word$`, weights 1, 0.5 and 0.25), but each feature's bucket and sign come from
 * SipHash-2-4 under the tenant's embedder key instead of a public FNV-1a. Without the key, which bucket a word
 * feeds is unknown, so scoring dictionary words against a vector recovers nothing (test/kb/keyed-embedder.test.ts).
 *
 * The words of one tenant repeat (Zipf), so each word's own features (the word and its trigrams) are hashed once
 * and kept in a bounded table of this instance: tenant-owned, in the tenant object's memory only, emptied when
 * full. Bigrams are hashed per occurrence.
 */
const WORD_CACHE_ENTRIES = 32_768;
const CACHED_WORD_MAX = 32;
/** Pool slots per cached word on average: its pair seed, the word feature and its trigrams (length + 2 - 2). */
const POOL_CODES = WORD_CACHE_ENTRIES * 10;

/**
 * `features` keys the word and trigram features (SipHash of "w:<word>" and "c:<trigram>"); `pairs` keys bigrams,
 * hashed from the two words' 31-bit pair seeds (bits of the word's tag that feed neither its bucket nor its sign)
 * rather than from the bigram's text, which is shorter to hash. Two keys, so the two input domains never meet.
 */
export interface EmbedderKeys {
  readonly features: SipKey;
  readonly pairs: SipKey;
}

export class KeyedFeatureHasher {
  readonly dimensions: number;
  readonly #keys: EmbedderKeys;
  readonly #tag = new Uint32Array(2);
  /** word -> (pool offset << 6 | slots); slots: pair seed, then codes (bucket * 2 + sign, 1 = negative). */
  readonly #words = new Map<string, number>();
  /** Grows by doubling up to POOL_CODES (1.25 MiB), so a small tenant's object holds a small table. */
  #pool = new Int32Array(1024);
  #poolUsed = 0;
  #forgotten = false;

  constructor(keys: EmbedderKeys, dimensions: number) {
    if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > 65_536) throw new RangeError("bad dimensions");
    this.#keys = keys;
    this.dimensions = dimensions;
  }

  embed(text: string, dimensions: number): Float32Array {
    if (dimensions !== this.dimensions) throw new RangeError("embedder dimensions mismatch");
    if (this.#forgotten) throw new KbError("ERR_KEY_UNAVAILABLE", "key unavailable");
    const vector = new Float32Array(dimensions);
    const list = words(text);
    let previous = -1;
    for (let i = 0; i < list.length; i++) {
      const seed = this.#addWord(vector, list[i] as string);
      if (previous >= 0) this.#add(vector, this.#pairCode(previous, seed), 0.5);
      previous = seed;
    }
    return normalize(vector);
  }

  /** Zeroes the keys and empties the word table; embedding afterwards throws. */
  forget(): void {
    this.#keys.features.words.fill(0);
    this.#keys.pairs.words.fill(0);
    this.#words.clear();
    this.#pool = new Int32Array(0);
    this.#poolUsed = 0;
    this.#forgotten = true;
  }

  /** Number of words in the per-instance table (tests check the bound). */
  get cachedWords(): number {
    return this.#words.size;
  }

  /** Adds the word's own features; returns its pair seed. */
  #addWord(vector: Float32Array, word: string): number {
    const entry = this.#words.get(word);
    if (entry !== undefined) {
      const pool = this.#pool;
      const offset = entry >>> 6;
      const end = offset + (entry & 63);
      this.#add(vector, pool[offset + 1] as number, 1);
      for (let j = offset + 2; j < end; j++) this.#add(vector, pool[j] as number, 0.25);
      return pool[offset] as number;
    }
    const padded = `^${word}$`;
    const slots = padded.length; // seed + word feature + (padded.length - 2) trigrams
    const cache = word.length <= CACHED_WORD_MAX;
    if (cache && (this.#words.size >= WORD_CACHE_ENTRIES || this.#poolUsed + slots > POOL_CODES)) {
      this.#words.clear();
      this.#poolUsed = 0;
    }
    if (cache && this.#poolUsed + slots > this.#pool.length) {
      const grown = new Int32Array(Math.min(POOL_CODES, Math.max(1024, this.#pool.length * 2)));
      grown.set(this.#pool.subarray(0, this.#poolUsed));
      this.#pool = grown;
    }
    const pool = this.#pool;
    const first = this.#code(`w:${word}`);
    const seed = (this.#tag[1] as number) & 0x7fffffff;
    this.#add(vector, first, 1);
    const offset = this.#poolUsed;
    if (cache) {
      pool[offset] = seed;
      pool[offset + 1] = first;
    }
    for (let j = 0; j + 3 <= padded.length; j++) {
      const code = this.#code(`c:${padded.slice(j, j + 3)}`);
      this.#add(vector, code, 0.25);
      if (cache) pool[offset + 2 + j] = code;
    }
    if (cache) {
      this.#words.set(word, (offset << 6) | slots);
      this.#poolUsed += slots;
    }
    return seed;
  }

  #code(feature: string): number {
    return this.#codeUnder(this.#keys.features, feature);
  }

  #pairCode(a: number, b: number): number {
    return this.#codeUnder(this.#keys.pairs, String.fromCharCode(a & 0xffff, a >>> 16, b & 0xffff, b >>> 16));
  }

  /** Bucket from the tag's low word, sign from its top bit; the other 31 high bits are the word's pair seed. */
  #codeUnder(key: SipKey, input: string): number {
    sipHashString(key, input, this.#tag);
    return ((this.#tag[0] as number) % this.dimensions) * 2 + ((this.#tag[1] as number) >>> 31);
  }

  #add(vector: Float32Array, code: number, weight: number): void {
    const bucket = code >>> 1;
    vector[bucket] = (vector[bucket] as number) + (code & 1 ? weight : -weight);
  }
}
