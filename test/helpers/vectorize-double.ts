/**
 * TEST DOUBLE — THIS IS NOT VECTORIZE.
 *
 * Cloudflare Vectorize has no local simulator (neither wrangler dev nor miniflare nor @cloudflare/vitest-plugin
 * provide one), so tests of the Vectorize adapter run against this in-memory stand-in for the `Vectorize` binding
 * (the V2 class in @cloudflare/workers-types: query, queryById, insert, upsert, deleteByIds, getByIds, describe).
 * Passing tests here show that the adapter calls the binding correctly *as far as this double models it*; they do
 * not show that real Vectorize behaves the same. What it models, from the documentation
 * (developers.cloudflare.com/vectorize/platform/limits, /reference/client-api, /best-practices/insert-vectors):
 *
 * - One index with a fixed dimension count (at most 1536) and the cosine metric: score = cosine similarity,
 *   best first. Values are stored with float32 precision, as Vectorize does.
 * - Vector ids are unique per INDEX, not per namespace: upserting an existing id with another namespace replaces
 *   the vector and moves it to the new namespace. A query with `namespace` sees only that namespace; a query
 *   without one sees the whole index. deleteByIds and getByIds take no namespace (they act index-wide).
 * - Writes are asynchronous: every insert/upsert/deleteByIds returns a fresh `mutationId` (a UUID) and is only
 *   queued; nothing is visible to query/queryById/getByIds/describe until the test calls `process()` (or the
 *   double was created with `autoProcess: true`). describe() reports `processedUpToMutation` /
 *   `processedUpToDatetime` of the last processed mutation, index-wide (in a pooled index that may be another
 *   tenant's mutation). The REST API documents both as strings (a UUID and an ISO 8601 datetime, null before the
 *   first mutation) although workers-types declares them `number`; the double returns the documented strings.
 * - Documented limits, enforced by throwing a VectorizeDoubleError (the real binding rejects with an Error whose
 *   message names the operation; the messages here are the double's own, not copies of Cloudflare's):
 *   dimensions equal to the index's; id 1..64 bytes; namespace 1..64 bytes; 1..1000 vectors per insert/upsert;
 *   metadata at most 10 KiB (JSON) per vector with keys non-empty, without '.' or '"', not starting with '$';
 *   topK an integer 1..100, at most 20 with returnValues or returnMetadata "all"/true; filter operators only
 *   $eq $ne $in $nin $lt $lte $gt $gte, and the filter's JSON under 2048 bytes.
 *
 * Not modelled (assumptions, kept simple on purpose): metadata indexes (every metadata field is filterable here;
 * real Vectorize filters only on fields with a metadata index created before the vectors were written), the
 * approximate nature of the real index (this one scores every vector exactly), index/namespace count limits,
 * rate limits, network failures other than the ones injected with `failNext`, and `insert` of an existing id
 * (skipped when the mutation is processed; an async mutation cannot fail at call time on index state).
 *
 * For assertions the double RECORDS every call (method, caller, namespace, topK, filter, ids, vectors with their
 * namespaces, mutation id, error). `binding(caller)` returns a view of the same index whose calls are tagged with
 * `caller`, so a test can give each tenant its own view of one shared (pooled) index and later check who sent what.
 */

export const DOCUMENTED_LIMITS = {
  maxDimensions: 1536,
  maxIdBytes: 64,
  maxNamespaceBytes: 64,
  maxBatch: 1000,
  maxMetadataBytes: 10_240,
  maxTopK: 100,
  maxTopKWithValuesOrMetadata: 20,
  maxFilterBytes: 2048,
  defaultTopK: 5,
} as const;

const FILTER_OPERATORS = new Set(["$eq", "$ne", "$in", "$nin", "$lt", "$lte", "$gt", "$gte"]);

export type VectorizeMethod = "query" | "queryById" | "insert" | "upsert" | "deleteByIds" | "getByIds" | "describe";

