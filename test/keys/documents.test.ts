import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { ciphertextLength, HEADER_SIZE } from "../../src/crypto/chunked-aead";
import { LIMITS } from "../../src/kb/limits";
import { MCP_DOCUMENT_MAX_BYTES } from "../../src/mcp/tools/document-tools";
import { base64url } from "../../src/util/bytes";
import {
  allBucketKeys,
  containsBytes,
  type DocClient,
  docClient,
  documentKeys,
  equalBytes,
  putOk,
  r2Bytes,
  randomBytes,
  readBody,
  storedKey,
  tenantStub,
} from "../helpers/docs";
import { jsonRpcErrorCode } from "../helpers/http";
import { callToolInObject } from "../helpers/in-object";
import { type KbCaller, kbCaller, type RpcAnswer, refusal, uniqueTenant } from "../helpers/kb-client";

/**
 * Documents: encrypted (Cobblestone-256) in R2 under t/<tenant>/docs/<id>, over MCP (put_document/get_document,
 * small bodies) and over the streaming HTTP endpoint /v1/documents/:id (PUT/GET/HEAD/DELETE, Range).
 */

const TENANTS = new Set<string>();
const tenantName = (prefix: string) => {
  const name = uniqueTenant(prefix);
  TENANTS.add(name);
  return name;
};

const te = new TextEncoder();

function fromBase64url(text: string): Uint8Array {
  return Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
}

