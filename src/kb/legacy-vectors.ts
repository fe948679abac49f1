import { PAGE_ROWS, packPage, type VectorSealer } from "./vector-pages";

/**
 * One-time conversion of a database written before vectors were sealed (schema version <= 3): table
 * `local_vectors` held per atom the int8 copy, its scale and the float32 vector in the clear. Its rows become
 * sealed pages and exact rows (src/kb/vector-pages.ts) and the table is dropped.
 *
 * Atomicity: every write below happens in one synchronous run with no await in between, which a Durable Object
 * commits atomically (automatic write coalescing): either the old table is still there and no page exists, or the
 * pages exist and the old table is gone. The conversion runs inside the index load, before any new write.
 * For an offboarded tenant (no key left) the clear rows are simply dropped.
 */
export async function convertLegacyVectors(
  sql: SqlStorage,
  tenant: string,
  dims: number,
  sealer: VectorSealer,
): Promise<number> {
  const legacy = sql.exec(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'local_vectors'`).toArray();
  if (legacy.length === 0) return 0;
  const rows = sealer.keysDestroyed()
    ? []
    : sql
        .exec<{ atom_id: string; q8: ArrayBuffer; scale: number; f32: ArrayBuffer }>(
          `SELECT atom_id, q8, scale, f32 FROM local_vectors WHERE tenant = ? ORDER BY rowid`,
          tenant,
        )
        .toArray();
  const version = rows.length ? await sealer.currentVersion() : 0;
  const pages = await Promise.all(
    Array.from({ length: Math.ceil(rows.length / PAGE_ROWS) }, async (_, page) => {
      const slice = rows.slice(page * PAGE_ROWS, (page + 1) * PAGE_ROWS);
      const q8 = new Int8Array(slice.length * dims);
      slice.forEach((row, i) => {
        q8.set(new Int8Array(row.q8), i * dims);
      });
      const plaintext = packPage(
        { ids: slice.map((row) => row.atom_id), scales: Float32Array.from(slice, (row) => row.scale), q8 },
        dims,
      );
      return { page, sealed: await sealer.sealPage(page, version, plaintext) };
    }),
  );
  const exact = await Promise.all(
    rows.map(async (row) => ({
      id: row.atom_id,
      sealed: await sealer.sealExact(row.atom_id, version, new Float32Array(row.f32)),
    })),
  );
  // No await from here on: one atomic write.
  for (const { page, sealed } of pages) {
    sql.exec(
      `INSERT OR REPLACE INTO vector_pages (tenant, page, key_version, sealed) VALUES (?, ?, ?, ?)`,
      tenant,
      page,
      version,
      sealed,
    );
  }
  for (const row of exact) {
    sql.exec(
      `INSERT OR REPLACE INTO vector_rows (tenant, atom_id, key_version, sealed) VALUES (?, ?, ?, ?)`,
      tenant,
      row.id,
      version,
      row.sealed,
    );
  }
  sql.exec(`DROP TABLE local_vectors`);
  return rows.length;
}
