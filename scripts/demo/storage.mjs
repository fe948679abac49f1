// Local storage access for step 7, only while the demo's server is stopped: the persisted Durable Object SQLite
// files under <persist>/v3/do/<script>-<Class>/<object id>.sqlite, opened with node:sqlite. A tenant object's file
// is found by the tenant it is bound to (tenant_meta 'tenant').
import { copyFileSync, existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { deserialize } from "node:v8";

const SCRIPT = "tenant-mcp-kb";

export function objectFiles(persist, className) {
  const dir = join(persist, "v3", "do", `${SCRIPT}-${className}`);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith(".sqlite") && name !== "metadata.sqlite")
    .map((name) => ({ id: name.slice(0, -".sqlite".length), file: join(dir, name) }));
}

export function open(file) {
  const db = new DatabaseSync(file);
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  return db;
}

/** The file of each tenant object, by bound tenant. */
export function tenantFiles(persist) {
  const out = {};
  for (const { id, file } of objectFiles(persist, "TenantServer")) {
    const db = open(file);
    try {
      const row = db.prepare("SELECT value FROM tenant_meta WHERE key = 'tenant'").get();
      if (row) out[row.value] = { id, file };
    } catch {
      // not a tenant object file (no tenant_meta yet)
    } finally {
      db.close();
    }
  }
  return out;
}

/** A consistent copy of a closed database file (checkpointed first, so the copy needs no -wal file). */
export function copyDatabase(from, to) {
  open(from).close();
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${to}${suffix}`, { force: true });
  copyFileSync(from, to);
}

/** The run record an ExtractionRun object holds in its key-value storage, or null (wiped, or spent). */
export function runRecord(file) {
  const db = open(file);
  try {
    const row = db.prepare("SELECT value FROM _cf_KV WHERE key = 'run'").get();
    return row ? deserialize(Buffer.from(row.value)) : null;
  } catch {
    return null;
  } finally {
    db.close();
  }
}

/** The local R2 bucket's object table (miniflare keeps one SQLite file per bucket beside its blobs). */
function bucketDatabase(persist) {
  const [bucket, other] = r2Files(persist);
  if (!bucket || other) throw new Error("expected exactly one local R2 bucket");
  return open(bucket.file);
}

function r2Files(persist) {
  const dir = join(persist, "v3", "r2", "miniflare-R2BucketObject");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith(".sqlite") && name !== "metadata.sqlite")
    .map((name) => ({ id: name.slice(0, -".sqlite".length), file: join(dir, name) }));
}

/** Makes `toKey` name the same stored bytes as `fromKey` (a byte-for-byte copy of the ciphertext). */
export function copyR2Object(persist, fromKey, toKey) {
  const db = bucketDatabase(persist);
  try {
    return db
      .prepare(
        `INSERT INTO _mf_objects (key, blob_id, version, size, etag, uploaded, checksums, http_metadata, custom_metadata)
         SELECT ?, blob_id, version, size, etag, uploaded, checksums, http_metadata, custom_metadata FROM _mf_objects WHERE key = ?`,
      )
      .run(toKey, fromKey).changes;
  } finally {
    db.close();
  }
}

export function deleteR2Object(persist, key) {
  const db = bucketDatabase(persist);
  try {
    db.prepare("DELETE FROM _mf_objects WHERE key = ?").run(key);
  } finally {
    db.close();
  }
}
