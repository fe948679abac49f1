/**
 * The vector index behind one tenant's knowledge base. Implementations are constructed for exactly one tenant
 * (the tenant object's own) and have no way to address another: the local index lives in the tenant's SQLite,
 * the Vectorize adapter sets the namespace (or picks the dedicated index) itself.
 *
 * Writes happen in three steps so that the atom rows and the vectors commit together:
 * `beforeCommit` (async, may call a remote index), `writeRows` (synchronous SQL inside the caller's
 * transaction), `afterCommit` (in-memory state, only once the transaction succeeded).
 */
export interface VectorRecord {
  readonly id: string;
  readonly vector: Float32Array;
}

export interface VectorMatch {
  readonly id: string;
  readonly score: number;
}

export interface VectorStoreStats {
  readonly backend: "local" | "vectorize-pooled" | "vectorize-dedicated";
  readonly dimensions: number;
  readonly vectors: number | null;
  /** `synchronous`: a write is searchable when the call returns. `eventual`: Vectorize indexes asynchronously. */
  readonly consistency: "synchronous" | "eventual";
  readonly pendingMutation: string | null;
}

export interface VectorStore {
  readonly dimensions: number;
  beforeCommitUpsert(records: readonly VectorRecord[]): Promise<void>;
  writeUpsertRows(records: readonly VectorRecord[]): void;
  afterCommitUpsert(records: readonly VectorRecord[]): void;
  beforeCommitDelete(ids: readonly string[]): Promise<void>;
  writeDeleteRows(ids: readonly string[]): void;
  afterCommitDelete(ids: readonly string[]): void;
  /** Nearest neighbours by cosine similarity; `allowed` restricts the candidates (a server-computed id set). */
  query(vector: Float32Array, topK: number, allowed: ReadonlySet<string> | null): Promise<VectorMatch[]>;
  stats(): Promise<VectorStoreStats>;
}
