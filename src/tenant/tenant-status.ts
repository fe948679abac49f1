import type { Config } from "../config";
import type { EgressPolicy } from "../egress/egress-policy";
import { type EmbedderKeyStatus, embedderKeyStatus } from "../kb/embedder-key";
import { type PlacementStatus, placementStatus } from "../kb/tenant-placement";
import { type JobFailure, JobRunner } from "./jobs";
import type { RotationState, ShredReceipt, TenantLifecycle } from "./lifecycle";
import type { QuotaUsage, TenantContext } from "./tenant-context";

/** What GET /admin/tenants/:tenant answers (plain data over RPC). Nothing secret: key versions, not keys. */
export interface TenantStatus {
  readonly tenant: string;
  readonly state: string;
  readonly keys: { version: number; epoch: string; createdAt: string; current: boolean }[];
  /** The local embedder's hash: keyed (and its key's epoch), unkeyed-v1 (a legacy tenant), or none yet. */
  readonly embedderKey: EmbedderKeyStatus;
  /** Where the tenant's vectors are, and the admin's choice behind it. */
  readonly placement: PlacementStatus;
  readonly atoms: number;
  readonly documents: number;
  readonly rotation: RotationState | null;
  readonly egress: EgressPolicy;
  readonly receipt: ShredReceipt | null;
  /** Background job steps that failed and are being retried (empty when every job is healthy). */
  readonly jobFailures: JobFailure[];
  /** Usage against the tenant's quotas. */
  readonly quotas: QuotaUsage;
}

/** The status of the tenant `ctx` serves, read from its object's storage (every statement keyed by the tenant). */
export function tenantStatus(
  ctx: TenantContext,
  lifecycle: TenantLifecycle,
  sql: SqlStorage,
  config: Config,
): TenantStatus {
  const tenant = ctx.tenant;
  const count = (table: "atoms" | "documents") =>
    sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE tenant = ?`, tenant).one().n;
  return {
    tenant,
    state: lifecycle.state(),
    keys: ctx.keyring.list().map((key) => ({ ...key, createdAt: new Date(key.createdAt).toISOString() })),
    embedderKey: embedderKeyStatus(ctx.keyring, sql),
    placement: placementStatus(sql, config.vectorPlacement, tenant),
    // Offboarded: the knowledge base cannot open anything any more; the rows still counted are the purge's.
    atoms: lifecycle.state() === "active" ? ctx.kb.count() : count("atoms"),
    documents: count("documents"),
    rotation: lifecycle.rotation(),
    egress: ctx.egressPolicy(),
    receipt: lifecycle.receipt(),
    jobFailures: new JobRunner(sql, tenant).failures(),
    quotas: ctx.usage(config),
  };
}
