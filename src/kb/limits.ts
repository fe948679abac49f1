/**
 * Explicit limits of the knowledge base (documented in docs/storage.md). Every input is checked against them
 * before anything is written; a batch that breaks one is refused whole.
 */
export const LIMITS = {
  /** UTF-8 bytes of one atom's text. */
  atomTextBytes: 16_384,
  /** Atoms per add_atoms call. */
  batchSize: 100,
  /** Ids per delete_atoms / get call. */
  idsPerCall: 100,
  titleChars: 256,
  sourceChars: 512,
  tagsPerAtom: 16,
  tagChars: 64,
  /** Atom ids: 1..64 bytes (Vectorize's id limit), a safe alphabet, no path or key separators beyond `.:_-`. */
  idPattern: /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/,
  tagPattern: /^[\p{L}\p{N}][\p{L}\p{N} ._:/-]{0,63}$/u,
  queryBytes: 2_048,
  topKDefault: 10,
  topKMax: 50,
  /** Values in one filter clause, and the serialized size of a filter. */
  filterValues: 16,
  filterBytes: 2_048,
  listPageDefault: 50,
  listPageMax: 100,
  /** Atoms per tenant with the local index (sized for the Durable Object's 128 MB memory, see BENCHMARKS.md). */
  localAtomsPerTenant: 120_000,
} as const;

/**
 * Ids bound per `... tenant = ? AND id IN (...)` statement: Durable Object SQLite accepts at most 100 bound
 * variables per statement, and one of them is the tenant.
 */
export const SQL_IDS_PER_STATEMENT = 99;

export function utf8Length(text: string): number {
  return new TextEncoder().encode(text).byteLength;
}
