import { REVOCATIONS_SCHEMA } from "./revocations";
/**
 * SQLite schema of the tenant object (one database per tenant; see docs/storage.md). Every table also carries the
 * tenant id in its key, so a row can never be read back under another tenant even if databases were mixed up.
 */
export const SCHEMA_VERSION = 6;

export const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS tenant_meta (
     key   TEXT PRIMARY KEY,
     value TEXT NOT NULL
   )`,
  // Data keys, only ever stored wrapped under a master key epoch (src/crypto/key-wrap.ts, docs/crypto.md).
  `CREATE TABLE IF NOT EXISTS tenant_keys (
     tenant     TEXT NOT NULL,
     version    INTEGER NOT NULL,
     epoch      TEXT NOT NULL,
     wrapped    BLOB NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (tenant, version)
   )`,
  // The local embedder's key (src/kb/embedder-key.ts): one per tenant, wrapped like the data keys (domain
  // "embedder-key"), rewrapped with them, destroyed by the shred; it does not rotate with the data keys.
  `CREATE TABLE IF NOT EXISTS embedder_keys (
     tenant     TEXT PRIMARY KEY,
     epoch      TEXT NOT NULL,
     wrapped    BLOB NOT NULL,
     created_at INTEGER NOT NULL
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
  // Knowledge base (docs/storage.md). `seq` orders atoms for listing; cursors carry the last seq seen.
  `CREATE TABLE IF NOT EXISTS atoms (
     tenant        TEXT NOT NULL,
     id            TEXT NOT NULL,
     seq           INTEGER NOT NULL,
     key_version   INTEGER NOT NULL,
     sealed        BLOB NOT NULL,
     source_token  TEXT,
     content_token TEXT NOT NULL,
     created_at    INTEGER NOT NULL,
     updated_at    INTEGER NOT NULL,
     PRIMARY KEY (tenant, id)
   )`,
  `CREATE UNIQUE INDEX IF NOT EXISTS atoms_by_seq ON atoms (tenant, seq)`,
  `CREATE INDEX IF NOT EXISTS atoms_by_source ON atoms (tenant, source_token)`,
  `CREATE INDEX IF NOT EXISTS atoms_by_key_version ON atoms (tenant, key_version)`,
  `CREATE TABLE IF NOT EXISTS atom_tags (
     tenant    TEXT NOT NULL,
     tag_token TEXT NOT NULL,
     atom_id   TEXT NOT NULL,
     PRIMARY KEY (tenant, tag_token, atom_id)
   )`,
  `CREATE INDEX IF NOT EXISTS atom_tags_by_atom ON atom_tags (tenant, atom_id)`,
  // Local vector index, sealed under the tenant's "vectors" subkey (src/kb/vector-pages.ts, docs/crypto.md):
  // int8 copies, scales and atom ids 256 rows a page, and each atom's exact float32 vector. Version 3 and older
  // databases had a clear `local_vectors` table; src/kb/legacy-vectors.ts converts and drops it.
  `CREATE TABLE IF NOT EXISTS vector_pages (
     tenant      TEXT NOT NULL,
     page        INTEGER NOT NULL,
     key_version INTEGER NOT NULL,
     sealed      BLOB NOT NULL,
     PRIMARY KEY (tenant, page)
   )`,
  `CREATE TABLE IF NOT EXISTS vector_rows (
     tenant      TEXT NOT NULL,
     atom_id     TEXT NOT NULL,
     key_version INTEGER NOT NULL,
     sealed      BLOB NOT NULL,
     PRIMARY KEY (tenant, atom_id)
   )`,
  `CREATE INDEX IF NOT EXISTS vector_rows_by_key_version ON vector_rows (tenant, key_version)`,
  `CREATE TABLE IF NOT EXISTS vectorize_ids (
     tenant    TEXT NOT NULL,
     vector_id TEXT NOT NULL,
     atom_id   TEXT NOT NULL,
     PRIMARY KEY (tenant, vector_id)
   )`,
  `CREATE UNIQUE INDEX IF NOT EXISTS vectorize_ids_by_atom ON vectorize_ids (tenant, atom_id)`,
  // Tenant documents: the bytes are in R2 at t/<tenant>/docs/<id>/<generation> (t/<tenant>/docs/<id> when
  // generation is NULL: rows written before schema 4), encrypted under data key `key_version` (src/blob/blob-gc.ts).
  `CREATE TABLE IF NOT EXISTS documents (
     tenant       TEXT NOT NULL,
     id           TEXT NOT NULL,
     generation   TEXT,
     key_version  INTEGER NOT NULL,
     size         INTEGER NOT NULL,
     content_type TEXT NOT NULL,
     created_at   INTEGER NOT NULL,
     updated_at   INTEGER NOT NULL,
     PRIMARY KEY (tenant, id)
   )`,
  `CREATE INDEX IF NOT EXISTS documents_by_key_version ON documents (tenant, key_version)`,
  // R2 objects that may exist without a documents row naming them (an upload in progress, or an object replaced or
  // deleted whose R2 delete has not happened yet); collected by EncryptedBlobs.collectGarbage.
  `CREATE TABLE IF NOT EXISTS blob_gc (
     tenant      TEXT NOT NULL,
     object_key  TEXT NOT NULL,
     document_id TEXT NOT NULL,
     generation  TEXT,
     reason      TEXT NOT NULL,
     created_at  INTEGER NOT NULL,
     PRIMARY KEY (tenant, object_key)
   )`,
  // Extraction runs started for this tenant; each attempt runs in a fresh ExtractionRun object (object_id).
  `CREATE TABLE IF NOT EXISTS extraction_runs (
     tenant      TEXT NOT NULL,
     run_id      TEXT NOT NULL,
     subject     TEXT NOT NULL,
     document_id TEXT NOT NULL,
     object_ids  TEXT NOT NULL,
     status      TEXT NOT NULL,
     attempt     INTEGER NOT NULL,
     segments    INTEGER NOT NULL,
     written     INTEGER NOT NULL,
     flagged     INTEGER NOT NULL,
     error       TEXT,
     created_at  INTEGER NOT NULL,
     updated_at  INTEGER NOT NULL,
     PRIMARY KEY (tenant, run_id)
   )`,
  // Background jobs of the tenant object that failed (src/tenant/jobs.ts): retried with backoff, shown in status.
  `CREATE TABLE IF NOT EXISTS job_state (
     tenant         TEXT NOT NULL,
     job            TEXT NOT NULL,
     failures       INTEGER NOT NULL,
     last_code      TEXT NOT NULL,
     last_failed_at INTEGER NOT NULL,
     next_at        INTEGER NOT NULL,
     PRIMARY KEY (tenant, job)
   )`,
  // The atoms each unfinished extraction run stored (docs/extraction.md, "Atomicity"), written in the same
  // transaction as the atoms: added = 1 for atoms the run created (a failed run deletes them), 0 for atoms that
  // existed before it (same deterministic id: they stay). Rows of a finished run are dropped.
  `CREATE TABLE IF NOT EXISTS run_atoms (
     tenant  TEXT NOT NULL,
     run_id  TEXT NOT NULL,
     atom_id TEXT NOT NULL,
     added   INTEGER NOT NULL,
     flagged INTEGER NOT NULL,
     PRIMARY KEY (tenant, run_id, atom_id)
   )`,
  // Remote embeddings, sealed (src/kb/embedding-cache.ts). Version 3 and older held `vector` in the clear: that
  // table is dropped by migrate (a cache: its rows are re-embedded on demand).
  `CREATE TABLE IF NOT EXISTS embedding_cache (
     tenant       TEXT NOT NULL,
     model        TEXT NOT NULL,
     content_hash TEXT NOT NULL,
     key_version  INTEGER NOT NULL,
     sealed       BLOB NOT NULL,
     created_at   INTEGER NOT NULL,
     PRIMARY KEY (tenant, model, content_hash)
   )`,
];

/** Columns added after a table's first release: [table, column, declaration]. Added if missing, never dropped. */
const ADDED_COLUMNS: readonly (readonly ["documents", string, string])[] = [["documents", "generation", "TEXT"]];

export function migrate(sql: SqlStorage): void {
  const cache = sql
    .exec(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'embedding_cache'`)
    .toArray()[0];
  if (cache && !String(cache.sql).includes("sealed")) sql.exec(`DROP TABLE embedding_cache`);
  for (const statement of SCHEMA) sql.exec(statement);
  sql.exec(REVOCATIONS_SCHEMA);
  for (const [table, column, declaration] of ADDED_COLUMNS) {
    // Databases created before the column existed (CREATE TABLE IF NOT EXISTS kept their old shape).
    const columns = sql.exec<{ name: string }>(`PRAGMA table_info(${table})`).toArray();
    if (!columns.some((info) => info.name === column)) {
      sql.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${declaration}`);
    }
  }
  sql.exec(
    `INSERT INTO tenant_meta (key, value) VALUES ('schema_version', ?)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
    String(SCHEMA_VERSION),
  );
}
