import { KbError } from "../errors";
import { pagesFor } from "./index-overlay";
import { convertLegacyVectors } from "./legacy-vectors";
import { SQL_IDS_PER_STATEMENT } from "./limits";
import { PAGE_ROWS, type PageRows, unpackPage, type VectorSealer } from "./vector-pages";
import type { VectorMatch } from "./vector-store";

/**
 * The local index at rest, in the tenant's SQLite (docs/storage.md, docs/crypto.md): `vector_pages` holds the int8
 * copies with their scales and atom ids, PAGE_ROWS rows a page; `vector_rows` holds each atom's exact float32
 * vector; everything sealed under the tenant's "vectors" subkey (src/kb/vector-pages.ts).
 *
 * Invariant: pages 0..P-1 exist, all full but the last (a load refuses anything else, ERR_DECRYPT). The writes
 * here run inside the caller's transaction together with the atom rows, so at every commit point the index at
 * rest holds exactly the atoms at rest. Every statement is keyed by the tenant given at construction.
 */

/** The page rows of one write, sealed before its transaction (see src/kb/local-index.ts). */
export interface PageWrite {
  readonly version: number;
  readonly pages: readonly { readonly page: number; readonly sealed: Uint8Array }[];
  readonly keepBelow: number;
  /** The tenant's keys are destroyed (offboarding): only the exact rows are deleted, the pages go wholesale. */
  readonly shredded: boolean;
}

/** An exact row re-sealed under a newer version, with the version it was read under. */
export interface ResealedRow {
  readonly id: string;
  readonly from: number;
  readonly sealed: Uint8Array;
}

/** Where a load puts the opened pages (src/kb/live-rows.ts). */
export interface PageSink {
  reserve(rows: number): void;
  appendPage(page: PageRows): void;
}

/** Pages read and opened together by a load (small: their buffers are freed and reused batch to batch). */
const OPEN_BATCH = 4;

type SealedRow = { atom_id: string; key_version: number; sealed: ArrayBuffer };

/** One tenant's vector tables (see the header). */
export class VectorTables {
  readonly #sql: SqlStorage;
  readonly #tenant: string;
  readonly #sealer: VectorSealer;
  readonly #dims: number;

  constructor(sql: SqlStorage, tenant: string, dims: number, sealer: VectorSealer) {
    this.#sql = sql;
    this.#tenant = tenant;
    this.#dims = dims;
    this.#sealer = sealer;
  }

