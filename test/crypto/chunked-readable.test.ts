import { describe, expect, it } from "vitest";
import {
  CHUNK_SIZE,
  decrypt,
  decryptingReadable,
  ENCRYPTED_CHUNK_SIZE,
  encrypt,
  encryptingReadable,
  HEADER_SIZE,
} from "../../src/crypto/chunked-aead";
import { BATCH_CHUNKS } from "../../src/crypto/chunked-coders";
import type { StreamStats } from "../../src/crypto/chunked-stream";
import { KbError } from "../../src/errors";
import { concat, equalBytes, expectDecryptError, pseudoRandomBytes } from "./helpers";

const KEY = pseudoRandomBytes(32, 91);
const CONTEXT = new TextEncoder().encode("tenant-c/blob");
const PIECES = [1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, ENCRYPTED_CHUNK_SIZE, 200_000];

/** A source of fresh copies of `bytes` in `pieceSize` pieces; records whether it was cancelled. */
function source(
  bytes: Uint8Array,
  pieceSize: number,
): { stream: ReadableStream<Uint8Array>; cancelled: () => boolean } {
  let offset = 0;
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.byteLength) {
        controller.close();
        return;
      }
      const end = Math.min(bytes.byteLength, offset + pieceSize);
      controller.enqueue(bytes.slice(offset, end));
      offset = end;
    },
    cancel() {
      cancelled = true;
    },
  });
  return { stream, cancelled: () => cancelled };
}

async function readAll(readable: ReadableStream<Uint8Array>): Promise<{ bytes: Uint8Array; error: unknown }> {
  const parts: Uint8Array[] = [];
  const reader = readable.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { bytes: concat(...parts), error: undefined };
      parts.push(value);
    }
  } catch (error) {
    return { bytes: concat(...parts), error };
  }
}

