import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import { tenantStub } from "./in-object";
import { bearer, mintToken } from "./tokens";

/**
 * Helpers for the document endpoint (/v1/documents/:id) and for inspecting a tenant's storage at rest: its R2
 * objects (through the DOCS binding) and its SQLite tables (through runInDurableObject on its object).
 */

export const DOCS_BASE = "https://kb.test/v1/documents";

export { tenantStub };

export interface DocClient {
  readonly tenant: string;
  readonly token: string;
  /** Any request to /v1/documents/<path> (path is appended raw, so it may carry encoded or odd segments). */
  request(path: string, init?: RequestInit): Promise<Response>;
  put(id: string, body: Uint8Array, contentType?: string): Promise<Response>;
  get(id: string, range?: string): Promise<Response>;
}

export async function docClient(tenant: string, scope = "mcp kb.read kb.write", sub = "alice"): Promise<DocClient> {
  const token = await mintToken({ tenant, sub, scope });
  const request = (path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    for (const [name, value] of Object.entries(bearer(token))) headers.set(name, value);
    return exports.default.fetch(new Request(`${DOCS_BASE}/${path}`, { ...init, headers }));
  };
  return {
    tenant,
    token,
    request,
    put: (id, body, contentType = "application/octet-stream") =>
      request(encodeURIComponent(id), {
        method: "PUT",
        body,
        headers: { "content-type": contentType, "content-length": String(body.byteLength) },
      }),
    get: (id, range) =>
      request(encodeURIComponent(id), { method: "GET", headers: range === undefined ? {} : { range } }),
  };
}

/** A PUT that must succeed (201). */
export async function putOk(client: DocClient, id: string, body: Uint8Array, contentType?: string): Promise<void> {
  const response = await client.put(id, body, contentType);
  const text = await response.text();
  expect(response.status, text).toBe(201);
}

/** Reads a response body to bytes; a body stream that errors is reported as `error` with what arrived before. */
export async function readBody(response: Response): Promise<{ bytes: Uint8Array; error: unknown }> {
  const parts: Uint8Array[] = [];
  let error: unknown;
  if (response.body) {
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
      }
    } catch (caught) {
      error = caught ?? new Error("stream errored");
    }
  }
  return { bytes: concatBytes(parts), error };
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether `needle` occurs in `haystack` (naive search; fine for test sizes). Empty needles never match. */
export function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  if (needle.byteLength === 0 || needle.byteLength > haystack.byteLength) return false;
  const first = needle[0];
  outer: for (let i = 0; i <= haystack.byteLength - needle.byteLength; i++) {
    if (haystack[i] !== first) continue;
    for (let j = 1; j < needle.byteLength; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** Random bytes of any length (getRandomValues is limited to 65 536 bytes per call). */
export function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65_536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + 65_536)));
  }
  return out;
}

/** The legacy object key of a document (rows without a generation); each write now adds `/<generation>`. */
export const objectKey = (tenant: string, id: string) => `t/${tenant}/docs/${id}`;

/** The object key the document's row names (t/<tenant>/docs/<id>/<generation>, or the legacy key). */
export async function storedKey(tenant: string, id: string): Promise<string> {
  const row = await runInDurableObject(
    tenantStub(tenant),
    (_instance, state) =>
      state.storage.sql
        .exec<{ generation: string | null }>(`SELECT generation FROM documents WHERE tenant = ? AND id = ?`, tenant, id)
        .toArray()[0],
  );
  if (!row) throw new Error(`no documents row ${id} in ${tenant}`);
  return row.generation === null ? objectKey(tenant, id) : `${objectKey(tenant, id)}/${row.generation}`;
}

/** Every R2 key holding some generation of document `id` (the legacy key included). */
export async function documentKeys(tenant: string, id: string): Promise<string[]> {
  const base = objectKey(tenant, id);
  const listed = await env.DOCS.list({ prefix: base });
  return listed.objects.map((object) => object.key).filter((key) => key === base || key.startsWith(`${base}/`));
}

/** Every key in the bucket (this test file's storage only). */
export async function allBucketKeys(): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  for (;;) {
    const listed = await env.DOCS.list({ limit: 1000, ...(cursor ? { cursor } : {}) });
    keys.push(...listed.objects.map((object) => object.key));
    if (!listed.truncated) return keys;
    cursor = listed.cursor;
  }
}

export async function r2Bytes(key: string): Promise<Uint8Array | null> {
  const object = await env.DOCS.get(key);
  return object ? new Uint8Array(await object.arrayBuffer()) : null;
}

/** A SQLite value as bytes: blobs as they are, everything else as the UTF-8 of its string form. */
export function cellBytes(value: unknown): Uint8Array {
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new TextEncoder().encode(value === null || value === undefined ? "" : String(value));
}

/** Every cell of every row of `table` in a tenant's object, as bytes. */
export async function tableCells(tenant: string, table: string): Promise<{ column: string; bytes: Uint8Array }[]> {
  return runInDurableObject(tenantStub(tenant), (_instance, state) => {
    const cells: { column: string; bytes: Uint8Array }[] = [];
    for (const row of state.storage.sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM ${table}`)) {
      for (const [column, value] of Object.entries(row))
        cells.push({ column, bytes: Uint8Array.from(cellBytes(value)) });
    }
    return cells;
  });
}
