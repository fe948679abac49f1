import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { unwrapKey } from "../../src/crypto/key-wrap";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import {
  cellBytes,
  containsBytes,
  type DocClient,
  docClient,
  documentKeys,
  equalBytes,
  objectKey,
  putOk,
  r2Bytes,
  readBody,
  storedKey,
  tenantStub,
} from "../helpers/docs";
import { expectSafeErrorResponse } from "../helpers/http";
import { type KbCaller, kbCaller, refusal, type SearchHitOut, uniqueTenant } from "../helpers/kb-client";

/**
 * Ciphertext out of place: an attacker (or an operator mistake) with write access to storage moves encrypted bytes
 * or wrapped keys from tenant A to tenant B, to another id, or to another key version. Every such move must fail
 * authentication before any plaintext exists, fail the request with a generic 5xx (never a 200, never A's bytes),
 * and leave A's data intact. Atoms' text and metadata never appear in clear in SQLite.
 */

const te = new TextEncoder();
const td = new TextDecoder();
const CANARY = `CANARY-${crypto.randomUUID()}`;
const SECRET_TEXT = `${CANARY} tenant A's confidential document. `.repeat(1500); // ~90 KB, 6 chunks
const SECRET = te.encode(SECRET_TEXT);

type DocumentRow = {
  tenant: string;
  id: string;
  key_version: number;
  size: number;
  content_type: string;
  created_at: number;
  updated_at: number;
};

async function documentRow(tenant: string, id: string): Promise<DocumentRow> {
  const row = await runInDurableObject(
    tenantStub(tenant),
    (_instance, state) => state.storage.sql.exec<DocumentRow>(`SELECT * FROM documents WHERE id = ?`, id).toArray()[0],
  );
  if (!row) throw new Error(`no documents row ${id} in ${tenant}`);
  return row;
}

/** Puts `bytes` at t/<tenant>/docs/<id> and a matching documents row into the tenant's own SQLite. */
async function plantDocument(tenant: string, id: string, bytes: Uint8Array, row: DocumentRow): Promise<void> {
  await env.DOCS.put(objectKey(tenant, id), bytes, {
    httpMetadata: { contentType: "application/octet-stream" },
    customMetadata: { format: "c2sp-chunked-aes256gcm-v1", keyVersion: String(row.key_version) },
  });
  await runInDurableObject(tenantStub(tenant), (_instance, state) => {
    state.storage.sql.exec(
      `INSERT INTO documents (tenant, id, key_version, size, content_type, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant, id) DO UPDATE SET generation = NULL, key_version = excluded.key_version, size = excluded.size`,
      tenant,
      id,
      row.key_version,
      row.size,
      row.content_type,
      row.created_at,
      row.updated_at,
    );
  });
}

/** No part of A's plaintext in a response body (the canary, or any 32-byte window of the document's start). */
function expectNoPlaintext(body: Uint8Array | string): void {
  const bytes = typeof body === "string" ? te.encode(body) : body;
  expect(containsBytes(bytes, te.encode(CANARY))).toBe(false);
  expect(containsBytes(bytes, SECRET.subarray(0, 32))).toBe(false);
  expect(containsBytes(bytes, te.encode("confidential"))).toBe(false);
}

/** A failed decryption over HTTP: a generic 500 JSON error, no plaintext, no detail beyond the stable code. */
async function expectDecryptFailureResponse(response: Response, status = 500): Promise<void> {
  const clone = response.clone();
  const raw = await readBody(clone);
  expectNoPlaintext(raw.bytes);
  const body = await expectSafeErrorResponse(response, status);
  expect(body).toEqual({
    jsonrpc: "2.0",
    id: null,
    error: {
      code: -32603,
      message: status === 503 ? "Service unavailable" : "Internal error",
      data: { code: status === 503 ? "ERR_KEY_UNAVAILABLE" : "ERR_DECRYPT" },
    },
  });
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect((error as { name?: unknown }).name).toBe("KbError");
    return (error as { code: string }).code;
  }
  throw new Error("expected a rejection");
}