export interface RecordedVector {
  readonly id: string;
  readonly namespace: string | undefined;
  readonly dimensions: number;
  readonly hasMetadata: boolean;
}

export interface RecordedCall {
  /** Call order across the whole index (all views). */
  readonly seq: number;
  /** The label of the `binding(caller)` view used; null for calls on the double itself. Test bookkeeping only. */
  readonly caller: string | null;
  readonly method: VectorizeMethod;
  /** query/queryById: the `namespace` option as passed (undefined = whole index). */
  readonly namespace?: string | undefined;
  readonly topK?: number | undefined;
  readonly filter?: unknown;
  readonly returnValues?: boolean | undefined;
  readonly returnMetadata?: boolean | VectorizeMetadataRetrievalLevel | undefined;
  /** query: the query vector (copied); queryById: undefined. */
  readonly vector?: readonly number[];
  /** queryById: the id; deleteByIds/getByIds: the ids. */
  readonly ids?: readonly string[];
  /** insert/upsert: every vector with the namespace it carried. */
  readonly vectors?: readonly RecordedVector[];
  readonly mutationId?: string;
  /** query/queryById: the ids the index returned (before any caller-side filtering). */
  readonly returned?: readonly string[];
  /** Set when the call was rejected (limit or injected failure). */
  readonly error?: string;
}

export class VectorizeDoubleError extends Error {
  /** Which documented limit or rule was broken (e.g. "dimensions", "topK", "idBytes"), or "injected". */
  readonly rule: string;
  constructor(operation: string, rule: string, detail: string) {
    super(`${operation}: ${detail} [vectorize test double; rule: ${rule}]`);
    this.name = "VectorizeDoubleError";
    this.rule = rule;
  }
}

export interface VectorizeDoubleOptions {
  readonly dimensions: number;
  /** Apply each mutation as soon as it is accepted (still reported through mutationId / describe). */
  readonly autoProcess?: boolean;
  /** A name for messages. */
  readonly name?: string;
}

interface StoredVector {
  readonly id: string;
  readonly namespace: string | undefined;
  readonly values: Float32Array;
  readonly metadata: Record<string, VectorizeVectorMetadata> | undefined;
}

interface Mutation {
  readonly id: string;
  readonly at: number;
  readonly kind: "insert" | "upsert" | "delete";
  readonly vectors: readonly StoredVector[];
  readonly ids: readonly string[];
}

type MutableCall = { -readonly [K in keyof RecordedCall]: RecordedCall[K] };

interface Held {
  readonly method: VectorizeMethod;
  readonly release: () => void;
}

/** One in-memory index standing in for a Vectorize binding (see the header: not Vectorize). */
export class VectorizeDouble implements Vectorize {
  readonly dimensions: number;
  readonly name: string;
  readonly #autoProcess: boolean;
  readonly #vectors = new Map<string, StoredVector>();
  readonly #pending: Mutation[] = [];
  readonly #calls: RecordedCall[] = [];
  /** Namespaces each id was ever written with (at call time, processed or not); for containment assertions. */
  readonly #history = new Map<string, Set<string | undefined>>();
  readonly #failures: { method: VectorizeMethod; error: Error }[] = [];
  readonly #holding = new Set<VectorizeMethod>();
  readonly #held: Held[] = [];
  #processed: Mutation | null = null;
  #clock = 0;
  /** Fault injection: the index ignores the query's namespace (to test the adapter's second line of defence). */
  ignoreQueryNamespace = false;

