import { KbError } from "../errors";
import { type AiBinding, type Embedder, type HashMode, LocalHashEmbedder, WorkersAiEmbedder } from "./embedder";
import { type EmbedderSetting, isVectorize, type PlacementSpec, type VectorPlacementSetting } from "./placement-config";
import type { VectorizePlacement } from "./vectorize-index";

/**
 * Where a tenant's vectors live, decided by server configuration (VECTOR_PLACEMENT, parsed by loadConfig) and the
 * platform admin's per-tenant setting (src/kb/tenant-placement.ts), never by a request:
 *   {"default": "local", "tenants": {"acme": {"dedicated": "VECTORIZE_ACME"}, "beta": {"pooled": "VECTORIZE_POOL"}}}
 * "local" (the default) keeps vectors in the tenant object's SQLite, sealed. Pooled Vectorize uses
 * namespace = tenant; dedicated uses the tenant's own index binding (see scripts/provision-index.mjs).
 */
export type Placement =
  | { readonly kind: "local" }
  | { readonly kind: "vectorize"; readonly binding: string; readonly vectorize: VectorizePlacement };

/** The configured placement of `tenant` (its VECTOR_PLACEMENT entry, else the default). */
export function configuredPlacement(setting: VectorPlacementSetting, tenant: string): PlacementSpec {
  return Object.hasOwn(setting.tenants, tenant) ? (setting.tenants[tenant] as PlacementSpec) : setting.default;
}

/** Resolves a placement spec to its binding (validated by loadConfig; checked again, failing closed). */
export function placementOf(spec: PlacementSpec, bindings: object): Placement {
  if (spec.kind === "local") return { kind: "local" };
  const index = (bindings as Record<string, unknown>)[spec.binding];
  if (!isVectorize(index)) throw new KbError("ERR_CONFIG", "VECTOR_PLACEMENT names a missing Vectorize binding");
  return { kind: "vectorize", binding: spec.binding, vectorize: { mode: spec.kind, index } };
}

export function placementFor(setting: VectorPlacementSetting, bindings: object, tenant: string): Placement {
  return placementOf(configuredPlacement(setting, tenant), bindings);
}

/** `localMode` resolves the tenant's local hash (src/kb/embedder-key.ts); without it, the public unkeyed hash. */
export function embedderFor(setting: EmbedderSetting, ai: unknown, localMode?: () => Promise<HashMode>): Embedder {
  if (setting.kind === "local") return new LocalHashEmbedder(localMode, { cacheable: setting.cacheable });
  if (!ai) throw new KbError("ERR_CONFIG", "EMBEDDER=workers-ai needs the AI binding");
  return new WorkersAiEmbedder(ai as AiBinding, setting.model, setting.dimensions);
}