describe("documents: ciphertext moved across tenants, ids and key versions", () => {
  const tenantA = uniqueTenant("xa");
  const tenantB = uniqueTenant("xb");
  let a: DocClient;
  let b: DocClient;
  let aliceMcp: KbCaller;
  let bobMcp: KbCaller;
  let ciphertextA: Uint8Array;
  let rowA: DocumentRow;

  const expectAIntact = async () => {
    const whole = await a.get("secret");
    expect(whole.status).toBe(200);
    const body = await readBody(whole);
    expect(body.error).toBeUndefined();
    expect(equalBytes(body.bytes, SECRET)).toBe(true);
    const range = await a.get("secret", "bytes=-100");
    expect(range.status).toBe(206);
    expect(equalBytes(new Uint8Array(await range.arrayBuffer()), SECRET.subarray(SECRET.byteLength - 100))).toBe(true);
    expect(equalBytes((await r2Bytes(await storedKey(tenantA, "secret"))) ?? new Uint8Array(), ciphertextA)).toBe(true);
  };

  beforeAll(async () => {
    a = await docClient(tenantA);
    b = await docClient(tenantB, "mcp kb.read kb.write", "bob");
    aliceMcp = await kbCaller(tenantA);
    bobMcp = await kbCaller(tenantB, { sub: "bob" });
    await putOk(a, "secret", SECRET, "text/plain");
    await putOk(b, "b-own", te.encode("B's own document, readable by B"), "text/plain");
    ciphertextA = (await r2Bytes(await storedKey(tenantA, "secret"))) ?? new Uint8Array();
    rowA = await documentRow(tenantA, "secret");
    expect(rowA.key_version).toBe(1);
    expect((await documentRow(tenantB, "b-own")).key_version).toBe(1);
    // Copy A's object under B's prefix, same id, with a row that claims it (same key version, size, type).
    await plantDocument(tenantB, "secret", ciphertextA, { ...rowA, tenant: tenantB });
    // And under another id within A.
    await plantDocument(tenantA, "renamed", ciphertextA, { ...rowA, id: "renamed" });
  });

  it("A's ciphertext under B's prefix: a Range GET by B is a generic 500 (commitment fails), no plaintext", async () => {
    for (const range of ["bytes=0-99", "bytes=20000-40000", "bytes=-10", "bytes=0-"]) {
      await expectDecryptFailureResponse(await b.get("secret", range));
    }
    await expectAIntact();
  });

  it("A's ciphertext under B's prefix: a whole GET by B is a generic 500, not a 200 whose body breaks", async () => {
    const response = await b.get("secret");
    await expectDecryptFailureResponse(response);
    await expectAIntact();
  });

  it("A's ciphertext under B's prefix: get_document by B fails cleanly (ERR_DECRYPT, no detail), no plaintext", async () => {
    for (const args of [
      { id: "secret" },
      { id: "secret", offset: 0, length: 1000 },
      { id: "secret", offset: 50_000 },
    ]) {
      const result = await bobMcp.call("get_document", args);
      expect(refusal(result)).toEqual({ code: "ERR_DECRYPT", message: "internal error" });
      expectNoPlaintext(result.raw);
    }
    // B's own document still reads, A's too.
    expect((await bobMcp.ok<{ text: string }>("get_document", { id: "b-own" })).text).toBe(
      "B's own document, readable by B",
    );
    await expectAIntact();
  });

  it("a copy renamed within A (another id) fails: the context binds the object key", async () => {
    await expectDecryptFailureResponse(await a.get("renamed", "bytes=0-99"));
    await expectDecryptFailureResponse(await a.get("renamed", "bytes=-1"));
    const result = await aliceMcp.call("get_document", { id: "renamed", offset: 0, length: 100 });
    expect(refusal(result).code).toBe("ERR_DECRYPT");
    expectNoPlaintext(result.raw);
    await expectAIntact();
  });

  it("a copy renamed within A: a whole GET is a generic 500 too", async () => {
    await expectDecryptFailureResponse(await a.get("renamed"));
    await expectAIntact();
  });

  describe("an object relabelled with another key version", () => {
    const tenant = uniqueTenant("xv");
    let docs: DocClient;
    const text = te.encode(`${CANARY} version-bound document `.repeat(1000));

    beforeAll(async () => {
      docs = await docClient(tenant);
      await putOk(docs, "v1-doc", text, "text/plain");
      // Rotate: version 2 exists and is current; the document is still under version 1.
      await runInDurableObject(tenantStub(tenant), async (_instance, state) => {
        const ring = new TenantKeyring(state.storage.sql, tenant, MasterKeys.fromEnv(env));
        expect(await ring.rotate()).toBe(2);
      });
      await putOk(docs, "v2-doc", text, "text/plain");
      expect((await documentRow(tenant, "v2-doc")).key_version).toBe(2);
      expect((await documentRow(tenant, "v1-doc")).key_version).toBe(1);
      const relabel = (id: string, version: number) =>
        runInDurableObject(tenantStub(tenant), (_instance, state) => {
          state.storage.sql.exec(`UPDATE documents SET key_version = ? WHERE id = ?`, version, id);
        });
      await plantDocument(
        tenant,
        "relabel-up",
        (await r2Bytes(await storedKey(tenant, "v1-doc"))) ?? new Uint8Array(),
        {
          ...(await documentRow(tenant, "v1-doc")),
          id: "relabel-up",
        },
      );
      await relabel("relabel-up", 2);
      await plantDocument(
        tenant,
        "relabel-down",
        (await r2Bytes(await storedKey(tenant, "v2-doc"))) ?? new Uint8Array(),
        {
          ...(await documentRow(tenant, "v2-doc")),
          id: "relabel-down",
        },
      );
      await relabel("relabel-down", 1);
      await plantDocument(
        tenant,
        "relabel-gone",
        (await r2Bytes(await storedKey(tenant, "v1-doc"))) ?? new Uint8Array(),
        {
          ...(await documentRow(tenant, "v1-doc")),
          id: "relabel-gone",
        },
      );
      await relabel("relabel-gone", 9);
    });

    it("both originals read back", async () => {
      for (const id of ["v1-doc", "v2-doc"]) {
        const body = await readBody(await docs.get(id));
        expect(equalBytes(body.bytes, text), id).toBe(true);
      }
    });

    it("v1 ciphertext labelled v2, and v2 ciphertext labelled v1: Range GET 500, get_document ERR_DECRYPT", async () => {
      const mcp = await kbCaller(tenant);
      for (const id of ["relabel-up", "relabel-down"]) {
        await expectDecryptFailureResponse(await docs.get(id, "bytes=0-10"));
        const result = await mcp.call("get_document", { id, offset: 0, length: 10 });
        expect(refusal(result).code).toBe("ERR_DECRYPT");
        expectNoPlaintext(result.raw);
      }
    });

    it("v1 ciphertext labelled v2, and v2 ciphertext labelled v1: whole GET 500", async () => {
      for (const id of ["relabel-up", "relabel-down"]) await expectDecryptFailureResponse(await docs.get(id));
    });

    it("labelled with a version that does not exist: 503 key unavailable", async () => {
      await expectDecryptFailureResponse(await docs.get("relabel-gone", "bytes=0-10"), 503);
      await expectDecryptFailureResponse(await docs.get("relabel-gone"), 503);
    });
  });
});

