import { PAGE_ROWS, type PageRows } from "./vector-pages";

/**
 * A write to the local index, simulated before it commits: the same put / swap-remove rules as the in-memory
 * index (src/kb/local-index.ts), applied to an overlay over the current rows, so that the pages a write changes
 * can be packed and sealed (async) before the transaction, while the live rows stay untouched until the commit
 * succeeded. Replaying the same operations on the live rows after the commit gives the same rows (deterministic).
 */
export interface RowsView {
  readonly count: number;
  rowOf(id: string): number | undefined;
  idAt(row: number): string;
  scaleAt(row: number): number;
  /** A copy (the live bytes sit in wasm memory, which moves when it grows). */
  q8At(row: number): Int8Array;
}

export type IndexOp =
  | { readonly kind: "put"; readonly id: string; readonly q8: Int8Array; readonly scale: number }
  | { readonly kind: "remove"; readonly id: string };

export interface PageChanges {
  /** Pages whose content changed and which still hold rows: page number and plaintext rows. */
  readonly write: { readonly page: number; readonly rows: PageRows }[];
  /** Pages numbered >= this no longer hold rows (deleted). */
  readonly keepBelow: number;
}

export function pagesFor(rows: number): number {
  return Math.ceil(rows / PAGE_ROWS);
}

export function simulate(base: RowsView, ops: readonly IndexOp[], dims: number): PageChanges {
  const ids = new Map<number, string>();
  const q8s = new Map<number, Int8Array>();
  const scales = new Map<number, number>();
  const rowOf = new Map<string, number | null>();
  const touched = new Set<number>();
  let n = base.count;
  const row = (id: string) => {
    const r = rowOf.get(id);
    return r === undefined ? base.rowOf(id) : (r ?? undefined);
  };
  const idAt = (r: number) => ids.get(r) ?? base.idAt(r);
  const q8At = (r: number) => q8s.get(r) ?? base.q8At(r);
  const scaleAt = (r: number) => scales.get(r) ?? base.scaleAt(r);

  for (const op of ops) {
    if (op.kind === "put") {
      let r = row(op.id);
      if (r === undefined) {
        r = n++;
        ids.set(r, op.id);
        rowOf.set(op.id, r);
      }
      q8s.set(r, op.q8);
      scales.set(r, op.scale);
      touched.add(r);
    } else {
      const r = row(op.id);
      if (r === undefined) continue;
      const last = n - 1;
      if (r !== last) {
        // Swap-remove, as LocalVectorIndex.#remove: the last row moves into the hole.
        const lastId = idAt(last);
        ids.set(r, lastId);
        q8s.set(r, q8At(last));
        scales.set(r, scaleAt(last));
        rowOf.set(lastId, r);
        touched.add(r);
      }
      rowOf.set(op.id, null);
      touched.add(last);
      n--;
    }
  }

  const keepBelow = pagesFor(n);
  const pages = [...new Set([...touched].map((r) => Math.floor(r / PAGE_ROWS)))]
    .filter((page) => page < keepBelow)
    .sort((a, b) => a - b);
  const write = pages.map((page) => {
    const first = page * PAGE_ROWS;
    const count = Math.min(n, first + PAGE_ROWS) - first;
    const rows: PageRows = { ids: [], scales: new Float32Array(count), q8: new Int8Array(count * dims) };
    for (let i = 0; i < count; i++) {
      rows.ids.push(idAt(first + i));
      rows.scales[i] = scaleAt(first + i);
      rows.q8.set(q8At(first + i), i * dims);
    }
    return { page, rows };
  });
  return { write, keepBelow };
}
