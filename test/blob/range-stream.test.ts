import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { rangeReadable } from "../../src/blob/range-stream";
import { encrypt, HEADER_SIZE, openRandomAccess } from "../../src/crypto/chunked-aead";
import { kbCaller, uniqueTenant } from "../helpers/kb-client";
import { BASE } from "../helpers/tokens";

/**
 * Range reads stream (issue: a `bytes=0-` of a large document was buffered whole). The pipeline's bytes in flight —
 * ciphertext pulled from R2 but not yet handed to the reader — stay bounded whatever the range's size.
 */

const MIB = 1024 * 1024;
const SIZE = 64 * MIB;

/** Index of the first differing byte, or -1 (deep equality of megabytes is too slow in the test runner). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

describe("streamed ranges", () => {
  it("a bytes=0- read keeps at most a few chunks in flight, whatever its size, and is byte-exact", async () => {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const context = new TextEncoder().encode("range-stream-test");
    const plaintext = new Uint8Array(SIZE);
    for (let i = 0; i < SIZE; i++) plaintext[i] = (i * 31 + (i >>> 13)) & 0xff;
    const ciphertext = await encrypt(key, context, plaintext);
    const decryptor = await openRandomAccess(key, context, ciphertext.subarray(0, HEADER_SIZE), ciphertext.byteLength);
    for (const start of [0, 5 * MIB + 123, SIZE - 5]) {
      const wanted = { start, end: SIZE };
      const span = decryptor.chunkSpan(wanted.start, wanted.end);
      // R2's body stand-in: hands over 64 KiB at a time, only when pulled; counts what it handed over.
      let pulled = span.ciphertextStart;
      const source = new ReadableStream<Uint8Array>(
        {
          pull(controller) {
            if (pulled >= span.ciphertextEnd) return controller.close();
            const next = Math.min(pulled + 65_536, span.ciphertextEnd);
            controller.enqueue(ciphertext.slice(pulled, next));
            pulled = next;
          },
        },
        { highWaterMark: 0 },
      );
      const reader = rangeReadable(decryptor, span, wanted, source).getReader();
      const out = new Uint8Array(SIZE - start);
      let delivered = 0;
      let maxInFlight = 0;
      let chunks = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks++;
        out.set(value, delivered);
        delivered += value.byteLength;
        // Ciphertext handed over minus what reached the reader (plaintext plus its tags).
        const consumed = span.ciphertextStart + Math.ceil((delivered + (start % 16_384)) / 16_384) * 16_400;
        maxInFlight = Math.max(maxInFlight, pulled - Math.min(consumed, span.ciphertextEnd));
      }
      expect(delivered).toBe(SIZE - start);
      expect(firstDifference(out, plaintext.subarray(start))).toBe(-1);
      if (SIZE - start > 100_000) expect(chunks).toBeGreaterThan((SIZE - start) / 16_384 - 2);
      // The buffered Range read held the whole slice; the stream holds less than one R2 read plus one chunk.
      expect(maxInFlight).toBeLessThanOrEqual(65_536 + 16_400);
    }
  });

  it("a modified chunk fails the stream without releasing its bytes", async () => {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const context = new TextEncoder().encode("range-stream-test");
    const ciphertext = await encrypt(key, context, new Uint8Array(100_000).fill(7));
    const at = HEADER_SIZE + 2 * 16_400 + 5; // in chunk 2
    ciphertext[at] = (ciphertext[at] ?? 0) ^ 1;
    const decryptor = await openRandomAccess(key, context, ciphertext.subarray(0, HEADER_SIZE), ciphertext.byteLength);
    const span = decryptor.chunkSpan(0, 100_000);
    const body = new Response(ciphertext.slice(span.ciphertextStart, span.ciphertextEnd))
      .body as ReadableStream<Uint8Array>;
    const reader = rangeReadable(decryptor, span, { start: 0, end: 100_000 }, body).getReader();
    let received = 0;
    let failure: unknown = null;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.byteLength;
      }
    } catch (error) {
      failure = error;
    }
    expect(failure).toMatchObject({ code: "ERR_DECRYPT" });
    expect(received).toBe(2 * 16_384); // chunks 0 and 1 only
  });

  it("serves the same bytes over HTTP as before (206, Content-Range, Content-Length) for every range shape", async () => {
    const tenant = uniqueTenant("range-http");
    const caller = await kbCaller(tenant);
    const bytes = new Uint8Array(70_000);
    for (let i = 0; i < bytes.length; i += 65_536) crypto.getRandomValues(bytes.subarray(i, i + 65_536));
    const put = await exports.default.fetch(
      new Request(`${BASE}/v1/documents/doc`, {
        method: "PUT",
        headers: { authorization: `Bearer ${caller.token}`, "content-type": "application/octet-stream" },
        body: bytes,
      }),
    );
    expect(put.status).toBe(201);
    for (const [range, start, end] of [
      ["bytes=0-", 0, 70_000],
      ["bytes=16383-16384", 16_383, 16_385],
      ["bytes=100-49151", 100, 49_152],
      ["bytes=-5", 69_995, 70_000],
      ["bytes=65536-", 65_536, 70_000],
      ["bytes=69999-99999999", 69_999, 70_000],
    ] as const) {
      const response = await exports.default.fetch(
        new Request(`${BASE}/v1/documents/doc`, { headers: { authorization: `Bearer ${caller.token}`, range } }),
      );
      expect(response.status, range).toBe(206);
      expect(response.headers.get("content-range")).toBe(`bytes ${start}-${end - 1}/70000`);
      expect(response.headers.get("content-length")).toBe(String(end - start));
      expect(new Uint8Array(await response.arrayBuffer())).toEqual(bytes.subarray(start, end));
    }
  });
});