describe("wrapped keys moved across tenants", () => {
  const tenantA = uniqueTenant("ka");
  const tenantB = uniqueTenant("kb");
  let a: DocClient;
  let b: DocClient;

  type KeyRow = { tenant: string; version: number; epoch: string; wrapped: ArrayBuffer; created_at: number };
  const keyRows = (tenant: string) =>
    runInDurableObject(tenantStub(tenant), (_instance, state) =>
      state.storage.sql
        .exec<KeyRow>(`SELECT * FROM tenant_keys ORDER BY version`)
        .toArray()
        .map((row) => ({ ...row, wrapped: new Uint8Array(row.wrapped).slice() })),
    );

  beforeAll(async () => {
    a = await docClient(tenantA);
    b = await docClient(tenantB, "mcp kb.read kb.write", "bob");
    await putOk(a, "secret", SECRET, "text/plain");
    await putOk(b, "b-own", te.encode("B's own document"), "text/plain");
    // B also holds a copy of A's object with a row claiming it.
    await plantDocument(tenantB, "secret", (await r2Bytes(await storedKey(tenantA, "secret"))) ?? new Uint8Array(), {
      ...(await documentRow(tenantA, "secret")),
      tenant: tenantB,
    });
  });

  it("a row of A's, still labelled tenant A, in B's database is ignored by B's keyring", async () => {
    const [rowA] = await keyRows(tenantA);
    if (!rowA) throw new Error("A has no key");
    await runInDurableObject(tenantStub(tenantB), async (_instance, state) => {
      const sql = state.storage.sql;
      sql.exec(
        `INSERT INTO tenant_keys (tenant, version, epoch, wrapped, created_at) VALUES (?, ?, ?, ?, ?)`,
        tenantA,
        7,
        rowA.epoch,
        rowA.wrapped,
        rowA.created_at,
      );
      const ring = new TenantKeyring(sql, tenantB, MasterKeys.fromEnv(env));
      expect(ring.currentVersion()).toBe(1);
      expect(await codeOf(ring.key(7))).toBe("ERR_KEY_UNAVAILABLE");
      sql.exec(`DELETE FROM tenant_keys WHERE tenant = ?`, tenantA);
    });
    await evictDurableObject(tenantStub(tenantB));
    expect(await (await b.get("b-own")).text()).toBe("B's own document");
  });

  it("A's wrapped key put in place of B's (same version): B's key fails to unwrap (ERR_DECRYPT), never yields A's", async () => {
    const [rowA] = await keyRows(tenantA);
    const [rowB] = await keyRows(tenantB);
    if (!rowA || !rowB) throw new Error("missing keys");
    expect(rowA.version).toBe(1);
    expect(rowB.version).toBe(1);
    expect(equalBytes(rowA.wrapped, rowB.wrapped)).toBe(false);
    // Sanity: under its own label the row is A's data key, which is what an attacker would want B to use.
    const master = MasterKeys.fromEnv(env);
    const keyA = await runInDurableObject(tenantStub(tenantA), (_instance, state) =>
      new TenantKeyring(state.storage.sql, tenantA, MasterKeys.fromEnv(env)).key(1).then((key) => key.slice()),
    );
    expect(
      equalBytes(
        await unwrapKey(master, { tenant: tenantA, version: 1, epoch: rowA.epoch, wrapped: rowA.wrapped }),
        keyA,
      ),
    ).toBe(true);

    await runInDurableObject(tenantStub(tenantB), (_instance, state) => {
      state.storage.sql.exec(
        `UPDATE tenant_keys SET epoch = ?, wrapped = ? WHERE tenant = ? AND version = 1`,
        rowA.epoch,
        rowA.wrapped,
        tenantB,
      );
    });
    // Drop B's in-memory keys, as after any restart.
    await evictDurableObject(tenantStub(tenantB));

    await runInDurableObject(tenantStub(tenantB), async (_instance, state) => {
      const ring = new TenantKeyring(state.storage.sql, tenantB, MasterKeys.fromEnv(env));
      expect(ring.currentVersion()).toBe(1);
      expect(await codeOf(ring.key(1))).toBe("ERR_DECRYPT");
      expect(await codeOf(ring.current())).toBe("ERR_DECRYPT");
      expect(await codeOf(ring.subkey(1, "atoms"))).toBe("ERR_DECRYPT");
    });

    // Over HTTP: B can read neither its own document nor the copy of A's; generic 500s, no plaintext.
    for (const range of [undefined, "bytes=0-99", "bytes=-1"]) {
      await expectDecryptFailureResponse(await b.get("secret", range));
      await expectDecryptFailureResponse(await b.get("b-own", range));
    }
    // And cannot write with it either (nothing is encrypted under a key that failed to unwrap).
    const put = await b.put("new-doc", te.encode("new"), "text/plain");
    expect(put.status).toBe(500);
    expect(await documentKeys(tenantB, "new-doc")).toEqual([]);

    // A is unaffected.
    const body = await readBody(await a.get("secret"));
    expect(equalBytes(body.bytes, SECRET)).toBe(true);
  });
});

