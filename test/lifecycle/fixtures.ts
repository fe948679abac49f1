import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import { EncryptedBlobs } from "../../src/blob/encrypted-blobs";
import { MasterKeys } from "../../src/crypto/master-keys";
import { TenantKeyring } from "../../src/crypto/tenant-keyring";
import { AtomCipher } from "../../src/kb/atom-cipher";
import { tenantStub } from "../helpers/admin";
import type { KbCaller, SearchHitOut } from "../helpers/kb-client";
import { BASE } from "../helpers/tokens";

/** Shared fixtures of the lifecycle tests: a deterministic corpus, searches, and readers of the stored state. */

const WORDS = (
  "river lake ocean mountain valley desert forest glacier volcano island canyon meadow prairie tundra swamp " +
  "granite basalt quartz marble limestone copper iron silver gold cobalt lithium nickel zinc tin lead " +
  "engine turbine piston gearbox bearing valve pump boiler furnace kiln lathe drill press anvil forge " +
  "falcon heron otter badger lynx wolf bison moose salmon trout beetle moth sparrow raven owl"
).split(" ");

export interface AtomIn {
  readonly id: string;
  readonly text: string;
  readonly tags: string[];
  readonly source: string;
  readonly title?: string;
}

/** `count` atoms with ids `<prefix>-000...`, deterministic for a given seed. */
export function corpus(count: number, prefix = "atom", seed = 12345): AtomIn[] {
  let state = seed;
  const next = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state;
  };
  return Array.from({ length: count }, (_, i) => {
    const words = Array.from({ length: 8 + (next() % 8) }, () => WORDS[next() % WORDS.length] as string);
    return {
      id: `${prefix}-${String(i).padStart(3, "0")}`,
      text: `${words.join(" ")} (${prefix} ${i}).`,
      tags: [`group-${i % 7}`, ...(i % 3 === 0 ? ["third"] : [])],
      source: `book-${i % 5}`,
      ...(i % 4 === 0 ? { title: `${words[0]} ${words[1]} notes` } : {}),
    };
  });
}

export const SEARCHES: Record<string, unknown>[] = [
  { query: "river lake ocean", top_k: 10 },
  { query: "granite basalt marble", top_k: 10 },
  { query: "engine turbine piston gearbox", top_k: 20 },
  { query: "falcon heron otter", top_k: 10 },
  { query: "lathe drill press", top_k: 10, filter: { tags: { any: ["group-3", "group-4"] } } },
  { query: "mountain valley", top_k: 10, filter: { source: { in: ["book-2"] }, tags: ["third"] } },
  { query: "tundra glacier swamp", top_k: 15, filter: { tags: { all: ["group-1", "third"] } } },
];

export async function runSearches(caller: KbCaller): Promise<SearchHitOut[][]> {
  const out: SearchHitOut[][] = [];
  for (const args of SEARCHES) out.push((await caller.ok<{ results: SearchHitOut[] }>("search", args)).results);
  return out;
}

export async function addAtoms(caller: KbCaller, atoms: readonly AtomIn[]): Promise<void> {
  for (let i = 0; i < atoms.length; i += 100) await caller.ok("add_atoms", { atoms: atoms.slice(i, i + 100) });
}

/** Deterministic document bytes. */
export function docBytes(i: number, size = 200 + i * 37): Uint8Array {
  const bytes = new Uint8Array(size);
  let state = 0x9e3779b9 ^ i;
  for (let j = 0; j < size; j++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    bytes[j] = state >>> 24;
  }
  return bytes;
}

export interface OpenedAtom {
  readonly text: string;
  readonly title: string | null;
  readonly source: string | null;
  readonly tags: string[];
  readonly keyVersion: number;
}

/**
 * Opens every stored atom row of the tenant with a fresh keyring (keys unwrapped from tenant_keys under `master`,
 * nothing cached from the running object) and the production AtomCipher. Throws if any row does not open.
 */
export function openAllAtoms(tenant: string, master?: MasterKeys): Promise<Map<string, OpenedAtom>> {
  return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
    const keyring = new TenantKeyring(state.storage.sql, tenant, master ?? MasterKeys.fromEnv(env));
    const cipher = new AtomCipher(keyring, tenant);
    const rows = state.storage.sql
      .exec<{ id: string; key_version: number; sealed: ArrayBuffer }>(
        `SELECT id, key_version, sealed FROM atoms WHERE tenant = ? ORDER BY seq`,
        tenant,
      )
      .toArray();
    const out = new Map<string, OpenedAtom>();
    for (const row of rows) {
      const fields = await cipher.open(row.id, row.key_version, new Uint8Array(row.sealed));
      out.set(row.id, { ...fields, keyVersion: row.key_version });
    }
    return out;
  });
}