interface DocumentOut {
  readonly id: string;
  readonly size: number;
  readonly contentType: string;
  readonly keyVersion: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

interface GetOut {
  readonly document: DocumentOut;
  readonly range: { start: number; end: number } | null;
  readonly text?: string;
  readonly base64?: string;
}

function expectInsufficientScope(answer: { status: number; headers: Headers; body: unknown }, scope: string): void {
  expect(answer.status).toBe(403);
  const challenge = answer.headers.get("www-authenticate") ?? "";
  expect(challenge).toContain('error="insufficient_scope"');
  expect(challengeScopes(challenge)).toContain(scope);
  expect(answer.body).toEqual({
    error: "insufficient_scope",
    error_description: `This request requires scope: ${scope}`,
    scope,
  });
}

async function documentRows(tenant: string): Promise<Record<string, SqlStorageValue>[]> {
  return runInDurableObject(tenantStub(tenant), (_instance, state) =>
    state.storage.sql.exec<Record<string, SqlStorageValue>>(`SELECT * FROM documents ORDER BY id`).toArray(),
  );
}

/** A 4xx JSON-RPC-style error from the document endpoint, with its stable code. */
async function expectDocError(response: Response, status: number, code: string): Promise<void> {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  expect(response.headers.get("cache-control")).toBe("no-store");
  expect(jsonRpcErrorCode(JSON.parse(text) as Record<string, unknown>)).toBe(code);
}

describe("documents over MCP", () => {
  const tenant = tenantName("mcpdoc");
  let alice: KbCaller;
  let reader: KbCaller;
  let writeOnly: KbCaller;

  beforeAll(async () => {
    alice = await kbCaller(tenant);
    reader = await kbCaller(tenant, { sub: "reader", scope: "mcp kb.read" });
    writeOnly = await kbCaller(tenant, { sub: "ingest", scope: "mcp kb.write" });
  });

  it("put_document text / get_document: round trip, metadata, stored encrypted under t/<tenant>/docs/<id>", async () => {
    const text = `Quarterly notes — ünïcödé ✓ ${crypto.randomUUID()} `.repeat(50);
    const { document } = await alice.ok<{ document: DocumentOut }>("put_document", { id: "notes.v1", text });
    const size = te.encode(text).byteLength;
    expect(document).toMatchObject({ id: "notes.v1", size, contentType: "text/plain; charset=utf-8", keyVersion: 1 });
    const got = await alice.ok<GetOut>("get_document", { id: "notes.v1" });
    expect(got.text).toBe(text);
    expect(got.base64).toBeUndefined();
    expect(got.range).toEqual({ start: 0, end: size });
    expect(got.document).toEqual(document);

    const stored = await r2Bytes(await storedKey(tenant, "notes.v1"));
    expect(stored).not.toBeNull();
    expect(stored?.byteLength).toBe(ciphertextLength(size));
    expect(containsBytes(stored ?? new Uint8Array(), te.encode("Quarterly notes"))).toBe(false);
  });

  it("put_document base64 (standard or url alphabet) / get_document: binary comes back as base64url", async () => {
    const bytes = randomBytes(3000);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    const standard = btoa(binary);
    const put = await alice.ok<{ document: DocumentOut }>("put_document", { id: "bin-1", base64: standard });
    expect(put.document).toMatchObject({ size: 3000, contentType: "application/octet-stream" });
    const got = await alice.ok<GetOut>("get_document", { id: "bin-1" });
    expect(got.text).toBeUndefined();
    expect(equalBytes(fromBase64url(got.base64 ?? ""), bytes)).toBe(true);

    await alice.ok("put_document", { id: "bin-2", base64: base64url(bytes), content_type: "image/png" });
    const again = await alice.ok<GetOut>("get_document", { id: "bin-2" });
    expect(again.document.contentType).toBe("image/png");
    expect(equalBytes(fromBase64url(again.base64 ?? ""), bytes)).toBe(true);
  });

  it("empty documents round-trip", async () => {
    await alice.ok("put_document", { id: "empty", text: "" });
    const got = await alice.ok<GetOut>("get_document", { id: "empty" });
    expect(got.text).toBe("");
    expect(got.document.size).toBe(0);
  });

  it("ranges (offset, length), including ones crossing a 16 KiB chunk boundary and clamped at the end", async () => {
    const bytes = randomBytes(40_000);
    await alice.ok("put_document", { id: "ranged", base64: base64url(bytes) });
    const cases: [number | undefined, number | undefined, number, number][] = [
      [0, 1, 0, 1],
      [16_380, 10, 16_380, 16_390],
      [16_383, 2, 16_383, 16_385],
      [16_384, 16_384, 16_384, 32_768],
      [39_990, 100, 39_990, 40_000],
      [32_000, undefined, 32_000, 40_000],
      [undefined, 5, 0, 5],
    ];
    for (const [offset, length, start, end] of cases) {
      const args: Record<string, unknown> = { id: "ranged" };
      if (offset !== undefined) args.offset = offset;
      if (length !== undefined) args.length = length;
      const got = await alice.ok<GetOut>("get_document", args);
      expect(got.range, JSON.stringify(args)).toEqual({ start, end });
      expect(equalBytes(fromBase64url(got.base64 ?? ""), bytes.subarray(start, end)), JSON.stringify(args)).toBe(true);
    }
    const text = "abcdefghijklmnopqrstuvwxyz";
    await alice.ok("put_document", { id: "alphabet", text });
    expect((await alice.ok<GetOut>("get_document", { id: "alphabet", offset: 3, length: 4 })).text).toBe("defg");
    expect(refusal(await alice.call("get_document", { id: "alphabet", offset: 26 })).code).toBe("ERR_RANGE");
    expect(refusal(await alice.call("get_document", { id: "alphabet", offset: 1000, length: 1 })).code).toBe(
      "ERR_RANGE",
    );
    expect(refusal(await alice.call("get_document", { id: "alphabet", length: 0 })).code).toBe("SCHEMA");
    expect(refusal(await alice.call("get_document", { id: "alphabet", offset: -1 })).code).toBe("SCHEMA");
  });

  it("size cap 512 KiB: put_document over it is ERR_LIMIT and stores nothing; exactly 512 KiB is accepted", async () => {
    // The test edge caps MCP bodies at 64 KiB (MAX_BODY_BYTES), so a body this large never reaches the tool there:
    const overEdge = await alice.rpc("tools/call", {
      name: "put_document",
      arguments: { id: "too-big", text: "x".repeat(MCP_DOCUMENT_MAX_BYTES + 1) },
    });
    expect(overEdge.status).toBe(413);
    // ... so the tool's own cap is exercised inside the tenant's object, through the real MCP server.
    const over = await callToolInObject(tenant, "put_document", {
      id: "too-big",
      text: "x".repeat(MCP_DOCUMENT_MAX_BYTES + 1),
    });
    expect(over.result.isError).toBe(true);
    expect((over.result.structuredContent as { error: { code: string } }).error.code).toBe("ERR_LIMIT");
    const overBinary = await callToolInObject(tenant, "put_document", {
      id: "too-big",
      base64: base64url(new Uint8Array(MCP_DOCUMENT_MAX_BYTES + 1)),
    });
    expect((overBinary.result.structuredContent as { error: { code: string } }).error.code).toBe("ERR_LIMIT");
    expect(await documentKeys(tenant, "too-big")).toEqual([]);
    expect(refusal(await alice.call("get_document", { id: "too-big" })).code).toBe("ERR_NOT_FOUND");

    const exact = await callToolInObject(tenant, "put_document", {
      id: "max-size",
      text: "y".repeat(MCP_DOCUMENT_MAX_BYTES),
    });
    expect(exact.result.isError, exact.text).not.toBe(true);
    expect((await r2Bytes(await storedKey(tenant, "max-size")))?.byteLength).toBe(
      ciphertextLength(MCP_DOCUMENT_MAX_BYTES),
    );
  });

  it("get_document over 512 KiB needs a range; a range of at most 512 KiB works", async () => {
    const docs = await docClient(tenant);
    const bytes = randomBytes(MCP_DOCUMENT_MAX_BYTES + 100);
    await putOk(docs, "large", bytes);
    expect(refusal(await alice.call("get_document", { id: "large" })).code).toBe("ERR_LIMIT");
    expect(refusal(await alice.call("get_document", { id: "large", length: MCP_DOCUMENT_MAX_BYTES + 1 })).code).toBe(
      "SCHEMA",
    );
    // A 50 000-byte slice keeps the response inside what the test reads comfortably.
    const got = await alice.ok<GetOut>("get_document", { id: "large", offset: MCP_DOCUMENT_MAX_BYTES, length: 50_000 });
    expect(got.range).toEqual({ start: MCP_DOCUMENT_MAX_BYTES, end: MCP_DOCUMENT_MAX_BYTES + 100 });
    expect(equalBytes(fromBase64url(got.base64 ?? ""), bytes.subarray(MCP_DOCUMENT_MAX_BYTES))).toBe(true);
  });

  it("bad ids are refused and write nothing; a missing id is not found", async () => {
    const before = await allBucketKeys();
    for (const id of ["../x", "a/b", "%2e%2e", "..", ".", "", ".hidden", "-x", "a b", "a\u0000b", "t/other/docs/x"]) {
      const put = refusal(await alice.call("put_document", { id, text: "nope" }));
      expect(put.code, id).toBe("ERR_INVALID_PARAMS");
      expect(put.message).toContain("document id must match");
      expect(refusal(await alice.call("get_document", { id })).code, id).toBe("ERR_NOT_FOUND");
    }
    expect(refusal(await alice.call("put_document", { id: "x".repeat(65), text: "nope" })).code).toBe("SCHEMA");
    expect(refusal(await alice.call("put_document", { id: "both", text: "a", base64: "YQ" })).code).toBe(
      "ERR_INVALID_PARAMS",
    );
    expect(refusal(await alice.call("put_document", { id: "neither" })).code).toBe("ERR_INVALID_PARAMS");
    expect(refusal(await alice.call("put_document", { id: "badb64", base64: "not*base64" })).code).toBe(
      "ERR_INVALID_PARAMS",
    );
    expect(refusal(await alice.call("put_document", { id: "badtype", text: "a", content_type: "nope" })).code).toBe(
      "ERR_INVALID_PARAMS",
    );
    expect(refusal(await alice.call("put_document", { id: "x", text: "a", tenant: "other" })).code).toBe("SCHEMA");
    expect(refusal(await alice.call("get_document", { id: "never-stored" })).code).toBe("ERR_NOT_FOUND");
    expect(await allBucketKeys()).toEqual(before);
  });

  it("scopes: kb.read can get but not put (403 naming kb.write, nothing written); kb.write alone cannot get", async () => {
    await alice.ok("put_document", { id: "scoped", text: "original" });
    const keysBefore = await allBucketKeys();
    const rowsBefore = await documentRows(tenant);
    expect((await reader.ok<GetOut>("get_document", { id: "scoped" })).text).toBe("original");
    const put: RpcAnswer = await reader.rpc("tools/call", {
      name: "put_document",
      arguments: { id: "scoped", text: "overwritten by a reader" },
    });
    expectInsufficientScope(put, "kb.write");
    const fresh = await reader.rpc("tools/call", { name: "put_document", arguments: { id: "new-one", text: "x" } });
    expectInsufficientScope(fresh, "kb.write");
    expect(await allBucketKeys()).toEqual(keysBefore);
    expect(await documentRows(tenant)).toEqual(rowsBefore);
    expect((await alice.ok<GetOut>("get_document", { id: "scoped" })).text).toBe("original");

    const get = await writeOnly.rpc("tools/call", { name: "get_document", arguments: { id: "scoped" } });
    expectInsufficientScope(get, "kb.read");
    expect(get.text).not.toContain("original");
  });
});

describe("documents over HTTP /v1/documents/:id", () => {
  const tenant = tenantName("httpdoc");
  let docs: DocClient;

  beforeAll(async () => {
    docs = await docClient(tenant);
  });

  it("PUT without Content-Length (a stream of unknown length) is 411 and stores nothing", async () => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(te.encode("streamed without a length"));
        controller.close();
      },
    });
    const response = await docs.request("no-length", { method: "PUT", body, duplex: "half" } as RequestInit);
    await expectDocError(response, 411, "ERR_LENGTH_REQUIRED");
    expect(await documentKeys(tenant, "no-length")).toEqual([]);
    expect((await docs.get("no-length")).status).toBe(404);
  });

  it("a body shorter or longer than its Content-Length is refused, and nothing is stored or replaced", async () => {
    const cases: [string, Uint8Array | ReadableStream<Uint8Array>, number][] = [
      ["short-bytes", new Uint8Array(10), 20],
      ["long-bytes", new Uint8Array(30), 20],
      ["short-big", randomBytes(40_000), 50_000],
      ["long-big", randomBytes(50_000), 40_000],
      [
        "short-stream",
        new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(new Uint8Array(16_384));
            c.close();
          },
        }),
        16_385,
      ],
      [
        "long-stream",
        new ReadableStream<Uint8Array>({
          start(c) {
            c.enqueue(new Uint8Array(16_384));
            c.enqueue(new Uint8Array(1));
            c.close();
          },
        }),
        16_384,
      ],
    ];
    for (const [id, body, declared] of cases) {
      const response = await docs.request(id, {
        method: "PUT",
        body,
        headers: { "content-length": String(declared) },
        duplex: "half",
      } as RequestInit);
      await expectDocError(response, 400, "ERR_BAD_REQUEST");
      expect(await documentKeys(tenant, id), id).toEqual([]);
      expect((await docs.get(id)).status, id).toBe(404);
    }
    expect((await documentRows(tenant)).map((row) => row.id)).not.toEqual(
      expect.arrayContaining(cases.map(([id]) => id)),
    );

    // A failed overwrite leaves the previous version whole, in R2 and in the index.
    const original = randomBytes(20_000);
    await putOk(docs, "keep-me", original);
    const storedBefore = await r2Bytes(await storedKey(tenant, "keep-me"));
    const rowBefore = (await documentRows(tenant)).find((row) => row.id === "keep-me");
    const short = await docs.request("keep-me", {
      method: "PUT",
      body: randomBytes(5_000),
      headers: { "content-length": "30000" },
    });
    await expectDocError(short, 400, "ERR_BAD_REQUEST");
    expect(
      equalBytes(
        (await r2Bytes(await storedKey(tenant, "keep-me"))) ?? new Uint8Array(),
        storedBefore ?? new Uint8Array(1),
      ),
    ).toBe(true);
    expect((await documentRows(tenant)).find((row) => row.id === "keep-me")).toEqual(rowBefore);
    const got = await docs.get("keep-me");
    expect(got.status).toBe(200);
    expect(equalBytes(new Uint8Array(await got.arrayBuffer()), original)).toBe(true);
  });

  const SIZES = [0, 1, 16_383, 16_384, 16_385, 100_000, 2 * 1024 * 1024 + 4_321];
  const stored = new Map<number, Uint8Array>();

  it.each(SIZES)(
    "GET returns the exact bytes of a %i-byte document; HEAD gives its length; R2 holds ciphertext",
    async (size) => {
      const bytes = randomBytes(size);
      stored.set(size, bytes);
      const id = `size-${size}`;
      const put = await docs.put(id, bytes, "application/x-test");
      expect(put.status).toBe(201);
      const meta = ((await put.json()) as { document: DocumentOut }).document;
      expect(meta).toMatchObject({ id, size, contentType: "application/x-test", keyVersion: 1 });

      const got = await docs.get(id);
      expect(got.status).toBe(200);
      expect(got.headers.get("content-type")).toBe("application/x-test");
      expect(got.headers.get("accept-ranges")).toBe("bytes");
      expect(got.headers.get("cache-control")).toBe("no-store");
      const body = await readBody(got);
      expect(body.error).toBeUndefined();
      expect(body.bytes.byteLength).toBe(size);
      expect(equalBytes(body.bytes, bytes)).toBe(true);

      const head = await docs.request(id, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-length")).toBe(String(size));
      expect(await head.text()).toBe("");

      const object = await env.DOCS.get(await storedKey(tenant, id));
      expect(object).not.toBeNull();
      const ciphertext = new Uint8Array(await (object as R2ObjectBody).arrayBuffer());
      expect(ciphertext.byteLength).toBe(ciphertextLength(size));
      expect(object?.size).toBe(ciphertextLength(size));
      expect(object?.customMetadata?.keyVersion).toBe("1");
      expect(object?.httpMetadata?.contentType).toBe("application/octet-stream");
      if (size >= 16) {
        expect(containsBytes(ciphertext, bytes.subarray(0, 16))).toBe(false);
        expect(containsBytes(ciphertext, bytes.subarray(size - 16))).toBe(false);
      }
      if (size > 0) expect(equalBytes(ciphertext.subarray(HEADER_SIZE, HEADER_SIZE + size), bytes)).toBe(false);
    },
  );

  /** [Range header, start, end (exclusive)] for a document of `size` bytes. */
  function rangeCases(size: number): [string, number, number][] {
    return [
      ["bytes=0-0", 0, 1],
      ["bytes=0-9", 0, 10],
      ["bytes=16380-16390", 16_380, 16_391],
      ["bytes=16383-16384", 16_383, 16_385],
      ["bytes=16384-16384", 16_384, 16_385],
      ["bytes=100-40000", 100, Math.min(40_001, size)],
      [`bytes=${size - 1}-${size - 1}`, size - 1, size],
      [`bytes=${size - 10}-${size + 1000}`, size - 10, size],
      ["bytes=0-", 0, size],
      ["bytes=16384-", 16_384, size],
      [`bytes=${size - 1}-`, size - 1, size],
      ["bytes=-1", size - 1, size],
      ["bytes=-16", size - 16, size],
      ["bytes=-16384", size - 16_384, size],
      ["bytes=-16385", size - 16_385, size],
      [`bytes=-${size}`, 0, size],
      [`bytes=-${size + 5000}`, 0, size],
      [" bytes=5-6 ", 5, 7],
    ];
  }

  for (const size of [100_000, 32_768, 49_152]) {
    it(`Range on a ${size}-byte document${size % 16_384 === 0 ? " (an exact multiple of 16 KiB)" : ""}: 206 with exact bytes`, async () => {
      const bytes = randomBytes(size);
      const id = `ranges-${size}`;
      await putOk(docs, id, bytes);
      for (const [header, start, end] of rangeCases(size)) {
        const response = await docs.get(id, header);
        expect(response.status, header).toBe(206);
        expect(response.headers.get("content-range"), header).toBe(`bytes ${start}-${end - 1}/${size}`);
        expect(response.headers.get("content-length"), header).toBe(String(end - start));
        const body = new Uint8Array(await response.arrayBuffer());
        expect(body.byteLength, header).toBe(end - start);
        expect(equalBytes(body, bytes.subarray(start, end)), header).toBe(true);
      }
    });
  }

  it("Range on the 2 MiB document, far from the start", async () => {
    const size = 2 * 1024 * 1024 + 4_321;
    const bytes = stored.get(size) ?? new Uint8Array();
    expect(bytes.byteLength).toBe(size);
    for (const [header, start, end] of [
      ["bytes=1048570-1048580", 1_048_570, 1_048_581],
      ["bytes=-5000", size - 5000, size],
      ["bytes=2097152-", 2_097_152, size],
    ] as [string, number, number][]) {
      const response = await docs.get(`size-${size}`, header);
      expect(response.status, header).toBe(206);
      expect(response.headers.get("content-range")).toBe(`bytes ${start}-${end - 1}/${size}`);
      expect(equalBytes(new Uint8Array(await response.arrayBuffer()), bytes.subarray(start, end)), header).toBe(true);
    }
  });

  it("a last-byte-pos or suffix larger than 2^53 means the rest of the document (RFC 9110 14.1.2), not 416", async () => {
    const size = 100_000;
    const bytes = stored.get(size) ?? new Uint8Array();
    for (const [header, start] of [
      ["bytes=0-99999999999999999999", 0],
      ["bytes=99000-9007199254740993", 99_000],
      ["bytes=-99999999999999999999", 0],
    ] as [string, number][]) {
      const response = await docs.get(`size-${size}`, header);
      expect(response.status, header).toBe(206);
      expect(response.headers.get("content-range"), header).toBe(`bytes ${start}-${size - 1}/${size}`);
      expect(equalBytes(new Uint8Array(await response.arrayBuffer()), bytes.subarray(start)), header).toBe(true);
    }
    // A first-byte-pos that large is past the end: still 416.
    await expectDocError(await docs.get(`size-${size}`, "bytes=99999999999999999999-"), 416, "ERR_RANGE");
  });

  it("unsatisfiable, malformed and multiple ranges are 416", async () => {
    const size = 100_000;
    for (const header of [
      `bytes=${size}-`,
      `bytes=${size}-${size + 10}`,
      "bytes=200000-300000",
      "bytes=-0",
      "bytes=5-3",
      "bytes=-",
      "bytes=0-1,5-6",
      "bytes=0-1, 5-6",
      "bytes=-1,-2",
      "bytes=abc",
      "items=0-1",
      "bytes=1.5-2",
    ]) {
      const response = await docs.get(`size-${size}`, header);
      await expectDocError(response, 416, "ERR_RANGE");
    }
    // An empty document has no satisfiable range at all.
    for (const header of ["bytes=0-0", "bytes=0-", "bytes=-1"]) {
      await expectDocError(await docs.get("size-0", header), 416, "ERR_RANGE");
    }
    await expectDocError(await docs.get("never-stored", "bytes=0-1"), 404, "ERR_NOT_FOUND");
  });

  it("a declared length over the 1 GiB document limit is refused before reading the body (ERR_LIMIT)", async () => {
    const response = await docs.request("huge", {
      method: "PUT",
      body: new Uint8Array(16),
      headers: { "content-length": String(1024 * 1024 * 1024 + 1) },
    });
    await expectDocError(response, 400, "ERR_LIMIT");
    expect(await documentKeys(tenant, "huge")).toEqual([]);
  });

  it("PUT replaces a document; createdAt is kept", async () => {
    const first = await docs.put("replace-me", te.encode("first version"), "text/plain");
    const firstMeta = ((await first.json()) as { document: DocumentOut }).document;
    const second = await docs.put("replace-me", te.encode("second, longer version"), "text/markdown");
    expect(second.status).toBe(201);
    const secondMeta = ((await second.json()) as { document: DocumentOut }).document;
    expect(secondMeta.createdAt).toBe(firstMeta.createdAt);
    expect(secondMeta).toMatchObject({ size: 22, contentType: "text/markdown" });
    const got = await docs.get("replace-me");
    expect(await got.text()).toBe("second, longer version");
    expect(got.headers.get("content-type")).toBe("text/markdown");
  });

  it("an invalid content type is refused", async () => {
    await expectDocError(await docs.put("typed", te.encode("x"), "not a type"), 400, "ERR_INVALID_PARAMS");
    expect(await documentKeys(tenant, "typed")).toEqual([]);
  });

  it("DELETE: 204, then 404 for GET, HEAD and DELETE; the R2 object is gone", async () => {
    await putOk(docs, "delete-me", randomBytes(20_000));
    expect(await r2Bytes(await storedKey(tenant, "delete-me"))).not.toBeNull();
    const deleted = await docs.request("delete-me", { method: "DELETE" });
    expect(deleted.status).toBe(204);
    expect(await deleted.text()).toBe("");
    expect(await documentKeys(tenant, "delete-me")).toEqual([]);
    await expectDocError(await docs.get("delete-me"), 404, "ERR_NOT_FOUND");
    expect((await docs.request("delete-me", { method: "HEAD" })).status).toBe(404);
    await expectDocError(await docs.request("delete-me", { method: "DELETE" }), 404, "ERR_NOT_FOUND");
    expect((await documentRows(tenant)).some((row) => row.id === "delete-me")).toBe(false);
  });

  it("other methods are 405 with an Allow header listing what the route serves", async () => {
    const response = await docs.request("size-1", { method: "POST", body: "x" });
    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBe("GET, HEAD, PUT, DELETE");
  });

  it("scopes: kb.read can GET/HEAD but not PUT or DELETE (403 naming kb.write); no token is 401", async () => {
    const reader = await docClient(tenant, "mcp kb.read", "reader");
    expect((await reader.get("size-1")).status).toBe(200);
    expect((await reader.request("size-1", { method: "HEAD" })).status).toBe(200);
    for (const init of [
      { method: "PUT", body: te.encode("x"), headers: { "content-length": "1" } },
      { method: "DELETE" },
    ] as RequestInit[]) {
      const response = await reader.request("size-1", init);
      expectInsufficientScope(
        { status: response.status, headers: response.headers, body: await response.json() },
        "kb.write",
      );
    }
    expect(
      equalBytes(new Uint8Array(await (await docs.get("size-1")).arrayBuffer()), stored.get(1) ?? new Uint8Array()),
    ).toBe(true);
    const writer = await docClient(tenant, "mcp kb.write", "ingest");
    const get = await writer.get("size-1");
    expectInsufficientScope({ status: get.status, headers: get.headers, body: await get.json() }, "kb.read");
    const anonymous = await exports.default.fetch(new Request("https://kb.test/v1/documents/size-1"));
    expect(anonymous.status).toBe(401);
  });

  it("at rest: key layout t/<tenant>/docs/<id>/<generation>, ciphertext not the plaintext and not containing it", async () => {
    const plaintext = te.encode(`CANARY-DOC-${crypto.randomUUID()} `.repeat(2000));
    await putOk(docs, "at-rest", plaintext, "text/plain");
    const keys = (await allBucketKeys()).filter((key) => key.startsWith(`t/${tenant}/`));
    const first = await storedKey(tenant, "at-rest");
    expect(first).toMatch(new RegExp(`^t/${tenant}/docs/at-rest/[0-9a-f]{32}$`));
    expect(keys).toContain(first);
    for (const key of keys) {
      expect(key).toMatch(new RegExp(`^t/${tenant}/docs/${LIMITS.idPattern.source.slice(1, -1)}/[0-9a-f]{32}$`));
    }
    const ciphertext = (await r2Bytes(first)) ?? new Uint8Array();
    expect(ciphertext.byteLength).toBe(ciphertextLength(plaintext.byteLength));
    expect(equalBytes(ciphertext, plaintext)).toBe(false);
    expect(containsBytes(ciphertext, plaintext)).toBe(false);
    expect(containsBytes(ciphertext, te.encode("CANARY-DOC-"))).toBe(false);
    // Two uploads of the same plaintext give unrelated ciphertexts (fresh salt per object).
    await putOk(docs, "at-rest-2", plaintext, "text/plain");
    const other = (await r2Bytes(await storedKey(tenant, "at-rest-2"))) ?? new Uint8Array();
    expect(equalBytes(other.subarray(0, 64), ciphertext.subarray(0, 64))).toBe(false);
    await putOk(docs, "at-rest", plaintext, "text/plain");
    // An overwrite is a new object (new generation); the replaced one is deleted once the row names the new one.
    const second = await storedKey(tenant, "at-rest");
    expect(second).not.toBe(first);
    expect(await documentKeys(tenant, "at-rest")).toEqual([second]);
    const rewritten = (await r2Bytes(second)) ?? new Uint8Array();
    expect(
      equalBytes(rewritten.subarray(HEADER_SIZE, HEADER_SIZE + 64), ciphertext.subarray(HEADER_SIZE, HEADER_SIZE + 64)),
    ).toBe(false);
  });
});

