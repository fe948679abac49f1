/**
 * Embedders turn text into unit-length float32 vectors. The local embedder is the deterministic default: hashed
 * word, word-bigram and character-trigram features (lexical-grade: it matches shared words and spellings, not
 * meaning). Workers AI serves production (model configurable).
 */
export interface Embedder {
  /** Model id; part of every embedding-cache key. */
  readonly model: string;
  readonly dimensions: number;
  /** Whether results are worth caching (remote, billed models are; the local hash embedder is cheaper to recompute). */
  readonly cacheable: boolean;
  embed(texts: readonly string[]): Promise<Float32Array[]>;
}

export const LOCAL_EMBEDDER_MODEL = "local-hash-v1";
export const LOCAL_DIMENSIONS = 384;

export class LocalHashEmbedder implements Embedder {
  readonly model = LOCAL_EMBEDDER_MODEL;
  readonly dimensions = LOCAL_DIMENSIONS;
  readonly cacheable: boolean;

  /** `cacheable: true` (EMBEDDER=local-cached) sends the local embedder through the embedding cache, as a remote
   * model would be: the cache path can then be exercised and observed without Workers AI (the demo does). */
  constructor({ cacheable = false }: { cacheable?: boolean } = {}) {
    this.cacheable = cacheable;
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    return texts.map((text) => hashEmbed(text, this.dimensions));
  }
}

const WORD = /[\p{L}\p{N}]+/gu;

export function hashEmbed(text: string, dimensions: number): Float32Array {
  const vector = new Float32Array(dimensions);
  const words = text.normalize("NFKC").toLowerCase().match(WORD) ?? [];
  const add = (feature: string, weight: number) => {
    const hash = fnv1a(feature);
    vector[hash % dimensions] = (vector[hash % dimensions] ?? 0) + ((hash >>> 31) & 1 ? weight : -weight);
  };
  for (let i = 0; i < words.length; i++) {
    const word = words[i] as string;
    add(`w:${word}`, 1);
    if (i + 1 < words.length) add(`b:${word} ${words[i + 1]}`, 0.5);
    const padded = `^${word}$`;
    for (let j = 0; j + 3 <= padded.length; j++) add(`c:${padded.slice(j, j + 3)}`, 0.25);
  }
  return normalize(vector);
}

export function normalize(vector: Float32Array): Float32Array {
  let sum = 0;
  for (const value of vector) sum += value * value;
  if (sum === 0) return vector;
  const inverse = 1 / Math.sqrt(sum);
  for (let i = 0; i < vector.length; i++) vector[i] = (vector[i] ?? 0) * inverse;
  return vector;
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The subset of the Workers AI binding this project uses. */
export interface AiBinding {
  run(model: string, input: { text: string[] }): Promise<unknown>;
}

export const DEFAULT_AI_MODEL = "@cf/baai/bge-small-en-v1.5";

export class WorkersAiEmbedder implements Embedder {
  readonly model: string;
  readonly dimensions: number;
  readonly cacheable = true;
  readonly #ai: AiBinding;

  constructor(ai: AiBinding, model = DEFAULT_AI_MODEL, dimensions = LOCAL_DIMENSIONS) {
    this.#ai = ai;
    this.model = model;
    this.dimensions = dimensions;
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += 100) {
      const batch = texts.slice(i, i + 100);
      const result = (await this.#ai.run(this.model, { text: [...batch] })) as { data?: unknown };
      if (!Array.isArray(result.data) || result.data.length !== batch.length) {
        throw new Error("embedding model returned an unexpected shape");
      }
      for (const row of result.data) {
        if (!Array.isArray(row) || row.length !== this.dimensions) throw new Error("embedding has wrong dimensions");
        out.push(normalize(Float32Array.from(row as number[])));
      }
    }
    return out;
  }
}
