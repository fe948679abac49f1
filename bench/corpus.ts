/**
 * Deterministic synthetic corpus for the benchmark: a seeded PRNG, a vocabulary with a Zipf-like frequency
 * distribution, and topic structure (topics and subtopics with their own word lists) so that atoms about the same
 * topic share words and their nearest neighbours under the hash embedder are meaningful.
 *
 * Every atom's text is a pure function of (corpus seed, atom index), so the bench can regenerate an atom (e.g. to
 * perturb it into a query) without keeping 100,000 texts in memory.
 */

/** mulberry32: small, fast, good enough for synthetic data. Returns floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Mixes two integers into a 32-bit seed (so atom i of corpus s gets its own stream). */
export function mix(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h >>> 0;
}

/** Samples ranks 0..n-1 with P(r) proportional to 1 / (r + 1)^s. */
class Zipf {
  readonly #cdf: Float64Array;

  constructor(n: number, s: number) {
    this.#cdf = new Float64Array(n);
    let sum = 0;
    for (let r = 0; r < n; r++) {
      sum += 1 / (r + 1) ** s;
      this.#cdf[r] = sum;
    }
    for (let r = 0; r < n; r++) this.#cdf[r] = (this.#cdf[r] as number) / sum;
  }

  sample(random: () => number): number {
    const u = random();
    let lo = 0;
    let hi = this.#cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.#cdf[mid] as number) < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

const ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "st", "tr"];
const NUCLEI = ["a", "e", "i", "o", "u", "ai", "ea", "ou"];
const CODAS = ["", "", "", "n", "r", "s", "l", "t", "nd", "ck"];

export interface CorpusOptions {
  readonly seed: number;
  readonly vocabulary: number;
  readonly topics: number;
  readonly wordsPerTopic: number;
  readonly subtopicsPerTopic: number;
  readonly wordsPerSubtopic: number;
}

export const DEFAULT_CORPUS: CorpusOptions = {
  seed: 20_261_127,
  vocabulary: 20_000,
  topics: 256,
  wordsPerTopic: 120,
  subtopicsPerTopic: 8,
  wordsPerSubtopic: 24,
};

export class Corpus {
  readonly options: CorpusOptions;
  readonly #words: string[];
  readonly #global: Zipf;
  readonly #topicChoice: Zipf;
  readonly #topicWordChoice: Zipf;
  readonly #subtopicWordChoice: Zipf;
  /** Per topic, its word ranks (content words: never the most frequent 200 "function words"). */
  readonly #topicWords: Int32Array[];
  /** Per topic * subtopicsPerTopic + subtopic, its word ranks. */
  readonly #subtopicWords: Int32Array[];

  constructor(options: CorpusOptions = DEFAULT_CORPUS) {
    this.options = options;
    const random = prng(options.seed);
    // Frequent words are short (as in natural language): syllable count grows with rank.
    const seen = new Set<string>();
    this.#words = [];
    while (this.#words.length < options.vocabulary) {
      const rank = this.#words.length;
      const syllables = 1 + Math.min(3, Math.floor(Math.log10(rank + 10) - 1 + random() * 1.5));
      let word = "";
      for (let s = 0; s < syllables; s++) {
        word += ONSETS[Math.floor(random() * ONSETS.length)] as string;
        word += NUCLEI[Math.floor(random() * NUCLEI.length)] as string;
        if (s === syllables - 1 || random() < 0.3) word += CODAS[Math.floor(random() * CODAS.length)] as string;
      }
      if (seen.has(word)) continue;
      seen.add(word);
      this.#words.push(word);
    }
    this.#global = new Zipf(options.vocabulary, 1.07);
    this.#topicChoice = new Zipf(options.topics, 0.7);
    this.#topicWordChoice = new Zipf(options.wordsPerTopic, 1.0);
    this.#subtopicWordChoice = new Zipf(options.wordsPerSubtopic, 0.8);
    const contentWord = () => 200 + Math.floor(random() * (options.vocabulary - 200));
    this.#topicWords = Array.from({ length: options.topics }, () =>
      Int32Array.from({ length: options.wordsPerTopic }, contentWord),
    );
    this.#subtopicWords = Array.from({ length: options.topics * options.subtopicsPerTopic }, () =>
      Int32Array.from({ length: options.wordsPerSubtopic }, contentWord),
    );
  }

  /** The text of atom `index` (30-80 words) and its topic (used as a tag). */
  atom(index: number): { text: string; topic: number } {
    const random = prng(mix(this.options.seed, index));
    const topic = this.#topicChoice.sample(random);
    return { text: this.#text(random, topic, 30 + Math.floor(random() * 51)), topic };
  }

  /**
   * Query `index` of a query set: even indices perturb an existing atom (30% of its words dropped, 10% replaced by
   * random words, at most 40 words kept), odd indices are fresh 8-25 word texts from the same generator.
   */
  query(index: number, atoms: number, seed: number): { text: string; kind: "perturbed" | "fresh" } {
    const random = prng(mix(seed, index));
    if (index % 2 === 0) {
      const source = this.atom(Math.floor(random() * atoms)).text.split(" ");
      const kept: string[] = [];
      for (const word of source) {
        if (random() < 0.3) continue;
        kept.push(random() < 0.1 ? this.#word(this.#global.sample(random)) : word);
      }
      if (kept.length === 0) kept.push(source[0] as string);
      return { text: kept.slice(0, 40).join(" "), kind: "perturbed" };
    }
    const topic = this.#topicChoice.sample(random);
    return { text: this.#text(random, topic, 8 + Math.floor(random() * 18)), kind: "fresh" };
  }

  #text(random: () => number, topic: number, length: number): string {
    const subtopic = topic * this.options.subtopicsPerTopic + Math.floor(random() * this.options.subtopicsPerTopic);
    const topicWords = this.#topicWords[topic] as Int32Array;
    const subtopicWords = this.#subtopicWords[subtopic] as Int32Array;
    const out: string[] = [];
    for (let i = 0; i < length; i++) {
      const u = random();
      const rank =
        u < 0.3
          ? (topicWords[this.#topicWordChoice.sample(random)] as number)
          : u < 0.45
            ? (subtopicWords[this.#subtopicWordChoice.sample(random)] as number)
            : this.#global.sample(random);
      out.push(this.#word(rank));
    }
    return out.join(" ");
  }

  #word(rank: number): string {
    return this.#words[rank] as string;
  }
}

/** `count` random unit vectors with i.i.d. Gaussian components (Box-Muller), back to back in one array. */
export function gaussianUnitVectors(count: number, dims: number, seed: number): Float32Array {
  const random = prng(seed);
  const out = new Float32Array(count * dims);
  for (let v = 0; v < count; v++) {
    let sum = 0;
    for (let d = 0; d < dims; d += 2) {
      const u1 = 1 - random();
      const u2 = random();
      const r = Math.sqrt(-2 * Math.log(u1));
      const a = r * Math.cos(2 * Math.PI * u2);
      const b = r * Math.sin(2 * Math.PI * u2);
      out[v * dims + d] = a;
      out[v * dims + d + 1] = b;
      sum += a * a + b * b;
    }
    const inverse = 1 / Math.sqrt(sum);
    for (let d = 0; d < dims; d++) out[v * dims + d] = (out[v * dims + d] as number) * inverse;
  }
  return out;
}
