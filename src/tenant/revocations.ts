import { type Identity, JTI_PATTERN, SUBJECT_PATTERN } from "../auth/identity";
import type { Config } from "../config";
import { KbError } from "../errors";

/**
 * Token revocation, per tenant, in the tenant object's SQLite (issue 11 item 4). Two kinds:
 *
 *   {"jti": "..."}                         the access token with that `jti`;
 *   {"subject": "...", "before": <epoch>}  every token of that subject issued (`iat`) before `before` (default now).
 *
 * Every tenant-facing RPC of the tenant object (serveMcp, serveDocument, exchange) checks the verified identity
 * against these rows before doing anything (`assertNotRevoked`). A revocation is kept exactly as long as a token it
 * names could still be accepted, and then pruned: tokens die at most AUTH_MAX_TOKEN_AGE_S after their `iat`, and
 * an `iat` is accepted at most the clock tolerance in the future, so
 *   - a jti revocation lives until now + max age + 2 x tolerance (any token valid now is dead by then);
 *   - a subject revocation lives until before + max age + 2 x tolerance (a token issued before `before` is dead then).
 * Pure storage logic on the SqlStorage it is given; no module-level state.
 */
export const REVOCATIONS_SCHEMA = `CREATE TABLE IF NOT EXISTS token_revocations (
  tenant     TEXT NOT NULL,
  kind       TEXT NOT NULL CHECK (kind IN ('jti', 'subject')),
  value      TEXT NOT NULL,
  before_s   INTEGER,
  expires_s  INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  PRIMARY KEY (tenant, kind, value)
)`;

/** Bound on live rows per tenant (admin-written only, but still bounded). */
export const MAX_REVOCATIONS = 10_000;

export interface Revocation {
  readonly kind: "jti" | "subject";
  readonly value: string;
  /** For a subject revocation: tokens with `iat` < before are revoked (epoch seconds). */
  readonly before: number | null;
  /** When the row is pruned (epoch seconds): no token it names can be accepted after that. */
  readonly expiresAt: number;
}

type Row = { kind: "jti" | "subject"; value: string; before_s: number | null; expires_s: number };

export function createRevocationsTable(sql: SqlStorage): void {
  sql.exec(REVOCATIONS_SCHEMA);
}

/** How long after `from` a token accepted at `from` (or issued before it) can still be accepted, in seconds. */
function horizon(config: Config): number {
  return config.maxTokenAgeS + 2 * config.clockToleranceS;
}

/**
 * Validates an admin request body into a revocation (pure). Exactly one form; unknown fields are refused.
 * Throws ERR_BAD_REQUEST (400) before anything is written.
 */
export function parseRevocation(body: unknown, config: Config, nowS: number): Revocation {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new KbError("ERR_BAD_REQUEST", 'send {"jti": "..."} or {"subject": "...", "before": <epoch seconds>}');
  }
  const fields = Object.keys(body);
  const input = body as Record<string, unknown>;
  if (fields.length === 1 && fields[0] === "jti") {
    if (typeof input.jti !== "string" || !JTI_PATTERN.test(input.jti)) {
      throw new KbError("ERR_BAD_REQUEST", "jti must be 1 to 256 printable characters");
    }
    return { kind: "jti", value: input.jti, before: null, expiresAt: nowS + horizon(config) };
  }
  if (fields.includes("subject") && fields.every((field) => field === "subject" || field === "before")) {
    if (typeof input.subject !== "string" || !SUBJECT_PATTERN.test(input.subject)) {
      throw new KbError("ERR_BAD_REQUEST", "subject must be 1 to 255 printable characters");
    }
    const before = input.before ?? nowS;
    if (typeof before !== "number" || !Number.isSafeInteger(before) || before > nowS + config.clockToleranceS) {
      throw new KbError("ERR_BAD_REQUEST", "before must be epoch seconds, not in the future");
    }
    const expiresAt = before + horizon(config);
    if (expiresAt <= nowS) {
      throw new KbError("ERR_BAD_REQUEST", "before is older than any token that can still be accepted");
    }
    return { kind: "subject", value: input.subject, before, expiresAt };
  }
  throw new KbError("ERR_BAD_REQUEST", 'send {"jti": "..."} or {"subject": "...", "before": <epoch seconds>}');
}

export class Revocations {
  readonly #sql: SqlStorage;
  readonly #tenant: string;

  constructor(sql: SqlStorage, tenant: string) {
    this.#sql = sql;
    this.#tenant = tenant;
  }

  /** Stores a revocation (a later subject revocation with a later `before` supersedes an earlier one). */
  add(revocation: Revocation, createdBy: string, nowS: number): Revocation {
    this.prune(nowS);
    const live = this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM token_revocations WHERE tenant = ?`, this.#tenant)
      .one().n;
    if (live >= MAX_REVOCATIONS) throw new KbError("ERR_LIMIT", "too many live revocations for this tenant");
    this.#sql.exec(
      `INSERT INTO token_revocations (tenant, kind, value, before_s, expires_s, created_at, created_by)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant, kind, value) DO UPDATE SET
         before_s = MAX(COALESCE(before_s, 0), COALESCE(excluded.before_s, 0)),
         expires_s = MAX(expires_s, excluded.expires_s)`,
      this.#tenant,
      revocation.kind,
      revocation.value,
      revocation.before,
      revocation.expiresAt,
      nowS,
      createdBy,
    );
    return this.#find(revocation.kind, revocation.value) ?? revocation;
  }

  /** Live revocations, newest expiry first (for the admin API). */
  list(nowS: number, limit = 500): Revocation[] {
    return this.#sql
      .exec<Row>(
        `SELECT kind, value, before_s, expires_s FROM token_revocations WHERE tenant = ? AND expires_s > ?
         ORDER BY expires_s DESC LIMIT ?`,
        this.#tenant,
        nowS,
        limit,
      )
      .toArray()
      .map(toRevocation);
  }

  /** Refuses a revoked identity with ERR_TOKEN_REVOKED (401). Reads only; at most two primary-key lookups. */
  assertNotRevoked(identity: Identity, nowS: number): void {
    if (identity.tokenId !== null) {
      const byJti = this.#find("jti", identity.tokenId);
      if (byJti && byJti.expiresAt > nowS) throw new KbError("ERR_TOKEN_REVOKED", "token revoked");
    }
    const bySubject = this.#find("subject", identity.subject);
    if (bySubject && bySubject.expiresAt > nowS && identity.issuedAt < (bySubject.before ?? 0)) {
      throw new KbError("ERR_TOKEN_REVOKED", "token revoked");
    }
  }

  /** Deletes revocations that no acceptable token can match any more. */
  prune(nowS: number): number {
    return this.#sql.exec(`DELETE FROM token_revocations WHERE tenant = ? AND expires_s <= ?`, this.#tenant, nowS)
      .rowsWritten;
  }

  #find(kind: "jti" | "subject", value: string): Revocation | null {
    const row = this.#sql
      .exec<Row>(
        `SELECT kind, value, before_s, expires_s FROM token_revocations WHERE tenant = ? AND kind = ? AND value = ?`,
        this.#tenant,
        kind,
        value,
      )
      .toArray()[0];
    return row ? toRevocation(row) : null;
  }
}

function toRevocation(row: Row): Revocation {
  return { kind: row.kind, value: row.value, before: row.before_s, expiresAt: row.expires_s };
}
