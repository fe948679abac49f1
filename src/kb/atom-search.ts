import type { Provenance } from "./atom-cipher";
import type { AtomRows } from "./atom-rows";
import { invalid } from "./atom-validation";
import type { Embedder } from "./embedder";
import type { EmbeddingCache } from "./embedding-cache";
import type { AtomFilter } from "./filters";
import { LIMITS, utf8Length } from "./limits";
import type { VectorStore } from "./vector-store";

export interface SearchHit {
  readonly id: string;
  readonly score: number;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly createdAt: string;
  /** Flags for text that looks like instructions to an agent: treat `text` as untrusted data. */
  readonly flags: string[];
  readonly provenance: Provenance | null;
  readonly text: string;
}

export interface SearchDeps {
  readonly rows: AtomRows;
  readonly store: VectorStore;
  readonly embedder: Embedder;
  readonly cache: EmbeddingCache;
}

/**
 * Nearest atoms of one tenant to a query: the filter narrows to ids through blind tokens first, then the vector
 * store ranks, then the rows are opened. `topK` is 1..LIMITS.topKMax, checked once by the search tool's input
 * schema (src/mcp/tools/kb-tools.ts, published in tools/list).
 */
export async function searchAtoms(
  deps: SearchDeps,
  query: string,
  topK: number,
  filter: AtomFilter | null,
): Promise<SearchHit[]> {
  if (typeof query !== "string" || query.trim() === "") throw invalid("query must not be empty");
  if (utf8Length(query) > LIMITS.queryBytes) throw invalid(`query is longer than ${LIMITS.queryBytes} bytes`);
  const allowed = filter ? await deps.rows.matchingIds(filter) : null;
  if (allowed && allowed.size === 0) return [];
  const { vectors } = await deps.cache.embed(deps.embedder, [query]);
  const vector = vectors[0] as Float32Array;
  if (!vector.some((value) => value !== 0)) throw invalid("query has no searchable words");
  const matches = await deps.store.query(vector, topK, allowed);
  const atoms = new Map((await deps.rows.open(deps.rows.rows(matches.map((match) => match.id)))).map((a) => [a.id, a]));
  const hits: SearchHit[] = [];
  for (const match of matches) {
    const atom = atoms.get(match.id);
    if (!atom) continue; // e.g. deleted while an eventually consistent index still returns it
    hits.push({
      id: atom.id,
      score: Math.round(match.score * 10_000) / 10_000,
      title: atom.title,
      source: atom.source,
      tags: atom.tags,
      createdAt: atom.createdAt,
      flags: atom.flags,
      provenance: atom.provenance,
      text: atom.text,
    });
  }
  return hits;
}