describe("atoms: sealed blobs moved across tenants and ids; nothing in clear at rest", () => {
  const tenantA = uniqueTenant("atom-a");
  const tenantB = uniqueTenant("atom-b");
  const TEXT = `${CANARY} atom text: the launch code is tangerine`;
  const TITLE = `TITLE-${CANARY}`;
  const SOURCE = `https://source.example/${CANARY}`;
  const TAG = `tag-${CANARY.slice(7, 19)}`;
  const OTHER_TAG = "public-tag";
  let alice: KbCaller;
  let bob: KbCaller;

  type AtomRow = {
    tenant: string;
    id: string;
    seq: number;
    key_version: number;
    sealed: ArrayBuffer;
    source_token: string | null;
    content_token: string;
    created_at: number;
    updated_at: number;
  };

  beforeAll(async () => {
    alice = await kbCaller(tenantA);
    bob = await kbCaller(tenantB, { sub: "bob" });
    await alice.ok("add_atoms", {
      atoms: [
        { id: "shared-id", text: TEXT, title: TITLE, source: SOURCE, tags: [TAG, OTHER_TAG] },
        { id: "plain", text: "an ordinary note about tangerines and oranges", tags: [OTHER_TAG], source: "notes" },
      ],
    });
    await bob.ok("add_atoms", { atoms: [{ id: "b-atom", text: "B's own atom about apples", tags: ["b"] }] });
  });

  const atomRows = (tenant: string) =>
    runInDurableObject(tenantStub(tenant), (_instance, state) =>
      state.storage.sql
        .exec<AtomRow>(`SELECT * FROM atoms ORDER BY seq`)
        .toArray()
        .map((row) => ({ ...row, sealed: new Uint8Array(row.sealed).slice().buffer })),
    );

  const copyAtomRow = async (tenant: string, row: AtomRow, id: string) => {
    await runInDurableObject(tenantStub(tenant), (_instance, state) => {
      const sql = state.storage.sql;
      const seq = (sql.exec<{ s: number | null }>(`SELECT MAX(seq) AS s FROM atoms`).one().s ?? 0) + 1;
      sql.exec(
        `INSERT INTO atoms (tenant, id, seq, key_version, sealed, source_token, content_token, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        tenant,
        id,
        seq,
        row.key_version,
        row.sealed,
        row.source_token,
        row.content_token,
        row.created_at,
        row.updated_at,
      );
    });
  };

  const expectAIntact = async () => {
    const { atom } = await alice.ok<{ atom: { text: string; title: string; source: string; tags: string[] } }>(
      "get_atom",
      { id: "shared-id" },
    );
    expect(atom).toMatchObject({ text: TEXT, title: TITLE, source: SOURCE });
    expect(atom.tags.sort()).toEqual([TAG, OTHER_TAG].sort());
  };

  it("A's sealed atom copied into B's atoms table under the same id: B's get_atom fails cleanly, no A text", async () => {
    const row = (await atomRows(tenantA)).find((r) => r.id === "shared-id");
    if (!row) throw new Error("A's atom is missing");
    await copyAtomRow(tenantB, row, "shared-id");
    const result = await bob.call("get_atom", { id: "shared-id" });
    expect(refusal(result)).toEqual({ code: "ERR_DECRYPT", message: "internal error" });
    for (const secret of [CANARY, "tangerine", TITLE, SOURCE, TAG]) expect(result.raw).not.toContain(secret);
    // The resource read fails the same way, without A's text.
    const resource = await bob.rpc("resources/read", { uri: "atom://shared-id" });
    expect(resource.text).not.toContain(CANARY);
    expect(resource.text).not.toContain("tangerine");
    // Listing B's atoms either fails or shows only B's own: never A's fields.
    const list = await bob.call("list_atoms", {});
    for (const secret of [CANARY, TITLE, SOURCE, TAG]) expect(list.raw).not.toContain(secret);
    // B's own atom is unaffected, and so is A's.
    const own = await bob.ok<{ atom: { text: string } }>("get_atom", { id: "b-atom" });
    expect(own.atom.text).toBe("B's own atom about apples");
    await expectAIntact();
    // Clean up B's table so the rest of the file sees a normal tenant.
    await runInDurableObject(tenantStub(tenantB), (_instance, state) => {
      state.storage.sql.exec(`DELETE FROM atoms WHERE id = 'shared-id'`);
    });
  });

  it("a sealed atom moved to another id within A fails (the id is bound): ERR_DECRYPT, no text", async () => {
    const row = (await atomRows(tenantA)).find((r) => r.id === "shared-id");
    if (!row) throw new Error("A's atom is missing");
    await copyAtomRow(tenantA, row, "moved-id");
    const result = await alice.call("get_atom", { id: "moved-id" });
    expect(refusal(result).code).toBe("ERR_DECRYPT");
    expect(result.raw).not.toContain(CANARY);
    await expectAIntact();
    await runInDurableObject(tenantStub(tenantA), (_instance, state) => {
      state.storage.sql.exec(`DELETE FROM atoms WHERE id = 'moved-id'`);
    });
  });

  it("text, title, source and tags never appear in clear in any column of atoms or atom_tags", async () => {
    const canaries = [CANARY, TITLE, SOURCE, TAG, "the launch code is tangerine", "tangerines and oranges", "notes"];
    const tables = await runInDurableObject(tenantStub(tenantA), (_instance, state) => {
      const out: Record<string, { column: string; bytes: Uint8Array }[]> = {};
      for (const table of ["atoms", "atom_tags"]) {
        out[table] = [];
        for (const row of state.storage.sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM ${table}`)) {
          for (const [column, value] of Object.entries(row)) {
            out[table]?.push({ column, bytes: Uint8Array.from(cellBytes(value)) });
          }
        }
      }
      return out;
    });
    expect(tables.atoms?.length).toBeGreaterThanOrEqual(2 * 9);
    expect(tables.atom_tags?.length).toBeGreaterThanOrEqual(3 * 3);
    for (const [table, cells] of Object.entries(tables)) {
      for (const { column, bytes } of cells) {
        const asText = td.decode(bytes);
        for (const canary of canaries) {
          // The "notes" source is short; only look for it where free text could hide (not in ids).
          if (canary === "notes" && column === "id") continue;
          expect(containsBytes(bytes, te.encode(canary)), `${table}.${column} holds ${canary}`).toBe(false);
          expect(asText.toLowerCase().includes(canary.toLowerCase()), `${table}.${column} holds ${canary}`).toBe(false);
          // UTF-16 encodings too.
          const utf16 = new Uint8Array(canary.length * 2);
          for (let i = 0; i < canary.length; i++) utf16[i * 2] = canary.charCodeAt(i);
          expect(containsBytes(bytes, utf16), `${table}.${column} holds UTF-16 ${canary}`).toBe(false);
        }
      }
    }
    // Tag and source tokens are not the values, and equal values give equal tokens (so filters work).
    const rows = await atomRows(tenantA);
    const shared = rows.find((r) => r.id === "shared-id");
    const plain = rows.find((r) => r.id === "plain");
    expect(shared?.source_token).toMatch(/^[0-9a-f]{48}$/);
    expect(plain?.source_token).toMatch(/^[0-9a-f]{48}$/);
    expect(shared?.source_token).not.toBe(plain?.source_token);
  });

  it("and nothing else in A's database holds them in clear either (every table but the vectors)", async () => {
    const hits = await runInDurableObject(tenantStub(tenantA), (_instance, state) => {
      const sql = state.storage.sql;
      const tables = sql
        .exec<{ name: string }>(
          `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'`,
        )
        .toArray()
        .map((row) => row.name);
      const found: string[] = [];
      for (const table of tables) {
        for (const row of sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM "${table}"`)) {
          for (const [column, value] of Object.entries(row)) {
            const bytes = cellBytes(value);
            for (const canary of [CANARY, TITLE, SOURCE, TAG, "launch code"]) {
              if (containsBytes(bytes, te.encode(canary))) found.push(`${table}.${column}: ${canary}`);
            }
          }
        }
      }
      return { tables, found };
    });
    expect(hits.tables).toEqual(expect.arrayContaining(["atoms", "atom_tags", "tenant_keys", "documents"]));
    expect(hits.found).toEqual([]);
  });

  it("search, and filters by tag and by source, still work through the blind tokens", async () => {
    const search = (args: Record<string, unknown>) =>
      alice.ok<{ results: SearchHitOut[] }>("search", args).then((out) => out.results.map((hit) => hit.id).sort());
    expect(await search({ query: "launch code tangerine" })).toContain("shared-id");
    expect(await search({ query: "tangerine", filter: { tags: [TAG] } })).toEqual(["shared-id"]);
    expect(await search({ query: "tangerine", filter: { tags: [OTHER_TAG] } })).toEqual(["plain", "shared-id"]);
    expect(await search({ query: "tangerine", filter: { tags: { all: [TAG, OTHER_TAG] } } })).toEqual(["shared-id"]);
    expect(await search({ query: "tangerine", filter: { source: SOURCE } })).toEqual(["shared-id"]);
    expect(await search({ query: "tangerine", filter: { source: { in: ["notes"] } } })).toEqual(["plain"]);
    expect(await search({ query: "tangerine", filter: { tags: ["no-such-tag"] } })).toEqual([]);
    expect(await search({ query: "tangerine", filter: { source: "https://source.example/other" } })).toEqual([]);
    const hit = (
      await alice.ok<{ results: SearchHitOut[] }>("search", { query: "launch code", filter: { tags: [TAG] } })
    ).results[0];
    expect(hit).toMatchObject({ id: "shared-id", text: TEXT, source: SOURCE });
    // B, searching for the same values, finds nothing of A's.
    const fromB = await bob.ok<{ results: SearchHitOut[] }>("search", { query: "launch code tangerine" });
    expect(JSON.stringify(fromB)).not.toContain(CANARY);
    expect(
      (await bob.ok<{ results: SearchHitOut[] }>("search", { query: "tangerine", filter: { tags: [TAG] } })).results,
    ).toEqual([]);
  });
});