describe("encryptingReadable / decryptingReadable", () => {
  it("match whole-object encrypt and decrypt byte for byte, for every piece size", async () => {
    const salt = pseudoRandomBytes(24, 4);
    for (const length of [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17, 40 * CHUNK_SIZE]) {
      const plaintext = pseudoRandomBytes(length, length + 11);
      const expected = await encrypt(KEY, CONTEXT, plaintext, salt);
      for (const pieceSize of PIECES) {
        if (pieceSize === 1 && length > 2 * CHUNK_SIZE) continue;
        const label = `length ${length} piece ${pieceSize}`;
        const sealed = await readAll(encryptingReadable(source(plaintext, pieceSize).stream, KEY, CONTEXT, { salt }));
        expect(sealed.error, label).toBeUndefined();
        expect(equalBytes(sealed.bytes, expected), label).toBe(true);
        const opened = await readAll(decryptingReadable(source(expected, pieceSize).stream, KEY, CONTEXT));
        expect(opened.error, label).toBeUndefined();
        expect(equalBytes(opened.bytes, plaintext), label).toBe(true);
      }
    }
  });

  it("bound what they hold and emit, whatever the piece size", async () => {
    const plaintext = pseudoRandomBytes(2 * 1024 * 1024 + 5, 12);
    for (const pieceSize of [1000, 64 * 1024, 1024 * 1024, plaintext.byteLength]) {
      const enc: StreamStats = { maxBufferedBytes: 0, maxEnqueuedBytes: 0 };
      const dec: StreamStats = { maxBufferedBytes: 0, maxEnqueuedBytes: 0 };
      const sealed = encryptingReadable(source(plaintext, pieceSize).stream, KEY, CONTEXT, { stats: enc });
      const opened = await readAll(decryptingReadable(sealed, KEY, CONTEXT, { stats: dec }));
      expect(opened.error).toBeUndefined();
      expect(equalBytes(opened.bytes, plaintext)).toBe(true);
      expect(enc.maxBufferedBytes).toBeLessThan(CHUNK_SIZE);
      expect(enc.maxEnqueuedBytes).toBeLessThanOrEqual(HEADER_SIZE + BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE);
      expect(dec.maxBufferedBytes).toBeLessThanOrEqual(ENCRYPTED_CHUNK_SIZE);
      expect(dec.maxEnqueuedBytes).toBe(BATCH_CHUNKS * CHUNK_SIZE);
    }
  });

  it("release an authenticated prefix of a tampered object, then fail with ERR_DECRYPT and cancel the source", async () => {
    const plaintext = pseudoRandomBytes(40 * CHUNK_SIZE + 99, 13);
    const object = await encrypt(KEY, CONTEXT, plaintext);
    for (const chunk of [0, 5, BATCH_CHUNKS, 39, 40]) {
      const tampered = object.slice();
      const at = HEADER_SIZE + chunk * ENCRYPTED_CHUNK_SIZE + 7;
      tampered[at] = (tampered[at] ?? 0) ^ 1;
      for (const pieceSize of PIECES.slice(1)) {
        const input = source(tampered, pieceSize);
        const run = await readAll(decryptingReadable(input.stream, KEY, CONTEXT));
        expectDecryptError(run.error);
        // Every chunk before the tampered one authenticated, and all of them are released before the error.
        expect(run.bytes.byteLength).toBe(chunk * CHUNK_SIZE);
        expect(equalBytes(run.bytes, plaintext.subarray(0, run.bytes.byteLength))).toBe(true);
        // The source is cancelled, unless it had already ended (the failure is near its end).
        if (chunk <= BATCH_CHUNKS) expect(input.cancelled()).toBe(true);
      }
    }
  });

  it("fail on truncation, a missing final chunk, trailing data and a bad header", async () => {
    const plaintext = pseudoRandomBytes(3 * CHUNK_SIZE, 14);
    const object = await encrypt(KEY, CONTEXT, plaintext);
    const badHeader = object.slice();
    badHeader[30] = (badHeader[30] ?? 0) ^ 1;
    const cases = {
      empty: new Uint8Array(0),
      "header only": object.subarray(0, HEADER_SIZE),
      "cut in the header": object.subarray(0, HEADER_SIZE - 1),
      "at a chunk boundary": object.subarray(0, HEADER_SIZE + 2 * ENCRYPTED_CHUNK_SIZE),
      "no final chunk": object.subarray(0, HEADER_SIZE + 3 * ENCRYPTED_CHUNK_SIZE),
      "cut final tag": object.subarray(0, object.byteLength - 1),
      "trailing byte": concat(object, new Uint8Array(1)),
      "bad header": badHeader,
    };
    for (const [name, bytes] of Object.entries(cases)) {
      for (const pieceSize of PIECES) {
        if (pieceSize === 1 && bytes.byteLength > ENCRYPTED_CHUNK_SIZE) continue;
        const run = await readAll(decryptingReadable(source(bytes, pieceSize).stream, KEY, CONTEXT));
        expectDecryptError(run.error);
        expect(run.bytes.byteLength % CHUNK_SIZE, `${name} piece ${pieceSize}`).toBe(0);
        expect(equalBytes(run.bytes, plaintext.subarray(0, run.bytes.byteLength)), name).toBe(true);
      }
    }
  });

  it("stay failed, and decrypt nothing under a wrong key or context", async () => {
    const object = await encrypt(KEY, CONTEXT, pseudoRandomBytes(2 * CHUNK_SIZE, 15));
    for (const [key, context] of [
      [KEY.subarray(0, 31), CONTEXT],
      [pseudoRandomBytes(32, 1), CONTEXT],
      [KEY, new TextEncoder().encode("tenant-d/blob")],
    ] as const) {
      const reader = decryptingReadable(source(object, 1000).stream, key, context).getReader();
      await expect(reader.read()).rejects.toSatisfy(
        (error) => error instanceof KbError && error.code === "ERR_DECRYPT",
      );
      await expect(reader.read()).rejects.toBeInstanceOf(KbError);
    }
  });

  it("encryption: RangeError for a bad key at once; an inspect() throw errors the stream and cancels the source", async () => {
    expect(() => encryptingReadable(source(new Uint8Array(1), 1).stream, new Uint8Array(31), CONTEXT)).toThrow(
      RangeError,
    );
    const plaintext = pseudoRandomBytes(5 * CHUNK_SIZE, 16);
    const tooLong = new Error("too long");
    let seen = 0;
    const input = source(plaintext, 4096);
    const run = await readAll(
      encryptingReadable(input.stream, KEY, CONTEXT, {
        inspect: (piece) => {
          seen += piece?.byteLength ?? 0;
          if (seen > 3 * CHUNK_SIZE) throw tooLong;
        },
      }),
    );
    expect(run.error).toBe(tooLong);
    expect(input.cancelled()).toBe(true);
    expect(run.bytes.byteLength).toBeLessThanOrEqual(HEADER_SIZE + 3 * ENCRYPTED_CHUNK_SIZE);
    const ends: (number | null)[] = [];
    await readAll(
      encryptingReadable(source(plaintext, CHUNK_SIZE).stream, KEY, CONTEXT, {
        inspect: (p) => ends.push(p === null ? null : p.byteLength),
      }),
    );
    expect(ends).toEqual([CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, null]);
  });

  it("cancelling the output cancels the source; backpressure: nothing is read before the first read", async () => {
    const plaintext = pseudoRandomBytes(40 * CHUNK_SIZE, 17);
    let pulls = 0;
    let cancelled = false;
    let offset = 0;
    const counted = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          pulls++;
          const end = Math.min(plaintext.byteLength, offset + CHUNK_SIZE);
          if (offset >= end) controller.close();
          else controller.enqueue(plaintext.slice(offset, end));
          offset = end;
        },
        cancel() {
          cancelled = true;
        },
      },
      { highWaterMark: 0 },
    );
    const readable = encryptingReadable(counted, KEY, CONTEXT);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(pulls).toBe(0);
    const reader = readable.getReader();
    const first = await reader.read();
    expect(first.value?.byteLength).toBe(HEADER_SIZE + BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE);
    expect(pulls).toBeLessThanOrEqual(BATCH_CHUNKS + 1);
    await reader.cancel("done");
    expect(cancelled).toBe(true);
    expect(await decrypt(KEY, CONTEXT, await encrypt(KEY, CONTEXT, plaintext))).toEqual(plaintext);
  });
});
