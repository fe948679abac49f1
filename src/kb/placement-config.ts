import { z } from "zod";
import { KbError } from "../errors";
import { DEFAULT_AI_MODEL, LOCAL_DIMENSIONS } from "./embedder";
import { VECTORIZE_LIMITS, type VectorizeLike } from "./vectorize-index";

/**
 * The embedding and placement settings, parsed and validated once for loadConfig (src/config.ts), which is the
 * only caller that hands them raw environment values. Pure apart from checking that a named Vectorize binding
 * exists in `bindings`. Anything unknown or malformed throws ERR_CONFIG (fail closed).
 */
export type EmbedderSetting =
  /** `cacheable`: EMBEDDER=local-cached (the local embedder through the embedding cache). */
  | { readonly kind: "local"; readonly cacheable: boolean }
  | { readonly kind: "workers-ai"; readonly model: string; readonly dimensions: number };

export type PlacementSpec =
  | { readonly kind: "local" }
  | { readonly kind: "pooled" | "dedicated"; readonly binding: string };

/** VECTOR_PLACEMENT: a default and per-tenant entries (a null-prototype record: no inherited keys). */
export interface VectorPlacementSetting {
  readonly default: PlacementSpec;
  readonly tenants: Readonly<Record<string, PlacementSpec>>;
}

export type ExtractorSetting = "deterministic" | "model";

const BINDING = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/);
const SPEC = z.union([
  z.literal("local"),
  z.object({ pooled: BINDING }).strict(),
  z.object({ dedicated: BINDING }).strict(),
]);
const PLACEMENT = z
  .object({ default: SPEC.optional(), tenants: z.record(z.string().min(1).max(64), SPEC).optional() })
  .strict();

export function parseEmbedder(raw: {
  EMBEDDER?: string;
  AI_MODEL?: string;
  AI_DIMENSIONS?: string;
  AI?: unknown;
}): EmbedderSetting {
  const kind = raw.EMBEDDER || "local";
  if (kind === "local" || kind === "local-cached") return { kind: "local", cacheable: kind === "local-cached" };
  if (kind !== "workers-ai") throw new KbError("ERR_CONFIG", "EMBEDDER must be local, local-cached or workers-ai");
  if (!raw.AI) throw new KbError("ERR_CONFIG", "EMBEDDER=workers-ai needs the AI binding");
  const dimensions = raw.AI_DIMENSIONS ? Number(raw.AI_DIMENSIONS) : LOCAL_DIMENSIONS;
  if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > VECTORIZE_LIMITS.maxDimensions) {
    throw new KbError("ERR_CONFIG", `AI_DIMENSIONS must be an integer in [1, ${VECTORIZE_LIMITS.maxDimensions}]`);
  }
  const model = raw.AI_MODEL || DEFAULT_AI_MODEL;
  if (!/^[@A-Za-z0-9][A-Za-z0-9@/._:-]{0,127}$/.test(model)) {
    throw new KbError("ERR_CONFIG", "AI_MODEL must be a model id");
  }
  return { kind: "workers-ai", model, dimensions };
}

export function parseVectorPlacement(raw: string | undefined, bindings: object): VectorPlacementSetting {
  let json: unknown = {};
  if (raw) {
    try {
      json = JSON.parse(raw);
    } catch {
      throw new KbError("ERR_CONFIG", "VECTOR_PLACEMENT is not JSON");
    }
  }
  const parsed = PLACEMENT.safeParse(json);
  if (!parsed.success) {
    throw new KbError(
      "ERR_CONFIG",
      'VECTOR_PLACEMENT must be {"default": spec, "tenants": {tenant: spec}} with spec "local", {"pooled": BINDING} or {"dedicated": BINDING}',
    );
  }
  const spec = (value: z.infer<typeof SPEC>): PlacementSpec => {
    if (value === "local") return { kind: "local" };
    const [kind, binding] =
      "pooled" in value ? (["pooled", value.pooled] as const) : (["dedicated", value.dedicated] as const);
    if (!isVectorize((bindings as Record<string, unknown>)[binding])) {
      throw new KbError("ERR_CONFIG", "VECTOR_PLACEMENT names a missing Vectorize binding");
    }
    return { kind, binding };
  };
  const tenants: Record<string, PlacementSpec> = Object.create(null);
  for (const [tenant, value] of Object.entries(parsed.data.tenants ?? {})) tenants[tenant] = spec(value);
  return { default: spec(parsed.data.default ?? "local"), tenants };
}

export function parseExtractor(raw: { EXTRACTOR?: string; AI?: unknown }): ExtractorSetting {
  const kind = raw.EXTRACTOR || "deterministic";
  if (kind !== "deterministic" && kind !== "model") {
    throw new KbError("ERR_CONFIG", "EXTRACTOR must be deterministic or model");
  }
  if (kind === "model" && !raw.AI) throw new KbError("ERR_CONFIG", "EXTRACTOR=model needs the AI binding");
  return kind;
}

export function isVectorize(value: unknown): value is VectorizeLike {
  return typeof value === "object" && value !== null && typeof (value as VectorizeLike).query === "function";
}