/** Reads every document of the tenant through EncryptedBlobs with a fresh keyring under `master`. */
export function readAllDocuments(tenant: string, master?: MasterKeys): Promise<Map<string, Uint8Array>> {
  return runInDurableObject(tenantStub(tenant), async (_instance, state) => {
    const sql = state.storage.sql;
    const keyring = new TenantKeyring(sql, tenant, master ?? MasterKeys.fromEnv(env));
    const blobs = new EncryptedBlobs(env.DOCS, tenant, keyring, sql, (fn) => state.storage.transactionSync(fn));
    const out = new Map<string, Uint8Array>();
    for (const meta of blobs.list(1000)) {
      const got = await blobs.get(meta.id);
      if (!got) throw new Error(`document ${meta.id} vanished`);
      out.set(meta.id, new Uint8Array(await new Response(got.body).arrayBuffer()));
    }
    return out;
  });
}

/** Expects the stored atoms to be exactly `expected` (id -> input), all readable. */
export async function expectAtoms(
  tenant: string,
  expected: ReadonlyMap<string, AtomIn>,
): Promise<Map<string, OpenedAtom>> {
  const opened = await openAllAtoms(tenant);
  expect([...opened.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [id, atom] of expected) {
    const got = opened.get(id);
    expect(got, id).toMatchObject({ text: atom.text, tags: atom.tags, source: atom.source, title: atom.title ?? null });
  }
  return opened;
}

/** Expects the tenant's documents, read over HTTP with `token`, to be exactly `expected`. */
export async function expectDocuments(token: string, expected: ReadonlyMap<string, Uint8Array>): Promise<void> {
  for (const [id, bytes] of expected) {
    const response = await exports.default.fetch(
      new Request(`${BASE}/v1/documents/${id}`, { headers: { authorization: `Bearer ${token}` } }),
    );
    const body = new Uint8Array(await response.arrayBuffer());
    expect(response.status, `${id}: ${new TextDecoder().decode(body.subarray(0, 200))}`).toBe(200);
    expect(body.byteLength, id).toBe(bytes.byteLength);
    expect(body, id).toEqual(bytes);
  }
}

export interface StoredRows {
  readonly keys: { version: number; epoch: string; wrapped: string }[];
  readonly atoms: { id: string; key_version: number; sealed: string }[];
  readonly documents: { id: string; key_version: number; size: number }[];
}

function hex(value: SqlStorageValue | undefined): string {
  if (!(value instanceof ArrayBuffer)) throw new Error("expected a blob");
  return Array.from(new Uint8Array(value), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The key, atom and document rows of a tenant (blobs as hex, for equality checks). */
export function storedRows(tenant: string): Promise<StoredRows> {
  return runInDurableObject(tenantStub(tenant), (_instance, state) => {
    const sql = state.storage.sql;
    return {
      keys: sql
        .exec(`SELECT version, epoch, wrapped FROM tenant_keys ORDER BY version`)
        .toArray()
        .map((row) => ({ version: Number(row.version), epoch: String(row.epoch), wrapped: hex(row.wrapped) })),
      atoms: sql
        .exec(`SELECT id, key_version, sealed FROM atoms ORDER BY id`)
        .toArray()
        .map((row) => ({ id: String(row.id), key_version: Number(row.key_version), sealed: hex(row.sealed) })),
      documents: sql
        .exec(`SELECT id, key_version, size FROM documents ORDER BY id`)
        .toArray()
        .map((row) => ({ id: String(row.id), key_version: Number(row.key_version), size: Number(row.size) })),
    };
  });
}

/** R2 objects under a prefix: key -> etag and the key version recorded in its metadata. */
export async function r2Objects(
  prefix: string,
): Promise<Map<string, { etag: string; keyVersion: string | undefined }>> {
  const out = new Map<string, { etag: string; keyVersion: string | undefined }>();
  let cursor: string | undefined;
  do {
    const page = await env.DOCS.list({ prefix, include: ["customMetadata"], ...(cursor ? { cursor } : {}) });
    for (const object of page.objects) {
      out.set(object.key, { etag: object.etag, keyVersion: object.customMetadata?.keyVersion });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return out;
}

/** A PUT /v1/documents/:id whose body the test feeds by hand (an upload in flight). */
export function slowUpload(
  token: string,
  id: string,
  length: number,
): { send(bytes: Uint8Array): void; finish(): void; response: Promise<Response> } {
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  const response = exports.default.fetch(
    new Request(`${BASE}/v1/documents/${id}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}`, "content-type": "text/plain", "content-length": String(length) },
      body,
    }),
  );
  const live = () => {
    if (!controller) throw new Error("stream not started");
    return controller;
  };
  return { send: (bytes) => live().enqueue(bytes), finish: () => live().close(), response };
}

/** Lets the Worker and the tenant object make progress on requests the test has not awaited. */
export function settle(ms = 100): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
