import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import type { TenantKeyring } from "../../src/crypto/tenant-keyring";
import type { VectorMatch, VectorRecord, VectorStore } from "../../src/kb/vector-store";
import { VectorizeVectorStore } from "../../src/kb/vectorize-index";
import { localIndex } from "../helpers/local-index";
import { VectorizeDouble } from "../helpers/vectorize-double";

/**
 * Shared fixtures for the vector-store tests: the three backends built over a real tenant object's SQLite (inside
 * runInDurableObject), the write protocol exactly as KnowledgeBase drives it, seeded vectors and an exact
 * reference ranking. The Vectorize backends run over test/helpers/vectorize-double.ts, which is NOT Vectorize.
 */

export type BackendName = "local" | "vectorize-pooled" | "vectorize-dedicated";
export const BACKENDS: readonly BackendName[] = ["local", "vectorize-pooled", "vectorize-dedicated"];

export function stubFor(tenant: string) {
  return env.TENANT_SERVER.get(env.TENANT_SERVER.idFromName(tenant));
}

let counter = 0;
/** A tenant name unique within this test file's storage (TENANT_PATTERN-shaped). */
export function uniqueTenant(prefix: string): string {
  counter++;
  return `${prefix}-${counter}-${crypto.randomUUID().slice(0, 8)}`.toLowerCase().slice(0, 63);
}

/** Per-test backend resources: for Vectorize a fresh double (one index), for local nothing outside SQLite. */
export interface BackendFixture {
  readonly name: BackendName;
  readonly dimensions: number;
  readonly double: VectorizeDouble | null;
  /** `keyring`: the one the caller's atom cipher uses (the local index seals under it); a fresh one if absent. */
  makeStore(sql: SqlStorage, tenant: string, keyring?: TenantKeyring): VectorStore;
  /** Lets Vectorize process every queued mutation (no-op for the synchronous local index). */
  settle(): void;
}

export function backendFixture(name: BackendName, dimensions: number, double?: VectorizeDouble): BackendFixture {
  if (name === "local") {
    return {
      name,
      dimensions,
      double: null,
      makeStore: (sql, tenant, keyring) => localIndex(sql, tenant, dimensions, keyring),
      settle: () => {},
    };
  }
  const index = double ?? new VectorizeDouble({ dimensions, name: `${name}-index` });
  const mode = name === "vectorize-pooled" ? "pooled" : "dedicated";
  return {
    name,
    dimensions,
    double: index,
    makeStore: (sql, tenant) =>
      new VectorizeVectorStore(sql, tenant, { mode, index: index.binding(tenant) }, dimensions),
    settle: () => {
      index.process();
    },
  };
}

/** The three-step write protocol of VectorStore, driven like KnowledgeBase.add drives it. */
export async function upsertVectors(store: VectorStore, state: DurableObjectState, records: VectorRecord[]) {
  await store.beforeCommitUpsert(records);
  state.storage.transactionSync(() => store.writeUpsertRows(records));
  store.afterCommitUpsert(records);
}

/** The three-step delete protocol of VectorStore, driven like KnowledgeBase.delete drives it. */
export async function deleteVectors(store: VectorStore, state: DurableObjectState, ids: string[]) {
  await store.beforeCommitDelete(ids);
  state.storage.transactionSync(() => store.writeDeleteRows(ids));
  store.afterCommitDelete(ids);
}

export interface InObject {
  readonly store: VectorStore;
  readonly state: DurableObjectState;
  readonly tenant: string;
  upsert(records: VectorRecord[]): Promise<void>;
  remove(ids: string[]): Promise<void>;
}

/** Runs `fn` inside `tenant`'s object with a store freshly built over its SQLite. */
export function inObject<R>(fixture: BackendFixture, tenant: string, fn: (ctx: InObject) => Promise<R>): Promise<R> {
  return runInDurableObject(stubFor(tenant), async (_instance, state) => {
    const store = fixture.makeStore(state.storage.sql, tenant);
    return fn({
      store,
      state,
      tenant,
      upsert: (records) => upsertVectors(store, state, records),
      remove: (ids) => deleteVectors(store, state, ids),
    });
  });
}

/** mulberry32: a small seeded PRNG, so every run uses the same vectors. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A unit-length float32 vector with entries drawn from `random` (signed). */
export function unitVector(dimensions: number, random: () => number): Float32Array {
  const vector = new Float32Array(dimensions);
  for (let i = 0; i < dimensions; i++) vector[i] = random() * 2 - 1;
  return normalized(vector);
}

export function normalized(vector: Float32Array): Float32Array {
  let sum = 0;
  for (const value of vector) sum += value * value;
  const inverse = 1 / Math.sqrt(sum);
  return vector.map((value) => value * inverse);
}

/** `base` moved a little towards a random direction (`amount` in [0, 1]), renormalized. */
export function nudge(base: Float32Array, amount: number, random: () => number): Float32Array {
  const noise = unitVector(base.length, random);
  return normalized(base.map((value, i) => value * (1 - amount) + (noise[i] as number) * amount));
}

export function records(prefix: string, count: number, dimensions: number, seed: number): VectorRecord[] {
  const random = rng(seed);
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}${i}`, vector: unitVector(dimensions, random) }));
}

/** Exact cosine similarity in double precision (the reference the backends are compared against). */
export function exactCosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += (a[i] as number) * (b[i] as number);
    na += (a[i] as number) ** 2;
    nb += (b[i] as number) ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

/** The exact top-k of `corpus` for `query` (optionally among `allowed`), best first. */
export function exactTopK(
  corpus: readonly VectorRecord[],
  query: Float32Array,
  topK: number,
  allowed: ReadonlySet<string> | null = null,
): VectorMatch[] {
  return corpus
    .filter((record) => allowed === null || allowed.has(record.id))
    .map((record) => ({ id: record.id, score: exactCosine(query, record.vector) }))
    .sort((a, b) => b.score - a.score)
    .slice(0, topK);
}