describe("documents across tenants", () => {
  const tenantA = tenantName("doc-a");
  const tenantB = tenantName("doc-b");
  const secret = te.encode(`A's secret document ${crypto.randomUUID()}`.repeat(700));
  let a: DocClient;
  let b: DocClient;
  let bobMcp: KbCaller;
  let aliceMcp: KbCaller;

  const expectAIntact = async () => {
    const got = await a.get("shared-id");
    expect(got.status).toBe(200);
    expect(equalBytes(new Uint8Array(await got.arrayBuffer()), secret)).toBe(true);
    expect((await r2Bytes(await storedKey(tenantA, "shared-id")))?.byteLength).toBe(
      ciphertextLength(secret.byteLength),
    );
    const mcp = await aliceMcp.ok<GetOut>("get_document", { id: "shared-id", offset: 0, length: 64 });
    expect(mcp.text).toBe(new TextDecoder().decode(secret.subarray(0, 64)));
  };

  beforeAll(async () => {
    a = await docClient(tenantA);
    b = await docClient(tenantB);
    aliceMcp = await kbCaller(tenantA);
    bobMcp = await kbCaller(tenantB, { sub: "bob" });
    await putOk(a, "shared-id", secret, "text/plain");
    await putOk(b, "b-own", te.encode("B's own document"), "text/plain");
  });

  it("B asking for A's document id gets not found, over MCP and HTTP; A's document is intact", async () => {
    const mcp = await bobMcp.call("get_document", { id: "shared-id" });
    expect(refusal(mcp).code).toBe("ERR_NOT_FOUND");
    expect(mcp.raw).not.toContain("secret document");
    const mcpRange = await bobMcp.call("get_document", { id: "shared-id", offset: 0, length: 10 });
    expect(refusal(mcpRange).code).toBe("ERR_NOT_FOUND");
    const get = await b.get("shared-id");
    const text = await get.text();
    expect(get.status).toBe(404);
    expect(text).not.toContain("secret document");
    expect((await b.get("shared-id", "bytes=0-10")).status).toBe(404);
    expect((await b.request("shared-id", { method: "HEAD" })).status).toBe(404);
    expect((await b.request("shared-id", { method: "DELETE" })).status).toBe(404);
    await expectAIntact();
  });

  it("B writing the same id creates B's own object under B's prefix; A's is untouched", async () => {
    const before = await r2Bytes(await storedKey(tenantA, "shared-id"));
    await putOk(b, "shared-id", te.encode("B's document with the same id"), "text/plain");
    expect(await (await b.get("shared-id")).text()).toBe("B's document with the same id");
    expect(
      equalBytes(
        (await r2Bytes(await storedKey(tenantA, "shared-id"))) ?? new Uint8Array(),
        before ?? new Uint8Array(1),
      ),
    ).toBe(true);
    await expectAIntact();
    expect((await b.request("shared-id", { method: "DELETE" })).status).toBe(204);
    await expectAIntact();
  });

  it("path-like ids (../x, a/b, %2e%2e, ...) are refused over HTTP and MCP", async () => {
    const paths = [
      "..%2Fx",
      `..%2f..%2f${tenantA}%2Fdocs%2Fshared-id`,
      "a%2Fb",
      "%2e%2e",
      "%2e%2e%2fx",
      `%2E%2E%2F%2E%2E%2Ft%2F${tenantA}`,
      ".",
      "..",
      "../x",
      "a/b",
      "%2e",
      "a%00b",
      "%20x",
      "x%5Cy",
      `${"x".repeat(65)}`,
    ];
    for (const path of paths) {
      for (const method of ["PUT", "GET", "DELETE"]) {
        const init: RequestInit =
          method === "PUT" ? { method, body: te.encode("evil"), headers: { "content-length": "4" } } : { method };
        const response = await b.request(path, init);
        const text = await response.text();
        expect(response.status, `${method} ${path}: ${text}`).toBeGreaterThanOrEqual(400);
        expect(response.status, `${method} ${path}: ${text}`).toBeLessThan(500);
        expect(text).not.toContain("secret document");
      }
    }
    for (const id of ["../x", "a/b", "%2e%2e", `../${tenantA}/docs/shared-id`, "..\\x"]) {
      expect(refusal(await bobMcp.call("put_document", { id, text: "evil" })).code, id).toBe("ERR_INVALID_PARAMS");
      expect(refusal(await bobMcp.call("get_document", { id })).code, id).toBe("ERR_NOT_FOUND");
    }
    await expectAIntact();
  });

  it("every key in the bucket is t/<known tenant>/docs/<valid id>/<generation>: nothing was written outside a tenant prefix", async () => {
    const keys = await allBucketKeys();
    expect(keys.length).toBeGreaterThan(10);
    const idPattern = LIMITS.idPattern;
    for (const key of keys) {
      const match = /^t\/([^/]+)\/docs\/([^/]+)\/[0-9a-f]{32}$/.exec(key);
      expect(match, key).not.toBeNull();
      expect(TENANTS.has(match?.[1] ?? ""), key).toBe(true);
      expect(idPattern.test(match?.[2] ?? ""), key).toBe(true);
    }
    expect(keys.filter((key) => key.startsWith(`t/${tenantB}/`)).sort()).toEqual([await storedKey(tenantB, "b-own")]);
  });
});

/** The scopes a step-up challenge names (it lists the token's own scopes plus the missing ones). */
function challengeScopes(challenge: string): string[] {
  return (/scope="([^"]*)"/.exec(challenge)?.[1] ?? "").split(" ").filter(Boolean);
}
