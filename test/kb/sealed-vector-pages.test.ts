import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { AtomCipher } from "../../src/kb/atom-cipher";
import { hashEmbed, LocalHashEmbedder } from "../../src/kb/embedder";
import { EmbeddingCache } from "../../src/kb/embedding-cache";
import { KnowledgeBase } from "../../src/kb/knowledge-base";
import type { LocalVectorIndex } from "../../src/kb/local-index";
import { PAGE_ROWS, packPage, unpackPage, VectorSealer } from "../../src/kb/vector-pages";
import type { VectorRecord, VectorStore } from "../../src/kb/vector-store";
import { ClearLocalVectorIndex } from "../helpers/clear-local-index";
import { localIndex } from "../helpers/local-index";
import { corpus } from "../lifecycle/fixtures";
import { deleteVectors, records, rng, stubFor, uniqueTenant, unitVector, upsertVectors } from "./vector-fixtures";

/**
 * The sealed local index (src/kb/local-index.ts, src/kb/vector-pages.ts): results identical to the clear index it
 * replaced, nothing vector-shaped in any SQLite cell, pages bound to their tenant, consistency with the atoms across
 * failures at every step of a write, conversion of old clear databases, and re-sealing on rotation.
 */

const DIMS = 384;

function bytesOf(vector: Float32Array | Int8Array): Uint8Array {
  return new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength);
}

