import type { KeyedFeatureHasher } from "./keyed-features";

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
  /** Drops key material held in memory (the keyed local embedder); called by the shred. */
  forget?(): void;
}

export const LOCAL_EMBEDDER_MODEL = "local-hash-v1";
/** The keyed local embedder (same features, keyed hash): a different model, so nothing mixes the two. */
export const KEYED_EMBEDDER_MODEL = "local-keyed-v2";
export const LOCAL_DIMENSIONS = 384;

/**
 * How one tenant's local embedder hashes features: under the tenant's embedder key (`keyed`, the default for
 * every tenant whose first vector is written now), or with the public FNV-1a of local-hash-v1 (`unkeyed`: a tenant
 * whose vectors were made before keyed hashing existed; see src/kb/embedder-key.ts and docs/crypto.md).
 */
export type HashMode = { readonly kind: "keyed"; readonly hasher: KeyedFeatureHasher } | { readonly kind: "unkeyed" };

export class LocalHashEmbedder implements Embedder {
  readonly dimensions = LOCAL_DIMENSIONS;
  readonly cacheable: boolean;
  readonly #mode: (() => Promise<HashMode>) | null;
  /** Resolved once per instance (one tenant object); concurrent first calls share the same resolution. */
  #resolving: Promise<HashMode> | null = null;
  #resolved: HashMode | null = null;

  /**
   * Without `mode`, the public unkeyed hash (local-hash-v1: tests, benchmarks). With it (the tenant object, see
   * src/kb/embedder-key.ts), the tenant's mode is resolved on first use and kept for this instance's lifetime.
   * `cacheable: true` (EMBEDDER=local-cached) sends the local embedder through the embedding cache, as a remote
   * model would be: the cache path can then be exercised and observed without Workers AI (the demo does).
   */
  constructor(mode?: () => Promise<HashMode>, { cacheable = false }: { cacheable?: boolean } = {}) {
    this.cacheable = cacheable;
    this.#mode = mode ?? null;
    if (!mode) this.#resolved = { kind: "unkeyed" };
  }

  /** The model id; before the first embed of a tenant's instance, the keyed id (what a new tenant gets). */
  get model(): string {
    return this.#resolved?.kind === "unkeyed" ? LOCAL_EMBEDDER_MODEL : KEYED_EMBEDDER_MODEL;
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    const mode = this.#resolved ?? (await this.#resolve());
    if (mode.kind === "unkeyed") return texts.map((text) => hashEmbed(text, this.dimensions));
    return texts.map((text) => mode.hasher.embed(text, this.dimensions));
  }

  /** Drops the keyed hasher (its keys and word table) from memory: the shred calls this with the key's deletion. */
  forget(): void {
    if (this.#resolved?.kind === "keyed") this.#resolved.hasher.forget();
    this.#resolved = this.#mode ? null : { kind: "unkeyed" };
    this.#resolving = null;
  }

  #resolve(): Promise<HashMode> {
    const mode = this.#mode as () => Promise<HashMode>;
    this.#resolving ??= mode().then(
      (resolved) => {
        this.#resolved = resolved;
        return resolved;
      },
      (error: unknown) => {
        this.#resolving = null; // a failure (key unavailable, offboarded) is not remembered
        throw error;
      },
    );
    return this.#resolving;
  }
}

const WORD = /[\p{L}\p{N}]+/gu;

export function words(text: string): string[] {
  return text.normalize("NFKC").toLowerCase().match(WORD) ?? [];
}

/** local-hash-v1: the public, keyless feature hash (kept for tenants whose vectors were made with it). */
export function hashEmbed(text: string, dimensions: number): Float32Array {
  const vector = new Float32Array(dimensions);
  const list = words(text);
  const add = (feature: string, weight: number) => {
    const hash = fnv1a(feature);
    vector[hash % dimensions] = (vector[hash % dimensions] ?? 0) + ((hash >>> 31) & 1 ? weight : -weight);
  };
  for (let i = 0; i < list.length; i++) {
    const word = list[i] as string;
    add(`w:${word}`, 1);
    if (i + 1 < list.length) add(`b:${word} ${list[i + 1]}`, 0.5);
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
