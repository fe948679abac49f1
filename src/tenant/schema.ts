/**
 * SQLite schema of the tenant object (one database per tenant; see docs/storage.md). Every table also carries the
 * tenant id in its key, so a row can never be read back under another tenant even if databases were mixed up.
 */
export const SCHEMA_VERSION = 1;

export const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS tenant_meta (
     key   TEXT PRIMARY KEY,
     value TEXT NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS tenant_secrets (
     tenant     TEXT NOT NULL,
     name       TEXT NOT NULL,
     value      BLOB NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (tenant, name)
   )`,
  `CREATE TABLE IF NOT EXISTS mcp_sessions (
     tenant           TEXT NOT NULL,
     subject          TEXT NOT NULL,
     session_hash     TEXT NOT NULL,
     protocol_version TEXT NOT NULL,
     created_at       INTEGER NOT NULL,
     last_seen_at     INTEGER NOT NULL,
     PRIMARY KEY (tenant, subject, session_hash)
   )`,
  `CREATE INDEX IF NOT EXISTS mcp_sessions_by_age ON mcp_sessions (tenant, subject, last_seen_at)`,
];

export function migrate(sql: SqlStorage): void {
  for (const statement of SCHEMA) sql.exec(statement);
  sql.exec(
    `INSERT INTO tenant_meta (key, value) VALUES ('schema_version', ?)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
    String(SCHEMA_VERSION),
  );
}
