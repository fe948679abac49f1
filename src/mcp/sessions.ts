import { checkQuota } from "../tenant/quotas";
import { base64url, sha256Hex } from "../util/bytes";

/**
 * 2025-era MCP sessions, stored in the tenant object's SQLite and keyed `<tenant>:<subject>:<session>` (the
 * composite primary key of mcp_sessions). Only a SHA-256 of the session id is stored: a copy of the database does
 * not yield usable session ids. A lookup always includes the caller's verified tenant and subject, so another
 * subject's or another tenant's session id is indistinguishable from an unknown one (both answer 404).
 */
export interface SessionRecord {
  readonly protocolVersion: string;
  readonly createdAt: number;
  readonly lastSeenAt: number;
}

export interface SessionPolicy {
  readonly idleTtlMs: number;
  readonly maxPerSubject: number;
  /** Live sessions of all the tenant's subjects together (a quota: beyond it, initialize is refused with 429). */
  readonly maxPerTenant?: number;
}

/** 256 random bits, base64url: unguessable, and safe in an HTTP header (visible ASCII). */
export function newSessionId(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export class SessionStore {
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  readonly #policy: SessionPolicy;

  constructor(sql: SqlStorage, tenant: string, policy: SessionPolicy) {
    this.#sql = sql;
    this.#tenant = tenant;
    this.#policy = policy;
  }

  /** Creates a session for the subject; beyond the per-subject bound, the least recently used ones are ended. */
  async create(subject: string, protocolVersion: string, now: number): Promise<string> {
    const id = newSessionId();
    const hash = await sha256Hex(id);
    this.#sweepExpired(now);
    this.#checkTenantQuota(subject, now);
    this.#sql.exec(
      `INSERT INTO mcp_sessions (tenant, subject, session_hash, protocol_version, created_at, last_seen_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
      this.#tenant,
      subject,
      hash,
      protocolVersion,
      now,
      now,
    );
    this.#sql.exec(
      `DELETE FROM mcp_sessions WHERE tenant = ? AND subject = ? AND session_hash IN (
         SELECT session_hash FROM mcp_sessions WHERE tenant = ? AND subject = ?
         ORDER BY last_seen_at DESC, created_at DESC LIMIT -1 OFFSET ?)`,
      this.#tenant,
      subject,
      this.#tenant,
      subject,
      this.#policy.maxPerSubject,
    );
    return id;
  }

  /** Returns the live session and refreshes its idle timer, or null (unknown, expired, or not this subject's). */
  async touch(subject: string, sessionId: string, now: number): Promise<SessionRecord | null> {
    if (!SESSION_ID_PATTERN.test(sessionId)) return null;
    const hash = await sha256Hex(sessionId);
    const row = this.#sql
      .exec<{ protocol_version: string; created_at: number; last_seen_at: number }>(
        `SELECT protocol_version, created_at, last_seen_at FROM mcp_sessions
         WHERE tenant = ? AND subject = ? AND session_hash = ?`,
        this.#tenant,
        subject,
        hash,
      )
      .toArray()[0];
    if (!row) return null;
    if (now - row.last_seen_at > this.#policy.idleTtlMs) {
      this.#delete(subject, hash);
      return null;
    }
    this.#sql.exec(
      `UPDATE mcp_sessions SET last_seen_at = ? WHERE tenant = ? AND subject = ? AND session_hash = ?`,
      now,
      this.#tenant,
      subject,
      hash,
    );
    return { protocolVersion: row.protocol_version, createdAt: row.created_at, lastSeenAt: now };
  }

  async end(subject: string, sessionId: string): Promise<boolean> {
    if (!SESSION_ID_PATTERN.test(sessionId)) return false;
    return this.#delete(subject, await sha256Hex(sessionId));
  }

  /** Ends every session of the tenant (offboarding). Returns how many there were. */
  endAll(): number {
    const n = this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM mcp_sessions WHERE tenant = ?`, this.#tenant)
      .one().n;
    this.#sql.exec(`DELETE FROM mcp_sessions WHERE tenant = ?`, this.#tenant);
    return n;
  }

  count(subject: string): number {
    const row = this.#sql
      .exec<{ n: number }>(
        `SELECT COUNT(*) AS n FROM mcp_sessions WHERE tenant = ? AND subject = ?`,
        this.#tenant,
        subject,
      )
      .one();
    return row.n;
  }

  #delete(subject: string, hash: string): boolean {
    const cursor = this.#sql.exec(
      `DELETE FROM mcp_sessions WHERE tenant = ? AND subject = ? AND session_hash = ?`,
      this.#tenant,
      subject,
      hash,
    );
    return cursor.rowsWritten > 0;
  }

  /**
   * A new session may make the tenant exceed its quota only if it does not replace one of the subject's own (at
   * the per-subject bound, its least recently used session ends). Expired sessions were swept just before.
   */
  #checkTenantQuota(subject: string, now: number): void {
    const limit = this.#policy.maxPerTenant;
    if (limit === undefined) return;
    if (this.count(subject) >= this.#policy.maxPerSubject) return;
    const { n, oldest } = this.#sql
      .exec<{ n: number; oldest: number | null }>(
        `SELECT COUNT(*) AS n, MIN(last_seen_at) AS oldest FROM mcp_sessions WHERE tenant = ?`,
        this.#tenant,
      )
      .one();
    if (n >= limit) {
      const waitS = Math.max(1, Math.ceil(((oldest ?? now) + this.#policy.idleTtlMs - now) / 1000));
      checkQuota("sessions", n, 1, limit, waitS);
    }
  }

  /** Ends every expired session of the tenant (all subjects: the tenant-wide quota counts them all). */
  #sweepExpired(now: number): void {
    this.#sql.exec(
      `DELETE FROM mcp_sessions WHERE tenant = ? AND last_seen_at < ?`,
      this.#tenant,
      now - this.#policy.idleTtlMs,
    );
  }
}
