import type { Env } from "../env";
import { KbError } from "../errors";
import {
  type AiBinding,
  type Embedder,
  type HashMode,
  LOCAL_DIMENSIONS,
  LocalHashEmbedder,
  WorkersAiEmbedder,
} from "./embedder";
import type { VectorizeLike, VectorizePlacement } from "./vectorize-index";

/**
 * Where a tenant's vectors live, decided by server configuration only (VECTOR_PLACEMENT), never by a request:
 *   {"default": "local", "tenants": {"acme": {"dedicated": "VECTORIZE_ACME"}, "beta": {"pooled": "VECTORIZE_POOL"}}}
 * "local" (the default) keeps vectors in the tenant object's SQLite. Pooled Vectorize uses namespace = tenant;
 * dedicated uses the tenant's own index binding (see scripts/provision-index.mjs).
 */
export type Placement =
  | { readonly kind: "local" }
  | { readonly kind: "vectorize"; readonly vectorize: VectorizePlacement };

type PlacementSpec = "local" | { pooled: string } | { dedicated: string };

export function placementFor(env: Env, tenant: string): Placement {
  let config: { default?: PlacementSpec; tenants?: Record<string, PlacementSpec> } = {};
  if (env.VECTOR_PLACEMENT) {
    try {
      config = JSON.parse(env.VECTOR_PLACEMENT);
    } catch {
      throw new KbError("ERR_CONFIG", "VECTOR_PLACEMENT is not JSON");
    }
  }
  const spec =
    (config.tenants && Object.hasOwn(config.tenants, tenant) ? config.tenants[tenant] : undefined) ??
    config.default ??
    "local";
  if (spec === "local") return { kind: "local" };
  const mode = "pooled" in spec ? "pooled" : "dedicated" in spec ? "dedicated" : null;
  const binding = mode === "pooled" ? (spec as { pooled: string }).pooled : (spec as { dedicated: string }).dedicated;
  const index = mode && binding ? (env as unknown as Record<string, unknown>)[binding] : undefined;
  if (!mode || !isVectorize(index))
    throw new KbError("ERR_CONFIG", "VECTOR_PLACEMENT names a missing Vectorize binding");
  return { kind: "vectorize", vectorize: { mode, index } };
}

/** `localMode` resolves the tenant's local hash (src/kb/embedder-key.ts); without it, the public unkeyed hash. */
export function embedderFor(env: Env, localMode?: () => Promise<HashMode>): Embedder {
  if ((env.EMBEDDER ?? "local") === "local") return new LocalHashEmbedder(localMode);
  if (env.EMBEDDER === "workers-ai") {
    if (!env.AI) throw new KbError("ERR_CONFIG", "EMBEDDER=workers-ai needs the AI binding");
    return new WorkersAiEmbedder(
      env.AI as AiBinding,
      env.AI_MODEL || undefined,
      Number(env.AI_DIMENSIONS || LOCAL_DIMENSIONS),
    );
  }
  throw new KbError("ERR_CONFIG", "EMBEDDER must be local or workers-ai");
}

function isVectorize(value: unknown): value is VectorizeLike {
  return typeof value === "object" && value !== null && typeof (value as VectorizeLike).query === "function";
}