  constructor(options: VectorizeDoubleOptions) {
    const { dimensions } = options;
    if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > DOCUMENTED_LIMITS.maxDimensions) {
      throw new VectorizeDoubleError("create index", "dimensions", `dimensions must be 1..1536, got ${dimensions}`);
    }
    this.dimensions = dimensions;
    this.name = options.name ?? "vectorize-double";
    this.#autoProcess = options.autoProcess ?? false;
  }

  // ---- test controls -------------------------------------------------------------------------------------------

  /** Every call so far, in order (a copy). */
  get calls(): readonly RecordedCall[] {
    return [...this.#calls];
  }

  callsOf(method: VectorizeMethod): RecordedCall[] {
    return this.#calls.filter((call) => call.method === method);
  }

  /** Mutation ids accepted but not yet applied, oldest first. */
  get pendingMutations(): string[] {
    return this.#pending.map((mutation) => mutation.id);
  }

  /**
   * Applies queued mutations in order: all of them, or up to and including `upTo`. Returns how many were applied.
   */
  process(upTo?: string): number {
    if (upTo !== undefined && !this.#pending.some((mutation) => mutation.id === upTo)) {
      throw new Error(`${this.name}: mutation ${upTo} is not pending`);
    }
    let applied = 0;
    while (this.#pending.length) {
      const mutation = this.#pending.shift() as Mutation;
      this.#apply(mutation);
      applied++;
      if (mutation.id === upTo) break;
    }
    return applied;
  }

  /** The processed (visible) vectors, optionally of one namespace: id, namespace, values. Test introspection. */
  snapshot(namespace?: string): { id: string; namespace: string | undefined; values: Float32Array }[] {
    return [...this.#vectors.values()]
      .filter((vector) => namespace === undefined || vector.namespace === namespace)
      .map((vector) => ({ id: vector.id, namespace: vector.namespace, values: vector.values }));
  }

  /** Every namespace `id` was ever written with (at call time), for containment assertions. */
  namespacesOf(id: string): ReadonlySet<string | undefined> {
    return this.#history.get(id) ?? new Set();
  }

  /** The next call of `method` rejects with `error` (recorded, nothing applied). */
  failNext(method: VectorizeMethod, error: Error = new VectorizeDoubleError(method, "injected", "injected failure")) {
    this.#failures.push({ method, error });
  }

  /**
   * From now on, calls of `method` are validated, recorded and (for mutations) queued immediately, but their
   * promise only settles when the test calls `releaseHeld()`: this lets a test interleave concurrent callers
   * the way real network latency would.
   */
  hold(method: VectorizeMethod): void {
    this.#holding.add(method);
  }

  /** Settles the held calls in the order they were made; returns how many. Holding stays on. */
  releaseHeld(): number {
    const held = this.#held.splice(0);
    for (const call of held) call.release();
    return held.length;
  }

  get heldCount(): number {
    return this.#held.length;
  }

  /** A view of this same index whose calls are recorded with `caller`. */
  binding(caller: string): Vectorize {
    return {
      describe: () => this.#describe(caller),
      query: (vector, options) => this.#query(caller, vector, options),
      queryById: (id, options) => this.#queryById(caller, id, options),
      insert: (vectors) => this.#mutate(caller, "insert", vectors),
      upsert: (vectors) => this.#mutate(caller, "upsert", vectors),
      deleteByIds: (ids) => this.#delete(caller, ids),
      getByIds: (ids) => this.#getByIds(caller, ids),
    };
  }

  // ---- the Vectorize surface -----------------------------------------------------------------------------------

  describe(): Promise<VectorizeIndexInfo> {
    return this.#describe(null);
  }

  query(vector: VectorFloatArray | number[], options?: VectorizeQueryOptions): Promise<VectorizeMatches> {
    return this.#query(null, vector, options);
  }

  queryById(vectorId: string, options?: VectorizeQueryOptions): Promise<VectorizeMatches> {
    return this.#queryById(null, vectorId, options);
  }

  insert(vectors: VectorizeVector[]): Promise<VectorizeAsyncMutation> {
    return this.#mutate(null, "insert", vectors);
  }

  upsert(vectors: VectorizeVector[]): Promise<VectorizeAsyncMutation> {
    return this.#mutate(null, "upsert", vectors);
  }

  deleteByIds(ids: string[]): Promise<VectorizeAsyncMutation> {
    return this.#delete(null, ids);
  }

  getByIds(ids: string[]): Promise<VectorizeVector[]> {
    return this.#getByIds(null, ids);
  }

  // ---- implementation ------------------------------------------------------------------------------------------

  async #describe(caller: string | null): Promise<VectorizeIndexInfo> {
    return this.#run(caller, { method: "describe" }, () => {
      const info = {
        vectorCount: this.#vectors.size,
        dimensions: this.dimensions,
        processedUpToDatetime: this.#processed ? new Date(this.#processed.at).toISOString() : null,
        processedUpToMutation: this.#processed ? this.#processed.id : null,
      };
      // Documented as strings (UUID, ISO 8601), declared as numbers in workers-types: see the header.
      return info as unknown as VectorizeIndexInfo;
    });
  }

  async #query(
    caller: string | null,
    vector: VectorFloatArray | number[],
    options: VectorizeQueryOptions = {},
  ): Promise<VectorizeMatches> {
    const partial = { method: "query" as const, vector: Array.from(vector ?? []), ...queryRecord(options) };
    return this.#run(caller, partial, (record) => {
      this.#checkValues("query", vector);
      return this.#search(record, Float32Array.from(vector), options);
    });
  }

  async #queryById(caller: string | null, vectorId: string, options: VectorizeQueryOptions = {}) {
    const partial = { method: "queryById" as const, ids: [vectorId], ...queryRecord(options) };
    return this.#run(caller, partial, (record): VectorizeMatches => {
      checkId("queryById", vectorId);
      const stored = this.#vectors.get(vectorId);
      if (!stored) {
        record.returned = [];
        return { matches: [], count: 0 };
      }
      return this.#search(record, stored.values, options);
    });
  }

  #search(record: MutableCall, query: Float32Array, options: VectorizeQueryOptions): VectorizeMatches {
    const operation = "query";
    const topK = options.topK ?? DOCUMENTED_LIMITS.defaultTopK;
    const returnValues = options.returnValues ?? false;
    const level =
      options.returnMetadata === true ? "all" : options.returnMetadata === false ? "none" : options.returnMetadata;
    if (level !== undefined && level !== "all" && level !== "indexed" && level !== "none") {
      throw new VectorizeDoubleError(operation, "returnMetadata", `returnMetadata must be all, indexed or none`);
    }
    if (!Number.isInteger(topK) || topK < 1 || topK > DOCUMENTED_LIMITS.maxTopK) {
      throw new VectorizeDoubleError(operation, "topK", `topK must be an integer from 1 to 100, got ${topK}`);
    }
    if ((returnValues || level === "all") && topK > DOCUMENTED_LIMITS.maxTopKWithValuesOrMetadata) {
      throw new VectorizeDoubleError(
        operation,
        "topK",
        `topK must be at most 20 with returnValues or returnMetadata "all", got ${topK}`,
      );
    }
    if (options.namespace !== undefined) checkNamespace(operation, options.namespace);
    const filter = options.filter === undefined ? null : checkFilter(operation, options.filter);
    const namespace = this.ignoreQueryNamespace ? undefined : options.namespace;
    const scored: VectorizeMatch[] = [];
    for (const stored of this.#vectors.values()) {
      if (namespace !== undefined && stored.namespace !== namespace) continue;
      if (filter && !matchesFilter(stored.metadata ?? {}, filter)) continue;
      const match: VectorizeMatch = { id: stored.id, score: cosine(query, stored.values) };
      if (stored.namespace !== undefined) match.namespace = stored.namespace;
      if (returnValues) match.values = Array.from(stored.values);
      if ((level === "all" || level === "indexed") && stored.metadata)
        match.metadata = structuredClone(stored.metadata);
      scored.push(match);
    }
    scored.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const matches = scored.slice(0, topK);
    record.returned = matches.map((match) => match.id);
    return { matches, count: matches.length };
  }

  async #mutate(
    caller: string | null,
    kind: "insert" | "upsert",
    vectors: VectorizeVector[],
  ): Promise<VectorizeAsyncMutation> {
    const list = Array.isArray(vectors) ? vectors : [];
    const partial = {
      method: kind,
      vectors: list.map((vector) => ({
        id: vector?.id,
        namespace: vector?.namespace,
        dimensions: vector?.values?.length ?? 0,
        hasMetadata: vector?.metadata !== undefined,
      })),
    };
    return this.#run(caller, partial, (record) => {
      if (!Array.isArray(vectors) || vectors.length === 0 || vectors.length > DOCUMENTED_LIMITS.maxBatch) {
        throw new VectorizeDoubleError(kind, "batch", `a batch must hold 1 to 1000 vectors, got ${list.length}`);
      }
      const stored = vectors.map((vector): StoredVector => {
        checkId(kind, vector.id);
        if (vector.namespace !== undefined) checkNamespace(kind, vector.namespace);
        this.#checkValues(kind, vector.values);
        if (vector.metadata !== undefined) checkMetadata(kind, vector.metadata);
        return {
          id: vector.id,
          namespace: vector.namespace,
          values: Float32Array.from(vector.values),
          metadata: vector.metadata === undefined ? undefined : structuredClone(vector.metadata),
        };
      });
      for (const vector of stored) {
        const seen = this.#history.get(vector.id) ?? new Set();
        seen.add(vector.namespace);
        this.#history.set(vector.id, seen);
      }
      return this.#enqueue(record, { kind, vectors: stored, ids: [] });
    });
  }

  async #delete(caller: string | null, ids: string[]): Promise<VectorizeAsyncMutation> {
    const partial = { method: "deleteByIds" as const, ids: Array.isArray(ids) ? [...ids] : [] };
    return this.#run(caller, partial, (record) => {
      if (!Array.isArray(ids) || ids.length === 0) {
        throw new VectorizeDoubleError("deleteByIds", "batch", "ids must be a non-empty list");
      }
      for (const id of ids) checkId("deleteByIds", id);
      return this.#enqueue(record, { kind: "delete", vectors: [], ids: [...ids] });
    });
  }

  async #getByIds(caller: string | null, ids: string[]): Promise<VectorizeVector[]> {
    const partial = { method: "getByIds" as const, ids: Array.isArray(ids) ? [...ids] : [] };
    return this.#run(caller, partial, () => {
      if (!Array.isArray(ids)) throw new VectorizeDoubleError("getByIds", "ids", "ids must be a list");
      for (const id of ids) checkId("getByIds", id);
      const out: VectorizeVector[] = [];
      for (const id of ids) {
        const stored = this.#vectors.get(id);
        if (!stored) continue;
        const vector: VectorizeVector = { id: stored.id, values: Array.from(stored.values) };
        if (stored.namespace !== undefined) vector.namespace = stored.namespace;
        if (stored.metadata) vector.metadata = structuredClone(stored.metadata);
        out.push(vector);
      }
      return out;
    });
  }

  #enqueue(record: MutableCall, change: Omit<Mutation, "id" | "at">): VectorizeAsyncMutation {
    // Timestamps strictly increase even when the Workers clock stands still between I/O.
    this.#clock = Math.max(Date.now(), this.#clock + 1);
    const mutation: Mutation = { id: crypto.randomUUID(), at: this.#clock, ...change };
    record.mutationId = mutation.id;
    this.#pending.push(mutation);
    if (this.#autoProcess) this.process();
    return { mutationId: mutation.id };
  }

  #apply(mutation: Mutation): void {
    if (mutation.kind === "delete") {
      for (const id of mutation.ids) this.#vectors.delete(id);
    } else {
      for (const vector of mutation.vectors) {
        if (mutation.kind === "insert" && this.#vectors.has(vector.id)) continue;
        // Ids are unique per index: this replaces a vector of the same id in any namespace.
        this.#vectors.set(vector.id, vector);
      }
    }
    this.#processed = mutation;
  }

  #checkValues(operation: string, values: unknown): void {
    if (!(Array.isArray(values) || values instanceof Float32Array || values instanceof Float64Array)) {
      throw new VectorizeDoubleError(operation, "values", "values must be a number[], Float32Array or Float64Array");
    }
    if (values.length !== this.dimensions) {
      throw new VectorizeDoubleError(
        operation,
        "dimensions",
        `expected ${this.dimensions} dimensions, got ${values.length}`,
      );
    }
    for (const value of values as ArrayLike<unknown> & Iterable<unknown>) {
      if (typeof value !== "number" || !Number.isFinite(value)) {
        throw new VectorizeDoubleError(operation, "values", "values must be finite numbers");
      }
    }
  }

  /** Records the call, applies injected failures and holds, and records the error if `body` throws. */
  async #run<R>(
    caller: string | null,
    partial: Omit<RecordedCall, "seq" | "caller">,
    body: (record: MutableCall) => R,
  ): Promise<R> {
    const record: MutableCall = { seq: this.#calls.length + 1, caller, ...partial };
    this.#calls.push(record);
    const failure = this.#failures.findIndex((entry) => entry.method === partial.method);
    const injected = failure >= 0 ? this.#failures.splice(failure, 1)[0] : undefined;
    let result: R;
    try {
      if (injected) throw injected.error;
      result = body(record);
    } catch (error) {
      record.error = error instanceof Error ? error.message : String(error);
      await this.#maybeHold(partial.method);
      throw error;
    }
    await this.#maybeHold(partial.method);
    return result;
  }

  async #maybeHold(method: VectorizeMethod): Promise<void> {
    if (!this.#holding.has(method)) return;
    await new Promise<void>((resolve) => this.#held.push({ method, release: resolve }));
  }
}

function queryRecord(options: VectorizeQueryOptions) {
  return {
    namespace: options.namespace,
    topK: options.topK,
    filter: options.filter === undefined ? undefined : structuredClone(options.filter),
    returnValues: options.returnValues,
    returnMetadata: options.returnMetadata,
  };
}

const encoder = new TextEncoder();

function bytes(text: string): number {
  return encoder.encode(text).byteLength;
}

function checkId(operation: string, id: unknown): asserts id is string {
  if (typeof id !== "string" || id.length === 0) {
    throw new VectorizeDoubleError(operation, "id", "vector ids must be non-empty strings");
  }
  if (bytes(id) > DOCUMENTED_LIMITS.maxIdBytes) {
    throw new VectorizeDoubleError(operation, "idBytes", `vector id is ${bytes(id)} bytes, the limit is 64`);
  }
}

function checkNamespace(operation: string, namespace: unknown): void {
  if (typeof namespace !== "string" || namespace.length === 0) {
    throw new VectorizeDoubleError(operation, "namespace", "namespace must be a non-empty string");
  }
  if (bytes(namespace) > DOCUMENTED_LIMITS.maxNamespaceBytes) {
    throw new VectorizeDoubleError(
      operation,
      "namespaceBytes",
      `namespace is ${bytes(namespace)} bytes, the limit is 64`,
    );
  }
}

function checkMetadata(operation: string, metadata: unknown): void {
  if (typeof metadata !== "object" || metadata === null || Array.isArray(metadata)) {
    throw new VectorizeDoubleError(operation, "metadata", "metadata must be an object");
  }
  const json = JSON.stringify(metadata);
  if (bytes(json) > DOCUMENTED_LIMITS.maxMetadataBytes) {
    throw new VectorizeDoubleError(operation, "metadataBytes", `metadata is ${bytes(json)} bytes, the limit is 10 KiB`);
  }
  const visit = (value: unknown): void => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return;
    for (const [key, inner] of Object.entries(value)) {
      if (key.length === 0 || key.includes(".") || key.includes('"') || key.startsWith("$")) {
        throw new VectorizeDoubleError(
          operation,
          "metadataKey",
          `metadata keys must be non-empty, contain no '.' or '"', and not start with '$' (got ${JSON.stringify(key)})`,
        );
      }
      visit(inner);
    }
  };
  visit(metadata);
}