/** Every cell of every table of the object, as bytes (text as UTF-8, numbers as their decimal text). */
function allCells(sql: SqlStorage): { table: string; bytes: Uint8Array }[] {
  const tables = sql
    .exec<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'`)
    .toArray()
    .map((row) => row.name);
  const cells: { table: string; bytes: Uint8Array }[] = [];
  for (const table of tables) {
    for (const row of sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM "${table}"`)) {
      for (const value of Object.values(row)) {
        const bytes =
          value instanceof ArrayBuffer ? new Uint8Array(value) : new TextEncoder().encode(String(value ?? ""));
        cells.push({ table, bytes });
      }
    }
  }
  return cells;
}

/** Index of the first needle (all of length >= 4) found anywhere in `haystack`, or -1. One pass, keyed by 4 bytes. */
function findAny(haystack: Uint8Array, needles: readonly Uint8Array[]): number {
  const byHead = new Map<number, number[]>();
  const head = (bytes: Uint8Array, at: number) =>
    ((bytes[at] as number) | ((bytes[at + 1] as number) << 8) | ((bytes[at + 2] as number) << 16)) +
    (bytes[at + 3] as number) * 16_777_216;
  needles.forEach((needle, i) => {
    const key = head(needle, 0);
    byHead.set(key, [...(byHead.get(key) ?? []), i]);
  });
  for (let at = 0; at + 4 <= haystack.length; at++) {
    for (const i of byHead.get(head(haystack, at)) ?? []) {
      const needle = needles[i] as Uint8Array;
      if (at + needle.length <= haystack.length && needle.every((b, k) => haystack[at + k] === b)) return i;
    }
  }
  return -1;
}

function quantized(vector: Float32Array): Int8Array {
  let max = 0;
  for (const v of vector) max = Math.max(max, Math.abs(v));
  const scale = max === 0 ? 1 : max / 127;
  return Int8Array.from(vector, (v) => Math.round(v / scale));
}

function kbOver(
  state: DurableObjectState,
  tenant: string,
  store: VectorStore,
  keyring: TenantKeyring,
  failures: { inTransaction?: boolean } = {},
) {
  return new KnowledgeBase({
    sql: state.storage.sql,
    transaction: (fn) =>
      state.storage.transactionSync(() => {
        const result = fn();
        if (failures.inTransaction) throw new Error("injected failure before commit");
        return result;
      }),
    tenant,
    store,
    embedder: new LocalHashEmbedder(),
    cache: new EmbeddingCache(state.storage.sql, tenant, new VectorSealer(keyring, tenant)),
    cipher: new AtomCipher(keyring, tenant),
    maxAtoms: 10_000,
  });
}

function atomIds(sql: SqlStorage, tenant: string): string[] {
  return sql
    .exec<{ id: string }>(`SELECT id FROM atoms WHERE tenant = ? ORDER BY id`, tenant)
    .toArray()
    .map((row) => row.id);
}

/** The ids a freshly built index (as after eviction) holds, by asking it for everything. */
async function freshIndexIds(state: DurableObjectState, tenant: string, keyring: TenantKeyring): Promise<string[]> {
  const fresh = localIndex(state.storage.sql, tenant, DIMS, keyring);
  const n = await fresh.load();
  const probe = unitVector(DIMS, rng(7));
  // top_k = every loaded row, so the query returns exactly the ids the pages hold (each with its exact row).
  const hits = n === 0 ? [] : await fresh.query(probe, n, null);
  expect(hits.length).toBe(n);
  return hits.map((hit) => hit.id).sort();
}

const keyringOf = (state: DurableObjectState, tenant: string) =>
  new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env));

describe("sealed local index", () => {
  it("pages pack and unpack losslessly, and a malformed page is refused", () => {
    const rows = { ids: ["a", "b:c", "d.e-f"], scales: Float32Array.of(0.5, 0.25, 1), q8: new Int8Array(3 * 16) };
    rows.q8.forEach((_, i) => {
      rows.q8[i] = ((i * 37) % 255) - 127;
    });
    const back = unpackPage(packPage(rows, 16), 16);
    expect(back.ids).toEqual(rows.ids);
    expect([...back.scales]).toEqual([...rows.scales]);
    expect([...back.q8]).toEqual([...rows.q8]);
    const packed = packPage(rows, 16);
    expect(() => unpackPage(packed.subarray(0, packed.length - 1), 16)).toThrow();
  });

  it("returns identical ids and scores to the clear index, before and after a reload, on a fixture corpus", async () => {
    const atoms = corpus(700, "fx", 4242);
    const embedded: VectorRecord[] = atoms.map((atom) => ({ id: atom.id, vector: hashEmbed(atom.text, DIMS) }));
    const random = records("r", 300, DIMS, 99);
    const all = [...embedded, ...random];
    const queries = [
      ...atoms.slice(0, 20).map((atom) => hashEmbed(atom.text.split(" ").slice(0, 3).join(" "), DIMS)),
      ...Array.from({ length: 10 }, (_, i) => unitVector(DIMS, rng(1000 + i))),
    ];
    const allowed = new Set(all.filter((_, i) => i % 7 === 0).map((r) => r.id));
    const run = async (store: VectorStore) => {
      const out = [];
      for (const q of queries) out.push(await store.query(q, 10, null), await store.query(q, 5, allowed));
      return out;
    };

    const clearTenant = uniqueTenant("clear");
    const expected = await runInDurableObject(stubFor(clearTenant), async (_i, state) => {
      const clear = new ClearLocalVectorIndex(state.storage.sql, clearTenant, DIMS);
      for (let i = 0; i < all.length; i += 100) await upsertVectors(clear, state, all.slice(i, i + 100));
      await deleteVectors(clear, state, ["fx-010", "r5"]);
      return run(clear);
    });

    const tenant = uniqueTenant("sealed");
    await runInDurableObject(stubFor(tenant), async (_i, state) => {
      const keyring = keyringOf(state, tenant);
      const index = localIndex(state.storage.sql, tenant, DIMS, keyring);
      for (let i = 0; i < all.length; i += 100) await upsertVectors(index, state, all.slice(i, i + 100));
      await deleteVectors(index, state, ["fx-010", "r5"]);
      expect(await run(index)).toEqual(expected);
      const reloaded = localIndex(state.storage.sql, tenant, DIMS, keyringOf(state, tenant));
      expect(await run(reloaded)).toEqual(expected);
      expect(state.storage.sql.exec(`SELECT COUNT(*) AS n FROM vector_pages`).one().n).toBe(Math.ceil(998 / PAGE_ROWS));
    });
  });

  it("no SQLite cell holds a stored vector's float32 or int8 bytes, or a run of them", async () => {
    const tenant = uniqueTenant("cells");
    await runInDurableObject(stubFor(tenant), async (_i, state) => {
      const keyring = keyringOf(state, tenant);
      const kb = kbOver(state, tenant, localIndex(state.storage.sql, tenant, DIMS, keyring), keyring);
      const atoms = corpus(300, "cell", 77).map((atom) => ({ id: atom.id, text: atom.text, tags: atom.tags }));
      for (let i = 0; i < atoms.length; i += 100) await kb.add(atoms.slice(i, i + 100));
      await kb.delete(["cell-001", "cell-150"]);
      await kb.add([{ id: "cell-002", text: "replaced text about a glacier and a falcon" }]);
      const cells = allCells(state.storage.sql);
      expect(cells.some((cell) => cell.table === "vector_pages")).toBe(true);
      const live = atoms
        .filter((atom) => atom.id !== "cell-001" && atom.id !== "cell-150")
        .map((atom) => (atom.id === "cell-002" ? "replaced text about a glacier and a falcon" : atom.text));
      // Runs of every live vector: the first 32 bytes of each copy and a 32-byte run from the middle.
      const needles: Uint8Array[] = [];
      for (const text of live) {
        const f32 = bytesOf(hashEmbed(text, DIMS));
        const q8 = bytesOf(quantized(hashEmbed(text, DIMS)));
        for (const needle of [f32.subarray(0, 32), f32.subarray(700, 732), q8.subarray(0, 32), q8.subarray(200, 232)]) {
          if (needle.some((b) => b !== 0)) needles.push(needle); // an all-zero run is not vector-specific
        }
      }
      expect(needles.length).toBeGreaterThan(live.length * 2);
      // The scanner finds a run where one is (a clear copy at an odd offset), so a -1 below means something.
      const planted = new Uint8Array(1000);
      planted.set(bytesOf(hashEmbed(live[7] as string, DIMS)).subarray(0, 400), 333);
      expect(findAny(planted, needles)).toBeGreaterThanOrEqual(0);
      for (const cell of cells) expect(findAny(cell.bytes, needles), cell.table).toBe(-1);
      expect(state.storage.sql.exec(`SELECT name FROM sqlite_master WHERE name = 'local_vectors'`).toArray()).toEqual(
        [],
      );
    });
  });

  it("a page of tenant A placed into tenant B's rows fails to open", async () => {
    const a = uniqueTenant("pa");
    const b = uniqueTenant("pb");
    const page = await runInDurableObject(stubFor(a), async (_i, state) => {
      await upsertVectors(localIndex(state.storage.sql, a, DIMS), state, records("x", 10, DIMS, 1));
      return state.storage.sql
        .exec<{ key_version: number; sealed: ArrayBuffer }>(
          `SELECT key_version, sealed FROM vector_pages WHERE page = 0`,
        )
        .one();
    });
    const exact = await runInDurableObject(stubFor(a), (_i, state) =>
      state.storage.sql.exec<{ sealed: ArrayBuffer }>(`SELECT sealed FROM vector_rows WHERE atom_id = 'x3'`).one(),
    );
    await runInDurableObject(stubFor(b), async (_i, state) => {
      await upsertVectors(localIndex(state.storage.sql, b, DIMS), state, records("x", 10, DIMS, 2));
      // Same page number, same key version, same atom ids: only the tenant (and its key) differ.
      state.storage.sql.exec(
        `UPDATE vector_pages SET sealed = ?, key_version = ? WHERE tenant = ? AND page = 0`,
        page.sealed,
        page.key_version,
        b,
      );
      await expect(localIndex(state.storage.sql, b, DIMS).load()).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    });
    const c = uniqueTenant("pc");
    await runInDurableObject(stubFor(c), async (_i, state) => {
      await upsertVectors(localIndex(state.storage.sql, c, DIMS), state, records("x", 10, DIMS, 3));
      state.storage.sql.exec(`UPDATE vector_rows SET sealed = ? WHERE atom_id = 'x3'`, exact.sealed);
      const index = localIndex(state.storage.sql, c, DIMS);
      const target = records("x", 10, DIMS, 3)[3] as VectorRecord;
      await expect(index.query(target.vector, 3, null)).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    });
    // Within one tenant, a page renumbered fails too (the page number is bound).
    const d = uniqueTenant("pd");
    await runInDurableObject(stubFor(d), async (_i, state) => {
      await upsertVectors(localIndex(state.storage.sql, d, DIMS), state, records("y", PAGE_ROWS + 5, DIMS, 4));
      const sql = state.storage.sql;
      const zero = sql.exec<{ sealed: ArrayBuffer }>(`SELECT sealed FROM vector_pages WHERE page = 0`).one().sealed;
      sql.exec(`UPDATE vector_pages SET sealed = ? WHERE page = 1`, zero);
      await expect(localIndex(sql, d, DIMS).load()).rejects.toMatchObject({ code: "ERR_DECRYPT" });
    });
  });

  it("a load that a wipe overtakes, or that fails part-way, does not become the live index", async () => {
    const tenant = uniqueTenant("wl");
    await runInDurableObject(stubFor(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      const vectors = records("w", PAGE_ROWS * 9 + 3, DIMS, 8); // 10 pages: three batches of the load
      await upsertVectors(localIndex(sql, tenant, DIMS), state, vectors);
      const index = localIndex(sql, tenant, DIMS);
      const loading = index.load();
      index.wipe(); // offboarding while the pages are being opened
      await expect(loading).rejects.toMatchObject({ code: "ERR_KEY_UNAVAILABLE" });
      expect(index.size).toBe(0);
      expect(index.memoryBytes).toBe(0);
      // Nothing was lost at rest: a later load opens every page.
      expect(await index.load()).toBe(vectors.length);

      // A page stored under a negative number is refused, not skipped.
      const broken = localIndex(sql, tenant, DIMS);
      sql.exec(`UPDATE vector_pages SET page = -1 WHERE tenant = ? AND page = 9`, tenant);
      await expect(broken.load()).rejects.toMatchObject({ code: "ERR_DECRYPT" });
      expect(broken.size).toBe(0);
      // A page that fails to open in the last batch: the load fails as a whole.
      sql.exec(`UPDATE vector_pages SET page = 9 WHERE tenant = ? AND page = -1`, tenant);
      const tenth = sql.exec<{ sealed: ArrayBuffer }>(`SELECT sealed FROM vector_pages WHERE page = 9`).one().sealed;
      const flipped = new Uint8Array(tenth.slice(0));
      flipped[40] = (flipped[40] as number) ^ 1;
      sql.exec(`UPDATE vector_pages SET sealed = ? WHERE tenant = ? AND page = 9`, flipped, tenant);
      await expect(broken.load()).rejects.toMatchObject({ code: "ERR_DECRYPT" });
      expect(broken.size).toBe(0);
    });
  });

  it("stays consistent with the atoms when a write fails before its commit or the object dies after it", async () => {
    const tenant = uniqueTenant("crash");
    await runInDurableObject(stubFor(tenant), async (_i, state) => {
      const keyring = keyringOf(state, tenant);
      const index = localIndex(state.storage.sql, tenant, DIMS, keyring);
      const kb = kbOver(state, tenant, index, keyring);
      const atoms = corpus(PAGE_ROWS + 40, "c", 5).map((atom) => ({ id: atom.id, text: atom.text }));
      for (let i = 0; i < atoms.length; i += 100) await kb.add(atoms.slice(i, i + 100));

      // 1. Failure inside the transaction, after the pages were written: nothing of the batch remains.
      const failing = kbOver(state, tenant, index, keyring, { inTransaction: true });
      await expect(
        failing.add([
          { id: "new-1", text: "volcano granite" },
          { id: "c-003", text: "replaced" },
        ]),
      ).rejects.toThrow("injected");
      await expect(failing.delete(["c-000", "c-100", "c-290"])).rejects.toThrow("injected");
      expect(await freshIndexIds(state, tenant, keyring)).toEqual(atomIds(state.storage.sql, tenant));
      // The live index did not apply the failed writes either.
      expect(index.size).toBe(atoms.length);
      expect((await index.query(hashEmbed("replaced", DIMS), 1, null))[0]?.id).not.toBe("c-003");

      // 2. Commit, then the object dies before memory is updated (afterCommit never runs): a restart agrees.
      const ids = ["c-001", "c-257", "c-010"];
      await index.beforeCommitDelete(ids);
      state.storage.transactionSync(() => {
        for (const id of ids) state.storage.sql.exec(`DELETE FROM atoms WHERE tenant = ? AND id = ?`, tenant, id);
        index.writeDeleteRows(ids);
      });
      expect(await freshIndexIds(state, tenant, keyringOf(state, tenant))).toEqual(atomIds(state.storage.sql, tenant));

      // 3. A write through the KnowledgeBase afterwards (fresh index, as after the restart) keeps the invariant.
      const restarted = localIndex(state.storage.sql, tenant, DIMS, keyring);
      const kb2 = kbOver(state, tenant, restarted, keyring);
      await kb2.add([{ id: "after-1", text: "salmon trout river" }]);
      await kb2.delete(["c-002", "c-295"]);
      expect(await freshIndexIds(state, tenant, keyring)).toEqual(atomIds(state.storage.sql, tenant));
      expect((await kb2.search("salmon trout river", 1, null))[0]?.id).toBe("after-1");
    });
  });

  it("converts an old database's clear local_vectors once, with identical results, and drops the table", async () => {
    const tenant = uniqueTenant("legacy");
    const all = records("l", PAGE_ROWS * 2 + 3, DIMS, 11);
    const queries = Array.from({ length: 5 }, (_, i) => unitVector(DIMS, rng(500 + i)));
    await runInDurableObject(stubFor(tenant), async (_i, state) => {
      await keyringOf(state, tenant).current(); // an old database with vectors has atoms, hence a data key
      const clear = new ClearLocalVectorIndex(state.storage.sql, tenant, DIMS);
      await upsertVectors(clear, state, all);
      const expected = [];
      for (const q of queries) expected.push(await clear.query(q, 10, null));
      const index = localIndex(state.storage.sql, tenant, DIMS);
      expect(await index.load()).toBe(all.length);
      const got = [];
      for (const q of queries) got.push(await index.query(q, 10, null));
      expect(got).toEqual(expected);
      const sql = state.storage.sql;
      expect(sql.exec(`SELECT name FROM sqlite_master WHERE name = 'local_vectors'`).toArray()).toEqual([]);
      expect(sql.exec(`SELECT COUNT(*) AS n FROM vector_rows`).one().n).toBe(all.length);
      expect(sql.exec(`SELECT COUNT(*) AS n FROM vector_pages`).one().n).toBe(3);
    });
  });

  it("rotation re-seals every page and exact row under the new version; the old version then goes unused", async () => {
    const tenant = uniqueTenant("rot");
    const all = records("q", PAGE_ROWS + 17, DIMS, 21);
    const probe = unitVector(DIMS, rng(3));
    await runInDurableObject(stubFor(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      const keyring = keyringOf(state, tenant);
      const index: LocalVectorIndex = localIndex(sql, tenant, DIMS, keyring);
      await upsertVectors(index, state, all);
      const before = await index.query(probe, 10, null);
      expect(index.keyVersionsInUse()).toEqual([1]);
      const target = await keyring.rotate();
      // A write between steps lands under the new version and touches the last page.
      await upsertVectors(index, state, records("z", 3, DIMS, 22));
      expect(index.keyVersionsInUse()).toEqual([1, 2]);
      let rounds = 0;
      while (index.keyVersionsInUse().includes(1)) {
        await index.resealBatch(target, 100, (fn) => state.storage.transactionSync(fn));
        expect(++rounds).toBeLessThan(10);
      }
      expect(index.keyVersionsInUse()).toEqual([2]);
      keyring.destroy(1);
      const reloaded = localIndex(sql, tenant, DIMS, keyringOf(state, tenant));
      expect(await reloaded.load()).toBe(all.length + 3);
      expect(await reloaded.query(probe, 10, new Set(all.map((r) => r.id)))).toEqual(before);
    });
  });

  it("cached remote embeddings are sealed, bound to their text, and re-sealed on rotation", async () => {
    const tenant = uniqueTenant("cache");
    await runInDurableObject(stubFor(tenant), async (_i, state) => {
      const sql = state.storage.sql;
      const keyring = keyringOf(state, tenant);
      const cache = new EmbeddingCache(sql, tenant, new VectorSealer(keyring, tenant));
      let calls = 0;
      const embedder = {
        model: "@cf/test/fake",
        dimensions: DIMS,
        cacheable: true,
        embed: async (texts: readonly string[]) => {
          calls += texts.length;
          return texts.map((text) => hashEmbed(`remote ${text}`, DIMS));
        },
      };
      const texts = ["the falcon over the glacier", "copper and cobalt in the valley"];
      const first = await cache.embed(embedder, texts);
      state.storage.transactionSync(() => cache.write(embedder.model, first.misses, Date.now()));
      expect(calls).toBe(2);
      const again = await cache.embed(embedder, texts);
      expect(calls).toBe(2); // hits
      expect(again.vectors).toEqual(first.vectors);
      const needles = first.vectors.map((v) => bytesOf(v).subarray(0, 32));
      for (const cell of allCells(sql)) expect(findAny(cell.bytes, needles), cell.table).toBe(-1);

      // A sealed row moved onto another text's hash does not open: a miss, re-embedded, never the wrong vector.
      const rows = sql
        .exec<{ content_hash: string; sealed: ArrayBuffer }>(
          `SELECT content_hash, sealed FROM embedding_cache ORDER BY content_hash`,
        )
        .toArray();
      sql.exec(
        `UPDATE embedding_cache SET sealed = ? WHERE content_hash = ?`,
        rows[0]?.sealed ?? null,
        rows[1]?.content_hash ?? "",
      );
      await cache.embed(embedder, texts);
      expect(calls).toBe(3);

      const target = await keyring.rotate();
      await cache.resealBatch(target, 100, (fn) => state.storage.transactionSync(fn));
      // The tampered row did not open: dropped. The good one is under the new version.
      expect(cache.keyVersionsInUse()).toEqual([target]);
      expect(cache.count()).toBe(1);
      keyring.destroy(1);
      await cache.embed(embedder, texts);
      expect(calls).toBe(4); // one hit under v2, one miss (the dropped row)
    });
  });
});
