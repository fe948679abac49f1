import { KbError } from "../errors";
import { configuredPlacement } from "./placement";
import type { PlacementSpec, VectorPlacementSetting } from "./placement-config";

/**
 * The platform admin's per-tenant placement choice (tenant_meta `vector_placement`), on top of VECTOR_PLACEMENT:
 *   - "local": the tenant's vectors stay in its own object, sealed under its keys, whatever the configuration says;
 *   - "vectorize": the tenant uses the Vectorize placement the configuration gives it (its entry or the default);
 *     refused when the configuration gives it none;
 *   - no choice: the configuration decides (its default is local).
 * The effective placement changes only while the tenant has no atom: vectors are not migrated between backends,
 * so a tenant with atoms would find nothing in the new one; nor while an extraction run may still write some
 * (ERR_CONFLICT; docs/storage.md).
 */
export type PlacementChoice = "local" | "vectorize";

export interface PlacementStatus {
  /** The admin's choice, or "default" (the configuration decides). */
  readonly choice: PlacementChoice | "default";
  /** Where the vectors are: local, or a Vectorize binding, pooled (namespace = tenant) or dedicated. */
  readonly effective: PlacementSpec;
}

export function placementChoice(sql: SqlStorage): PlacementChoice | null {
  const value = sql
    .exec<{ value: string }>(`SELECT value FROM tenant_meta WHERE key = 'vector_placement'`)
    .toArray()[0]?.value;
  if (value === undefined) return null;
  if (value !== "local" && value !== "vectorize") throw new KbError("ERR_CONFIG", "unknown tenant placement");
  return value;
}

/** The placement the tenant object uses. A "vectorize" choice the configuration no longer backs fails closed. */
export function effectivePlacement(
  setting: VectorPlacementSetting,
  choice: PlacementChoice | null,
  tenant: string,
): PlacementSpec {
  if (choice === "local") return { kind: "local" };
  const configured = configuredPlacement(setting, tenant);
  if (choice === "vectorize" && configured.kind === "local") {
    throw new KbError("ERR_CONFIG", "the tenant is placed in Vectorize but VECTOR_PLACEMENT gives it no index");
  }
  return configured;
}

export function placementStatus(sql: SqlStorage, setting: VectorPlacementSetting, tenant: string): PlacementStatus {
  const choice = placementChoice(sql);
  return { choice: choice ?? "default", effective: effectivePlacement(setting, choice, tenant) };
}

/**
 * Validates an admin request body: the choice (null = "default"), or ERR_BAD_REQUEST. Pure; the admin API calls
 * it before reaching the tenant object, which calls it again.
 */
export function parsePlacementRequest(
  body: unknown,
  setting: VectorPlacementSetting,
  tenant: string,
): PlacementChoice | null {
  const requested = (body as { placement?: unknown } | null)?.placement;
  if (requested !== "local" && requested !== "vectorize" && requested !== "default") {
    throw new KbError("ERR_BAD_REQUEST", 'send {"placement": "local" | "vectorize" | "default"}');
  }
  if (requested === "vectorize" && configuredPlacement(setting, tenant).kind === "local") {
    throw new KbError("ERR_BAD_REQUEST", "VECTOR_PLACEMENT gives this tenant no Vectorize index");
  }
  return requested === "default" ? null : requested;
}

/**
 * Applies an admin request `{"placement": "local" | "vectorize" | "default"}`. Validation, the atom check and the
 * write are one synchronous step (nothing can add an atom between them). Returns the new status and whether the
 * effective placement changed (the caller then rebuilds the tenant's context).
 */
export function setPlacementChoice(
  sql: SqlStorage,
  setting: VectorPlacementSetting,
  tenant: string,
  body: unknown,
): { status: PlacementStatus; changed: boolean } {
  const choice = parsePlacementRequest(body, setting, tenant);
  const after = effectivePlacement(setting, choice, tenant);
  // A stored "vectorize" choice the configuration no longer backs resolves to nothing (the tenant fails closed):
  // leaving it is a change like any other, allowed only without atoms or runs.
  const before =
    placementChoice(sql) === "vectorize" && configuredPlacement(setting, tenant).kind === "local"
      ? null
      : effectivePlacement(setting, placementChoice(sql), tenant);
  const changed = before === null || !samePlacement(before, after);
  if (changed && inUse(sql, tenant)) {
    throw new KbError(
      "ERR_CONFLICT",
      "the tenant has atoms or extraction runs in progress: its vectors cannot move to another placement",
    );
  }
  if (choice === null) sql.exec(`DELETE FROM tenant_meta WHERE key = 'vector_placement'`);
  else {
    sql.exec(
      `INSERT INTO tenant_meta (key, value) VALUES ('vector_placement', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      choice,
    );
  }
  return { status: { choice: choice ?? "default", effective: after }, changed };
}

function samePlacement(a: PlacementSpec, b: PlacementSpec): boolean {
  if (a.kind === "local" || b.kind === "local") return a.kind === b.kind;
  return a.kind === b.kind && a.binding === b.binding;
}

function inUse(sql: SqlStorage, tenant: string): boolean {
  const atoms = sql.exec(`SELECT 1 FROM atoms WHERE tenant = ? LIMIT 1`, tenant).toArray().length > 0;
  const runs =
    sql
      .exec(
        `SELECT 1 FROM extraction_runs WHERE tenant = ? AND status IN ('queued', 'running', 'failing') LIMIT 1`,
        tenant,
      )
      .toArray().length > 0;
  return atoms || runs;
}