  /**
   * Opens every page, in order, into `sink` (converting a legacy clear table first): `reserve` once with the row
   * capacity the pages can hold, then `appendPage` per page; returns the number of rows. Reads OPEN_BATCH pages at
   * a time, so the sealed and opened copies of only a few pages are alive at once (and their memory is reused).
   * Refuses pages that are not exactly 0..P-1, all full but the last (ERR_DECRYPT); when this throws, the sink
   * holds part of the tenant's plaintext and the caller wipes it.
   */
  async openPages(sink: PageSink): Promise<number> {
    await convertLegacyVectors(this.#sql, this.#tenant, this.#dims, this.#sealer);
    const notContiguous = () => new KbError("ERR_DECRYPT", "vector pages are not contiguous");
    const stored = this.#sql
      .exec<{ n: number }>(`SELECT COUNT(*) AS n FROM vector_pages WHERE tenant = ?`, this.#tenant)
      .one().n;
    sink.reserve(stored * PAGE_ROWS);
    let next = 0;
    let total = 0;
    let lastCount = PAGE_ROWS;
    while (next < stored) {
      const batch = this.#sql
        .exec<{ page: number; key_version: number; sealed: ArrayBuffer }>(
          `SELECT page, key_version, sealed FROM vector_pages WHERE tenant = ? AND page >= ? ORDER BY page LIMIT ?`,
          this.#tenant,
          next,
          OPEN_BATCH,
        )
        .toArray();
      if (batch.length === 0) break;
      const pages = await Promise.all(
        batch.map(async (row) =>
          unpackPage(await this.#sealer.openPage(row.page, row.key_version, new Uint8Array(row.sealed)), this.#dims),
        ),
      );
      pages.forEach((page, i) => {
        // Only the last page may be partly full, and no page may be missing.
        if ((batch[i] as { page: number }).page !== next || lastCount !== PAGE_ROWS) throw notContiguous();
        sink.appendPage(page);
        lastCount = page.ids.length;
        total += lastCount;
        next++;
      });
    }
    // Every stored page was read (none below 0, none skipped) and the rows fill exactly these pages.
    if (next !== stored || pagesFor(total) !== next) throw notContiguous();
    return total;
  }

  /** Inside the caller's transaction. */
  writeExact(version: number, rows: readonly { readonly id: string; readonly sealed: Uint8Array }[]): void {
    for (const row of rows) {
      this.#sql.exec(
        `INSERT INTO vector_rows (tenant, atom_id, key_version, sealed) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant, atom_id) DO UPDATE SET key_version = excluded.key_version, sealed = excluded.sealed`,
        this.#tenant,
        row.id,
        version,
        row.sealed,
      );
    }
  }

  /** Inside the caller's transaction. */
  deleteExact(ids: readonly string[]): void {
    for (const id of ids) {
      this.#sql.exec(`DELETE FROM vector_rows WHERE tenant = ? AND atom_id = ?`, this.#tenant, id);
    }
  }

  /** Inside the caller's transaction. */
  writePages(write: PageWrite): void {
    if (write.shredded) {
      this.#sql.exec(`DELETE FROM vector_pages WHERE tenant = ?`, this.#tenant);
      return;
    }
    for (const { page, sealed } of write.pages) {
      this.#sql.exec(
        `INSERT INTO vector_pages (tenant, page, key_version, sealed) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant, page) DO UPDATE SET key_version = excluded.key_version, sealed = excluded.sealed`,
        this.#tenant,
        page,
        write.version,
        sealed,
      );
    }
    this.#sql.exec(`DELETE FROM vector_pages WHERE tenant = ? AND page >= ?`, this.#tenant, write.keepBelow);
  }

  /** Exact cosine scores from the sealed float32 vectors (all stored vectors are unit length), best first. */
  async exactScores(ids: readonly string[], vector: Float32Array): Promise<VectorMatch[]> {
    const rows: SealedRow[] = [];
    for (let i = 0; i < ids.length; i += SQL_IDS_PER_STATEMENT) {
      const chunk = ids.slice(i, i + SQL_IDS_PER_STATEMENT);
      rows.push(
        ...this.#sql
          .exec<SealedRow>(
            `SELECT atom_id, key_version, sealed FROM vector_rows WHERE tenant = ? AND atom_id IN (${chunk.map(() => "?").join(",")})`,
            this.#tenant,
            ...chunk,
          )
          .toArray(),
      );
    }
    const out = await Promise.all(
      rows.map(async (row) => {
        const stored = await this.#sealer.openExact(row.atom_id, row.key_version, new Uint8Array(row.sealed));
        let dot = 0;
        for (let d = 0; d < stored.length; d++) dot += (stored[d] as number) * (vector[d] as number);
        return { id: row.atom_id, score: dot };
      }),
    );
    return out.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : 1));
  }

  /** Data key versions that seal at least one page or exact row (rotation destroys a version only when unused). */
  keyVersionsInUse(): number[] {
    return this.#sql
      .exec<{ v: number }>(
        `SELECT key_version AS v FROM vector_pages WHERE tenant = ?
         UNION SELECT key_version AS v FROM vector_rows WHERE tenant = ? ORDER BY v`,
        this.#tenant,
        this.#tenant,
      )
      .toArray()
      .map((row) => row.v);
  }

  /** Rotation: up to `limit` page numbers still sealed under a version older than `target`. */
  stalePages(target: number, limit: number): number[] {
    return this.#sql
      .exec<{ page: number }>(
        `SELECT page FROM vector_pages WHERE tenant = ? AND key_version < ? ORDER BY page LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray()
      .map((row) => row.page);
  }

  /** Rotation: up to `limit` exact rows still under a version older than `target`, opened and sealed under it. */
  async resealExact(target: number, limit: number): Promise<ResealedRow[]> {
    const rows = this.#sql
      .exec<SealedRow>(
        `SELECT atom_id, key_version, sealed FROM vector_rows WHERE tenant = ? AND key_version < ? LIMIT ?`,
        this.#tenant,
        target,
        limit,
      )
      .toArray();
    return Promise.all(
      rows.map(async (row) => {
        const vector = await this.#sealer.openExact(row.atom_id, row.key_version, new Uint8Array(row.sealed));
        return {
          id: row.atom_id,
          from: row.key_version,
          sealed: await this.#sealer.sealExact(row.atom_id, target, vector),
        };
      }),
    );
  }

  /** Rotation, inside the caller's transaction: stores what was re-sealed; returns how many rows changed. */
  commitReseal(
    target: number,
    pages: readonly { readonly page: number; readonly sealed: Uint8Array }[],
    rows: readonly ResealedRow[],
  ): number {
    let resealed = 0;
    for (const { page, sealed } of pages) {
      resealed += this.#sql
        .exec(
          `UPDATE vector_pages SET key_version = ?, sealed = ? WHERE tenant = ? AND page = ? AND key_version < ? RETURNING 1`,
          target,
          sealed,
          this.#tenant,
          page,
          target,
        )
        .toArray().length;
    }
    for (const row of rows) {
      // Only if still the row we opened: a concurrent replacement or delete wins.
      resealed += this.#sql
        .exec(
          `UPDATE vector_rows SET key_version = ?, sealed = ? WHERE tenant = ? AND atom_id = ? AND key_version = ? RETURNING 1`,
          target,
          row.sealed,
          this.#tenant,
          row.id,
          row.from,
        )
        .toArray().length;
    }
    return resealed;
  }
}