type Scalar = string | number | boolean | null;
type Condition = { op: string; value: Scalar | Scalar[] };
type ParsedFilter = { path: string[]; conditions: Condition[] }[];

function checkFilter(operation: string, filter: unknown): ParsedFilter {
  if (typeof filter !== "object" || filter === null || Array.isArray(filter)) {
    throw new VectorizeDoubleError(operation, "filter", "filter must be an object");
  }
  const json = JSON.stringify(filter);
  if (bytes(json) >= DOCUMENTED_LIMITS.maxFilterBytes) {
    throw new VectorizeDoubleError(
      operation,
      "filterBytes",
      `filter JSON is ${bytes(json)} bytes, it must be under 2048`,
    );
  }
  const isScalar = (value: unknown): value is Scalar =>
    value === null || typeof value === "string" || typeof value === "number" || typeof value === "boolean";
  const parsed: ParsedFilter = [];
  for (const [field, clause] of Object.entries(filter)) {
    if (field.length === 0 || field.startsWith("$")) {
      throw new VectorizeDoubleError(operation, "filterKey", `invalid filter field ${JSON.stringify(field)}`);
    }
    const conditions: Condition[] = [];
    if (isScalar(clause)) {
      conditions.push({ op: "$eq", value: clause });
    } else if (typeof clause === "object" && !Array.isArray(clause)) {
      for (const [op, value] of Object.entries(clause as Record<string, unknown>)) {
        if (!FILTER_OPERATORS.has(op)) {
          throw new VectorizeDoubleError(
            operation,
            "filterOperator",
            `unsupported filter operator ${JSON.stringify(op)}`,
          );
        }
        if (op === "$in" || op === "$nin") {
          if (!Array.isArray(value) || !value.every(isScalar)) {
            throw new VectorizeDoubleError(operation, "filterValue", `${op} takes a list of values`);
          }
          conditions.push({ op, value: value as Scalar[] });
        } else {
          if (!isScalar(value)) throw new VectorizeDoubleError(operation, "filterValue", `${op} takes a single value`);
          conditions.push({ op, value });
        }
      }
    } else {
      throw new VectorizeDoubleError(operation, "filterValue", `invalid filter clause for ${JSON.stringify(field)}`);
    }
    parsed.push({ path: field.split("."), conditions });
  }
  return parsed;
}

function matchesFilter(metadata: Record<string, unknown>, filter: ParsedFilter): boolean {
  return filter.every(({ path, conditions }) => {
    let value: unknown = metadata;
    for (const key of path) {
      value = typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
    }
    return conditions.every(({ op, value: expected }) => compare(op, value, expected));
  });
}

function compare(op: string, actual: unknown, expected: Scalar | Scalar[]): boolean {
  switch (op) {
    case "$eq":
      return actual === expected;
    case "$ne":
      return actual !== expected;
    case "$in":
      return Array.isArray(expected) && expected.includes(actual as Scalar);
    case "$nin":
      return Array.isArray(expected) && !expected.includes(actual as Scalar);
    default: {
      if (actual === undefined || actual === null || expected === null || Array.isArray(expected)) return false;
      if (typeof actual !== typeof expected) return false;
      const a = actual as string | number | boolean;
      if (op === "$lt") return a < expected;
      if (op === "$lte") return a <= expected;
      if (op === "$gt") return a > expected;
      return a >= expected;
    }
  }
}

/** Cosine similarity in double precision over float32 values. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}
